//! edge-mes-bench: the pipeline measured end to end against real nats-server and PostgreSQL,
//! and against the database's own limits measured in the same run (issue 5).
//!
//! - [`config`]: flags and environment (`--quick`, `--only`, `--json`, sizes and rates).
//! - [`binaries`]: the release builds of edge-shipper, ingest-worker and mes-api (built when
//!   missing).
//! - [`servers`]: private nats-server and PostgreSQL (testkit) or the ones in the environment.
//! - [`stack`]: the benchmark context; one fresh database and NATS namespace per measurement.
//! - [`monitored`]: child processes measured to their end (CPU time, peak RSS).
//! - [`procstat`]: `/proc` readings (CPU ticks of processes and process trees, `VmHWM`).
//! - [`generate`]: realistic JSONL readings (backfill files, live lines with their write time).
//! - [`writer`]: appending lines at a steady rate and remembering each line's write time.
//! - [`visibility`]: when each line became a committed row, from incremental ledger polls.
//! - [`backfill`], [`baseline`]: part 1 (pipeline; `\copy` 1 and 2 streams; naive INSERT).
//! - [`live`]: part 2 (write-to-row latency; catch-up after a NATS outage).
//! - [`api`]: part 3 (mes-api under an open-loop load; exactly-once of the reports and events).
//! - [`http_load`]: keep-alive HTTP/1.1 connections, open-loop schedule, closed loop.
//! - [`footprint`]: part 4 (edge-shipper memory and CPU).
//! - [`steady_load`]: a steady load on a fresh deployment (shippers, workers, writer, ledger
//!   poller), shared by the live and fleet parts.
//! - [`buffer`]: part 5 (READINGS carries many times its size limit; `--soak`).
//! - [`fleet`]: many boxes (issue 15): the same total rate from 4 boxes and from hundreds.
//! - [`archive`]: edge-mes-archiver on a day of readings (`--only archive`, issue 16).
//! - [`rollups`]: a 30-day panel query on raw readings and on the rollups (`--only rollups`,
//!   issue 16).
//! - [`machine`], [`report`]: the machine description, targets, tables and JSON.

pub mod api;
pub mod archive;
pub mod backfill;
pub mod baseline;
pub mod binaries;
pub mod buffer;
pub mod config;
pub mod fleet;
pub mod footprint;
pub mod generate;
pub mod http_load;
pub mod live;
pub mod machine;
pub mod monitored;
pub mod procstat;
pub mod report;
pub mod rollups;
pub mod servers;
pub mod stack;
pub mod steady_load;
pub mod visibility;
pub mod writer;

use std::path::PathBuf;

use anyhow::Context;
use tracing::{info, warn};

pub use config::{Config, Part};
use machine::Machine;
use report::{BaselineReport, Report, Round};
use servers::Servers;
use stack::Bench;

/// Runs the selected parts, prints the tables, writes `--json`; returns the report (check
/// [`Report::checks_passed`]). Errors of one part are recorded in the report and the next part
/// still runs; only set-up failures (binaries, servers) are returned as errors.
pub async fn run(config: Config, command: String) -> anyhow::Result<Report> {
    let mut machine = Machine::describe();
    let load = machine::load_1m();
    if load > 0.5 * machine.cores as f64 {
        warn!(
            load,
            cores = machine.cores,
            "the machine is busy: figures will be lower and noisier than on a quiet machine"
        );
    }
    let bins = binaries::locate(&config)?;
    let (work, _temp) = work_dir(&config)?;
    info!(dir = %work.display(), "work dir");
    let servers = Servers::start(&config).await?;
    machine.set_postgres(servers.postgres_version().await?);
    machine.postgres_config = servers.postgres_config().await?;
    info!(settings = %machine.postgres_config, "postgresql");
    let mut report = Report::new(command, config.quick, machine, bins.clone());
    let json = config.json.clone();
    let mut bench = Bench {
        config,
        bins,
        servers,
        work,
    };

    if bench.config.runs(Part::Backfill) {
        if let Err(e) = backfill_part(&bench, &mut report).await {
            report.errors.push(format!("backfill: {e:#}"));
        }
    }
    if bench.config.runs(Part::Live) {
        match live::run(&mut bench).await {
            Ok((live, checks)) => {
                report.live = Some(live);
                report.checks.extend(checks);
            }
            Err(e) => report.errors.push(format!("live: {e:#}")),
        }
    }
    if bench.config.runs(Part::Footprint) {
        match footprint::run(&bench).await {
            Ok((footprint, checks)) => {
                report.footprint = Some(footprint);
                report.checks.extend(checks);
            }
            Err(e) => report.errors.push(format!("footprint: {e:#}")),
        }
    }
    if bench.config.runs(Part::Buffer) {
        match buffer::run(&bench).await {
            Ok((buffer, checks)) => {
                report.buffer = Some(buffer);
                report.checks.extend(checks);
            }
            Err(e) => report.errors.push(format!("buffer: {e:#}")),
        }
    }
    if bench.config.runs(Part::Fleet) {
        match fleet::run(&bench).await {
            Ok((fleet, checks)) => {
                report.fleet = Some(fleet);
                report.checks.extend(checks);
            }
            Err(e) => report.errors.push(format!("fleet: {e:#}")),
        }
    }
    if bench.config.runs(Part::Archive) {
        match archive::run(&bench).await {
            Ok((_, checks)) => report.checks.extend(checks),
            Err(e) => report.errors.push(format!("archive: {e:#}")),
        }
    }
    if bench.config.runs(Part::Rollups) {
        match rollups::run(&bench).await {
            Ok((_, checks)) => report.checks.extend(checks),
            Err(e) => report.errors.push(format!("rollups: {e:#}")),
        }
    }
    if bench.config.runs(Part::Api) {
        match api::run(&bench).await {
            Ok((api, checks)) => {
                report.api = Some(api);
                report.checks.extend(checks);
            }
            Err(e) => report.errors.push(format!("api: {e:#}")),
        }
    }

    report.machine.load_end = machine::load_average();
    report.evaluate();
    println!("{}", report.render());
    if let Some(path) = json {
        let text = serde_json::to_string_pretty(&report)?;
        std::fs::write(&path, text).with_context(|| format!("write {}", path.display()))?;
        info!(path = %path.display(), "wrote the JSON report");
    }
    Ok(report)
}

/// The pipeline and the `\copy` baselines in turn, `--rounds` times, then the naive client
/// once. The report keeps each measurement's median round and every round's rates.
async fn backfill_part(bench: &Bench, report: &mut Report) -> anyhow::Result<()> {
    let generated = backfill::generate(bench).await?;
    let first = backfill::run(bench, &generated, "backfill").await?;
    report.checks.extend(first.checks);
    if bench.config.no_baselines {
        report.backfill = Some(first.report);
        return bench.retire(first.deployment).await;
    }
    let sample = generate::sample_lines(&generated, bench.config.naive_sample())?;
    let files = baseline::export(bench, first.deployment).await?;
    let mut pipelines = vec![first.report];
    let (mut copies_1, mut copies_2) = (Vec::new(), Vec::new());
    for round in 1..=bench.config.rounds() {
        if round > 1 {
            let run = backfill::run(bench, &generated, &format!("backfill-{round}")).await?;
            report.checks.extend(run.checks);
            bench.retire(run.deployment).await?;
            pipelines.push(run.report);
        }
        copies_1.push(baseline::copy(bench, &files, 1, &mut report.checks).await?);
        copies_2.push(baseline::copy(bench, &files, 2, &mut report.checks).await?);
        info!(
            round,
            pipeline = pipelines[pipelines.len() - 1].readings_per_sec.round(),
            copy_1 = copies_1[copies_1.len() - 1].rows_per_sec.round(),
            copy_2 = copies_2[copies_2.len() - 1].rows_per_sec.round(),
            "backfill round done"
        );
    }
    let naive = baseline::naive(bench, &sample, &mut report.checks).await?;
    report.rounds = pipelines
        .iter()
        .zip(&copies_1)
        .zip(&copies_2)
        .map(|((p, c1), c2)| Round {
            pipeline: p.readings_per_sec,
            copy_1: c1.rows_per_sec,
            copy_2: c2.rows_per_sec,
        })
        .collect();
    report.backfill = Some(report::median_by(pipelines, |p| p.readings_per_sec));
    report.baselines = Some(BaselineReport {
        copy_file_bytes: files.bytes,
        copy_1: report::median_by(copies_1, |c| c.rows_per_sec),
        copy_2: report::median_by(copies_2, |c| c.rows_per_sec),
        naive,
    });
    Ok(())
}

/// The work dir; a temp dir (removed on drop unless `--keep-work-dir`) when none is given.
fn work_dir(config: &Config) -> anyhow::Result<(PathBuf, Option<tempfile::TempDir>)> {
    if let Some(dir) = &config.work_dir {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
        return Ok((dir.clone(), None));
    }
    let temp = tempfile::Builder::new()
        .prefix("edge-mes-bench-")
        .tempdir()
        .context("create the work dir")?;
    if config.keep_work_dir {
        return Ok((temp.keep(), None));
    }
    Ok((temp.path().to_owned(), Some(temp)))
}
