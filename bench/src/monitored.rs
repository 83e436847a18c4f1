//! A child process whose CPU time and peak memory are measured to the end.
//!
//! A thread samples `/proc/<pid>/status` (`VmHWM`) while the child runs and watches its state.
//! The child is not reaped until it shows up as a zombie: a zombie's `/proc/<pid>/stat` still
//! holds the CPU time of all its threads, so the final figure is exact, not the last sample.

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use tokio::sync::oneshot;

use crate::procstat;

/// How often a process is sampled (and its exit noticed) by default.
pub const SAMPLE_EVERY: Duration = Duration::from_millis(50);

/// How a monitored process ended.
#[derive(Debug, Clone)]
pub struct Exit {
    pub name: String,
    pub status: ExitStatus,
    /// CPU time of the whole process (all threads, reaped children), in ticks.
    pub cpu_ticks: u64,
    /// Peak resident set size (`VmHWM`, sampled while it ran), in KiB.
    pub peak_rss_kib: u64,
    /// When the exit was seen (at most one sampling interval late).
    pub at: Instant,
    pub log: PathBuf,
}

impl Exit {
    pub fn cpu_secs(&self) -> f64 {
        procstat::secs(self.cpu_ticks)
    }

    /// An error with the end of the process's log unless it exited 0.
    pub fn ensure_success(&self) -> anyhow::Result<()> {
        if !self.status.success() {
            bail!(
                "{} exited with {}; last log lines:\n{}",
                self.name,
                self.status,
                log_tail(&self.log, 15)
            );
        }
        Ok(())
    }
}

#[derive(Debug, Default)]
struct Shared {
    exited: AtomicBool,
    peak_rss_kib: AtomicU64,
    final_ticks: AtomicU64,
}

/// A running child process (see the module docs). Dropping it kills the process.
#[derive(Debug)]
pub struct Monitored {
    name: String,
    pid: u32,
    shared: Arc<Shared>,
    done: Option<oneshot::Receiver<anyhow::Result<Exit>>>,
    log: PathBuf,
}

impl Monitored {
    /// Spawns `cmd` with stdout and stderr appended to `log`, sampled every [`SAMPLE_EVERY`].
    pub fn spawn(name: &str, cmd: Command, log: &Path) -> anyhow::Result<Self> {
        Self::spawn_sampled(name, cmd, log, SAMPLE_EVERY)
    }

    /// [`spawn`](Self::spawn) with another sampling interval (short for short processes whose
    /// exit time is measured).
    pub fn spawn_sampled(
        name: &str,
        mut cmd: Command,
        log: &Path,
        sample_every: Duration,
    ) -> anyhow::Result<Self> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("open {}", log.display()))?;
        cmd.stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file);
        let mut child = cmd
            .spawn()
            .with_context(|| format!("spawn {name} ({:?})", cmd.get_program()))?;
        let pid = child.id();
        let shared = Arc::new(Shared::default());
        let (tx, rx) = oneshot::channel();
        let watched = shared.clone();
        let (thread_name, exit_name, exit_log) =
            (format!("watch-{name}"), name.to_owned(), log.to_owned());
        std::thread::Builder::new()
            .name(thread_name)
            .spawn(move || {
                let mut last = procstat::ProcStat::default();
                let final_stat = loop {
                    match procstat::read_stat(pid) {
                        Some(s) if s.state == 'Z' => break s,
                        Some(s) => last = s,
                        None => break last,
                    }
                    if let Some(hwm) = procstat::peak_rss_kib(pid) {
                        watched.peak_rss_kib.fetch_max(hwm, Ordering::Relaxed);
                    }
                    std::thread::sleep(sample_every);
                };
                watched
                    .final_ticks
                    .store(final_stat.total_ticks(), Ordering::Relaxed);
                watched.exited.store(true, Ordering::SeqCst);
                let at = Instant::now();
                let result = child
                    .wait()
                    .with_context(|| format!("wait for {exit_name}"))
                    .map(|status| Exit {
                        name: exit_name,
                        status,
                        cpu_ticks: final_stat.total_ticks(),
                        peak_rss_kib: watched.peak_rss_kib.load(Ordering::Relaxed),
                        at,
                        log: exit_log,
                    });
                let _ = tx.send(result);
            })
            .context("spawn a watcher thread")?;
        Ok(Self {
            name: name.to_owned(),
            pid,
            shared,
            done: Some(rx),
            log: log.to_owned(),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub fn has_exited(&self) -> bool {
        self.shared.exited.load(Ordering::SeqCst)
    }

    /// CPU time so far (final once exited), in ticks.
    pub fn cpu_ticks(&self) -> u64 {
        if self.has_exited() {
            return self.shared.final_ticks.load(Ordering::Relaxed);
        }
        procstat::read_stat(self.pid).map_or_else(
            || self.shared.final_ticks.load(Ordering::Relaxed),
            |s| s.total_ticks(),
        )
    }

    /// Peak RSS so far, in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        let sampled = self.shared.peak_rss_kib.load(Ordering::Relaxed);
        if self.has_exited() {
            return sampled;
        }
        procstat::peak_rss_kib(self.pid).map_or(sampled, |now| now.max(sampled))
    }

    /// Sends SIGTERM (a clean stop) unless the process already exited.
    pub fn terminate(&self) {
        self.signal("-TERM");
    }

    fn signal(&self, sig: &str) {
        if self.has_exited() {
            return;
        }
        let _ = Command::new("kill")
            .args([sig, &self.pid.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }

    /// Waits for the exit.
    pub async fn wait(mut self) -> anyhow::Result<Exit> {
        let done = self.done.take().context("already waited")?;
        done.await
            .with_context(|| format!("the watcher of {} is gone", self.name))?
    }

    /// Waits for the exit for at most `limit`, then kills the process and fails.
    pub async fn wait_for(self, limit: Duration) -> anyhow::Result<Exit> {
        let name = self.name.clone();
        let log = self.log.clone();
        let pid = self.pid;
        let shared = self.shared.clone();
        match tokio::time::timeout(limit, self.wait()).await {
            Ok(exit) => exit,
            Err(_) => {
                if !shared.exited.load(Ordering::SeqCst) {
                    let _ = Command::new("kill")
                        .args(["-KILL", &pid.to_string()])
                        .status();
                }
                bail!(
                    "{name} did not exit within {limit:?}; last log lines:\n{}",
                    log_tail(&log, 15)
                )
            }
        }
    }
}

impl Drop for Monitored {
    fn drop(&mut self) {
        if self.done.is_some() {
            self.signal("-KILL");
        }
    }
}

/// Stops every process with SIGTERM and waits for all of them (each at most `limit`).
pub async fn terminate_all(
    processes: Vec<Monitored>,
    limit: Duration,
) -> anyhow::Result<Vec<Exit>> {
    for p in &processes {
        p.terminate();
    }
    wait_all(processes, limit).await
}

/// Waits for every process (each at most `limit`).
pub async fn wait_all(processes: Vec<Monitored>, limit: Duration) -> anyhow::Result<Vec<Exit>> {
    let mut exits = Vec::with_capacity(processes.len());
    for p in processes {
        exits.push(p.wait_for(limit).await?);
    }
    Ok(exits)
}

/// The last `n` lines of a log file.
pub fn log_tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn cpu_time_of_a_finished_child_is_measured_to_its_end() {
        let dir = tempfile::tempdir().unwrap();
        let mut cmd = Command::new("sh");
        // About 0.3 s of CPU in a shell loop, then exit 3.
        cmd.args(["-c", "end=$(($(date +%s%N) + 300000000)); while [ $(date +%s%N) -lt $end ]; do :; done; exit 3"]);
        let p = Monitored::spawn("busy", cmd, &dir.path().join("busy.log")).unwrap();
        assert!(!p.has_exited());
        let exit = p.wait_for(Duration::from_secs(20)).await.unwrap();
        assert_eq!(exit.status.code(), Some(3));
        assert!(exit.cpu_secs() >= 0.1, "{}", exit.cpu_secs());
        assert!(exit.peak_rss_kib > 0);
        assert!(exit.ensure_success().is_err());
    }

    #[tokio::test]
    async fn terminate_stops_a_running_child() {
        let dir = tempfile::tempdir().unwrap();
        let mut cmd = Command::new("sleep");
        cmd.arg("30");
        let p = Monitored::spawn("sleeper", cmd, &dir.path().join("s.log")).unwrap();
        let exits = terminate_all(vec![p], Duration::from_secs(10))
            .await
            .unwrap();
        assert!(!exits[0].status.success());
    }
}
