//! Realistic JSONL readings: the backfill's files (testkit's [`ReadingGen`]: seed field order,
//! work orders, operations, units, `meta`) and live lines that carry their write time in `ts`.

use std::fmt::Write as _;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;
use chrono::{DateTime, SecondsFormat, Utc};
use rand::rngs::StdRng;
use rand::Rng;
use testkit::data::{ReadingGen, LINE_STEP, SENSORS};

/// What to generate for the backfill.
#[derive(Debug, Clone)]
pub struct BackfillSpec {
    pub boxes: u32,
    pub files_per_box: u32,
    pub lines: u64,
    pub resources: u32,
    pub sensors: u32,
    pub seed: u64,
    /// When the newest line of each box is stamped; boxes start [`LINE_STEP`] `× lines per box`
    /// earlier, so the data covers the hours before (the worker's daily partitions).
    pub end: DateTime<Utc>,
}

/// The files of one edge box.
#[derive(Debug, Clone)]
pub struct BoxFiles {
    pub box_id: String,
    pub dir: PathBuf,
    pub files: Vec<PathBuf>,
    pub lines: u64,
    pub bytes: u64,
}

/// Everything generated.
#[derive(Debug, Clone)]
pub struct Generated {
    pub boxes: Vec<BoxFiles>,
    pub lines: u64,
    pub bytes: u64,
    pub first_ts: DateTime<Utc>,
}

/// `n` split into `parts` shares differing by at most one.
pub fn share(n: u64, parts: u64, index: u64) -> u64 {
    n / parts + u64::from(index < n % parts)
}

/// Writes `<dir>/boxNN/readings-NNN.jsonl`: every line a valid reading (by construction, as
/// testkit's unit tests check), each box its own series clock offset by a fraction of
/// [`LINE_STEP`] so that no two boxes stamp the same series at the same instant.
pub fn backfill_files(dir: &Path, spec: &BackfillSpec) -> anyhow::Result<Generated> {
    let boxes = u64::from(spec.boxes.max(1));
    let files = u64::from(spec.files_per_box.max(1));
    let per_box_max = share(spec.lines, boxes, 0);
    let span = LINE_STEP * u32::try_from(per_box_max).unwrap_or(u32::MAX);
    let first_ts = spec.end - chrono::Duration::from_std(span).unwrap_or_default();
    let mut out = Generated {
        boxes: Vec::new(),
        lines: 0,
        bytes: 0,
        first_ts,
    };
    for b in 0..boxes {
        let box_id = format!("box{:02}", b + 1);
        let box_dir = dir.join(&box_id);
        std::fs::create_dir_all(&box_dir)
            .with_context(|| format!("create {}", box_dir.display()))?;
        let offset = LINE_STEP * u32::try_from(b).unwrap_or(0) / u32::try_from(boxes).unwrap_or(1);
        let start = first_ts + chrono::Duration::from_std(offset).unwrap_or_default();
        let mut gen = ReadingGen::new(
            spec.seed.wrapping_add(b),
            start,
            spec.resources as usize,
            spec.sensors as usize,
        )
        .with_box(&box_id)
        .with_site(crate::stack::SITE);
        let box_lines = share(spec.lines, boxes, b);
        let mut bf = BoxFiles {
            box_id,
            dir: box_dir.clone(),
            files: Vec::new(),
            lines: 0,
            bytes: 0,
        };
        for f in 0..files {
            let path = box_dir.join(format!("readings-{:03}.jsonl", f + 1));
            let mut w = std::io::BufWriter::with_capacity(
                1 << 20,
                std::fs::File::create(&path)
                    .with_context(|| format!("create {}", path.display()))?,
            );
            for _ in 0..share(box_lines, files, f) {
                let line = gen.next_line();
                w.write_all(line.as_bytes())?;
                w.write_all(b"\n")?;
                bf.lines += 1;
                bf.bytes += line.len() as u64 + 1;
            }
            w.flush()?;
            bf.files.push(path);
        }
        out.lines += bf.lines;
        out.bytes += bf.bytes;
        out.boxes.push(bf);
    }
    Ok(out)
}

/// About `n` lines taken evenly from the first lines of every generated file.
pub fn sample_lines(generated: &Generated, n: u64) -> anyhow::Result<Vec<String>> {
    let files: Vec<&PathBuf> = generated.boxes.iter().flat_map(|b| &b.files).collect();
    let mut lines = Vec::with_capacity(usize::try_from(n).unwrap_or(0));
    for (i, path) in files.iter().enumerate() {
        let take = share(n, files.len() as u64, i as u64);
        let reader = std::io::BufReader::new(
            std::fs::File::open(path).with_context(|| format!("open {}", path.display()))?,
        );
        for line in reader.lines().take(usize::try_from(take).unwrap_or(0)) {
            lines.push(line?);
        }
    }
    Ok(lines)
}

/// The series a live file writes: one resource, its sensors in turn.
#[derive(Debug, Clone)]
pub struct LiveSeries {
    pub box_id: String,
    /// File number over all boxes, from 0; also `meta.file`.
    pub file: usize,
    pub resource: String,
    pub sensors: usize,
}

/// Appends one live line (with `\n`) to `out`: `ts` is `ts_us` (the write time, microseconds
/// since the epoch) in RFC 3339; the other fields look like the seed's.
pub fn live_line(out: &mut Vec<u8>, series: &LiveSeries, seq: u64, ts_us: i64, rng: &mut StdRng) {
    let sensor = SENSORS[(seq as usize) % series.sensors.clamp(1, SENSORS.len())];
    let raw = sensor.min + (sensor.max - sensor.min) * rng.random::<f64>();
    let scale = 10f64.powi(sensor.decimals);
    let value = (raw * scale).round() / scale;
    let ts = DateTime::from_timestamp_micros(ts_us)
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::Micros, true);
    let mut s = String::with_capacity(240);
    let _ = write!(
        s,
        r#"{{"ts":"{ts}","resource_id":"{}","work_order_id":"WO{}","operation_id":"OP{}","sensor":"{}","value":{value},"unit":"{}","meta":{{"site":"{}","line":"L1","box":"{}","file":{}}}}}"#,
        series.resource,
        1000 + seq / 2000,
        10 * (1 + (seq / 500) % 4),
        sensor.name,
        sensor.unit,
        crate::stack::SITE,
        series.box_id,
        series.file,
    );
    out.extend_from_slice(s.as_bytes());
    out.push(b'\n');
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use rand::SeedableRng;
    use testkit::data::{classify, Expected, LineOutcome};

    use super::*;

    #[test]
    fn backfill_files_hold_exactly_the_requested_valid_lines() {
        let dir = tempfile::tempdir().unwrap();
        let spec = BackfillSpec {
            boxes: 3,
            files_per_box: 2,
            lines: 3_001,
            resources: 4,
            sensors: 5,
            seed: 1,
            end: Utc::now(),
        };
        let g = backfill_files(dir.path(), &spec).unwrap();
        assert_eq!(g.lines, 3_001);
        let mut first_lines = BTreeSet::new();
        let mut total = Expected::default();
        let mut bytes = 0;
        for b in &g.boxes {
            for f in &b.files {
                let content = std::fs::read(f).unwrap();
                bytes += content.len() as u64;
                first_lines.insert(content.split(|&c| c == b'\n').next().unwrap().to_vec());
                total.merge(&Expected::of_bytes(&content));
            }
        }
        assert_eq!(total.valid, 3_001);
        assert_eq!(total.lines(), 3_001);
        assert_eq!(bytes, g.bytes);
        assert_eq!(first_lines.len(), 6, "every file starts with its own line");
        assert_eq!(total.per_series.len(), 20);
        assert!(g.first_ts < spec.end - chrono::Duration::seconds(40));
        let sample = sample_lines(&g, 100).unwrap();
        assert_eq!(sample.len(), 100);
    }

    #[test]
    fn live_lines_are_valid_and_carry_their_write_time() {
        let series = LiveSeries {
            box_id: "box02".to_owned(),
            file: 7,
            resource: "SMT08".to_owned(),
            sensors: 5,
        };
        let mut rng = StdRng::seed_from_u64(3);
        let mut out = Vec::new();
        let ts = 1_760_000_000_123_456;
        for seq in 0..10 {
            live_line(&mut out, &series, seq, ts + seq as i64, &mut rng);
        }
        let lines: Vec<&[u8]> = out
            .split(|&c| c == b'\n')
            .filter(|l| !l.is_empty())
            .collect();
        assert_eq!(lines.len(), 10);
        for (seq, line) in lines.iter().enumerate() {
            assert!(
                matches!(classify(line), LineOutcome::Valid { .. }),
                "{}",
                String::from_utf8_lossy(line)
            );
            let r = protocol::decode_line(line, &protocol::Limits::default()).unwrap();
            assert_eq!(r.ts_micros, ts + seq as i64);
            assert_eq!(r.resource_id, "SMT08");
        }
    }
}
