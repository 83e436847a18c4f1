//! A steady load on a fresh deployment, shared by the live and fleet parts: the workers, one
//! edge-shipper per box, a writer appending lines at a fixed total rate and the ledger poller
//! that sees each line become a committed row ([`crate::visibility`]). A measured window gives
//! the CPU of every process group; at the end every line must be a row exactly once.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use sqlx::postgres::PgPoolOptions;
use tokio::task::JoinHandle;
use tokio_util::sync::{CancellationToken, DropGuard};
use tracing::{info, warn};

use crate::live::layout;
use crate::monitored::{terminate_all, Exit, Monitored};
use crate::procstat;
use crate::report::{Check, CpuSplit, Distribution};
use crate::stack::{wait_until, Bench, CpuSnapshot, Deployment};
use crate::visibility::{poll_until, PollerSummary, Visibility};
use crate::writer::{now_us, LineLogs, RateWriter, WriterSummary, WrittenLine};

const EXIT_LIMIT: Duration = Duration::from_secs(60);

/// What to run: `files` files spread over `boxes` boxes (one edge-shipper each), `rate` lines
/// per second over all files.
#[derive(Debug, Clone)]
pub struct LoadShape {
    /// Names the deployment, the files' directory, the processes' logs and the checks.
    pub label: String,
    pub files: u32,
    pub boxes: u32,
    pub rate: u32,
    /// How often each shipper's watcher samples it (less often for hundreds of boxes, whose
    /// watcher threads would otherwise take a share of the cores they measure).
    pub shipper_sample_every: Duration,
}

/// The running load (see the module docs). Dropping it kills its processes.
pub struct SteadyLoad {
    pub label: String,
    pub dep: Deployment,
    pub shippers: Vec<Monitored>,
    pub workers: Vec<Monitored>,
    pub logs: Arc<LineLogs>,
    writer: RateWriter,
    poller: JoinHandle<anyhow::Result<Visibility>>,
    stop_polling: CancellationToken,
    _stop_polling_on_drop: DropGuard,
    visible: Arc<AtomicU64>,
    /// The PostgreSQL backend serving the ledger poll (its own connection).
    poll_backend_pid: Option<u32>,
    drain: Duration,
}

/// A measured window: its bounds (µs since the epoch) and the CPU used meanwhile.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    pub start_us: i64,
    pub end_us: i64,
    pub cpu: CpuSplit,
    /// CPU seconds of the PostgreSQL backend that answered the benchmark's ledger poll (part of
    /// `cpu.postgres_secs`; `None`: not measurable, e.g. a server not ours).
    pub ledger_poll_postgres_secs: Option<f64>,
}

/// The figures of the lines written in a window.
#[derive(Debug, Clone, Copy)]
pub struct WindowFigures {
    pub window_secs: f64,
    /// Lines written in the window per second.
    pub rate_held: f64,
    /// Lines that became rows in the window per second.
    pub commit_rate: f64,
    /// Write → row of the lines written in the window.
    pub latency_ms: Distribution,
}

/// The load after it stopped: every line, what the writer did, and how each process ended.
pub struct Finished {
    pub dep: Deployment,
    pub lines: Vec<WrittenLine>,
    pub written: WriterSummary,
    pub poller: PollerSummary,
    pub shipper_exits: Vec<Exit>,
    pub worker_exits: Vec<Exit>,
    pub checks: Vec<Check>,
}

impl SteadyLoad {
    /// Deploys, starts the workers and the shippers, then the writer and the poller; returns
    /// once every file had a line loaded (every shipper is publishing) and `warmup` passed.
    pub async fn start(bench: &Bench, shape: &LoadShape, warmup: Duration) -> anyhow::Result<Self> {
        let cfg = &bench.config;
        let label = shape.label.clone();
        let drain = Duration::from_secs(cfg.drain_timeout_secs);
        let dep = bench.deploy(&label).await?;
        let (files, boxes) = layout(
            &bench.dir(&label)?,
            shape.files,
            shape.boxes,
            cfg.resources,
            cfg.sensors,
        )?;
        let names: Vec<String> = files
            .iter()
            .map(|f| {
                f.path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default()
            })
            .collect();
        let logs = LineLogs::new(files.len());

        let mut workers = Vec::new();
        for w in 0..cfg.workers {
            workers.push(bench.spawn(&format!("{label}-worker-{}", w + 1), bench.worker(&dep))?);
        }
        let mut shippers = Vec::new();
        for (box_id, dir) in &boxes {
            let cmd = bench.shipper(&dep, box_id, dir, false)?;
            shippers.push(bench.spawn_sampled(
                &format!("{label}-shipper-{box_id}"),
                cmd,
                shape.shipper_sample_every,
            )?);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;

        // The poll gets a connection of its own, so that its backend's CPU can be told apart.
        let poll_pool = PgPoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect(&dep.db_url)
            .await
            .context("connect the ledger poll")?;
        let poll_backend_pid = sqlx::query_scalar::<_, i32>("SELECT pg_backend_pid()")
            .fetch_one(&poll_pool)
            .await
            .ok()
            .and_then(|p| u32::try_from(p).ok())
            .filter(|_| bench.servers.owns_postgres());
        let vis = Visibility::new(logs.clone(), &names);
        let visible = vis.visible.clone();
        let stop_polling = CancellationToken::new();
        let poller = tokio::spawn(poll_until(
            vis,
            poll_pool,
            Duration::from_millis(cfg.poll_ms),
            stop_polling.clone(),
        ));
        let writer = RateWriter::start(files, f64::from(shape.rate), logs.clone(), cfg.seed)?;
        let load = Self {
            label,
            dep,
            shippers,
            workers,
            logs,
            writer,
            poller,
            _stop_polling_on_drop: stop_polling.clone().drop_guard(),
            stop_polling,
            visible,
            poll_backend_pid,
            drain,
        };
        info!(
            label = %load.label,
            rate = shape.rate,
            files = shape.files,
            boxes = boxes.len(),
            "steady load started"
        );
        let logs = load.logs.clone();
        wait_until(
            "a line of every file to be loaded",
            drain,
            &load.watched(),
            || {
                let done = logs.every_file_has_a_visible_line();
                async move { Ok(done) }
            },
        )
        .await?;
        tokio::time::sleep(warmup).await;
        Ok(load)
    }

    /// Every shipper and worker, for waits that fail early when one exits.
    pub fn watched(&self) -> Vec<&Monitored> {
        self.shippers.iter().chain(&self.workers).collect()
    }

    /// Measures `length` of load, then waits until the window's lines are rows.
    pub async fn window(&self, bench: &Bench, length: Duration) -> anyhow::Result<Window> {
        let poll_ticks = || {
            self.poll_backend_pid
                .and_then(procstat::read_stat)
                .map(|s| s.own_ticks())
        };
        let start_us = now_us();
        let cpu_start = CpuSnapshot::take(&bench.servers, &self.shippers, &self.workers);
        let poll_start = poll_ticks();
        tokio::time::sleep(length).await;
        let end_us = now_us();
        let poll_end = poll_ticks();
        let cpu =
            CpuSnapshot::take(&bench.servers, &self.shippers, &self.workers).since(&cpu_start);
        info!(label = %self.label, "window over; waiting for its last lines");
        self.wait_visible_before("the window's lines to be committed", end_us)
            .await?;
        Ok(Window {
            start_us,
            end_us,
            cpu,
            ledger_poll_postgres_secs: poll_start
                .zip(poll_end)
                .map(|(a, b)| procstat::secs(b.saturating_sub(a))),
        })
    }

    /// Waits until every line written before `t_us` is a row (at most the drain timeout).
    pub async fn wait_visible_before(&self, what: &str, t_us: i64) -> anyhow::Result<()> {
        let logs = self.logs.clone();
        wait_until(what, self.drain, &self.watched(), || {
            let done = logs.visible_before(t_us);
            async move { Ok(done) }
        })
        .await
    }

    /// Stops the writer, waits for every line, stops the processes (each must exit 0) and
    /// checks that every line is a row exactly once. The deployment is left to the caller.
    pub async fn finish(self) -> anyhow::Result<Finished> {
        let written = self.writer.stop().await?;
        let visible = self.visible.clone();
        let watched: Vec<&Monitored> = self.shippers.iter().chain(&self.workers).collect();
        wait_until("every line to be committed", self.drain, &watched, || {
            let done = visible.load(Ordering::Relaxed) >= written.lines;
            async move { Ok(done) }
        })
        .await
        .unwrap_or_else(|e| warn!(error = %e, "not every line was seen committed"));
        drop(watched);
        self.stop_polling.cancel();
        let poller = self.poller.await??.finish(&self.dep.pool).await?;
        let shipper_count = self.shippers.len();
        let mut exits = terminate_all(
            self.shippers.into_iter().chain(self.workers).collect(),
            EXIT_LIMIT,
        )
        .await?;
        for e in &exits {
            e.ensure_success()?;
        }
        let worker_exits = exits.split_off(shipper_count);

        let lines = self.logs.all_lines();
        let label = &self.label;
        let dep = self.dep;
        let checks = vec![
            Check::equal(
                format!("{label}: lines seen committed"),
                written.lines,
                lines.iter().filter(|l| l.visible_us != 0).count() as u64,
            ),
            Check::equal(
                format!("{label}: ledger sum(rows_loaded)"),
                written.lines,
                dep.rows_loaded().await?,
            ),
            Check::equal(
                format!("{label}: count(*) of readings"),
                written.lines,
                dep.readings().await?,
            ),
            Check::equal(
                format!("{label}: rejected_readings"),
                0,
                dep.rejected().await?,
            ),
        ];
        Ok(Finished {
            dep,
            lines,
            written,
            poller,
            shipper_exits: exits,
            worker_exits,
            checks,
        })
    }
}

impl Window {
    /// Rate held, commit rate and write → row delays of the lines written in this window.
    pub fn figures(&self, lines: &[WrittenLine]) -> WindowFigures {
        let window = self.start_us..self.end_us;
        let window_secs = ((self.end_us - self.start_us) as f64 / 1e6).max(1e-9);
        let in_window: Vec<&WrittenLine> = lines
            .iter()
            .filter(|l| window.contains(&l.written_us))
            .collect();
        let committed = lines
            .iter()
            .filter(|l| window.contains(&l.visible_us))
            .count();
        WindowFigures {
            window_secs,
            rate_held: in_window.len() as f64 / window_secs,
            commit_rate: committed as f64 / window_secs,
            latency_ms: Distribution::of_micros(
                in_window
                    .iter()
                    .filter(|l| l.visible_us != 0)
                    .map(|l| l.visible_us - l.written_us)
                    .collect(),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_figures_count_lines_written_and_committed_inside_it() {
        let line = |written_us, visible_us| WrittenLine {
            end: 0,
            written_us,
            visible_us,
        };
        let window = Window {
            start_us: 1_000_000,
            end_us: 3_000_000,
            cpu: CpuSplit::default(),
            ledger_poll_postgres_secs: None,
        };
        let lines = [
            line(900_000, 1_100_000),   // written before, committed inside
            line(1_000_000, 1_050_000), // 50 ms
            line(2_000_000, 2_250_000), // 250 ms
            line(2_500_000, 0),         // not seen yet: written, no delay
            line(2_900_000, 3_100_000), // 200 ms, committed after
            line(3_000_000, 3_010_000), // written after: not counted
        ];
        let f = window.figures(&lines);
        assert!((f.window_secs - 2.0).abs() < 1e-12);
        // Written inside: 4 lines in 2 s; committed inside: 3.
        assert!((f.rate_held - 2.0).abs() < 1e-12);
        assert!((f.commit_rate - 1.5).abs() < 1e-12);
        assert_eq!(f.latency_ms.count, 3);
        assert_eq!((f.latency_ms.p50, f.latency_ms.max), (200.0, 250.0));
    }
}
