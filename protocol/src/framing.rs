//! How lines of one source travel in a JetStream message.
//!
//! A `lines` message's payload is the exact bytes `[start, end)` of the source: one or more
//! complete, `\n`-terminated lines, in order, blank lines and `\r` included. Nothing is re-encoded,
//! so the worker can recompute every line's byte offset, which is what the ingest ledger records.
//!
//! A line longer than the shipper's cap travels alone as an `oversize` message: the range covers
//! the whole line, the payload holds only its first bytes, so the line is rejected with a record of
//! it instead of being silently skipped or blowing the message size.
//!
//! Headers (all values ASCII, no control characters):
//!
//! | header | value |
//! |---|---|
//! | `Edge-Proto` | `1` |
//! | `Edge-Site`, `Edge-Box` | the shipper's identity |
//! | `Edge-Source` | [`SourceKey`] of the file's content |
//! | `Edge-Path` | path on the box, percent-escaped |
//! | `Edge-Start`, `Edge-End` | the byte range `[start, end)` |
//! | `Edge-Lines` | number of `\n`-terminated lines in the range |
//! | `Edge-Kind` | `lines` or `oversize` |
//! | `Nats-Msg-Id` | `<source>:<start>-<end>` |

use thiserror::Error;

use crate::source::{ByteRange, SourceKey};

pub const HDR_PROTO: &str = "Edge-Proto";
pub const HDR_SITE: &str = "Edge-Site";
pub const HDR_BOX: &str = "Edge-Box";
pub const HDR_SOURCE: &str = "Edge-Source";
pub const HDR_PATH: &str = "Edge-Path";
pub const HDR_START: &str = "Edge-Start";
pub const HDR_END: &str = "Edge-End";
pub const HDR_LINES: &str = "Edge-Lines";
pub const HDR_KIND: &str = "Edge-Kind";
/// Set on dead letters: why the worker gave up on the message.
pub const HDR_DLQ_REASON: &str = "Edge-Dlq-Reason";
pub const PROTO_VERSION: &str = "1";

/// Bytes of an oversize line that travel with its `oversize` message.
pub const OVERSIZE_PREFIX_BYTES: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchKind {
    Lines,
    Oversize,
}

impl BatchKind {
    pub fn as_str(self) -> &'static str {
        match self {
            BatchKind::Lines => "lines",
            BatchKind::Oversize => "oversize",
        }
    }
}

/// Everything the headers of a readings message say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchMeta {
    pub site: String,
    pub box_id: String,
    pub source: SourceKey,
    pub path: String,
    pub range: ByteRange,
    pub lines: u64,
    pub kind: BatchKind,
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum FramingError {
    #[error("header {0} is missing")]
    MissingHeader(&'static str),
    #[error("header {name} has an invalid value {value:?}")]
    InvalidHeader { name: &'static str, value: String },
    #[error("unsupported protocol version {0:?}")]
    UnsupportedVersion(String),
    #[error("payload is {actual} bytes but the range {range} is {expected}")]
    LengthMismatch {
        range: ByteRange,
        expected: u64,
        actual: u64,
    },
    #[error("payload does not end with a newline")]
    IncompleteLastLine,
    #[error("payload holds {actual} lines but the header says {expected}")]
    LineCountMismatch { expected: u64, actual: u64 },
    #[error("oversize message must cover exactly one line, got {0}")]
    OversizeLineCount(u64),
}

/// The JetStream deduplication id: the same range of the same source is the same message.
pub fn msg_id(source: &SourceKey, range: ByteRange) -> String {
    format!("{}:{}-{}", source.as_str(), range.start, range.end)
}

impl BatchMeta {
    /// The JetStream deduplication id: the same range of the same source is the same message.
    pub fn msg_id(&self) -> String {
        msg_id(&self.source, self.range)
    }

    /// Header name/value pairs to attach to the message (`Nats-Msg-Id` is set separately).
    pub fn headers(&self) -> [(&'static str, String); 9] {
        [
            (HDR_PROTO, PROTO_VERSION.to_owned()),
            (HDR_SITE, escape_header(&self.site)),
            (HDR_BOX, escape_header(&self.box_id)),
            (HDR_SOURCE, self.source.as_str().to_owned()),
            (HDR_PATH, escape_header(&self.path)),
            (HDR_START, self.range.start.to_string()),
            (HDR_END, self.range.end.to_string()),
            (HDR_LINES, self.lines.to_string()),
            (HDR_KIND, self.kind.as_str().to_owned()),
        ]
    }

    /// Reads the headers through `get`, which returns a header's value by name.
    pub fn from_headers<'h>(get: impl Fn(&str) -> Option<&'h str>) -> Result<Self, FramingError> {
        let need = |name: &'static str| get(name).ok_or(FramingError::MissingHeader(name));
        let invalid = |name: &'static str, value: &str| FramingError::InvalidHeader {
            name,
            value: value.chars().take(100).collect(),
        };
        let number = |name: &'static str| -> Result<u64, FramingError> {
            let raw = need(name)?;
            raw.trim().parse().map_err(|_| invalid(name, raw))
        };
        let proto = need(HDR_PROTO)?;
        if proto != PROTO_VERSION {
            return Err(FramingError::UnsupportedVersion(proto.to_owned()));
        }
        let source_raw = need(HDR_SOURCE)?;
        let source = SourceKey::parse(source_raw).ok_or_else(|| invalid(HDR_SOURCE, source_raw))?;
        let (start, end) = (number(HDR_START)?, number(HDR_END)?);
        let range = ByteRange::new(start, end).ok_or_else(|| invalid(HDR_END, &end.to_string()))?;
        let kind = match need(HDR_KIND)? {
            "lines" => BatchKind::Lines,
            "oversize" => BatchKind::Oversize,
            other => return Err(invalid(HDR_KIND, other)),
        };
        Ok(Self {
            site: unescape_header(need(HDR_SITE)?),
            box_id: unescape_header(need(HDR_BOX)?),
            source,
            path: unescape_header(get(HDR_PATH).unwrap_or("")),
            range,
            lines: number(HDR_LINES)?,
            kind,
        })
    }

    /// Checks the payload against the headers; after this, [`split_lines`] yields exactly
    /// `self.lines` lines whose offsets tile `self.range`.
    pub fn check_payload(&self, payload: &[u8]) -> Result<(), FramingError> {
        match self.kind {
            BatchKind::Oversize => {
                if self.lines != 1 {
                    return Err(FramingError::OversizeLineCount(self.lines));
                }
                if payload.len() as u64 > self.range.len() {
                    return Err(FramingError::LengthMismatch {
                        range: self.range,
                        expected: self.range.len(),
                        actual: payload.len() as u64,
                    });
                }
                Ok(())
            }
            BatchKind::Lines => {
                if payload.len() as u64 != self.range.len() {
                    return Err(FramingError::LengthMismatch {
                        range: self.range,
                        expected: self.range.len(),
                        actual: payload.len() as u64,
                    });
                }
                if payload.last().is_some_and(|&b| b != b'\n') {
                    return Err(FramingError::IncompleteLastLine);
                }
                let actual = count_lines(payload);
                if actual != self.lines {
                    return Err(FramingError::LineCountMismatch {
                        expected: self.lines,
                        actual,
                    });
                }
                Ok(())
            }
        }
    }
}

/// One line of a payload: its absolute byte range in the source, and its content without the
/// trailing `\n` or `\r\n`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LineRef<'a> {
    pub range: ByteRange,
    pub content: &'a [u8],
}

/// Number of `\n`-terminated lines in `bytes`.
pub fn count_lines(bytes: &[u8]) -> u64 {
    // memchr scans a word (or vector) at a time: this runs over every byte the worker receives.
    memchr::memchr_iter(b'\n', bytes).count() as u64
}

/// Splits a `lines` payload that starts at byte `start` of its source into lines. A trailing
/// fragment without `\n` is yielded too (callers that framed the payload never have one).
pub fn split_lines(payload: &[u8], start: u64) -> impl Iterator<Item = LineRef<'_>> {
    let mut rest = payload;
    let mut offset = start;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let len = memchr::memchr(b'\n', rest).map_or(rest.len(), |nl| nl + 1);
        let (line, tail) = rest.split_at(len);
        rest = tail;
        let range = ByteRange {
            start: offset,
            end: offset + len as u64,
        };
        offset = range.end;
        let content = line.strip_suffix(b"\n").unwrap_or(line);
        let content = content.strip_suffix(b"\r").unwrap_or(content);
        Some(LineRef { range, content })
    })
}

/// Header values must be printable ASCII: `%`, control and non-ASCII bytes are percent-escaped.
pub fn escape_header(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    for b in raw.bytes() {
        if b == b'%' || !(0x20..0x7f).contains(&b) {
            out.push_str(&format!("%{b:02X}"));
        } else {
            out.push(b as char);
        }
    }
    out
}

/// Reverses [`escape_header`]; malformed escapes are kept as they are.
pub fn unescape_header(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            if let Some(b) = value
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::Fingerprint;
    use proptest::prelude::*;
    use std::collections::HashMap;

    fn meta(range: ByteRange, lines: u64) -> BatchMeta {
        BatchMeta {
            site: "BKK".into(),
            box_id: "box 1".into(),
            source: SourceKey::new("box 1", Fingerprint { crc: 7, len: 3 }),
            path: "/data/ü%.jsonl".into(),
            range,
            lines,
            kind: BatchKind::Lines,
        }
    }

    #[test]
    fn headers_round_trip() {
        let m = meta(ByteRange::new(100, 250).unwrap(), 3);
        let map: HashMap<&str, String> = m.headers().into_iter().collect();
        assert!(map
            .values()
            .all(|v| v.bytes().all(|b| (0x20..0x7f).contains(&b))));
        let back = BatchMeta::from_headers(|k| map.get(k).map(String::as_str)).unwrap();
        assert_eq!(back, m);
        assert_eq!(m.msg_id(), "box 1/0000000000000007-3:100-250");
    }

    #[test]
    fn bad_headers_are_named() {
        let m = meta(ByteRange::new(0, 1).unwrap(), 1);
        let mut map: HashMap<&str, String> = m.headers().into_iter().collect();
        map.insert(HDR_START, "x".into());
        let err = BatchMeta::from_headers(|k| map.get(k).map(String::as_str)).unwrap_err();
        assert_eq!(
            err,
            FramingError::InvalidHeader {
                name: HDR_START,
                value: "x".into()
            }
        );
        map.remove(HDR_SOURCE);
        let err = BatchMeta::from_headers(|k| map.get(k).map(String::as_str)).unwrap_err();
        assert_eq!(err, FramingError::MissingHeader(HDR_SOURCE));
        let mut map: HashMap<&str, String> = m.headers().into_iter().collect();
        map.insert(HDR_PROTO, "9".into());
        assert!(matches!(
            BatchMeta::from_headers(|k| map.get(k).map(String::as_str)),
            Err(FramingError::UnsupportedVersion(_))
        ));
        let mut map: HashMap<&str, String> = m.headers().into_iter().collect();
        map.insert(HDR_START, "5".into());
        assert!(BatchMeta::from_headers(|k| map.get(k).map(String::as_str)).is_err());
    }

    #[test]
    fn payload_checks() {
        let payload = b"a\n\r\nbc\n";
        let m = meta(ByteRange::new(10, 17).unwrap(), 3);
        assert_eq!(m.check_payload(payload), Ok(()));
        assert!(matches!(
            meta(ByteRange::new(10, 18).unwrap(), 3).check_payload(payload),
            Err(FramingError::LengthMismatch { .. })
        ));
        assert_eq!(
            meta(ByteRange::new(10, 17).unwrap(), 2).check_payload(payload),
            Err(FramingError::LineCountMismatch {
                expected: 2,
                actual: 3
            })
        );
        assert_eq!(
            meta(ByteRange::new(0, 2).unwrap(), 0).check_payload(b"ab"),
            Err(FramingError::IncompleteLastLine)
        );
        let mut over = meta(ByteRange::new(0, 1_000_000).unwrap(), 1);
        over.kind = BatchKind::Oversize;
        assert_eq!(over.check_payload(&[b'x'; 4096]), Ok(()));
        over.lines = 2;
        assert_eq!(
            over.check_payload(b"x"),
            Err(FramingError::OversizeLineCount(2))
        );
    }

    #[test]
    fn split_lines_strips_crlf_and_keeps_offsets() {
        let lines: Vec<_> = split_lines(b"ab\r\n\ncd\n", 100).collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0].content, b"ab");
        assert_eq!(lines[0].range, ByteRange::new(100, 104).unwrap());
        assert_eq!(lines[1].content, b"");
        assert_eq!(lines[1].range, ByteRange::new(104, 105).unwrap());
        assert_eq!(lines[2].content, b"cd");
        assert_eq!(lines[2].range, ByteRange::new(105, 108).unwrap());
    }

    #[test]
    fn header_escaping_round_trips() {
        for s in ["plain", "a%b", "tab\there", "ünï", "new\nline", "%zz"] {
            let e = escape_header(s);
            assert!(e.bytes().all(|b| (0x20..0x7f).contains(&b)), "{e}");
            assert_eq!(unescape_header(&e), s);
        }
    }

    proptest! {
        /// Any sequence of lines, cut into messages at line boundaries, reassembles into the same
        /// lines with the same offsets.
        #[test]
        fn any_split_into_messages_reassembles_to_the_same_lines(
            lines in prop::collection::vec("[^\n]{0,30}", 0..60),
            cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..10),
        ) {
            let file: Vec<u8> = lines.iter().flat_map(|l| {
                let mut v = l.as_bytes().to_vec();
                v.push(b'\n');
                v
            }).collect();
            // Line end offsets are the only legal cut points.
            let ends: Vec<usize> = file.iter().enumerate()
                .filter(|(_, b)| **b == b'\n').map(|(i, _)| i + 1).collect();
            let mut points: Vec<usize> = cuts.iter()
                .filter(|_| !ends.is_empty())
                .map(|ix| ends[ix.index(ends.len())]).collect();
            points.push(0);
            points.push(file.len());
            points.sort_unstable();
            points.dedup();

            let mut reassembled = Vec::new();
            for w in points.windows(2) {
                let (start, end) = (w[0], w[1]);
                let payload = &file[start..end];
                let m = BatchMeta {
                    lines: count_lines(payload),
                    ..meta(ByteRange::new(start as u64, end as u64).unwrap(), 0)
                };
                prop_assert_eq!(m.check_payload(payload), Ok(()));
                let got: Vec<_> = split_lines(payload, start as u64).collect();
                prop_assert_eq!(got.len() as u64, m.lines);
                for l in got {
                    prop_assert_eq!(
                        &file[l.range.start as usize..l.range.start as usize + l.content.len()],
                        l.content
                    );
                    reassembled.push((l.range, String::from_utf8(l.content.to_vec()).unwrap()));
                }
            }
            let expected: Vec<_> = split_lines(&file, 0)
                .map(|l| (l.range, String::from_utf8(l.content.to_vec()).unwrap())).collect();
            prop_assert_eq!(reassembled.len(), lines.len());
            prop_assert_eq!(reassembled, expected);
        }
    }
}
