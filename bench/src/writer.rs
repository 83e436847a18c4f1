//! Appending lines to many files at a steady total rate, remembering for every line its byte
//! range and write time, and later when it was first seen committed.

use std::fs::File;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use rand::rngs::StdRng;
use rand::SeedableRng;

use crate::generate::{live_line, LiveSeries};

/// How often the writer wakes up to append the lines due.
const TICK: Duration = Duration::from_millis(10);

/// Microseconds since the epoch, now.
pub fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

/// One written line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WrittenLine {
    /// Byte offset just past its `\n`; it starts where the previous line ends.
    pub end: u64,
    pub written_us: i64,
    /// When a ledger poll first saw it committed; 0 while not seen.
    pub visible_us: i64,
}

/// The lines of one file, in write order.
#[derive(Debug, Default)]
pub struct FileLog {
    pub lines: Vec<WrittenLine>,
    /// Every line below this index is visible.
    pub visible_prefix: usize,
}

impl FileLog {
    /// Marks every not yet visible line that lies inside `[start, end)` as visible at `at_us`;
    /// returns how many were newly marked.
    pub fn mark(&mut self, start: u64, end: u64, at_us: i64) -> u64 {
        let first = self.lines.partition_point(|l| l.end <= start);
        let mut marked = 0;
        for i in first.max(self.visible_prefix)..self.lines.len() {
            let line_start = if i == 0 { 0 } else { self.lines[i - 1].end };
            let line = &mut self.lines[i];
            if line.end > end {
                break;
            }
            if line_start >= start && line.visible_us == 0 {
                line.visible_us = at_us;
                marked += 1;
            }
        }
        while self
            .lines
            .get(self.visible_prefix)
            .is_some_and(|l| l.visible_us != 0)
        {
            self.visible_prefix += 1;
        }
        marked
    }

    /// Write time of the oldest line not yet visible.
    pub fn oldest_invisible_us(&self) -> Option<i64> {
        self.lines.get(self.visible_prefix).map(|l| l.written_us)
    }
}

/// The logs of all files, shared by the writer and the ledger poller.
#[derive(Debug)]
pub struct LineLogs(Vec<Mutex<FileLog>>);

impl LineLogs {
    pub fn new(files: usize) -> Arc<Self> {
        Arc::new(Self((0..files).map(|_| Mutex::default()).collect()))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn file(&self, i: usize) -> MutexGuard<'_, FileLog> {
        self.0[i]
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// True when every line written before `t_us` has been seen committed.
    pub fn visible_before(&self, t_us: i64) -> bool {
        (0..self.len()).all(|i| self.file(i).oldest_invisible_us().is_none_or(|w| w >= t_us))
    }

    /// True when the first line of every file has been seen committed (its shipper is
    /// publishing); false while a file has no line yet.
    pub fn every_file_has_a_visible_line(&self) -> bool {
        (0..self.len()).all(|i| self.file(i).visible_prefix > 0)
    }

    /// Every line of every file, copied out.
    pub fn all_lines(&self) -> Vec<WrittenLine> {
        (0..self.len())
            .flat_map(|i| self.file(i).lines.clone())
            .collect()
    }
}

/// A file the writer appends to.
#[derive(Debug, Clone)]
pub struct LiveFile {
    pub path: PathBuf,
    pub series: LiveSeries,
}

/// What the writer did.
#[derive(Debug, Clone, Copy, Default)]
pub struct WriterSummary {
    pub lines: u64,
    pub bytes: u64,
    pub elapsed: Duration,
    /// Longest gap between two wake-ups (the writer starved for CPU when ≫ 10 ms).
    pub max_gap: Duration,
}

/// A thread appending lines at a steady rate until stopped.
/// Dropping it stops the thread.
pub struct RateWriter {
    stop: Arc<AtomicBool>,
    written: Arc<AtomicU64>,
    handle: Option<std::thread::JoinHandle<anyhow::Result<WriterSummary>>>,
}

impl RateWriter {
    /// Starts appending `per_sec` lines per second spread evenly over `files` (each file's lines
    /// every `files / per_sec` seconds, files out of phase), logging every line in `logs`
    /// (index = position in `files`).
    pub fn start(
        files: Vec<LiveFile>,
        per_sec: f64,
        logs: Arc<LineLogs>,
        seed: u64,
    ) -> anyhow::Result<Self> {
        let mut handles = Vec::with_capacity(files.len());
        for f in &files {
            handles.push(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&f.path)
                    .with_context(|| format!("open {}", f.path.display()))?,
            );
        }
        let stop = Arc::new(AtomicBool::new(false));
        let written = Arc::new(AtomicU64::new(0));
        let (stop_flag, counter) = (stop.clone(), written.clone());
        let handle = std::thread::Builder::new()
            .name("rate-writer".to_owned())
            .spawn(move || write_loop(&files, handles, per_sec, &logs, seed, &stop_flag, &counter))
            .context("spawn the writer thread")?;
        Ok(Self {
            stop,
            written,
            handle: Some(handle),
        })
    }

    /// Lines written so far.
    pub fn written(&self) -> u64 {
        self.written.load(Ordering::Relaxed)
    }

    /// Stops after the current tick and returns what was written.
    pub async fn stop(mut self) -> anyhow::Result<WriterSummary> {
        self.stop.store(true, Ordering::SeqCst);
        let handle = self.handle.take().context("writer already stopped")?;
        tokio::task::spawn_blocking(move || handle.join())
            .await?
            .map_err(|_| anyhow::anyhow!("the writer thread panicked"))?
    }
}

impl Drop for RateWriter {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn write_loop(
    files: &[LiveFile],
    mut handles: Vec<File>,
    per_sec: f64,
    logs: &LineLogs,
    seed: u64,
    stop: &AtomicBool,
    written: &AtomicU64,
) -> anyhow::Result<WriterSummary> {
    let n = files.len().max(1) as f64;
    let per_file = per_sec / n;
    let mut rng = StdRng::seed_from_u64(seed);
    let mut done = vec![0u64; files.len()];
    let mut offsets = vec![0u64; files.len()];
    let mut last_ts = vec![0i64; files.len()];
    let mut buf = Vec::with_capacity(64 * 1024);
    let mut summary = WriterSummary::default();
    let started = Instant::now();
    let mut last_wake = started;
    while !stop.load(Ordering::SeqCst) {
        let now = Instant::now();
        summary.max_gap = summary.max_gap.max(now - last_wake);
        last_wake = now;
        let elapsed = now.duration_since(started).as_secs_f64();
        for (i, file) in files.iter().enumerate() {
            let due = (elapsed * per_file + i as f64 / n).floor() as u64;
            if due <= done[i] {
                continue;
            }
            buf.clear();
            let mut log = logs.file(i);
            for seq in done[i]..due {
                // Strictly increasing within a file, so every line's ts is unique.
                let ts = now_us().max(last_ts[i] + 1);
                last_ts[i] = ts;
                let before = buf.len();
                live_line(&mut buf, &file.series, seq, ts, &mut rng);
                offsets[i] += (buf.len() - before) as u64;
                log.lines.push(WrittenLine {
                    end: offsets[i],
                    written_us: ts,
                    visible_us: 0,
                });
            }
            drop(log);
            handles[i]
                .write_all(&buf)
                .with_context(|| format!("append to {}", file.path.display()))?;
            summary.lines += due - done[i];
            summary.bytes += buf.len() as u64;
            written.fetch_add(due - done[i], Ordering::Relaxed);
            done[i] = due;
        }
        let next = last_wake + TICK;
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    summary.elapsed = started.elapsed();
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log_of(ends: &[u64]) -> FileLog {
        FileLog {
            lines: ends
                .iter()
                .map(|&end| WrittenLine {
                    end,
                    written_us: end as i64,
                    visible_us: 0,
                })
                .collect(),
            visible_prefix: 0,
        }
    }

    #[test]
    fn marking_covers_whole_lines_only_and_moves_the_prefix() {
        let mut log = log_of(&[10, 20, 30, 40]);
        // [20, 40) covers lines 3 and 4; line 1 and 2 stay invisible.
        assert_eq!(log.mark(20, 40, 500), 2);
        assert_eq!(log.visible_prefix, 0);
        assert_eq!(log.oldest_invisible_us(), Some(10));
        // A range ending inside a line does not cover it.
        assert_eq!(log.mark(0, 15, 600), 1);
        assert_eq!(log.visible_prefix, 1);
        assert_eq!(log.mark(10, 20, 700), 1);
        assert_eq!(log.visible_prefix, 4);
        assert_eq!(log.oldest_invisible_us(), None);
        // Seen again (ledger compaction merges ranges): nothing changes.
        assert_eq!(log.mark(0, 40, 900), 0);
        let visible: Vec<i64> = log.lines.iter().map(|l| l.visible_us).collect();
        assert_eq!(visible, [600, 700, 500, 500]);
    }

    #[tokio::test]
    async fn the_writer_holds_its_rate_and_logs_every_line() {
        let dir = tempfile::tempdir().unwrap();
        let files: Vec<LiveFile> = (0..4)
            .map(|i| LiveFile {
                path: dir.path().join(format!("f{i}.jsonl")),
                series: LiveSeries {
                    box_id: "box01".to_owned(),
                    file: i,
                    resource: format!("SMT{:02}", i + 1),
                    sensors: 5,
                },
            })
            .collect();
        let logs = LineLogs::new(files.len());
        let writer = RateWriter::start(files.clone(), 2_000.0, logs.clone(), 1).unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
        let summary = writer.stop().await.unwrap();
        let expected = summary.elapsed.as_secs_f64() * 2_000.0;
        assert!(
            (summary.lines as f64 - expected).abs() < 100.0,
            "{summary:?}"
        );
        assert_eq!(logs.all_lines().len() as u64, summary.lines);
        let mut bytes = 0;
        for (i, f) in files.iter().enumerate() {
            let content = std::fs::read(&f.path).unwrap();
            bytes += content.len() as u64;
            assert_eq!(
                logs.file(i).lines.last().map(|l| l.end),
                Some(content.len() as u64)
            );
        }
        assert_eq!(bytes, summary.bytes);
        assert!(!logs.visible_before(now_us()));
        assert!(!logs.every_file_has_a_visible_line());
        for i in 0..files.len() {
            let first = logs.file(i).lines[0].end;
            logs.file(i).mark(0, first, now_us());
        }
        assert!(logs.every_file_has_a_visible_line());
    }
}
