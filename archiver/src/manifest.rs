//! The JSON manifest of one archive part (one UTC day, one part number): what its files hold and
//! how to check them, and which ingest positions (ledger ranges) its rows came from.
//!
//! A manifest holds no wall-clock time, only data-derived values: archiving the same rows again
//! writes the same manifest, byte for byte. Its SHA-256 is recorded in `archive_parts`.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use crate::merkle::{self, Hash};
use crate::parquet_file::RowGroupInfo;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// `edge-mes-archive/1`.
    pub format: String,
    pub day: NaiveDate,
    pub part: u32,
    pub rows: u64,
    /// Earliest and latest `ts` of the part's rows (absent when it has none).
    pub min_ts: Option<DateTime<Utc>>,
    pub max_ts: Option<DateTime<Utc>>,
    /// Hex SHA-256 of the canonical schema text (see [`crate::schema`]).
    pub schema_fingerprint: String,
    /// The canonical schema text, one line per element.
    pub schema: Vec<String>,
    /// RFC 6962 Merkle root over every row group of every file, files in this order.
    pub merkle_root: String,
    pub files: Vec<FileEntry>,
    /// Ledger ranges, merged per source, that touched the day in the snapshot the rows were
    /// read from: every row in the files was loaded by one of them, and every row they loaded
    /// for this day (and not in an earlier, sealed part) is in the files.
    pub ingest_positions: Vec<SourcePositions>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileEntry {
    /// Relative to the archive root.
    pub path: String,
    pub site: String,
    pub resource_id: String,
    pub sensor: String,
    pub rows: u64,
    pub bytes: u64,
    pub sha256: String,
    pub min_ts: DateTime<Utc>,
    pub max_ts: DateTime<Utc>,
    pub row_groups: Vec<RowGroupEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RowGroupEntry {
    pub offset: u64,
    pub length: u64,
    pub rows: u64,
    /// Hex RFC 6962 leaf hash of the row group's bytes.
    pub hash: String,
}

impl From<&RowGroupInfo> for RowGroupEntry {
    fn from(g: &RowGroupInfo) -> Self {
        Self {
            offset: g.offset,
            length: g.length,
            rows: g.rows,
            hash: hex::encode(g.hash),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourcePositions {
    pub source: String,
    /// `[start, end)` byte ranges, ascending, not touching each other.
    pub ranges: Vec<[u64; 2]>,
}

/// Merges ledger ranges per source into [`SourcePositions`], sources ascending.
pub fn merge_positions(
    ranges: impl IntoIterator<Item = (String, u64, u64)>,
) -> Vec<SourcePositions> {
    let mut by_source: BTreeMap<String, Vec<[u64; 2]>> = BTreeMap::new();
    for (source, lo, hi) in ranges {
        by_source.entry(source).or_default().push([lo, hi]);
    }
    by_source
        .into_iter()
        .map(|(source, mut ranges)| {
            ranges.sort_unstable();
            let mut merged: Vec<[u64; 2]> = Vec::with_capacity(ranges.len());
            for r in ranges {
                match merged.last_mut() {
                    Some(last) if r[0] <= last[1] => last[1] = last[1].max(r[1]),
                    _ => merged.push(r),
                }
            }
            SourcePositions {
                source,
                ranges: merged,
            }
        })
        .collect()
}

/// The Merkle root over `files`' row groups, in order, from their recorded leaf hashes; `None`
/// when a recorded hash is not 64 hex digits.
pub fn root_of(files: &[FileEntry]) -> Option<Hash> {
    let mut leaves = Vec::new();
    for f in files {
        for g in &f.row_groups {
            let mut h = [0u8; 32];
            hex::decode_to_slice(&g.hash, &mut h).ok()?;
            leaves.push(h);
        }
    }
    Some(merkle::root(&leaves))
}

impl Manifest {
    /// The manifest's bytes as stored: pretty JSON with a final newline.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = serde_json::to_vec_pretty(self).unwrap_or_default();
        out.push(b'\n');
        out
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_merge_per_source() {
        let p = merge_positions(vec![
            ("b".into(), 10, 20),
            ("a".into(), 5, 9),
            ("b".into(), 0, 10),
            ("b".into(), 30, 40),
            ("b".into(), 35, 38),
        ]);
        assert_eq!(
            p,
            vec![
                SourcePositions {
                    source: "a".into(),
                    ranges: vec![[5, 9]]
                },
                SourcePositions {
                    source: "b".into(),
                    ranges: vec![[0, 20], [30, 40]]
                },
            ]
        );
    }

    #[test]
    fn a_bad_leaf_hash_has_no_root() {
        let f = FileEntry {
            path: "p".into(),
            site: "s".into(),
            resource_id: "r".into(),
            sensor: "x".into(),
            rows: 1,
            bytes: 1,
            sha256: String::new(),
            min_ts: DateTime::UNIX_EPOCH,
            max_ts: DateTime::UNIX_EPOCH,
            row_groups: vec![RowGroupEntry {
                offset: 4,
                length: 1,
                rows: 1,
                hash: "zz".into(),
            }],
        };
        assert!(root_of(&[f]).is_none());
    }
}
