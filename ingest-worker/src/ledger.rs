//! The ingest ledger: which byte ranges of which source are already in `readings`.
//!
//! Planning is pure: given the ranges the ledger already holds, decide for every line of a batch
//! whether it is new, and which ranges to record. A line is loaded only if no byte of it is
//! covered, and the batch's own messages count as covered as they are planned, so a batch that
//! holds the same range twice (a shipper re-publish with other boundaries) loads it once. The
//! database enforces the same rule with an exclusion constraint, which is what makes concurrent
//! workers safe: the loser of a race fails its insert and retries against the winner's rows.

use std::collections::HashMap;

use protocol::ByteRange;

use crate::decode::{DecodedMessage, LineOutcome};

/// A range to insert into `ingest_ledger`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerEntry {
    pub source: String,
    pub range: ByteRange,
    pub site: String,
    pub box_id: String,
    pub path: String,
    pub lines: i64,
    pub rows: i64,
    pub rejected: i64,
    /// Earliest and latest `ts` (µs since the Unix epoch) of the rows this entry loads, `None`
    /// when it loads none: `ingest_ledger.min_ts`/`max_ts`, which tell the archiver which days
    /// an entry touched.
    pub ts_span: Option<(i64, i64)>,
}

#[derive(Debug, Default)]
pub struct Plan {
    /// Per message, per line: load (or reject) it now.
    pub is_new: Vec<Vec<bool>>,
    pub entries: Vec<LedgerEntry>,
    /// Lines skipped because the ledger already covers them (redelivery, re-ship).
    pub skipped_lines: u64,
    /// Lines only partly covered: a source whose bytes changed under the same name. Skipped.
    pub partial_overlaps: u64,
}

/// Per source, the smallest range spanning all its messages in the batch: what to ask the
/// ledger about.
pub fn probe_ranges(messages: &[DecodedMessage]) -> Vec<(String, ByteRange)> {
    let mut spans: HashMap<&str, ByteRange> = HashMap::new();
    for m in messages {
        spans
            .entry(m.meta.source.as_str())
            .and_modify(|r| {
                r.start = r.start.min(m.meta.range.start);
                r.end = r.end.max(m.meta.range.end);
            })
            .or_insert(m.meta.range);
    }
    let mut out: Vec<_> = spans.into_iter().map(|(s, r)| (s.to_owned(), r)).collect();
    out.sort();
    out
}

/// Decides what to load. `covered` holds the ledger's ranges (any order, duplicates allowed).
pub fn plan(messages: &[DecodedMessage], covered: Vec<(String, ByteRange)>) -> Plan {
    let mut known: HashMap<String, Vec<ByteRange>> = HashMap::new();
    for (source, range) in covered {
        known.entry(source).or_default().push(range);
    }
    let mut plan = Plan::default();
    for m in messages {
        let ranges = known.entry(m.meta.source.as_str().to_owned()).or_default();
        let mut flags = Vec::with_capacity(m.lines.len());
        let mut run: Option<LedgerEntry> = None;
        let mut runs = Vec::new();
        for line in &m.lines {
            let overlapping: Vec<&ByteRange> =
                ranges.iter().filter(|r| r.overlaps(&line.range)).collect();
            let new = overlapping.is_empty();
            if !new {
                plan.skipped_lines += 1;
                if !overlapping.iter().any(|r| r.contains_range(&line.range)) {
                    plan.partial_overlaps += 1;
                }
            }
            flags.push(new);
            if new {
                let entry = run.get_or_insert_with(|| LedgerEntry {
                    source: m.meta.source.as_str().to_owned(),
                    range: ByteRange {
                        start: line.range.start,
                        end: line.range.start,
                    },
                    site: m.meta.site.clone(),
                    box_id: m.meta.box_id.clone(),
                    path: m.meta.path.clone(),
                    lines: 0,
                    rows: 0,
                    rejected: 0,
                    ts_span: None,
                });
                entry.range.end = line.range.end;
                entry.lines += 1;
                match &line.outcome {
                    LineOutcome::Row(span) => {
                        entry.rows += 1;
                        if let Some(ts) = row_ts_micros(&m.rows, span.start) {
                            entry.ts_span = widen(entry.ts_span, ts, ts);
                        }
                    }
                    LineOutcome::Reject(_) => entry.rejected += 1,
                    LineOutcome::Blank => {}
                }
            } else if let Some(done) = run.take() {
                runs.push(done);
            }
        }
        runs.extend(run);
        ranges.extend(runs.iter().map(|e| e.range));
        plan.entries.extend(runs);
        plan.is_new.push(flags);
    }
    plan.entries = merge_adjacent(std::mem::take(&mut plan.entries));
    plan
}

/// Joins entries of one source that touch end to start, so a batch of consecutive messages
/// records one ledger row per source.
fn merge_adjacent(mut entries: Vec<LedgerEntry>) -> Vec<LedgerEntry> {
    entries.sort_by(|a, b| (&a.source, a.range.start).cmp(&(&b.source, b.range.start)));
    let mut out: Vec<LedgerEntry> = Vec::with_capacity(entries.len());
    for e in entries {
        match out.last_mut() {
            Some(prev) if prev.source == e.source && prev.range.end == e.range.start => {
                prev.range.end = e.range.end;
                prev.lines += e.lines;
                prev.rows += e.rows;
                prev.rejected += e.rejected;
                if let Some((lo, hi)) = e.ts_span {
                    prev.ts_span = widen(prev.ts_span, lo, hi);
                }
                prev.path = e.path;
                prev.site = e.site;
                prev.box_id = e.box_id;
            }
            _ => out.push(e),
        }
    }
    out
}

fn widen(span: Option<(i64, i64)>, lo: i64, hi: i64) -> Option<(i64, i64)> {
    Some(match span {
        Some((a, b)) => (a.min(lo), b.max(hi)),
        None => (lo, hi),
    })
}

/// The `ts` of the binary COPY row at `start` of a message's row buffer, read back from the
/// encoding (field count i16, length i32 = 8, then the timestamp as i64 µs since 2000-01-01) so
/// that the ledger's time span costs no extra pass over the lines.
fn row_ts_micros(rows: &[u8], start: usize) -> Option<i64> {
    let field = rows.get(start + 6..start + 14)?;
    let pg_micros = i64::from_be_bytes(field.try_into().ok()?);
    pg_micros.checked_add(PG_EPOCH_OFFSET_MICROS)
}

/// PostgreSQL timestamps count microseconds from 2000-01-01T00:00:00Z (as in copy_format).
const PG_EPOCH_OFFSET_MICROS: i64 = 946_684_800_000_000;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::decode_message;
    use protocol::framing::count_lines;
    use protocol::{BatchKind, BatchMeta, Fingerprint, Limits, SourceKey};

    const LINE: &str =
        "{\"ts\":\"2025-08-22T00:00:00Z\",\"resource_id\":\"R\",\"sensor\":\"s\",\"value\":1}\n";

    fn msg(source: u64, start_line: u64, n: u64) -> DecodedMessage {
        let payload = LINE.repeat(n as usize);
        let len = LINE.len() as u64;
        let meta = BatchMeta {
            site: "S".into(),
            box_id: "b".into(),
            source: SourceKey::new(
                "b",
                Fingerprint {
                    crc: source,
                    len: 1,
                },
            ),
            path: "/p".into(),
            range: ByteRange::new(start_line * len, (start_line + n) * len).unwrap(),
            lines: count_lines(payload.as_bytes()),
            kind: BatchKind::Lines,
        };
        decode_message(meta, payload.as_bytes(), &Limits::default())
    }

    fn line_range(a: u64, b: u64) -> ByteRange {
        let len = LINE.len() as u64;
        ByteRange::new(a * len, b * len).unwrap()
    }

    fn key(source: u64) -> String {
        SourceKey::new(
            "b",
            Fingerprint {
                crc: source,
                len: 1,
            },
        )
        .as_str()
        .to_owned()
    }

    #[test]
    fn fresh_consecutive_messages_make_one_entry_per_source() {
        let msgs = vec![msg(1, 0, 3), msg(2, 0, 2), msg(1, 3, 4)];
        let p = plan(&msgs, vec![]);
        assert!(p.is_new.iter().flatten().all(|&n| n));
        assert_eq!(p.entries.len(), 2);
        let e1 = p.entries.iter().find(|e| e.source == key(1)).unwrap();
        assert_eq!(e1.range, line_range(0, 7));
        assert_eq!((e1.lines, e1.rows, e1.rejected), (7, 7, 0));
        // 2025-08-22T00:00:00Z, the ts of every test line.
        assert_eq!(
            e1.ts_span,
            Some((1_755_820_800_000_000, 1_755_820_800_000_000))
        );
        assert_eq!(p.skipped_lines, 0);
    }

    #[test]
    fn covered_lines_are_skipped_and_gaps_loaded() {
        let msgs = vec![msg(1, 0, 10)];
        let p = plan(
            &msgs,
            vec![(key(1), line_range(2, 4)), (key(1), line_range(6, 7))],
        );
        let flags: Vec<bool> = p.is_new[0].clone();
        assert_eq!(
            flags,
            vec![true, true, false, false, true, true, false, true, true, true]
        );
        let ranges: Vec<_> = p.entries.iter().map(|e| e.range).collect();
        assert_eq!(
            ranges,
            vec![line_range(0, 2), line_range(4, 6), line_range(7, 10)]
        );
        assert_eq!(p.skipped_lines, 3);
        assert_eq!(p.partial_overlaps, 0);
    }

    #[test]
    fn the_same_range_twice_in_one_batch_loads_once() {
        // A re-publish with other boundaries: lines 0..6 then 3..9.
        let msgs = vec![msg(1, 0, 6), msg(1, 3, 6)];
        let p = plan(&msgs, vec![]);
        assert_eq!(p.is_new[0], vec![true; 6]);
        assert_eq!(p.is_new[1], vec![false, false, false, true, true, true]);
        assert_eq!(p.entries.len(), 1);
        assert_eq!(p.entries[0].range, line_range(0, 9));
        assert_eq!(p.entries[0].rows, 9);
    }

    #[test]
    fn a_partly_covered_line_is_skipped_and_counted() {
        let msgs = vec![msg(1, 0, 2)];
        let half = ByteRange::new(5, 10).unwrap();
        let p = plan(&msgs, vec![(key(1), half)]);
        assert_eq!(p.is_new[0], vec![false, true]);
        assert_eq!(p.partial_overlaps, 1);
    }

    #[test]
    fn probe_ranges_span_each_source() {
        let msgs = vec![msg(1, 5, 2), msg(2, 0, 1), msg(1, 0, 2)];
        let probes = probe_ranges(&msgs);
        assert_eq!(probes.len(), 2);
        let p1 = probes.iter().find(|(s, _)| *s == key(1)).unwrap();
        assert_eq!(p1.1, line_range(0, 7));
    }
}
