//! Where things live in the archive: Hive-style partition paths for the Parquet files and the
//! manifests' paths, with the percent-encoding of partition values.
//!
//! ```text
//! date=2025-08-22/site=BKK/resource=SMT01/sensor=temp/part-00000.parquet
//! _manifests/date=2025-08-22/part-00000.json
//! ```
//!
//! A partition value keeps the bytes `A-Z a-z 0-9 - _ .` and writes every other byte of its UTF-8
//! as `%XX` (upper-case hex), so `/`, `=`, `%`, spaces and non-ASCII never reach a path raw and
//! the value decodes back exactly (pyarrow's and Spark's Hive partitioning URI-decode values).
//! Manifests sit under `_manifests/`, which dataset readers skip (a leading `_`).

use std::fmt::Write;

use chrono::NaiveDate;

/// Prefix of the manifests.
pub const MANIFEST_DIR: &str = "_manifests";

/// The partition values of one Parquet file.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PartitionKey {
    pub site: String,
    pub resource_id: String,
    pub sensor: String,
}

/// `value` percent-encoded for a path segment (see the module docs).
pub fn encode_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.') {
            out.push(char::from(b));
        } else {
            // Writing to a String cannot fail.
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// The inverse of [`encode_value`]; `None` for a malformed escape or invalid UTF-8.
pub fn decode_value(encoded: &str) -> Option<String> {
    let bytes = encoded.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = encoded.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// `date=YYYY-MM-DD`
pub fn day_dir(day: NaiveDate) -> String {
    format!("date={}", day.format("%Y-%m-%d"))
}

/// Path of the Parquet file of `key` in part `part` of `day`.
pub fn file_path(day: NaiveDate, key: &PartitionKey, part: u32) -> String {
    format!(
        "{}/site={}/resource={}/sensor={}/part-{part:05}.parquet",
        day_dir(day),
        encode_value(&key.site),
        encode_value(&key.resource_id),
        encode_value(&key.sensor),
    )
}

/// Path of the manifest of part `part` of `day`.
pub fn manifest_path(day: NaiveDate, part: u32) -> String {
    format!("{MANIFEST_DIR}/{}/part-{part:05}.json", day_dir(day))
}

/// The part number a Parquet file name or manifest name carries (`part-00003.parquet` → 3).
pub fn part_of(path: &str) -> Option<u32> {
    let name = path.rsplit('/').next()?;
    let stem = name
        .strip_suffix(".parquet")
        .or_else(|| name.strip_suffix(".json"))?;
    stem.strip_prefix("part-")?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day() -> NaiveDate {
        NaiveDate::from_ymd_opt(2025, 8, 22).unwrap()
    }

    #[test]
    fn plain_values_are_kept() {
        let key = PartitionKey {
            site: "BKK".into(),
            resource_id: "SMT-01_a.b".into(),
            sensor: "temp".into(),
        };
        assert_eq!(
            file_path(day(), &key, 0),
            "date=2025-08-22/site=BKK/resource=SMT-01_a.b/sensor=temp/part-00000.parquet"
        );
        assert_eq!(
            manifest_path(day(), 12),
            "_manifests/date=2025-08-22/part-00012.json"
        );
    }

    #[test]
    fn unsafe_bytes_are_percent_encoded_and_decode_back() {
        for raw in ["a/b", "x=y", "50%", "a b", "Ü°", "..", "", "#?*"] {
            let enc = encode_value(raw);
            assert!(
                enc.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.%".contains(&b)),
                "{enc}"
            );
            assert_eq!(decode_value(&enc).as_deref(), Some(raw));
        }
        assert_eq!(encode_value("a/b c"), "a%2Fb%20c");
        assert_eq!(encode_value("Ü"), "%C3%9C");
    }

    #[test]
    fn malformed_escapes_do_not_decode() {
        assert_eq!(decode_value("%G1"), None);
        assert_eq!(decode_value("%4"), None);
        assert_eq!(decode_value("%FF"), None);
    }

    #[test]
    fn part_numbers_come_back_from_names() {
        assert_eq!(part_of("date=x/site=a/part-00003.parquet"), Some(3));
        assert_eq!(part_of("_manifests/date=x/part-00010.json"), Some(10));
        assert_eq!(part_of("date=x/other.parquet"), None);
    }
}
