//! Names for a stream of bytes from one file, and byte ranges inside it.
//!
//! A source is named by its content, not by its path or inode: a CRC-64 of the first complete line
//! (and that line's length), scoped by the edge box. The tailer still tracks open files by
//! (device, inode); the content name is what the ingest ledger deduplicates on, so that a
//! `copytruncate` copy that matches the glob, a renamed file, or a re-ship after the shipper lost its
//! state all map to the same source and the same byte offsets, and every line is loaded once.

use std::fmt;

use crc::{Crc, CRC_64_ECMA_182};

const CRC64: Crc<u64> = Crc::<u64>::new(&CRC_64_ECMA_182);

/// Content fingerprint of a file: CRC-64/ECMA-182 over its first line and that line's length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Fingerprint {
    pub crc: u64,
    /// Bytes fingerprinted (the first line including its `\n`, or a capped prefix).
    pub len: u64,
}

impl Fingerprint {
    /// Fingerprints the first line of `head` (bytes from offset 0 of the file).
    ///
    /// Returns `None` while the first line is incomplete and shorter than `max_prefix`: such a file
    /// cannot be named yet. A first line longer than `max_prefix` is named by its first
    /// `max_prefix` bytes, which never change once written.
    pub fn of_head(head: &[u8], max_prefix: usize) -> Option<Self> {
        let window = &head[..head.len().min(max_prefix)];
        let len = match window.iter().position(|&b| b == b'\n') {
            Some(nl) => nl + 1,
            None if window.len() >= max_prefix => max_prefix,
            None => return None,
        };
        Some(Self {
            crc: CRC64.checksum(&head[..len]),
            len: len as u64,
        })
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}-{}", self.crc, self.len)
    }
}

/// The ledger's name for a source: `<box_id>/<crc64 hex>-<first line length>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SourceKey(String);

impl SourceKey {
    pub fn new(box_id: &str, fingerprint: Fingerprint) -> Self {
        Self(format!("{box_id}/{fingerprint}"))
    }

    /// Wraps a key received on the wire. Only length and control characters are checked: the key
    /// is an opaque name for the ledger.
    pub fn parse(raw: &str) -> Option<Self> {
        if raw.is_empty() || raw.len() > 512 || raw.chars().any(char::is_control) {
            return None;
        }
        Some(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SourceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A half-open byte range `[start, end)` of a source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ByteRange {
    pub start: u64,
    pub end: u64,
}

impl ByteRange {
    pub fn new(start: u64, end: u64) -> Option<Self> {
        (start <= end).then_some(Self { start, end })
    }

    pub fn len(&self) -> u64 {
        self.end - self.start
    }

    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }

    pub fn contains_range(&self, other: &ByteRange) -> bool {
        self.start <= other.start && other.end <= self.end
    }

    pub fn overlaps(&self, other: &ByteRange) -> bool {
        self.start < other.end && other.start < self.end
    }
}

impl fmt::Display for ByteRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{},{})", self.start, self.end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_waits_for_a_complete_first_line() {
        assert_eq!(Fingerprint::of_head(b"{\"ts\":", 1024), None);
        assert_eq!(Fingerprint::of_head(b"", 1024), None);
        let fp = Fingerprint::of_head(b"abc\ndef", 1024).unwrap();
        assert_eq!(fp.len, 4);
        assert_eq!(fp, Fingerprint::of_head(b"abc\nxyz\n", 1024).unwrap());
        assert_ne!(fp, Fingerprint::of_head(b"abd\n", 1024).unwrap());
    }

    #[test]
    fn fingerprint_of_an_overlong_first_line_uses_the_capped_prefix() {
        let head = vec![b'x'; 100];
        let fp = Fingerprint::of_head(&head, 10).unwrap();
        assert_eq!(fp.len, 10);
        assert_eq!(fp, Fingerprint::of_head(&head[..10], 10).unwrap());
    }

    #[test]
    fn source_key_is_box_scoped() {
        let fp = Fingerprint::of_head(b"a\n", 16).unwrap();
        let a = SourceKey::new("box1", fp);
        let b = SourceKey::new("box2", fp);
        assert_ne!(a, b);
        assert!(a.as_str().starts_with("box1/"));
        assert_eq!(SourceKey::parse(a.as_str()), Some(a));
        assert_eq!(SourceKey::parse("bad\nkey"), None);
        assert_eq!(SourceKey::parse(""), None);
    }

    #[test]
    fn byte_range_relations() {
        let r = ByteRange::new(10, 20).unwrap();
        assert!(ByteRange::new(5, 4).is_none());
        assert!(r.overlaps(&ByteRange::new(19, 30).unwrap()));
        assert!(!r.overlaps(&ByteRange::new(20, 30).unwrap()));
        assert!(r.contains_range(&ByteRange::new(10, 20).unwrap()));
        assert!(!r.contains_range(&ByteRange::new(9, 20).unwrap()));
        assert_eq!(r.len(), 10);
    }
}
