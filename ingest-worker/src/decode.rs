//! From a readings message to encoded COPY rows and rejections, with each line's byte range.
//!
//! CPU-only and synchronous: the consumer runs it on a blocking thread so that decoding the next
//! batch overlaps the COPY of the current one.

use std::ops::Range;

use protocol::framing::split_lines;
use protocol::{decode_line, BatchKind, BatchMeta, ByteRange, Limits, RejectReason};

use crate::copy_format::encode_row;

/// Bytes of a rejected line kept in `rejected_readings.line`.
pub const REJECTED_LINE_PREFIX_BYTES: usize = 4096;

#[derive(Debug, Clone, PartialEq)]
pub enum LineOutcome {
    /// Encoded row at this span of [`DecodedMessage::rows`].
    Row(Range<usize>),
    /// Boxed: rejections are rare, and a line's outcome is kept for every line of a batch.
    Reject(Box<RejectRecord>),
    /// Blank line: neither a row nor a rejection.
    Blank,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RejectRecord {
    pub reason: RejectReason,
    pub detail: String,
    /// The line's first bytes as text (invalid UTF-8 and NUL replaced).
    pub line: String,
    pub line_bytes: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DecodedLine {
    pub range: ByteRange,
    pub outcome: LineOutcome,
}

/// One message, decoded. `rows` holds the binary COPY rows of its valid lines, in line order.
#[derive(Debug)]
pub struct DecodedMessage {
    pub meta: BatchMeta,
    pub rows: Vec<u8>,
    pub lines: Vec<DecodedLine>,
}

impl DecodedMessage {
    pub fn row_count(&self) -> usize {
        self.lines
            .iter()
            .filter(|l| matches!(l.outcome, LineOutcome::Row(_)))
            .count()
    }
}

/// Decodes a message whose payload already passed [`BatchMeta::check_payload`].
pub fn decode_message(meta: BatchMeta, payload: &[u8], limits: &Limits) -> DecodedMessage {
    let site = sanitize_text(&meta.site);
    let mut rows = Vec::with_capacity(payload.len());
    let mut lines = Vec::with_capacity(meta.lines as usize);
    match meta.kind {
        BatchKind::Oversize => lines.push(DecodedLine {
            range: meta.range,
            outcome: LineOutcome::Reject(Box::new(RejectRecord {
                reason: RejectReason::LineTooLong,
                detail: format!(
                    "line is {} bytes, longer than the shipper's limit",
                    meta.range.len().saturating_sub(1)
                ),
                line: lossy_prefix(payload),
                // The range includes the newline; lengths elsewhere do not.
                line_bytes: meta.range.len().saturating_sub(1),
            })),
        }),
        BatchKind::Lines => {
            for line in split_lines(payload, meta.range.start) {
                let outcome = if line.content.iter().all(u8::is_ascii_whitespace) {
                    LineOutcome::Blank
                } else {
                    match decode_line(line.content, limits) {
                        Ok(reading) => {
                            let start = rows.len();
                            encode_row(&mut rows, &site, &reading);
                            LineOutcome::Row(start..rows.len())
                        }
                        Err(rejection) => LineOutcome::Reject(Box::new(RejectRecord {
                            reason: rejection.reason,
                            detail: rejection.detail,
                            line: lossy_prefix(line.content),
                            line_bytes: line.content.len() as u64,
                        })),
                    }
                };
                lines.push(DecodedLine {
                    range: line.range,
                    outcome,
                });
            }
        }
    }
    DecodedMessage { meta, rows, lines }
}

/// First [`REJECTED_LINE_PREFIX_BYTES`] of a line as storable text.
pub fn lossy_prefix(bytes: &[u8]) -> String {
    let cut = &bytes[..bytes.len().min(REJECTED_LINE_PREFIX_BYTES)];
    sanitize_text(&String::from_utf8_lossy(cut))
}

/// PostgreSQL text cannot hold NUL; header values are otherwise stored as given.
pub fn sanitize_text(s: &str) -> String {
    if s.contains('\0') {
        s.replace('\0', "\u{FFFD}")
    } else {
        s.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::framing::count_lines;
    use protocol::{Fingerprint, SourceKey};

    fn meta_for(payload: &[u8], start: u64, kind: BatchKind) -> BatchMeta {
        BatchMeta {
            site: "BKK".into(),
            box_id: "b".into(),
            source: SourceKey::new("b", Fingerprint { crc: 1, len: 1 }),
            path: "/x.jsonl".into(),
            range: ByteRange::new(start, start + payload.len() as u64).unwrap(),
            lines: count_lines(payload),
            kind,
        }
    }

    #[test]
    fn mixed_payload_gives_rows_rejections_and_blanks_with_offsets() {
        let payload = b"{\"ts\":\"2025-08-22T00:00:00Z\",\"resource_id\":\"R\",\"sensor\":\"s\",\"value\":1}\r\n\n{\"ts\":\n\xff\xfe\n";
        let m = decode_message(
            meta_for(payload, 1000, BatchKind::Lines),
            payload,
            &Limits::default(),
        );
        assert_eq!(m.lines.len(), 4);
        assert_eq!(m.row_count(), 1);
        assert!(
            matches!(m.lines[0].outcome, LineOutcome::Row(ref r) if r.start == 0 && r.end == m.rows.len())
        );
        assert_eq!(m.lines[0].range.start, 1000);
        assert_eq!(m.lines[1].outcome, LineOutcome::Blank);
        let LineOutcome::Reject(ref r) = m.lines[2].outcome else {
            panic!("expected a rejection")
        };
        assert_eq!(r.reason, RejectReason::TruncatedJson);
        assert_eq!(r.line, "{\"ts\":");
        let LineOutcome::Reject(ref r) = m.lines[3].outcome else {
            panic!("expected a rejection")
        };
        assert_eq!(r.reason, RejectReason::InvalidUtf8);
        assert_eq!(r.line_bytes, 2);
        assert_eq!(m.lines[3].range.end, 1000 + payload.len() as u64);
    }

    #[test]
    fn oversize_message_is_one_rejection_covering_the_whole_line() {
        let prefix = vec![b'x'; 4096];
        let mut meta = meta_for(&prefix, 0, BatchKind::Oversize);
        meta.range = ByteRange::new(0, 10_000_001).unwrap();
        meta.lines = 1;
        let m = decode_message(meta, &prefix, &Limits::default());
        assert_eq!(m.lines.len(), 1);
        assert_eq!(m.lines[0].range, ByteRange::new(0, 10_000_001).unwrap());
        let LineOutcome::Reject(ref r) = m.lines[0].outcome else {
            panic!("expected a rejection")
        };
        assert_eq!(r.reason, RejectReason::LineTooLong);
        assert_eq!(r.line_bytes, 10_000_000);
        assert_eq!(r.line.len(), 4096);
    }

    #[test]
    fn nul_in_rejected_text_is_replaced() {
        assert_eq!(lossy_prefix(b"a\0b"), "a\u{FFFD}b");
    }
}
