//! Which offset each source may be checkpointed at: the end of the contiguous prefix of
//! acknowledged messages.
//!
//! Messages are pipelined and retried independently, so their acks complete out of order. A
//! source's offset only moves over a range once every byte below it is acknowledged; acked ranges
//! beyond a gap wait in a map until the gap is filled. Overlapping ranges (two open files with the
//! same content name) merge naturally.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use chrono::{DateTime, Utc};
use protocol::{ByteRange, SourceKey};
use tracing::{info, warn};

use crate::checkpoint::{CheckpointFile, SourceEntry, CHECKPOINT_VERSION};
use crate::tailer::FileOrigin;

#[derive(Debug, Clone)]
struct Progress {
    /// Every byte below is acknowledged.
    offset: u64,
    /// Acknowledged ranges above a gap: start → end.
    ahead: BTreeMap<u64, u64>,
    path: String,
    dev: u64,
    inode: u64,
    updated_at: DateTime<Utc>,
    live: bool,
}

#[derive(Debug, Default)]
pub struct AckedOffsets {
    sources: HashMap<SourceKey, Progress>,
    dirty: bool,
    /// Expiry only starts once the tailer has said which sources are live.
    live_known: bool,
}

impl AckedOffsets {
    /// Starts from a loaded checkpoint; entries whose key is not valid are dropped.
    pub fn from_checkpoint(file: Option<CheckpointFile>, box_id: &str) -> Self {
        let mut offsets = Self::default();
        let Some(file) = file else {
            return offsets;
        };
        if file.box_id != box_id {
            warn!(saved = %file.box_id, configured = %box_id,
                "checkpoint was written under another box id; its sources will not match");
        }
        for entry in file.sources {
            let Some(source) = SourceKey::parse(&entry.source) else {
                warn!(source = %entry.source, "dropping checkpoint entry with an invalid source");
                continue;
            };
            offsets.sources.insert(
                source,
                Progress {
                    offset: entry.offset,
                    ahead: BTreeMap::new(),
                    path: entry.path,
                    dev: entry.dev,
                    inode: entry.inode,
                    updated_at: entry.updated_at,
                    live: false,
                },
            );
        }
        info!(sources = offsets.sources.len(), "checkpoint loaded");
        offsets
    }

    /// Where the tailer resumes each source.
    pub fn resume_offsets(&self) -> HashMap<SourceKey, u64> {
        self.sources
            .iter()
            .map(|(k, p)| (k.clone(), p.offset))
            .collect()
    }

    pub fn offset(&self, source: &SourceKey) -> Option<u64> {
        self.sources.get(source).map(|p| p.offset)
    }

    /// A file is now read as `source` from `offset`. A source seen for the first time counts
    /// everything below `offset` as done; a known one keeps its own offset.
    pub fn begin(
        &mut self,
        source: SourceKey,
        origin: &FileOrigin,
        offset: u64,
        now: DateTime<Utc>,
    ) {
        let path = origin.path.to_string_lossy().into_owned();
        let progress = self.sources.entry(source).or_insert_with(|| Progress {
            offset,
            ahead: BTreeMap::new(),
            path: String::new(),
            dev: 0,
            inode: 0,
            updated_at: now,
            live: true,
        });
        progress.path = path;
        progress.dev = origin.dev;
        progress.inode = origin.inode;
        progress.updated_at = now;
        progress.live = true;
        self.dirty = true;
    }

    /// Records an acknowledged range; returns whether the source's offset moved.
    pub fn ack(&mut self, source: &SourceKey, range: ByteRange, now: DateTime<Utc>) -> bool {
        let progress = self
            .sources
            .entry(source.clone())
            .or_insert_with(|| Progress {
                offset: 0,
                ahead: BTreeMap::new(),
                path: String::new(),
                dev: 0,
                inode: 0,
                updated_at: now,
                live: true,
            });
        if range.end <= progress.offset {
            return false;
        }
        let end = progress.ahead.entry(range.start).or_insert(range.end);
        *end = (*end).max(range.end);
        let before = progress.offset;
        while let Some(entry) = progress.ahead.first_entry() {
            if *entry.key() > progress.offset {
                break;
            }
            progress.offset = progress.offset.max(entry.remove());
        }
        let moved = progress.offset != before;
        if moved {
            progress.updated_at = now;
            self.dirty = true;
        }
        moved
    }

    /// The sources that have an open file now (sorted); the others may expire.
    pub fn set_live(&mut self, live: &[SourceKey], now: DateTime<Utc>) {
        for (key, progress) in &mut self.sources {
            progress.live = live.binary_search(key).is_ok();
            if progress.live {
                progress.updated_at = now;
            }
        }
        self.live_known = true;
    }

    /// Drops entries of sources without an open file that were last seen more than `ttl` ago.
    pub fn expire(&mut self, now: DateTime<Utc>, ttl: Duration) -> usize {
        if !self.live_known {
            return 0;
        }
        let ttl = chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::MAX);
        let before = self.sources.len();
        self.sources.retain(|source, p| {
            let keep = p.live || now.signed_duration_since(p.updated_at) <= ttl;
            if !keep {
                info!(%source, path = %p.path, offset = p.offset, "checkpoint entry expired");
            }
            keep
        });
        let expired = before - self.sources.len();
        self.dirty |= expired > 0;
        expired
    }

    pub fn is_dirty(&self) -> bool {
        self.dirty
    }

    /// A snapshot could not be written: write again next time.
    pub fn mark_dirty(&mut self) {
        self.dirty = true;
    }

    /// The checkpoint to write; marks the state clean.
    pub fn snapshot(&mut self, box_id: &str) -> CheckpointFile {
        self.dirty = false;
        let mut sources: Vec<SourceEntry> = self
            .sources
            .iter()
            .map(|(source, p)| SourceEntry {
                source: source.as_str().to_owned(),
                path: p.path.clone(),
                dev: p.dev,
                inode: p.inode,
                offset: p.offset,
                updated_at: p.updated_at,
            })
            .collect();
        sources.sort_by(|a, b| a.source.cmp(&b.source));
        CheckpointFile {
            version: CHECKPOINT_VERSION,
            box_id: box_id.to_owned(),
            sources,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::Fingerprint;

    fn key(n: u64) -> SourceKey {
        SourceKey::new("box", Fingerprint { crc: n, len: 10 })
    }

    fn origin() -> FileOrigin {
        FileOrigin {
            path: "/d/a.jsonl".into(),
            dev: 1,
            inode: 2,
        }
    }

    fn r(start: u64, end: u64) -> ByteRange {
        ByteRange { start, end }
    }

    #[test]
    fn out_of_order_acks_move_the_offset_only_over_contiguous_ranges() {
        let now = Utc::now();
        let mut acked = AckedOffsets::default();
        acked.begin(key(1), &origin(), 0, now);
        assert!(!acked.ack(&key(1), r(100, 200), now));
        assert!(!acked.ack(&key(1), r(300, 400), now));
        assert_eq!(acked.offset(&key(1)), Some(0));
        assert!(acked.ack(&key(1), r(0, 100), now));
        assert_eq!(acked.offset(&key(1)), Some(200));
        assert!(acked.ack(&key(1), r(200, 300), now));
        assert_eq!(acked.offset(&key(1)), Some(400));
        // A repeated ack changes nothing.
        assert!(!acked.ack(&key(1), r(0, 100), now));
        assert_eq!(acked.offset(&key(1)), Some(400));
    }

    #[test]
    fn overlapping_ranges_merge() {
        let now = Utc::now();
        let mut acked = AckedOffsets::default();
        acked.begin(key(1), &origin(), 1000, now);
        acked.ack(&key(1), r(1500, 2500), now);
        acked.ack(&key(1), r(2000, 2200), now);
        acked.ack(&key(1), r(1000, 1600), now);
        assert_eq!(acked.offset(&key(1)), Some(2500));
    }

    #[test]
    fn a_resumed_source_keeps_its_offset_when_a_second_file_begins() {
        let now = Utc::now();
        let mut acked = AckedOffsets::default();
        acked.begin(key(1), &origin(), 0, now);
        acked.ack(&key(1), r(0, 100), now);
        acked.begin(key(1), &origin(), 500, now);
        assert_eq!(acked.offset(&key(1)), Some(100));
    }

    #[test]
    fn snapshot_round_trips_through_the_checkpoint_and_clears_dirty() {
        let now: DateTime<Utc> = "2025-01-01T00:00:00Z".parse().unwrap();
        let mut acked = AckedOffsets::default();
        assert!(!acked.is_dirty());
        acked.begin(key(2), &origin(), 0, now);
        acked.ack(&key(2), r(0, 42), now);
        assert!(acked.is_dirty());
        let file = acked.snapshot("box");
        assert!(!acked.is_dirty());
        assert_eq!(file.sources.len(), 1);
        assert_eq!(file.sources[0].offset, 42);
        assert_eq!(file.sources[0].inode, 2);
        let back = AckedOffsets::from_checkpoint(Some(file), "box");
        assert_eq!(back.resume_offsets(), HashMap::from([(key(2), 42)]));
    }

    #[test]
    fn entries_of_gone_sources_expire_after_the_ttl() {
        let t0: DateTime<Utc> = "2025-01-01T00:00:00Z".parse().unwrap();
        let ttl = Duration::from_secs(7 * 24 * 3600);
        let mut acked = AckedOffsets::default();
        acked.begin(key(1), &origin(), 0, t0);
        acked.begin(key(2), &origin(), 0, t0);
        let later = t0 + chrono::Duration::days(8);
        // Nothing expires before the tailer has reported what is live.
        assert_eq!(acked.expire(later, ttl), 0);
        acked.set_live(&[key(2)], later);
        assert_eq!(acked.expire(later, ttl), 1);
        assert_eq!(acked.offset(&key(1)), None);
        assert_eq!(acked.offset(&key(2)), Some(0));
        assert!(acked.is_dirty());
    }
}
