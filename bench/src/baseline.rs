//! Part 1, the limits, measured in the same run on the same server and schema as the pipeline:
//! `psql \copy` of the pipeline's own rows (exported with `COPY TO`) into a fresh `readings`, with
//! one stream and with two concurrent streams, and the naive way on a sample: parse each JSON
//! line, one INSERT per line, autocommit, one connection.

use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use chrono::{Days, Utc};
use sqlx::postgres::PgPoolOptions;
use sqlx::{Connection, PgPool};
use tracing::info;

use crate::monitored::wait_all;
use crate::procstat;
use crate::report::{Check, CopyRun, NaiveRun};
use crate::stack::{count, Bench, Deployment, SITE};

/// Partitions the worker creates around today by default (`--partition-days-back/-ahead`).
const PARTITION_DAYS_BACK: u64 = 2;
const PARTITION_DAYS_AHEAD: u64 = 3;

const COLUMNS: &str =
    "ts, site, resource_id, work_order_id, operation_id, sensor, value, unit, meta";

/// The pipeline's rows as `\copy` input: the whole file and its two halves.
pub struct CopyFiles {
    all: PathBuf,
    halves: [PathBuf; 2],
    pub rows: u64,
    pub bytes: u64,
}

/// Exports the pipeline's rows (text format) and drops its database.
pub async fn export(bench: &Bench, pipeline: Deployment) -> anyhow::Result<CopyFiles> {
    let dir = bench.dir("copy")?;
    let all = dir.join("readings.tsv");
    let started = Instant::now();
    psql(
        &pipeline.db_url,
        &format!("\\copy (SELECT {COLUMNS} FROM readings) TO {}", quote(&all)),
    )
    .await
    .context("export the pipeline's rows")?;
    let rows = pipeline.readings().await?;
    bench.retire(pipeline).await?;
    let halves = [dir.join("readings.1.tsv"), dir.join("readings.2.tsv")];
    split_at_line(&all, &halves[0], &halves[1])?;
    let bytes = std::fs::metadata(&all)?.len();
    info!(
        rows,
        mb = bytes / 1_000_000,
        secs = started.elapsed().as_secs_f64(),
        "exported the pipeline's rows"
    );
    Ok(CopyFiles {
        all,
        halves,
        rows,
        bytes,
    })
}

/// `psql \copy` of the exported rows into a fresh schema: the whole file in one stream, or its
/// halves in two concurrent streams.
pub async fn copy(
    bench: &Bench,
    files: &CopyFiles,
    streams: u32,
    checks: &mut Vec<Check>,
) -> anyhow::Result<CopyRun> {
    let inputs = if streams == 1 {
        std::slice::from_ref(&files.all)
    } else {
        &files.halves[..]
    };
    let run = copy_run(bench, inputs, files.rows, checks).await?;
    info!(
        rows_per_sec = run.rows_per_sec.round(),
        secs = run.secs,
        streams,
        "\\copy"
    );
    Ok(run)
}

/// The naive client on `sample`.
pub async fn naive(
    bench: &Bench,
    sample: &[String],
    checks: &mut Vec<Check>,
) -> anyhow::Result<NaiveRun> {
    let naive = naive_run(bench, sample, checks).await?;
    info!(
        rows_per_sec = naive.rows_per_sec.round(),
        secs = naive.secs,
        "naive INSERT"
    );
    Ok(naive)
}

/// A fresh database migrated like the worker does it, with the worker's daily partitions.
async fn fresh_schema(bench: &Bench, label: &str) -> anyhow::Result<(String, String, PgPool)> {
    let name = testkit::unique_name(&format!("bench_{label}"));
    let url = bench.servers.create_database(&name).await?;
    let pool = PgPoolOptions::new()
        .max_connections(2)
        .connect(&url)
        .await?;
    // The migrations the worker applies, embedded from `db/migrations`.
    let mut migrator = sqlx::migrate!("../db/migrations");
    migrator.set_ignore_missing(true);
    migrator
        .run(&pool)
        .await
        .context("migrate the baseline database")?;
    let today = Utc::now().date_naive();
    let from = today
        .checked_sub_days(Days::new(PARTITION_DAYS_BACK))
        .unwrap_or(today);
    let to = today
        .checked_add_days(Days::new(PARTITION_DAYS_AHEAD))
        .unwrap_or(today);
    let _: i32 = sqlx::query_scalar("SELECT edge_mes_ensure_partitions($1, $2)")
        .bind(from)
        .bind(to)
        .fetch_one(&pool)
        .await
        .context("create the daily partitions")?;
    Ok((name, url, pool))
}

/// One `psql \copy` per file, all at once, into a fresh database.
async fn copy_run(
    bench: &Bench,
    files: &[PathBuf],
    rows: u64,
    checks: &mut Vec<Check>,
) -> anyhow::Result<CopyRun> {
    let streams = u32::try_from(files.len()).unwrap_or(u32::MAX);
    let (name, url, pool) = fresh_schema(bench, &format!("copy{streams}")).await?;
    bench.servers.checkpoint().await?;
    let before = bench.servers.cpu();
    let t0 = Instant::now();
    let mut running = Vec::new();
    for (i, file) in files.iter().enumerate() {
        let mut cmd = psql_command(
            &url,
            &format!("\\copy readings ({COLUMNS}) FROM {}", quote(file)),
        )?;
        cmd.env("PGAPPNAME", "edge-mes-bench");
        running.push(bench.spawn_sampled(
            &format!("copy{streams}-stream{}", i + 1),
            cmd,
            Duration::from_millis(5),
        )?);
    }
    let exits = wait_all(running, Duration::from_secs(3600)).await?;
    for e in &exits {
        e.ensure_success()?;
    }
    let end = exits
        .iter()
        .map(|e| e.at)
        .max()
        .unwrap_or_else(Instant::now);
    let secs = (end - t0).as_secs_f64();
    let (_, postgres_cpu_secs) = bench.servers.cpu().since(&before);
    checks.push(Check::equal(
        format!("\\copy {streams} stream(s): count(*) of readings"),
        rows,
        count(&pool, "SELECT count(*) FROM readings").await?,
    ));
    pool.close().await;
    bench.servers.drop_database(&name).await?;
    Ok(CopyRun {
        streams,
        rows,
        secs,
        rows_per_sec: rows as f64 / secs,
        postgres_cpu_secs,
        psql_cpu_secs: exits.iter().map(|e| e.cpu_secs()).sum(),
    })
}

/// What a simple tail-and-insert script does per line: parse the JSON, INSERT, autocommit.
async fn naive_run(
    bench: &Bench,
    lines: &[String],
    checks: &mut Vec<Check>,
) -> anyhow::Result<NaiveRun> {
    let (name, url, pool) = fresh_schema(bench, "naive").await?;
    pool.close().await;
    let mut conn = sqlx::PgConnection::connect(&url).await?;
    bench.servers.checkpoint().await?;
    let before = bench.servers.cpu();
    let client_before = procstat::self_ticks();
    let t0 = Instant::now();
    for line in lines {
        let v: serde_json::Value = serde_json::from_str(line).context("naive: parse a line")?;
        let text = |k: &str| {
            v.get(k)
                .and_then(serde_json::Value::as_str)
                .map(str::to_owned)
        };
        sqlx::query(
            "INSERT INTO readings (ts, site, resource_id, work_order_id, operation_id, sensor, value, unit, meta)
             VALUES ($1::timestamptz, $2, $3, $4, $5, $6, $7, $8, $9::jsonb)",
        )
        .bind(text("ts"))
        .bind(SITE)
        .bind(text("resource_id"))
        .bind(text("work_order_id"))
        .bind(text("operation_id"))
        .bind(text("sensor"))
        .bind(v.get("value").and_then(serde_json::Value::as_f64))
        .bind(text("unit"))
        .bind(v.get("meta").map(serde_json::Value::to_string))
        .execute(&mut conn)
        .await
        .context("naive: insert a line")?;
    }
    let secs = t0.elapsed().as_secs_f64();
    let client_cpu_secs = procstat::secs(procstat::self_ticks().saturating_sub(client_before));
    let (_, postgres_cpu_secs) = bench.servers.cpu().since(&before);
    let rows = lines.len() as u64;
    let landed: i64 = sqlx::query_scalar("SELECT count(*) FROM readings")
        .fetch_one(&mut conn)
        .await?;
    checks.push(Check::equal(
        "naive: count(*) of readings",
        rows,
        u64::try_from(landed).unwrap_or(0),
    ));
    conn.close().await.ok();
    bench.servers.drop_database(&name).await?;
    Ok(NaiveRun {
        rows,
        secs,
        rows_per_sec: rows as f64 / secs,
        postgres_cpu_secs,
        client_cpu_secs,
    })
}

/// `'path'` for a psql meta-command, quotes doubled.
fn quote(path: &Path) -> String {
    format!("'{}'", path.display().to_string().replace('\'', "''"))
}

/// `psql` from PATH, else from `pg_config --bindir`.
fn psql_program() -> anyhow::Result<PathBuf> {
    let on_path = Command::new("psql")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if on_path {
        return Ok(PathBuf::from("psql"));
    }
    let out = Command::new("pg_config")
        .arg("--bindir")
        .output()
        .context("psql is not on PATH and pg_config is missing")?;
    let bin = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()).join("psql");
    if !bin.is_file() {
        bail!("psql not found on PATH nor in {}", bin.display());
    }
    Ok(bin)
}

fn psql_command(url: &str, meta_command: &str) -> anyhow::Result<Command> {
    let mut cmd = Command::new(psql_program()?);
    cmd.args([
        "-X",
        "-q",
        "-v",
        "ON_ERROR_STOP=1",
        "-d",
        url,
        "-c",
        meta_command,
    ]);
    Ok(cmd)
}

async fn psql(url: &str, meta_command: &str) -> anyhow::Result<()> {
    let mut cmd = psql_command(url, meta_command)?;
    let out = tokio::task::spawn_blocking(move || cmd.output()).await??;
    if !out.status.success() {
        bail!(
            "psql failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Splits a text file in two at the line end nearest its middle.
fn split_at_line(src: &Path, first: &Path, second: &Path) -> anyhow::Result<()> {
    let len = std::fs::metadata(src)?.len();
    let mut reader = BufReader::new(std::fs::File::open(src)?);
    reader.seek(SeekFrom::Start(len / 2))?;
    let mut rest_of_line = Vec::new();
    reader.read_until(b'\n', &mut rest_of_line)?;
    let cut = len / 2 + rest_of_line.len() as u64;
    reader.seek(SeekFrom::Start(0))?;
    let mut out = std::io::BufWriter::new(std::fs::File::create(first)?);
    std::io::copy(&mut (&mut reader).take(cut), &mut out)?;
    out.flush()?;
    let mut out = std::io::BufWriter::new(std::fs::File::create(second)?);
    std::io::copy(&mut reader, &mut out)?;
    out.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_is_split_between_lines() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("all.tsv");
        let content: String = (0..101)
            .map(|i| format!("row {i}\t{}\n", "x".repeat(i % 7)))
            .collect();
        std::fs::write(&src, &content).unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        split_at_line(&src, &a, &b).unwrap();
        let (a, b) = (
            std::fs::read_to_string(a).unwrap(),
            std::fs::read_to_string(b).unwrap(),
        );
        assert!(a.ends_with('\n') && b.ends_with('\n'));
        assert_eq!(format!("{a}{b}"), content);
        // Split by bytes (equal work per stream), within one line of the middle.
        assert!(
            a.len().abs_diff(b.len()) <= 2 * 16,
            "{} {}",
            a.len(),
            b.len()
        );
        assert_eq!(quote(Path::new("/t/it's")), "'/t/it''s'");
    }
}
