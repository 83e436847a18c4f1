//! NATS subjects, with every caller-supplied token escaped.
//!
//! A site, box or resource id could contain `.`, `*`, `>` or white space, which would change the
//! meaning of a subject. Tokens are escaped injectively into `[A-Za-z0-9_-]`: `_` becomes `__`, any
//! other byte outside the set becomes `_XX` (two upper-case hex digits), and the empty token
//! becomes `_`. [`unescape_token`] reverses it.

use std::fmt::Write;

pub const READINGS_PREFIX: &str = "edge.readings";
pub const DLQ_PREFIX: &str = "edge.dlq";
pub const OP_RUN_PREFIX: &str = "mes.op_run";

/// Run events, in the order of the subject's last token.
pub const OP_RUN_EVENTS: [&str; 7] = [
    "started",
    "reported",
    "paused",
    "resumed",
    "completed",
    "aborted",
    "classified",
];

pub fn escape_token(raw: &str) -> String {
    if raw.is_empty() {
        return "_".to_owned();
    }
    let mut out = String::with_capacity(raw.len());
    for b in raw.bytes() {
        match b {
            b'_' => out.push_str("__"),
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' => out.push(b as char),
            other => {
                let _ = write!(out, "_{other:02X}");
            }
        }
    }
    out
}

/// Reverses [`escape_token`]; `None` if `token` is not a valid escaped token.
pub fn unescape_token(token: &str) -> Option<String> {
    if token == "_" {
        return Some(String::new());
    }
    let bytes = token.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'_' => {
                if bytes.get(i + 1) == Some(&b'_') {
                    out.push(b'_');
                    i += 2;
                } else {
                    let hex = token.get(i + 1..i + 3)?;
                    if !hex
                        .bytes()
                        .all(|c| c.is_ascii_digit() || (b'A'..=b'F').contains(&c))
                    {
                        return None;
                    }
                    out.push(u8::from_str_radix(hex, 16).ok()?);
                    i += 3;
                }
            }
            b if b.is_ascii_alphanumeric() || b == b'-' => {
                out.push(b);
                i += 1;
            }
            _ => return None,
        }
    }
    String::from_utf8(out).ok()
}

/// `edge.readings.<site>.<box>`
pub fn readings_subject(site: &str, box_id: &str) -> String {
    format!(
        "{READINGS_PREFIX}.{}.{}",
        escape_token(site),
        escape_token(box_id)
    )
}

/// The site and box a readings subject `<prefix>.<site>.<box>` names, its tokens unescaped;
/// `None` if `subject` is not one (another prefix, a token too many or too few, a bad escape).
///
/// This is the identity the server accepted the message under: with one NATS identity per edge
/// box, allowed to publish only its own subject, it is the box that sent it.
pub fn parse_readings_subject(prefix: &str, subject: &str) -> Option<(String, String)> {
    let rest = subject.strip_prefix(prefix)?.strip_prefix('.')?;
    let (site, box_id) = rest.split_once('.')?;
    if box_id.contains('.') {
        return None;
    }
    Some((unescape_token(site)?, unescape_token(box_id)?))
}

/// Reply inbox prefix of a client that logs in with a user nkey: `_INBOX.<its public key>`.
///
/// The server allows each such user to subscribe to `_INBOX.<its public key>.>` only, so one edge
/// box cannot read another's PubAcks: edge-mes-nats-admin writes that permission, the service
/// crate's connection options use this prefix.
pub fn nkey_inbox_prefix(public_key: &str) -> String {
    format!("_INBOX.{}", escape_token(public_key))
}

/// Reply inbox prefix of an edge-mes service that logs in by name (`ingest-worker`, `mes-api`):
/// `_INBOX.<name>`. Inside `_INBOX.>`, so a server that lets it read all of `_INBOX.>` still
/// works, while the production config gives each service only its own subtree.
pub fn service_inbox_prefix(name: &str) -> String {
    format!("_INBOX.{}", escape_token(name))
}

/// Reply inbox prefix of one deployment of a service: `_INBOX.<name>.<scope>` (an ingest-worker
/// limited to site BKK: `_INBOX.ingest-worker.BKK`). Inside the service's own subtree, so
/// permissions written for the service still cover it, while a deployment's own identity can be
/// given its subtree only.
pub fn service_inbox_prefix_scoped(name: &str, scope: &str) -> String {
    format!("{}.{}", service_inbox_prefix(name), escape_token(scope))
}

/// `edge.dlq.<site>.<box>`
pub fn dlq_subject(site: &str, box_id: &str) -> String {
    format!(
        "{DLQ_PREFIX}.{}.{}",
        escape_token(site),
        escape_token(box_id)
    )
}

/// `mes.op_run.<site>.<resource>.<event>`
pub fn op_run_subject(site: &str, resource_id: &str, event: &str) -> String {
    format!(
        "{OP_RUN_PREFIX}.{}.{}.{}",
        escape_token(site),
        escape_token(resource_id),
        escape_token(event)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn plain_tokens_pass_unchanged() {
        assert_eq!(
            readings_subject("BKK", "box-01"),
            "edge.readings.BKK.box-01"
        );
        assert_eq!(
            op_run_subject("BKK", "SMT01", "started"),
            "mes.op_run.BKK.SMT01.started"
        );
        assert_eq!(dlq_subject("BKK", "b1"), "edge.dlq.BKK.b1");
    }

    #[test]
    fn wildcards_dots_and_spaces_are_escaped() {
        assert_eq!(escape_token("a.b"), "a_2Eb");
        assert_eq!(escape_token("*"), "_2A");
        assert_eq!(escape_token(">"), "_3E");
        assert_eq!(escape_token("a b"), "a_20b");
        assert_eq!(escape_token("a_b"), "a__b");
        assert_eq!(escape_token(""), "_");
        assert_eq!(escape_token("ü"), "_C3_BC");
        assert_eq!(readings_subject("s.1", "b>"), "edge.readings.s_2E1.b_3E");
    }

    #[test]
    fn malformed_escapes_are_refused() {
        assert_eq!(unescape_token("_2"), None);
        assert_eq!(unescape_token("_zz"), None);
        assert_eq!(unescape_token("a.b"), None);
        assert_eq!(unescape_token("_2e"), None);
    }

    #[test]
    fn inbox_prefixes_are_one_token_under_inbox() {
        assert_eq!(
            service_inbox_prefix("ingest-worker"),
            "_INBOX.ingest-worker"
        );
        assert_eq!(service_inbox_prefix("a.b >"), "_INBOX.a_2Eb_20_3E");
        assert_eq!(
            service_inbox_prefix_scoped("ingest-worker", "BKK"),
            "_INBOX.ingest-worker.BKK"
        );
        assert_eq!(
            service_inbox_prefix_scoped("ingest-worker", "B.K"),
            "_INBOX.ingest-worker.B_2EK"
        );
        let key = "UCT5NERPK2SAKCXVGO2WCAL66LVLYFVXLZ72CGICPAWSCWQZCIIP7MM3";
        assert_eq!(nkey_inbox_prefix(key), format!("_INBOX.{key}"));
    }

    #[test]
    fn readings_subjects_name_their_site_and_box() {
        let subject = readings_subject("s.1", "box_2");
        assert_eq!(
            parse_readings_subject(READINGS_PREFIX, &subject),
            Some(("s.1".to_owned(), "box_2".to_owned()))
        );
        assert_eq!(
            parse_readings_subject("edge.readings_t1", "edge.readings_t1.BKK.b1"),
            Some(("BKK".to_owned(), "b1".to_owned()))
        );
        for other in [
            "edge.readings.BKK",
            "edge.readings.BKK.b1.extra",
            "edge.readingsX.BKK.b1",
            "edge.dlq.BKK.b1",
            "edge.readings.BKK._zz",
            "edge.readings",
        ] {
            assert_eq!(
                parse_readings_subject(READINGS_PREFIX, other),
                None,
                "{other}"
            );
        }
    }

    proptest! {
        #[test]
        fn escaping_round_trips_and_stays_in_the_safe_set(raw in ".{0,40}") {
            let token = escape_token(&raw);
            prop_assert!(!token.is_empty());
            prop_assert!(token.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'));
            prop_assert_eq!(unescape_token(&token), Some(raw));
        }

        #[test]
        fn readings_subjects_round_trip(site in ".{0,20}", box_id in ".{0,20}") {
            prop_assert_eq!(
                parse_readings_subject(READINGS_PREFIX, &readings_subject(&site, &box_id)),
                Some((site, box_id))
            );
        }
    }
}
