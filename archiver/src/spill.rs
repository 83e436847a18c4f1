//! Grouping a day's rows by series without asking PostgreSQL to sort the day.
//!
//! Sorting a whole day by series and time was most of the database's work (and of the archive's
//! time, BENCHMARKS.md). Instead the day is read in storage order and each row is appended to one
//! of a few spill files on local disk, chosen by a hash of its series (site, resource, sensor).
//! Then one bucket at a time is read back, grouped by series and sorted in memory. Memory is
//! bounded by the largest bucket, not by the day; the spill files live in a temporary directory
//! that is removed when the day is done (or failed).
//!
//! The order within a series is total (ts, then every other column, `None` first, value by its
//! IEEE total order), so the same rows always give the same sequence, whatever order the
//! database returned them in: identical files on every run.

use std::cmp::Ordering;
use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::Path;

use thiserror::Error;

use crate::layout::PartitionKey;
use crate::parquet_file::ArchiveRow;

#[derive(Debug, Error)]
pub enum SpillError {
    #[error("spill file {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("spill file {0} is damaged")]
    Damaged(String),
}

/// Rows of a day spread over buckets on disk.
pub struct Spill {
    dir: tempfile::TempDir,
    writers: Vec<BufWriter<File>>,
}

/// Rows per bucket aimed at: a bucket's rows are held in memory while its series are sorted.
const ROWS_PER_BUCKET: u64 = 250_000;
/// Most buckets (open files) for a day.
const MAX_BUCKETS: u64 = 256;

/// Buckets for a day of `rows` rows.
pub fn buckets_for(rows: u64) -> usize {
    usize::try_from(rows.div_ceil(ROWS_PER_BUCKET).clamp(1, MAX_BUCKETS)).unwrap_or(1)
}

/// FNV-1a 64 over the series' values (each followed by a 0xff byte, which UTF-8 never holds).
fn bucket_of(site: &str, resource_id: &str, sensor: &str, buckets: usize) -> usize {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in [site, resource_id, sensor] {
        for b in part.bytes().chain(std::iter::once(0xff)) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    (h % buckets as u64) as usize
}

impl Spill {
    /// `buckets` spill files in a new temporary directory under `parent`.
    pub fn new(parent: &Path, buckets: usize) -> Result<Self, SpillError> {
        let io = |source| SpillError::Io {
            path: parent.display().to_string(),
            source,
        };
        std::fs::create_dir_all(parent).map_err(io)?;
        let dir = tempfile::Builder::new()
            .prefix("edge-mes-archiver-")
            .tempdir_in(parent)
            .map_err(io)?;
        let mut writers = Vec::with_capacity(buckets);
        for i in 0..buckets.max(1) {
            let path = dir.path().join(format!("{i}.spill"));
            let f = File::create(&path).map_err(|source| SpillError::Io {
                path: path.display().to_string(),
                source,
            })?;
            writers.push(BufWriter::with_capacity(64 * 1024, f));
        }
        Ok(Self { dir, writers })
    }

    pub fn push(
        &mut self,
        site: &str,
        resource_id: &str,
        sensor: &str,
        row: &ArchiveRow,
    ) -> Result<(), SpillError> {
        let b = bucket_of(site, resource_id, sensor, self.writers.len());
        let mut buf = Vec::with_capacity(128);
        for s in [site, resource_id, sensor] {
            put_str(&mut buf, Some(s));
        }
        buf.extend_from_slice(&row.ts_micros.to_le_bytes());
        buf.extend_from_slice(&row.value.to_bits().to_le_bytes());
        for s in [&row.work_order_id, &row.operation_id, &row.unit, &row.meta] {
            put_str(&mut buf, s.as_deref());
        }
        let path = self.dir.path().join(format!("{b}.spill"));
        self.writers[b]
            .write_all(&buf)
            .map_err(|source| SpillError::Io {
                path: path.display().to_string(),
                source,
            })
    }

    /// Flushes the buckets; then [`Spill::bucket`] reads them back.
    pub fn finish(&mut self) -> Result<(), SpillError> {
        for (i, w) in self.writers.iter_mut().enumerate() {
            w.flush().map_err(|source| SpillError::Io {
                path: self
                    .dir
                    .path()
                    .join(format!("{i}.spill"))
                    .display()
                    .to_string(),
                source,
            })?;
        }
        Ok(())
    }

    pub fn buckets(&self) -> usize {
        self.writers.len()
    }

    /// The series of bucket `i`, each with its rows sorted (see the module docs), series in no
    /// particular order.
    pub fn bucket(&self, i: usize) -> Result<Vec<(PartitionKey, Vec<ArchiveRow>)>, SpillError> {
        let path = self.dir.path().join(format!("{i}.spill"));
        let name = path.display().to_string();
        let f = File::open(&path).map_err(|source| SpillError::Io {
            path: name.clone(),
            source,
        })?;
        let mut data = Vec::new();
        BufReader::new(f)
            .read_to_end(&mut data)
            .map_err(|source| SpillError::Io {
                path: name.clone(),
                source,
            })?;
        let mut series: HashMap<PartitionKey, Vec<ArchiveRow>> = HashMap::new();
        let mut r = Reader { data: &data, at: 0 };
        while r.at < data.len() {
            let damaged = || SpillError::Damaged(name.clone());
            let site = r.string().ok_or_else(damaged)?.ok_or_else(damaged)?;
            let resource_id = r.string().ok_or_else(damaged)?.ok_or_else(damaged)?;
            let sensor = r.string().ok_or_else(damaged)?.ok_or_else(damaged)?;
            let ts_micros = i64::from_le_bytes(r.bytes8().ok_or_else(damaged)?);
            let value = f64::from_bits(u64::from_le_bytes(r.bytes8().ok_or_else(damaged)?));
            let work_order_id = r.string().ok_or_else(damaged)?;
            let operation_id = r.string().ok_or_else(damaged)?;
            let unit = r.string().ok_or_else(damaged)?;
            let meta = r.string().ok_or_else(damaged)?;
            series
                .entry(PartitionKey {
                    site,
                    resource_id,
                    sensor,
                })
                .or_default()
                .push(ArchiveRow {
                    ts_micros,
                    work_order_id,
                    operation_id,
                    value,
                    unit,
                    meta,
                });
        }
        let mut out: Vec<(PartitionKey, Vec<ArchiveRow>)> = series.into_iter().collect();
        for (_, rows) in &mut out {
            rows.sort_unstable_by(row_order);
        }
        Ok(out)
    }
}

/// The archive's order of a series' rows: a total order in which only identical rows are equal.
pub fn row_order(a: &ArchiveRow, b: &ArchiveRow) -> Ordering {
    a.ts_micros
        .cmp(&b.ts_micros)
        .then_with(|| a.work_order_id.cmp(&b.work_order_id))
        .then_with(|| a.operation_id.cmp(&b.operation_id))
        .then_with(|| a.unit.cmp(&b.unit))
        .then_with(|| a.value.total_cmp(&b.value))
        .then_with(|| a.meta.cmp(&b.meta))
}

/// `0` for `None`, else `1`, length (u32 LE) and the bytes.
fn put_str(buf: &mut Vec<u8>, s: Option<&str>) {
    match s {
        None => buf.push(0),
        Some(s) => {
            buf.push(1);
            let len = u32::try_from(s.len()).unwrap_or(u32::MAX);
            buf.extend_from_slice(&len.to_le_bytes());
            buf.extend_from_slice(&s.as_bytes()[..len as usize]);
        }
    }
}

struct Reader<'a> {
    data: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        let end = self.at.checked_add(n)?;
        let out = self.data.get(self.at..end)?;
        self.at = end;
        Some(out)
    }

    fn bytes8(&mut self) -> Option<[u8; 8]> {
        self.take(8)?.try_into().ok()
    }

    /// `None`: damaged; `Some(None)`: a NULL.
    fn string(&mut self) -> Option<Option<String>> {
        match *self.take(1)?.first()? {
            0 => Some(None),
            1 => {
                let len = u32::from_le_bytes(self.take(4)?.try_into().ok()?) as usize;
                let bytes = self.take(len)?;
                Some(Some(String::from_utf8(bytes.to_vec()).ok()?))
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(ts: i64, value: f64, wo: Option<&str>) -> ArchiveRow {
        ArchiveRow {
            ts_micros: ts,
            work_order_id: wo.map(str::to_owned),
            operation_id: None,
            value,
            unit: Some("C".into()),
            meta: Some("{\"a\":1}".into()),
        }
    }

    #[test]
    fn rows_come_back_grouped_by_series_and_sorted() {
        let dir = tempfile::tempdir().unwrap();
        let mut spill = Spill::new(dir.path(), 3).unwrap();
        let input = [
            ("S", "R1", "t", row(5, 1.0, None)),
            ("S", "R2", "t", row(1, 2.0, None)),
            ("S", "R1", "t", row(1, 3.0, Some("W"))),
            ("S", "R1", "t", row(1, 3.0, None)),
            ("S", "R1", "t", row(1, -0.0, None)),
            ("S", "R1", "t", row(1, 0.0, None)),
        ];
        for (s, r, x, row) in &input {
            spill.push(s, r, x, row).unwrap();
        }
        spill.finish().unwrap();
        let mut all: Vec<(PartitionKey, Vec<ArchiveRow>)> = (0..spill.buckets())
            .flat_map(|b| spill.bucket(b).unwrap())
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].0.resource_id, "R1");
        let r1: Vec<(i64, f64, Option<String>)> = all[0]
            .1
            .iter()
            .map(|r| (r.ts_micros, r.value, r.work_order_id.clone()))
            .collect();
        assert_eq!(
            r1,
            vec![
                (1, -0.0, None),
                (1, 0.0, None),
                (1, 3.0, None),
                (1, 3.0, Some("W".into())),
                (5, 1.0, None)
            ]
        );
        assert!(r1[0].1.is_sign_negative());
        assert_eq!(all[1].1, vec![row(1, 2.0, None)]);
        let spill_dir = spill.dir.path().to_path_buf();
        drop(spill);
        assert!(!spill_dir.exists(), "the spill directory is removed");
    }

    #[test]
    fn bucket_counts_follow_the_day_size() {
        assert_eq!(buckets_for(0), 1);
        assert_eq!(buckets_for(250_000), 1);
        assert_eq!(buckets_for(2_000_000), 8);
        assert_eq!(buckets_for(10_000_000_000), 256);
        assert_eq!(bucket_of("S", "R", "t", 1), 0);
        assert_ne!(
            bucket_of("S", "R1", "t", 1 << 20),
            bucket_of("S", "R", "1t", 1 << 20)
        );
    }
}
