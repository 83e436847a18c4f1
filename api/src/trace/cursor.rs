//! The page cursor of `GET /trace/resource/{resource_id}`: where the previous page ended (its
//! last run's start and id) and a fingerprint of the query it belongs to (resource, `from`,
//! `to`), as 66 hex digits. Opaque to clients; a cursor of another query, or text that is not a
//! cursor, is refused rather than silently giving another listing's page.
//!
//! Bytes: version (1) · last run's `started_at` in microseconds since 1970, big-endian (8) ·
//! last run's id (16) · the first 8 bytes of SHA-256 over the query (8).

use chrono::{DateTime, Datelike, Utc};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::store::trace::RunPosition;

const VERSION: u8 = 1;
const LEN: usize = 1 + 8 + 16 + 8;

/// What a cursor is checked against: the query that made it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueryFingerprint([u8; 8]);

impl QueryFingerprint {
    pub fn of(resource_id: &str, from: DateTime<Utc>, to: DateTime<Utc>) -> Self {
        let mut h = Sha256::new();
        h.update(b"trace/resource\0");
        h.update(resource_id.as_bytes());
        for t in [from, to] {
            h.update([0]);
            h.update(t.timestamp().to_be_bytes());
            h.update(t.timestamp_subsec_nanos().to_be_bytes());
        }
        let digest = h.finalize();
        let mut out = [0u8; 8];
        out.copy_from_slice(&digest[..8]);
        Self(out)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CursorError {
    #[error("not a cursor of this listing (pass next_cursor as it was answered)")]
    Malformed,
    #[error(
        "belongs to another query: resource_id, from and to must stay those of the first page"
    )]
    OtherQuery,
}

pub fn encode(position: RunPosition, query: QueryFingerprint) -> String {
    let mut bytes = Vec::with_capacity(LEN);
    bytes.push(VERSION);
    bytes.extend_from_slice(&position.started_at.timestamp_micros().to_be_bytes());
    bytes.extend_from_slice(position.op_run_id.as_bytes());
    bytes.extend_from_slice(&query.0);
    hex::encode(bytes)
}

pub fn decode(raw: &str, query: QueryFingerprint) -> Result<RunPosition, CursorError> {
    let bytes = hex::decode(raw).map_err(|_| CursorError::Malformed)?;
    if bytes.len() != LEN || bytes[0] != VERSION {
        return Err(CursorError::Malformed);
    }
    let micros = i64::from_be_bytes(bytes[1..9].try_into().map_err(|_| CursorError::Malformed)?);
    // Years 1 to 9999: what RFC 3339 and PostgreSQL both take.
    let started_at = DateTime::from_timestamp_micros(micros)
        .filter(|t| (1..=9999).contains(&t.year()))
        .ok_or(CursorError::Malformed)?;
    let op_run_id = Uuid::from_slice(&bytes[9..25]).map_err(|_| CursorError::Malformed)?;
    if bytes[25..] != query.0 {
        return Err(CursorError::OtherQuery);
    }
    Ok(RunPosition {
        started_at,
        op_run_id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn query() -> QueryFingerprint {
        QueryFingerprint::of(
            "SMT01",
            t("2025-01-01T00:00:00Z"),
            t("2025-01-02T00:00:00Z"),
        )
    }

    fn position() -> RunPosition {
        RunPosition {
            started_at: t("2025-01-01T06:30:00.123456Z"),
            op_run_id: Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0001),
        }
    }

    #[test]
    fn a_cursor_gives_back_its_position() {
        let raw = encode(position(), query());
        assert_eq!(raw.len(), 2 * LEN);
        assert!(raw.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(decode(&raw, query()), Ok(position()));
    }

    #[test]
    fn a_cursor_of_another_query_is_refused() {
        let raw = encode(position(), query());
        let others = [
            QueryFingerprint::of(
                "SMT02",
                t("2025-01-01T00:00:00Z"),
                t("2025-01-02T00:00:00Z"),
            ),
            QueryFingerprint::of(
                "SMT01",
                t("2025-01-01T00:00:01Z"),
                t("2025-01-02T00:00:00Z"),
            ),
            QueryFingerprint::of(
                "SMT01",
                t("2025-01-01T00:00:00Z"),
                t("2025-01-02T00:00:00.000000001Z"),
            ),
        ];
        for other in others {
            assert_eq!(decode(&raw, other), Err(CursorError::OtherQuery));
        }
    }

    #[test]
    fn text_that_is_not_a_cursor_is_malformed() {
        let raw = encode(position(), query());
        let mut wrong_version = raw.clone();
        wrong_version.replace_range(0..2, "02");
        for bad in [
            "",
            "0",
            "zz",
            &raw[..raw.len() - 2],
            &format!("{raw}00"),
            &wrong_version,
            &format!("x{}", &raw[1..]),
        ] {
            assert_eq!(decode(bad, query()), Err(CursorError::Malformed), "{bad:?}");
        }
        // Times beyond what chrono, RFC 3339 or PostgreSQL represent.
        for micros in [
            i64::MAX,
            i64::MIN,
            -62_135_596_800_000_001,
            253_402_300_800_000_000,
        ] {
            let mut far = vec![VERSION];
            far.extend_from_slice(&micros.to_be_bytes());
            far.extend_from_slice(&[0; 16]);
            far.extend_from_slice(&query().0);
            assert_eq!(
                decode(&hex::encode(far), query()),
                Err(CursorError::Malformed),
                "{micros}"
            );
        }
    }
}
