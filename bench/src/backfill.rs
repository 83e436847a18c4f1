//! Part 1, the pipeline: N generated readings shipped by one edge-shipper per box
//! (`--until-caught-up`) and loaded by the ingest-worker(s) (`--until-idle`), timed from the first
//! process start until the ledger says every row is committed.

use std::time::{Duration, Instant};

use chrono::Utc;
use tracing::info;

use crate::generate::{backfill_files, BackfillSpec, Generated};
use crate::monitored::{wait_all, Monitored};
use crate::procstat;
use crate::report::{BackfillReport, Check, CpuSplit};
use crate::stack::{Bench, Deployment};

/// How often the ledger is polled for the committed row count.
const POLL: Duration = Duration::from_millis(50);
/// How long a process may take to exit once the work is done.
const EXIT_LIMIT: Duration = Duration::from_secs(120);

/// The pipeline's figures and its database (for the baselines' export).
pub struct Backfill {
    pub report: BackfillReport,
    pub deployment: Deployment,
    pub checks: Vec<Check>,
}

/// Generates the backfill files (not timed).
pub async fn generate(bench: &Bench) -> anyhow::Result<Generated> {
    let cfg = &bench.config;
    let spec = BackfillSpec {
        boxes: cfg.boxes,
        files_per_box: cfg.files_per_box,
        lines: cfg.readings(),
        resources: cfg.resources,
        sensors: cfg.sensors,
        seed: cfg.seed,
        end: Utc::now() - chrono::Duration::hours(1),
    };
    let dir = bench.dir("backfill")?;
    let started = Instant::now();
    let generated = tokio::task::spawn_blocking({
        let dir = dir.clone();
        let spec = spec.clone();
        move || backfill_files(&dir, &spec)
    })
    .await??;
    info!(
        readings = generated.lines,
        mb = generated.bytes / 1_000_000,
        secs = started.elapsed().as_secs_f64(),
        first_ts = %generated.first_ts,
        "generated the backfill files"
    );
    Ok(generated)
}

/// Ships and loads `generated` into a fresh deployment named `label` (one per round: its own
/// database, namespace and shipper state), timed from the first process start to the last
/// commit.
pub async fn run(bench: &Bench, generated: &Generated, label: &str) -> anyhow::Result<Backfill> {
    let cfg = &bench.config;
    let dep = bench.deploy(label).await?;
    bench.servers.checkpoint().await?;
    let n = generated.lines;

    let t0 = Instant::now();
    let before = bench.servers.cpu();
    let bench_before = procstat::self_ticks();
    let mut workers = Vec::new();
    for w in 0..cfg.workers {
        let mut cmd = bench.worker(&dep);
        cmd.args(["--until-idle", &cfg.until_idle_secs.to_string()]);
        workers.push(bench.spawn(&format!("{label}-worker-{}", w + 1), cmd)?);
    }
    let mut shippers = Vec::new();
    for b in &generated.boxes {
        let cmd = bench.shipper(&dep, &b.box_id, &b.dir, true)?;
        shippers.push(bench.spawn(&format!("{label}-shipper-{}", b.box_id), cmd)?);
    }
    info!(
        shippers = shippers.len(),
        workers = workers.len(),
        readings = n,
        label,
        "backfill started"
    );

    let committed_at = wait_committed(&dep, n, &workers, cfg.backfill_timeout_secs).await?;
    let secs = (committed_at - t0).as_secs_f64();
    let after = bench.servers.cpu();
    let (nats_secs, postgres_secs) = after.since(&before);
    let bench_secs = procstat::secs(procstat::self_ticks().saturating_sub(bench_before));
    info!(secs, rate = n as f64 / secs, "every row committed");

    let shipper_exits = wait_all(shippers, EXIT_LIMIT).await?;
    let worker_exits = wait_all(workers, EXIT_LIMIT).await?;
    for e in shipper_exits.iter().chain(&worker_exits) {
        e.ensure_success()?;
    }
    let shipped_secs = shipper_exits
        .iter()
        .map(|e| (e.at - t0).as_secs_f64())
        .fold(0.0, f64::max);

    let checks = vec![
        Check::equal(
            format!("{label}: ledger sum(rows_loaded)"),
            n,
            dep.rows_loaded().await?,
        ),
        Check::equal(
            format!("{label}: count(*) of readings"),
            n,
            dep.readings().await?,
        ),
        Check::equal(
            format!("{label}: rejected_readings"),
            0,
            dep.rejected().await?,
        ),
    ];
    let report = BackfillReport {
        readings: n,
        bytes: generated.bytes,
        boxes: cfg.boxes,
        files: cfg.boxes * cfg.files_per_box,
        workers: cfg.workers,
        worker_args: cfg.worker_args(),
        shipper_args: cfg.shipper_args(),
        secs,
        readings_per_sec: n as f64 / secs,
        mb_per_sec: generated.bytes as f64 / 1e6 / secs,
        shipped_secs,
        cpu: CpuSplit {
            wall_secs: secs,
            shippers_secs: shipper_exits.iter().map(|e| e.cpu_secs()).sum(),
            workers_secs: worker_exits.iter().map(|e| e.cpu_secs()).sum(),
            nats_secs,
            postgres_secs,
            bench_secs,
        },
        worker_peak_rss_kib: worker_exits.iter().map(|e| e.peak_rss_kib).collect(),
        shipper_peak_rss_kib: shipper_exits.iter().map(|e| e.peak_rss_kib).collect(),
    };
    Ok(Backfill {
        report,
        deployment: dep,
        checks,
    })
}

/// Polls the ledger until `n` rows are committed; returns when the poll saw it.
async fn wait_committed(
    dep: &Deployment,
    n: u64,
    workers: &[Monitored],
    timeout_secs: u64,
) -> anyhow::Result<Instant> {
    let deadline = Instant::now() + Duration::from_secs(timeout_secs);
    let mut last_log = Instant::now();
    let mut last_rows = 0;
    loop {
        let rows = dep.rows_loaded().await?;
        if rows >= n {
            return Ok(Instant::now());
        }
        if last_log.elapsed() >= Duration::from_secs(5) {
            let rate = (rows - last_rows) as f64 / last_log.elapsed().as_secs_f64();
            info!(rows, of = n, rate = rate.round(), "backfill progress");
            last_log = Instant::now();
            last_rows = rows;
        }
        if workers.iter().all(Monitored::has_exited) {
            anyhow::bail!("every ingest-worker exited with {rows} of {n} rows committed");
        }
        if Instant::now() >= deadline {
            anyhow::bail!("only {rows} of {n} rows committed after {timeout_secs} s");
        }
        tokio::time::sleep(POLL).await;
    }
}
