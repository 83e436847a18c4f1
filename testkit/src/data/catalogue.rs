//! Lines that must be rejected, lines that look odd but are valid, and blank lines.

use protocol::RejectReason;

use super::readings::SEED_LINE;
use super::{classify, LineOutcome};

/// One kind of malformed line and the reason the validator must give for it.
#[derive(Debug, Clone)]
pub struct MalformedCase {
    pub name: &'static str,
    pub line: Vec<u8>,
    pub reason: RejectReason,
}

/// `text` with the first `from` replaced by raw bytes `to`.
fn replace_bytes(text: &str, from: &str, to: &[u8]) -> Vec<u8> {
    match text.find(from) {
        Some(at) => [
            &text.as_bytes()[..at],
            to,
            &text.as_bytes()[at + from.len()..],
        ]
        .concat(),
        None => text.as_bytes().to_vec(),
    }
}

fn with_field(field_json: &str) -> String {
    format!(
        r#"{{"ts":"2025-08-22T00:37:41Z","resource_id":"SMT01","sensor":"temp","value":37.2,{field_json}}}"#
    )
}

fn base_without(skip: &str) -> String {
    let fields = [
        ("ts", r#""ts":"2025-08-22T00:37:41Z""#),
        ("resource_id", r#""resource_id":"SMT01""#),
        ("sensor", r#""sensor":"temp""#),
        ("value", r#""value":37.2"#),
        ("unit", r#""unit":"C""#),
    ];
    let kept: Vec<&str> = fields
        .iter()
        .filter(|(name, _)| *name != skip)
        .map(|(_, f)| *f)
        .collect();
    format!("{{{}}}", kept.join(","))
}

fn with_value(value: &str) -> String {
    format!(
        r#"{{"ts":"2025-08-22T00:37:41Z","resource_id":"SMT01","sensor":"temp","value":{value},"unit":"C"}}"#
    )
}

fn with_ts(ts: &str) -> String {
    format!(r#"{{"ts":{ts},"resource_id":"SMT01","sensor":"temp","value":37.2}}"#)
}

/// Many kinds of malformed lines (none contains `\n`), each with the reason the validator must
/// give; unit-tested against [`protocol::decode_line`]. One line is longer than the 64 KiB cap.
#[rustfmt::skip]
pub fn malformed_cases() -> Vec<MalformedCase> {
    use RejectReason::*;
    let seed = SEED_LINE;
    let b = |s: String| s.into_bytes();
    let cases: Vec<(&'static str, Vec<u8>, RejectReason)> = vec![
        // Not UTF-8.
        ("invalid byte 0xff in an id", replace_bytes(seed, "SMT01", b"SMT\xff01"), InvalidUtf8),
        ("latin-1 degree sign", replace_bytes(seed, "\"C\"", b"\"\xb0C\""), InvalidUtf8),
        ("lone continuation byte first", [&b"\x80"[..], seed.as_bytes()].concat(), InvalidUtf8),
        ("utf-16 surrogate as utf-8", replace_bytes(seed, "BKK", b"BK\xed\xa0\x80K"), InvalidUtf8),
        ("cut multi-byte character", replace_bytes(seed, "BKK", b"BK\xe0\xb8"), InvalidUtf8),
        // Cut off.
        ("truncated mid-line", b(seed[..seed.len() - 10].to_owned()), TruncatedJson),
        ("truncated after a key", b("{\"ts\":".to_owned()), TruncatedJson),
        ("only an opening brace", b("{".to_owned()), TruncatedJson),
        ("truncated inside a string", b(seed[..20].to_owned()), TruncatedJson),
        // Not JSON.
        ("unquoted keys", b("{ts:1}".to_owned()), InvalidJson),
        ("trailing garbage", b(format!("{seed}x")), InvalidJson),
        ("two objects on one line", b(format!("{seed}{seed}")), InvalidJson),
        ("single quotes", b(seed.replace('"', "'")), InvalidJson),
        ("trailing comma", b(format!("{},}}", &seed[..seed.len() - 1])), InvalidJson),
        ("raw NUL byte in a string", b(seed.replace("SMT01", "SMT\u{0}01")), InvalidJson),
        ("raw tab in a string", b(seed.replace("SMT01", "SMT\t01")), InvalidJson),
        ("byte order mark", b(format!("\u{feff}{seed}")), InvalidJson),
        ("decimal comma", b(with_value("37,2")), InvalidJson),
        ("plus sign", b(with_value("+37.2")), InvalidJson),
        ("hex number", b(with_value("0x25")), InvalidJson),
        ("leading zero", b(with_value("037.2")), InvalidJson),
        ("trailing comment", b(format!("{seed} // temp")), InvalidJson),
        ("csv line", b("SMT01,temp,37.2,2025-08-22T00:37:41Z".to_owned()), InvalidJson),
        // Not an object.
        ("csv line starting with a number", b("2025,SMT01,temp,37.2".to_owned()), NotAnObject),
        ("array", b("[1,2]".to_owned()), NotAnObject),
        ("array of readings", b(format!("[{seed}]")), NotAnObject),
        ("number", b("42".to_owned()), NotAnObject),
        ("string", b("\"reading\"".to_owned()), NotAnObject),
        ("null", b("null".to_owned()), NotAnObject),
        ("boolean", b("true".to_owned()), NotAnObject),
        // Duplicates.
        ("duplicate value", b(with_field("\"value\":38.1")), DuplicateField),
        ("duplicate ts", b(format!("{{\"ts\":\"2025-08-22T00:37:41Z\",{}", &seed[1..])), DuplicateField),
        ("duplicate unknown field", b(with_field("\"shift\":1,\"shift\":2")), DuplicateField),
        // Missing.
        ("missing ts", b(base_without("ts")), MissingField),
        ("missing resource_id", b(base_without("resource_id")), MissingField),
        ("missing sensor", b(base_without("sensor")), MissingField),
        ("missing value", b(base_without("value")), MissingField),
        ("null value", b(with_value("null")), MissingField),
        ("null resource_id", b(seed.replace("\"SMT01\"", "null")), MissingField),
        ("empty object", b("{}".to_owned()), MissingField),
        // Wrong types.
        ("value as a string", b(with_value("\"37.2\"")), InvalidType),
        ("value as a boolean", b(with_value("true")), InvalidType),
        ("value as an object", b(with_value("{\"v\":37.2}")), InvalidType),
        ("value as an array", b(with_value("[37.2]")), InvalidType),
        ("resource_id as a number", b(seed.replace("\"SMT01\"", "7")), InvalidType),
        ("ts as epoch seconds", b(with_ts("1755823061")), InvalidType),
        ("sensor as an array", b(seed.replace("\"temp\"", "[\"temp\"]")), InvalidType),
        ("unit as a number", b(with_field("\"unit\":1")), InvalidType),
        ("work_order_id as a number", b(seed.replace("\"WO123\"", "123")), InvalidType),
        // Empty.
        ("empty resource_id", b(seed.replace("\"SMT01\"", "\"\"")), EmptyField),
        ("blank sensor", b(seed.replace("\"temp\"", "\"   \"")), EmptyField),
        // Too long a field.
        ("resource_id of 300 bytes", b(seed.replace("SMT01", &"R".repeat(300))), FieldTooLong),
        ("unit of 257 bytes", b(with_field(&format!("\"unit\":\"{}\"", "u".repeat(257)))), FieldTooLong),
        // Timestamps.
        ("ts without offset", b(with_ts("\"2025-08-22T00:37:41\"")), InvalidTimestamp),
        ("ts with a space and no offset", b(with_ts("\"2025-08-22 00:37:41\"")), InvalidTimestamp),
        ("ts in words", b(with_ts("\"yesterday\"")), InvalidTimestamp),
        ("ts month 13", b(with_ts("\"2025-13-22T00:37:41Z\"")), InvalidTimestamp),
        ("ts day 32", b(with_ts("\"2025-08-32T00:37:41Z\"")), InvalidTimestamp),
        ("ts empty", b(with_ts("\"\"")), InvalidTimestamp),
        ("ts as epoch string", b(with_ts("\"1755823061\"")), InvalidTimestamp),
        ("ts date only", b(with_ts("\"2025-08-22\"")), InvalidTimestamp),
        // Non-finite values.
        ("NaN", b(with_value("NaN")), NonFiniteValue),
        ("Infinity", b(with_value("Infinity")), NonFiniteValue),
        ("-Infinity", b(with_value("-Infinity")), NonFiniteValue),
        ("1e400", b(with_value("1e400")), NonFiniteValue),
        ("-1e400", b(with_value("-1e400")), NonFiniteValue),
        // NUL.
        ("escaped NUL in resource_id", b(seed.replace("SMT01", "SMT01\\u0000")), NulCharacter),
        ("escaped NUL in meta", b(seed.replace("\"BKK\"", "\"BK\\u0000K\"")), NulCharacter),
        ("escaped NUL in an unknown field", b(with_field("\"note\":\"a\\u0000b\"")), NulCharacter),
        // Meta.
        ("meta as an array", b(with_field("\"meta\":[1]")), InvalidMeta),
        ("meta as a string", b(with_field("\"meta\":\"BKK\"")), InvalidMeta),
        ("meta as a number", b(with_field("\"meta\":5")), InvalidMeta),
        // The whole line over the 64 KiB cap.
        ("line over 64 KiB", b(seed.replace("\"BKK\"", &format!("\"BKK\",\"note\":\"{}\"", "x".repeat(66_000)))), LineTooLong),
    ];
    cases
        .into_iter()
        .map(|(name, line, reason)| MalformedCase { name, line, reason })
        .collect()
}

/// Malformed lines (no `\n`) with the reason [`protocol::decode_line`] gives for each.
pub fn malformed_lines() -> Vec<(Vec<u8>, RejectReason)> {
    malformed_cases()
        .into_iter()
        .map(|case| {
            let reason = match classify(&case.line) {
                LineOutcome::Rejected(reason) => reason,
                // Unreachable while the unit tests pass; keep the hand-written reason.
                _ => case.reason,
            };
            (case.line, reason)
        })
        .collect()
}

/// Unusual lines that must still be accepted (no `\n`; one ends in `\r`, i.e. CRLF in a file).
pub fn unusual_valid_lines() -> Vec<String> {
    let seed = SEED_LINE;
    vec![
        format!("{seed}\r"),
        seed.replace(
            "2025-08-22T00:37:41Z",
            "2025-08-22T07:37:41.123456789+07:00",
        ),
        seed.replace("2025-08-22T00:37:41Z", "2025-08-22T00:37:41.5-00:30"),
        seed.replace("37.2", "37"),
        seed.replace("37.2", "-0.5"),
        seed.replace("37.2", "3.72e1"),
        seed.replace("37.2", "1.7976931348623157e308"),
        seed.replace("\"WO123\"", "null").replace("\"C\"", "null"),
        seed.replace(",\"meta\":{\"site\":\"BKK\"}", ""),
        seed.replace(",\"meta\":{\"site\":\"BKK\"}", ",\"meta\":null"),
        seed.replace("}}", "},\"shift\":\"Day\",\"batch\":[1,2]}"),
        seed.replace("}}", "},\"site\":\"CNX\"}"),
        seed.replace("\"SMT01\"", "\"SMT\\u0030\\u0031\""),
        seed.replace("\"BKK\"", "\"BKK\",\"note\":\"อุณหภูมิ ✓\""),
        seed.replace("\"BKK\"", "\"BKK\",\"path\":\"C:\\\\u0000\""),
        seed.replace(',', " , ")
            .replace(':', " : ")
            .replace("2025-08-22T00 : 37 : 41Z", "2025-08-22T00:37:41Z"),
        format!("  {seed}  "),
        format!(
            r#"{{"value":37.2,"sensor":"temp","resource_id":"SMT01","ts":"2025-08-22T00:37:41Z"}}"#
        ),
        seed.replace(
            "\"BKK\"",
            &format!("\"BKK\",\"note\":\"{}\"", "x".repeat(60_000)),
        ),
    ]
}

/// Blank lines (no `\n`): skipped by the worker, neither row nor rejection.
pub fn blank_lines() -> Vec<&'static str> {
    vec!["", "\r", "   ", "\t", " \t \r"]
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use protocol::{decode_line, Limits};

    use super::*;

    #[test]
    fn every_malformed_case_gets_its_reason_from_the_validator() {
        let cases = malformed_cases();
        assert!(cases.len() >= 60, "only {} cases", cases.len());
        for case in &cases {
            assert!(!case.line.contains(&b'\n'), "{}", case.name);
            let got = decode_line(&case.line, &Limits::default())
                .map(|r| format!("{r:?}"))
                .map_err(|e| e.reason);
            assert_eq!(got, Err(case.reason), "case {:?}", case.name);
            assert_eq!(classify(&case.line), LineOutcome::Rejected(case.reason));
        }
        let names: BTreeSet<_> = cases.iter().map(|c| c.name).collect();
        assert_eq!(names.len(), cases.len(), "case names are unique");
        let covered: BTreeSet<_> = cases.iter().map(|c| c.reason).collect();
        for reason in RejectReason::ALL {
            if reason != RejectReason::DatabaseRejected {
                assert!(covered.contains(&reason), "no case for {reason}");
            }
        }
        let lines = malformed_lines();
        assert_eq!(lines.len(), cases.len());
        for ((line, reason), case) in lines.iter().zip(&cases) {
            assert_eq!((line, *reason), (&case.line, case.reason));
        }
    }

    #[test]
    fn unusual_lines_are_valid_and_blank_lines_are_blank() {
        for line in unusual_valid_lines() {
            assert!(!line.contains('\n'));
            assert!(
                matches!(classify(line.as_bytes()), LineOutcome::Valid { .. }),
                "{line:.200}: {:?}",
                classify(line.as_bytes())
            );
        }
        assert!(unusual_valid_lines().iter().any(|l| l.ends_with('\r')));
        for line in blank_lines() {
            assert_eq!(classify(line.as_bytes()), LineOutcome::Blank, "{line:?}");
        }
    }
}
