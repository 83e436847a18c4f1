//! Part "archive" (issue 16): edge-mes-archiver's throughput on one closed UTC day of backfilled
//! readings, and its share of a core.
//!
//! One day (yesterday, UTC) of `--readings` rows over `--resources` × `--sensors` series, shaped
//! like the backfill lines (work order, operation, unit, a `meta` object), is inserted server-side
//! with a ledger entry spanning it (not measured: the archive reads from the database, so how the
//! rows got there does not change its cost). Then the release `edge-mes-archiver run --once
//! --grace-minutes 0` archives the day into a local directory, reading the rows back and
//! verifying what it wrote, as it does in production; timed from its start to its exit. Then
//! `edge-mes-archiver verify` re-reads the whole archive, timed too.
//!
//! Reported: rows/s and MiB/s of Parquet written, the archiver's CPU seconds (and those of
//! PostgreSQL, which sorts and sends the day), its share of a core while it runs, and the share
//! of a core it would need to keep up with ingestion at the backfill part's rate (its CPU cost
//! per row × that rate).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use chrono::{Days, Utc};
use tracing::info;

use crate::monitored::wait_all;
use crate::report::Check;
use crate::stack::Bench;

const ARCHIVER: &str = "edge-mes-archiver";
/// The pipeline's backfill rate on this machine (BENCHMARKS.md, part 1, median of 3 rounds),
/// against which the archiver's CPU cost per row is put.
pub const BACKFILL_ROWS_PER_SEC: f64 = 173_334.0;

/// The archive part's figures.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ArchiveReport {
    pub rows: u64,
    pub files: u64,
    pub parquet_bytes: u64,
    pub secs: f64,
    pub rows_per_sec: f64,
    pub parquet_mib_per_sec: f64,
    pub archiver_cpu_secs: f64,
    /// `None` when PostgreSQL is not a private server (its CPU time cannot be read).
    pub postgres_cpu_secs: Option<f64>,
    pub archiver_peak_rss_mib: f64,
    /// Archiver CPU seconds / wall seconds while it ran.
    pub core_share_while_running: f64,
    /// Archiver CPU seconds per row × [`BACKFILL_ROWS_PER_SEC`].
    pub core_share_at_backfill_rate: f64,
    pub verify_secs: f64,
    pub verify_cpu_secs: f64,
}

/// The release build of the archiver (built with cargo when missing, unless `--no-build`).
fn archiver_binary(bench: &Bench) -> anyhow::Result<PathBuf> {
    let dir = bench
        .bins
        .worker
        .parent()
        .map(Path::to_path_buf)
        .context("the worker binary has no directory")?;
    let bin = dir.join(ARCHIVER);
    if bin.is_file() && !bench.config.rebuild {
        return Ok(bin);
    }
    if bench.config.no_build {
        bail!(
            "{} not found; build it with `cargo build --release -p {ARCHIVER}` or drop --no-build",
            bin.display()
        );
    }
    info!("building {ARCHIVER} (release)");
    let status = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        .args(["build", "--release", "-p", ARCHIVER])
        .status()
        .context("run cargo build")?;
    if !status.success() || !bin.is_file() {
        bail!(
            "cargo build --release -p {ARCHIVER} failed or did not produce {}",
            bin.display()
        );
    }
    Ok(bin)
}

fn archiver_command(bin: &Path, db_url: &str, target: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(bin);
    for (key, _) in std::env::vars_os() {
        if key.to_str().is_some_and(|k| k.starts_with("ARCHIVER_")) {
            cmd.env_remove(key);
        }
    }
    cmd.args(args)
        .env("DATABASE_URL", db_url)
        .env("ARCHIVER_TARGET", target)
        .env("RUST_LOG", "warn")
        .env("NO_COLOR", "1");
    cmd
}

/// Runs the part.
pub async fn run(bench: &Bench) -> anyhow::Result<(ArchiveReport, Vec<Check>)> {
    let bin = archiver_binary(bench)?;
    let dep = bench.deploy("archive").await?;
    let n = bench.config.readings();
    let series = u64::from(bench.config.resources.max(1)) * u64::from(bench.config.sensors.max(1));
    let day = Utc::now()
        .date_naive()
        .checked_sub_days(Days::new(1))
        .context("yesterday")?;
    let started = Instant::now();
    sqlx::query("SELECT setseed(0.5)")
        .execute(&dep.pool)
        .await?;
    sqlx::query(
        "INSERT INTO readings (ts, site, resource_id, work_order_id, operation_id, sensor, value,
                               unit, meta)
         SELECT $1::date::timestamp AT TIME ZONE 'UTC'
                    + ((i * 86400000000) / $2) * interval '1 microsecond',
                'S1', 'R' || (i % $3), 'WO' || (i / 100000), 'OP' || ((i % 3) * 10),
                's' || ((i / $3) % $4), round((random() * 1000)::numeric, 2)::float8,
                'u' || ((i / $3) % $4),
                jsonb_build_object('site', 'S1', 'line', 'L1', 'box', 'b' || (i % 4), 'file', i % 8)
         FROM generate_series(0::int8, $2 - 1) AS i",
    )
    .bind(day)
    .bind(i64::try_from(n)?)
    .bind(i64::from(bench.config.resources.max(1)))
    .bind(i64::from(bench.config.sensors.max(1)))
    .execute(&dep.pool)
    .await
    .context("insert the day's readings")?;
    sqlx::query(
        "INSERT INTO ingest_ledger (source, byte_range, site, box_id, path, lines, rows_loaded,
                                    rejected, min_ts, max_ts)
         SELECT 'bench/archive', int8range(0, $2), 'S1', 'b0', '/bench', $2, $2, 0, min(ts), max(ts)
         FROM readings WHERE ts >= $1::date::timestamp AT TIME ZONE 'UTC'",
    )
    .bind(day)
    .bind(i64::try_from(n)?)
    .execute(&dep.pool)
    .await?;
    sqlx::query("VACUUM ANALYZE readings")
        .execute(&dep.pool)
        .await?;
    info!(
        rows = n,
        series,
        %day,
        secs = started.elapsed().as_secs_f64(),
        "inserted one day of readings"
    );

    let target = bench.dir("archive-target")?;
    bench.servers.checkpoint().await?;
    let pg_before = bench.servers.cpu();
    let t0 = Instant::now();
    let child = bench.spawn(
        "archiver",
        archiver_command(
            &bin,
            &dep.db_url,
            &target,
            &["run", "--once", "--grace-minutes", "0"],
        ),
    )?;
    let exit = wait_all(vec![child], Duration::from_secs(3600))
        .await?
        .remove(0);
    let secs = (exit.at - t0).as_secs_f64();
    let (_, postgres_cpu_secs) = bench.servers.cpu().since(&pg_before);
    exit.ensure_success()?;

    let (rows, files, bytes, verified): (i64, i64, i64, bool) = sqlx::query_as(
        "SELECT coalesce(sum(rows), 0)::int8, coalesce(sum(files), 0)::int8,
                coalesce(sum(bytes), 0)::int8, coalesce(bool_and(verified_at IS NOT NULL), false)
         FROM archive_parts",
    )
    .fetch_one(&dep.pool)
    .await?;

    let v0 = Instant::now();
    let verify = bench.spawn(
        "archiver-verify",
        archiver_command(&bin, &dep.db_url, &target, &["verify"]),
    )?;
    let vexit = wait_all(vec![verify], Duration::from_secs(3600))
        .await?
        .remove(0);
    let verify_secs = (vexit.at - v0).as_secs_f64();

    let rows_u = u64::try_from(rows).unwrap_or(0);
    let cpu = exit.cpu_secs();
    let report = ArchiveReport {
        rows: rows_u,
        files: u64::try_from(files).unwrap_or(0),
        parquet_bytes: u64::try_from(bytes).unwrap_or(0),
        secs,
        rows_per_sec: rows_u as f64 / secs.max(1e-9),
        parquet_mib_per_sec: bytes as f64 / (1024.0 * 1024.0) / secs.max(1e-9),
        archiver_cpu_secs: cpu,
        postgres_cpu_secs,
        archiver_peak_rss_mib: exit.peak_rss_kib as f64 / 1024.0,
        core_share_while_running: cpu / secs.max(1e-9),
        core_share_at_backfill_rate: cpu / (rows_u.max(1) as f64) * BACKFILL_ROWS_PER_SEC,
        verify_secs,
        verify_cpu_secs: vexit.cpu_secs(),
    };
    let checks = vec![
        Check::equal("archive: rows in archive_parts".to_owned(), n, rows_u),
        Check::equal(
            "archive: files (one per series)".to_owned(),
            series.min(n),
            report.files,
        ),
        Check::equal(
            "archive: every part verified".to_owned(),
            1,
            u64::from(verified),
        ),
        Check::equal(
            "archive: edge-mes-archiver verify exit code".to_owned(),
            0,
            u64::from(!vexit.status.success()),
        ),
    ];
    println!("{}", render(&report, day));
    bench.retire(dep).await?;
    Ok((report, checks))
}

/// The part's table (Markdown, as BENCHMARKS.md shows it).
pub fn render(r: &ArchiveReport, day: chrono::NaiveDate) -> String {
    format!(
        "#### Archive (one UTC day, {day})\n\n\
         | rows | files | Parquet MiB | seconds | rows/s | Parquet MiB/s | archiver CPU s | \
         PostgreSQL CPU s | archiver core share (running) | core share at {:.0} rows/s | \
         peak RSS MiB | verify s (CPU s) |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|\n\
         | {} | {} | {:.1} | {:.2} | **{:.0}** | {:.1} | {:.2} | {} | {:.0} % | {:.0} % | {:.1} | {:.2} ({:.2}) |\n",
        BACKFILL_ROWS_PER_SEC,
        r.rows,
        r.files,
        r.parquet_bytes as f64 / (1024.0 * 1024.0),
        r.secs,
        r.rows_per_sec,
        r.parquet_mib_per_sec,
        r.archiver_cpu_secs,
        r.postgres_cpu_secs
            .map_or_else(|| "–".to_owned(), |s| format!("{s:.2}")),
        r.core_share_while_running * 100.0,
        r.core_share_at_backfill_rate * 100.0,
        r.archiver_peak_rss_mib,
        r.verify_secs,
        r.verify_cpu_secs,
    )
}
