//! JSONL generators for end-to-end tests, with exact expected results.
//!
//! What a line becomes is never guessed: [`classify`] runs the protocol crate's own validator
//! ([`protocol::decode_line`] with default limits) on exactly what the worker will see, the line
//! without its `\n` or `\r\n`. So an [`Expected`] says precisely how many rows land in `readings`,
//! per series, and how many rows land in `rejected_readings`, per reason.
//!
//! Generated files are made for a tailer that names a source by its first line: the first line of
//! every file is a valid reading unique to that box and file, and every file ends with `\n`.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use chrono::{DateTime, TimeZone, Utc};
use protocol::{decode_line, Limits, RejectReason};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

mod catalogue;
mod readings;
mod writer;

pub use catalogue::{
    blank_lines, malformed_cases, malformed_lines, unusual_valid_lines, MalformedCase,
};
pub use readings::{
    sample_like, valid_line, LineFields, ReadingGen, Sensor, LINE_STEP, SEED_LINE, SENSORS,
};
pub use writer::append_lines_at_rate;

/// Exact results the pipeline must produce for some input.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Expected {
    /// Lines that must become rows in `readings`.
    pub valid: u64,
    /// `(resource_id, sensor)` -> valid lines of that series.
    pub per_series: BTreeMap<(String, String), u64>,
    /// Malformed lines by the reason the validator gives.
    pub rejected: BTreeMap<RejectReason, u64>,
    /// Blank lines (nothing or only ASCII white space besides the line ending): skipped, neither
    /// row nor rejection.
    pub blank: u64,
}

impl Expected {
    pub fn merge(&mut self, other: &Expected) {
        self.valid += other.valid;
        self.blank += other.blank;
        for (series, n) in &other.per_series {
            *self.per_series.entry(series.clone()).or_default() += n;
        }
        for (reason, n) in &other.rejected {
            *self.rejected.entry(*reason).or_default() += n;
        }
    }

    pub fn rejected_total(&self) -> u64 {
        self.rejected.values().sum()
    }

    /// All lines: valid, rejected and blank.
    pub fn lines(&self) -> u64 {
        self.valid + self.rejected_total() + self.blank
    }

    fn add_valid(&mut self, series: (String, String)) {
        self.valid += 1;
        *self.per_series.entry(series).or_default() += 1;
    }

    /// Counts one line (content without its `\n`; a trailing `\r` is stripped like the worker does).
    pub fn record(&mut self, line: &[u8]) -> LineOutcome {
        let outcome = classify(line);
        match &outcome {
            LineOutcome::Valid {
                resource_id,
                sensor,
            } => self.add_valid((resource_id.clone(), sensor.clone())),
            LineOutcome::Rejected(reason) => *self.rejected.entry(*reason).or_default() += 1,
            LineOutcome::Blank => self.blank += 1,
        }
        outcome
    }

    /// Expected results of file content: every complete (`\n`-terminated) line; a trailing
    /// fragment without `\n` is not counted, as a tailer would not ship it yet.
    pub fn of_bytes(content: &[u8]) -> Expected {
        let mut expected = Expected::default();
        let complete = match content.iter().rposition(|&b| b == b'\n') {
            Some(last) => &content[..last],
            None => return expected,
        };
        for line in complete.split(|&b| b == b'\n') {
            expected.record(line);
        }
        expected
    }

    /// [`Expected::of_bytes`] of a file.
    pub fn of_file(path: &Path) -> anyhow::Result<Expected> {
        let content = std::fs::read(path).with_context(|| format!("read {}", path.display()))?;
        Ok(Self::of_bytes(&content))
    }
}

/// What the pipeline does with one line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LineOutcome {
    Valid { resource_id: String, sensor: String },
    Rejected(RejectReason),
    Blank,
}

/// Classifies a line (without its `\n`) as the worker does: one trailing `\r` is stripped, a line
/// of ASCII white space only (or nothing) is blank, anything else goes through
/// [`protocol::decode_line`] with default limits.
pub fn classify(line: &[u8]) -> LineOutcome {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.iter().all(u8::is_ascii_whitespace) {
        return LineOutcome::Blank;
    }
    match decode_line(line, &Limits::default()) {
        Ok(r) => LineOutcome::Valid {
            resource_id: r.resource_id.into_owned(),
            sensor: r.sensor.into_owned(),
        },
        Err(rejection) => LineOutcome::Rejected(rejection.reason),
    }
}

/// What [`generate`] writes.
#[derive(Debug, Clone)]
pub struct GenSpec {
    /// Edge boxes, each a directory `box01`, `box02`, ...
    pub boxes: usize,
    pub files_per_box: usize,
    /// Lines over all files (valid, malformed and blank), split as evenly as possible.
    pub lines: u64,
    /// Fraction of lines that are malformed (e.g. 0.01). A further quarter of that fraction are
    /// blank lines and another half are unusual but valid lines (CRLF, offsets, unknown fields).
    pub malformed_ratio: f64,
    /// Resources `SMT01`, `SMT02`, ...
    pub resources: usize,
    /// Sensors from [`SENSORS`] (then `sensor_N`).
    pub sensors: usize,
    pub seed: u64,
    /// Timestamp of each box's first line; each box's lines are [`LINE_STEP`] apart.
    pub start_ts: DateTime<Utc>,
}

impl Default for GenSpec {
    fn default() -> Self {
        Self {
            boxes: 2,
            files_per_box: 2,
            lines: 10_000,
            malformed_ratio: 0.01,
            resources: 3,
            sensors: 4,
            seed: 42,
            start_ts: Utc
                .with_ymd_and_hms(2025, 8, 22, 0, 0, 0)
                .single()
                .unwrap_or_default(),
        }
    }
}

/// A random element; one longer than 4 KiB (a 60-66 KB line) is picked again once, so such lines
/// stay rare: a handful in a million generated lines, none in most small runs.
fn pick<'a, T>(rng: &mut StdRng, items: &'a [T], len: impl Fn(&T) -> usize) -> &'a T {
    let first = &items[rng.random_range(0..items.len())];
    if len(first) > 4096 {
        &items[rng.random_range(0..items.len())]
    } else {
        first
    }
}

/// The files of one edge box.
#[derive(Debug, Clone)]
pub struct BoxFiles {
    /// `box01`, `box02`, ...
    pub box_id: String,
    /// `<dir>/<box_id>`.
    pub dir: PathBuf,
    /// `<dir>/<box_id>/readings-001.jsonl`, ... in the order they were written.
    pub files: Vec<PathBuf>,
    /// Expected results of this box's files.
    pub expected: Expected,
}

/// Writes `<dir>/<box>/<file>.jsonl` files; returns per-box file lists and the exact Expected of
/// all of them. Deterministic for a given spec.
pub fn generate(dir: &Path, spec: &GenSpec) -> anyhow::Result<(Vec<BoxFiles>, Expected)> {
    anyhow::ensure!(
        spec.boxes > 0 && spec.files_per_box > 0,
        "boxes and files_per_box must be > 0"
    );
    anyhow::ensure!(
        (0.0..=0.5).contains(&spec.malformed_ratio),
        "malformed_ratio must be in 0..=0.5"
    );
    let malformed = malformed_lines();
    let unusual = unusual_valid_lines();
    let blank = blank_lines();
    let n_files = (spec.boxes * spec.files_per_box) as u64;
    let mut total = Expected::default();
    let mut boxes = Vec::with_capacity(spec.boxes);
    let mut file_index = 0u64;
    for b in 0..spec.boxes {
        let box_id = format!("box{:02}", b + 1);
        let box_dir = dir.join(&box_id);
        std::fs::create_dir_all(&box_dir)
            .with_context(|| format!("create {}", box_dir.display()))?;
        let mut readings = ReadingGen::new(
            spec.seed.wrapping_add(b as u64),
            spec.start_ts,
            spec.resources,
            spec.sensors,
        )
        .with_box(&box_id);
        let mut rng = StdRng::seed_from_u64(spec.seed ^ 0x5eed_0000 ^ b as u64);
        let mut box_files = BoxFiles {
            box_id,
            dir: box_dir.clone(),
            files: Vec::with_capacity(spec.files_per_box),
            expected: Expected::default(),
        };
        for f in 0..spec.files_per_box {
            let lines = spec.lines / n_files + u64::from(file_index < spec.lines % n_files);
            file_index += 1;
            let path = box_dir.join(format!("readings-{:03}.jsonl", f + 1));
            let mut out = std::io::BufWriter::new(
                std::fs::File::create(&path)
                    .with_context(|| format!("create {}", path.display()))?,
            );
            let ratio = spec.malformed_ratio;
            for i in 0..lines {
                let roll: f64 = rng.random();
                let line: Vec<u8> = if i == 0 || roll >= ratio * 1.75 {
                    // Regular lines are valid by construction (unit-tested); counting their series
                    // directly saves decoding a million lines in an unoptimised test build.
                    let series = readings.next_series();
                    box_files.expected.add_valid(series);
                    let line = readings.next_line();
                    out.write_all(line.as_bytes())?;
                    out.write_all(b"\n")?;
                    continue;
                } else if roll < ratio {
                    pick(&mut rng, &malformed, |(line, _)| line.len()).0.clone()
                } else if roll < ratio * 1.25 {
                    blank[rng.random_range(0..blank.len())].as_bytes().to_vec()
                } else if rng.random_ratio(1, 4) {
                    // A CRLF-terminated line of the regular series.
                    format!("{}\r", readings.next_line()).into_bytes()
                } else {
                    pick(&mut rng, &unusual, String::len).clone().into_bytes()
                };
                debug_assert!(!line.contains(&b'\n'));
                box_files.expected.record(&line);
                out.write_all(&line)?;
                out.write_all(b"\n")?;
            }
            out.flush()?;
            box_files.files.push(path);
        }
        total.merge(&box_files.expected);
        boxes.push(box_files);
    }
    Ok((boxes, total))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    #[test]
    fn generate_writes_exactly_what_it_expects() {
        let dir = tempfile::tempdir().unwrap();
        let spec = GenSpec {
            boxes: 3,
            files_per_box: 2,
            lines: 20_003,
            malformed_ratio: 0.05,
            resources: 2,
            sensors: 3,
            seed: 11,
            ..GenSpec::default()
        };
        let (boxes, expected) = generate(dir.path(), &spec).unwrap();
        assert_eq!(boxes.len(), 3);
        assert_eq!(expected.lines(), spec.lines);
        let mut recomputed = Expected::default();
        let mut first_lines = BTreeSet::new();
        for b in &boxes {
            assert_eq!(b.dir, dir.path().join(&b.box_id));
            assert_eq!(b.files.len(), 2);
            let mut of_box = Expected::default();
            for f in &b.files {
                let content = std::fs::read(f).unwrap();
                assert_eq!(content.last(), Some(&b'\n'));
                let first = content.split(|&c| c == b'\n').next().unwrap();
                assert!(matches!(classify(first), LineOutcome::Valid { .. }));
                assert!(first_lines.insert(first.to_vec()), "first lines are unique");
                of_box.merge(&Expected::of_file(f).unwrap());
            }
            assert_eq!(of_box, b.expected);
            recomputed.merge(&of_box);
        }
        assert_eq!(recomputed, expected);
        // About 5 % malformed, 1.25 % blank; many kinds of rejection.
        let rejected = expected.rejected_total();
        assert!((700..1_300).contains(&rejected), "{rejected}");
        assert!((100..400).contains(&expected.blank), "{}", expected.blank);
        assert!(expected.rejected.len() >= 10, "{:?}", expected.rejected);
        assert_eq!(expected.valid, expected.per_series.values().sum::<u64>());
        assert!(expected
            .per_series
            .contains_key(&("SMT02".to_owned(), "speed".to_owned())));

        let again = tempfile::tempdir().unwrap();
        let (boxes_again, expected_again) = generate(again.path(), &spec).unwrap();
        assert_eq!(expected_again, expected);
        for (a, b) in boxes.iter().zip(&boxes_again) {
            for (fa, fb) in a.files.iter().zip(&b.files) {
                assert_eq!(std::fs::read(fa).unwrap(), std::fs::read(fb).unwrap());
            }
        }
    }

    #[test]
    fn generate_without_malformed_lines_is_all_valid() {
        let dir = tempfile::tempdir().unwrap();
        let spec = GenSpec {
            boxes: 1,
            files_per_box: 3,
            lines: 100,
            malformed_ratio: 0.0,
            ..GenSpec::default()
        };
        let (boxes, expected) = generate(dir.path(), &spec).unwrap();
        assert_eq!(expected.valid, 100);
        assert_eq!((expected.rejected_total(), expected.blank), (0, 0));
        let per_file: Vec<u64> = boxes[0]
            .files
            .iter()
            .map(|f| Expected::of_file(f).unwrap().lines())
            .collect();
        assert_eq!(per_file, [34, 33, 33]);
    }

    #[test]
    fn expected_ignores_a_trailing_partial_line_and_merges() {
        let content = format!("{SEED_LINE}\n\n{{\"x\":\r\n{SEED_LINE}");
        let e = Expected::of_bytes(content.as_bytes());
        assert_eq!((e.valid, e.blank, e.rejected_total()), (1, 1, 1));
        assert_eq!(e.rejected.get(&RejectReason::TruncatedJson), Some(&1));
        let mut total = e.clone();
        total.merge(&e);
        assert_eq!(total.valid, 2);
        assert_eq!(
            total
                .per_series
                .get(&("SMT01".to_owned(), "temp".to_owned())),
            Some(&2)
        );
        assert_eq!(total.lines(), 6);
        assert_eq!(Expected::of_bytes(b"no newline yet"), Expected::default());
    }
}
