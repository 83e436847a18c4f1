//! Fleet: the same total rate first from four boxes, then from hundreds, each box its own
//! edge-shipper process (issue 15, "many boxes"). Both runs tail the same files (one per box of
//! the many-boxes run by default) at the same rate per file, so what differs is the number of
//! processes, NATS connections and subjects, not the data or the messages.
//!
//! Each run is a [`SteadyLoad`] like the live part's. During its window the worker's durable
//! consumer (ack pending, pending) and the resident memory of nats-server, the worker(s) and the
//! shippers are sampled every second. After it, the database's bytes per row.

use std::time::Duration;

use anyhow::Context;
use serde::Serialize;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::monitored::SAMPLE_EVERY;
use crate::procstat::rss_kib;
use crate::report::{Check, CpuSplit, Distribution, PollerReport};
use crate::stack::Bench;
use crate::steady_load::{LoadShape, SteadyLoad};
use crate::writer::now_us;

/// Boxes of the first run.
pub const FEW_BOXES: u32 = 4;
/// The many-boxes run's p99 write → row must stay within the live target.
const P99_LIMIT_MS: f64 = 1000.0;
/// How often the window is sampled.
const SAMPLE_WINDOW_EVERY: Duration = Duration::from_secs(1);
/// Above this many boxes each shipper's watcher samples it once a second, not every 50 ms.
const SAMPLE_SLOWLY_ABOVE: u32 = 20;
/// File descriptors this process needs besides one per file it appends to (servers' clients,
/// database pool, logs, `/proc` reads).
const FD_RESERVE: u64 = 256;
/// What a shipper logs when it cannot watch its directory and falls back to periodic rescans.
const NO_NOTIFY_LOG: &str = "file change notifications unavailable";
/// Linux's limit of inotify instances per user: each shipper on this machine takes one.
const INOTIFY_INSTANCES: &str = "/proc/sys/fs/inotify/max_user_instances";

#[derive(Debug, Clone, Serialize)]
pub struct FleetReport {
    pub requested_rate: u32,
    pub files: u32,
    pub files_per_box: u32,
    /// Seconds of the unmeasured 4-box load before the runs.
    pub warmup_load_secs: u64,
    /// `fs.inotify.max_user_instances` at the start (`None`: not readable).
    pub inotify_max_user_instances: Option<u64>,
    /// The four-box run, then the many-boxes run.
    pub runs: Vec<FleetRun>,
}

/// One run of the fleet part.
#[derive(Debug, Clone, Serialize)]
pub struct FleetRun {
    pub boxes: u32,
    pub window_secs: f64,
    pub rate_held: f64,
    pub commit_rate: f64,
    pub latency_ms: Distribution,
    pub poller: PollerReport,
    /// During the window.
    pub cpu: CpuSplit,
    /// Of `cpu.postgres_secs`: the backend answering the benchmark's own ledger poll.
    pub ledger_poll_postgres_secs: Option<f64>,
    pub cpu_us_per_reading: CpuPerReading,
    pub worker_peak_rss_kib: Vec<u64>,
    /// Shippers that could not watch their files (inotify instances exhausted on this one
    /// machine) and read them at each rescan instead, every 500 ms.
    pub shippers_without_notifications: u64,
    /// `VmHWM` of each shipper: sum, largest, mean.
    pub shipper_peak_rss_kib_sum: u64,
    pub shipper_peak_rss_kib_max: u64,
    pub shipper_peak_rss_kib_mean: f64,
    /// Largest values sampled in the window.
    pub window_max: WindowMax,
    /// What a message takes in the stream (see [`stored_bytes_per_message`]).
    pub stream_bytes_per_message: Option<f64>,
    pub samples: Vec<FleetSample>,
    pub writer_max_gap_ms: f64,
    pub total_lines: u64,
    /// Messages the shippers published (the stream's last sequence) and ledger entries the
    /// worker wrote (about one per source and batch; the ledger's last id), over the whole run.
    pub messages: u64,
    pub ledger_entries: u64,
    /// `readings` (heap, index, TOAST, all partitions) at the end, and per row.
    pub readings_bytes: u64,
    pub readings_bytes_per_row: f64,
    /// `ingest_ledger` at the end: rows and bytes with its indexes. Not a cost per reading: the
    /// worker merges each source's adjacent ranges every 30 s, so it holds about a row per
    /// source plus the last half minute's (and the space of the rows it merged until vacuum).
    pub ledger_rows: u64,
    pub ledger_bytes: u64,
}

/// CPU microseconds per reading committed in the window (`None`: server not ours).
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct CpuPerReading {
    pub shippers: f64,
    pub workers: f64,
    pub nats: Option<f64>,
    /// Without the benchmark's own ledger poll.
    pub postgres: Option<f64>,
}

impl CpuPerReading {
    /// `cpu`'s seconds over the readings committed at `readings_per_sec` during its wall time;
    /// PostgreSQL's less `ledger_poll_secs` (the benchmark's poll, no cost of the pipeline).
    pub fn of(cpu: &CpuSplit, ledger_poll_secs: Option<f64>, readings_per_sec: f64) -> Self {
        let readings = (readings_per_sec * cpu.wall_secs).max(1.0);
        let us = |secs: f64| secs * 1e6 / readings;
        Self {
            shippers: us(cpu.shippers_secs),
            workers: us(cpu.workers_secs),
            nats: cpu.nats_secs.map(us),
            postgres: cpu
                .postgres_secs
                .map(|pg| us((pg - ledger_poll_secs.unwrap_or(0.0)).max(0.0))),
        }
    }
}

/// One sample of the window: the consumer and resident memory in KiB (`None`: not readable).
#[derive(Debug, Clone, Copy, Serialize)]
pub struct FleetSample {
    pub at_us: i64,
    pub ack_pending: Option<u64>,
    pub pending: Option<u64>,
    pub redelivered: Option<u64>,
    /// Messages and bytes the stream holds (a work queue: those not acknowledged yet).
    pub stream_messages: Option<u64>,
    pub stream_bytes: Option<u64>,
    pub nats_rss_kib: Option<u64>,
    pub workers_rss_kib: u64,
    pub shippers_rss_kib: u64,
}

/// Bytes the stream stores per message (payload, headers, subject and its own framing), over the
/// samples in `[start_us, end_us)` that found messages in it; `None` when none did.
pub fn stored_bytes_per_message(
    samples: &[FleetSample],
    start_us: i64,
    end_us: i64,
) -> Option<f64> {
    let (messages, bytes) = samples
        .iter()
        .filter(|s| (start_us..end_us).contains(&s.at_us))
        .filter_map(|s| s.stream_messages.zip(s.stream_bytes))
        .fold((0u64, 0u64), |(m, b), (sm, sb)| (m + sm, b + sb));
    (messages > 0).then(|| bytes as f64 / messages as f64)
}

/// The largest value of each sampled series (0 when never read).
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct WindowMax {
    pub samples: u64,
    /// Samples in which the consumer could be read.
    pub consumer_samples: u64,
    pub ack_pending: u64,
    pub pending: u64,
    pub redelivered: u64,
    pub nats_rss_kib: u64,
    pub workers_rss_kib: u64,
    pub shippers_rss_kib: u64,
}

impl WindowMax {
    /// Over the samples taken in `[start_us, end_us)`.
    pub fn of(samples: &[FleetSample], start_us: i64, end_us: i64) -> Self {
        let inside: Vec<&FleetSample> = samples
            .iter()
            .filter(|s| (start_us..end_us).contains(&s.at_us))
            .collect();
        let max = |f: &dyn Fn(&FleetSample) -> Option<u64>| {
            inside.iter().filter_map(|s| f(s)).max().unwrap_or(0)
        };
        Self {
            samples: inside.len() as u64,
            consumer_samples: inside.iter().filter(|s| s.ack_pending.is_some()).count() as u64,
            ack_pending: max(&|s| s.ack_pending),
            pending: max(&|s| s.pending),
            redelivered: max(&|s| s.redelivered),
            nats_rss_kib: max(&|s| s.nats_rss_kib),
            workers_rss_kib: max(&|s| Some(s.workers_rss_kib)),
            shippers_rss_kib: max(&|s| Some(s.shippers_rss_kib)),
        }
    }
}

impl FleetReport {
    /// Did the many-boxes run hold up? Met when it held ≥ 98 % of the requested rate (written
    /// and committed) and its p99 write → row stayed within the live target, 1 s. The measured
    /// text also gives its p99 against the four-box run's. `None` without both runs.
    pub fn held_up(&self) -> Option<(bool, String)> {
        let [few, many] = self.runs.as_slice() else {
            return None;
        };
        let requested = f64::from(self.requested_rate);
        let ok = many.rate_held >= 0.98 * requested
            && many.commit_rate >= 0.98 * requested
            && many.latency_ms.p99 <= P99_LIMIT_MS;
        Some((
            ok,
            format!(
                "p99 {:.0} ms with {} boxes, {:.0} ms with {} ({:.2} ×); held {:.0} / committed {:.0} of {}/s",
                many.latency_ms.p99,
                many.boxes,
                few.latency_ms.p99,
                few.boxes,
                many.latency_ms.p99 / few.latency_ms.p99.max(1e-9),
                many.rate_held,
                many.commit_rate,
                self.requested_rate
            ),
        ))
    }
}

pub async fn run(bench: &Bench) -> anyhow::Result<(FleetReport, Vec<Check>)> {
    let cfg = &bench.config;
    let many = cfg.fleet_boxes();
    let files = many * cfg.fleet_files_per_box;
    ensure_open_files(u64::from(files))?;
    warn_when_memory_is_short(many);
    let inotify_limit = std::fs::read_to_string(INOTIFY_INSTANCES)
        .ok()
        .and_then(|t| t.trim().parse::<u64>().ok());
    if let Some(limit) = inotify_limit.filter(|&l| l < u64::from(many) + 16) {
        warn!(
            limit,
            boxes = many,
            "fs.inotify.max_user_instances is below the shippers on this machine: the ones \
             beyond it read their files every 500 ms instead of on change (each box has a \
             kernel of its own in a plant); raise it, e.g. sysctl fs.inotify.max_user_instances=1024"
        );
    }
    let mut checks = Vec::new();
    let warmup = cfg.fleet_warmup_load_secs();
    if warmup > 0 {
        // Neither measured run pays for a cold server (new WAL segments, empty caches) or a
        // nats-server that is still growing.
        let shape = fleet_shape(bench, "fleet-warmup".to_owned(), FEW_BOXES, files);
        let load = SteadyLoad::start(bench, &shape, Duration::from_secs(warmup)).await?;
        let done = load.finish().await?;
        checks.extend(done.checks);
        bench.retire(done.dep).await?;
    }
    let mut runs = Vec::new();
    for boxes in [FEW_BOXES, many] {
        let (run, run_checks) = one_run(bench, boxes, files).await?;
        info!(
            boxes,
            p99_ms = run.latency_ms.p99,
            rate_held = run.rate_held.round(),
            "fleet run done"
        );
        runs.push(run);
        checks.extend(run_checks);
    }
    Ok((
        FleetReport {
            requested_rate: cfg.fleet_rate(),
            files,
            files_per_box: cfg.fleet_files_per_box,
            warmup_load_secs: warmup,
            inotify_max_user_instances: inotify_limit,
            runs,
        },
        checks,
    ))
}

async fn one_run(bench: &Bench, boxes: u32, files: u32) -> anyhow::Result<(FleetRun, Vec<Check>)> {
    let cfg = &bench.config;
    if let Err(e) = bench.servers.checkpoint().await {
        warn!(error = %format!("{e:#}"), "no CHECKPOINT before the fleet run");
    }
    let shape = fleet_shape(bench, format!("fleet-{boxes}"), boxes, files);
    let load =
        SteadyLoad::start(bench, &shape, Duration::from_secs(cfg.live_warmup_secs())).await?;
    let names = protocol::Names::isolated(&load.dep.namespace);
    let js = bench.jetstream().await?;
    let stream = js
        .get_stream(&names.readings_stream)
        .await
        .with_context(|| format!("stream {}", names.readings_stream))?;
    let pids = Pids {
        nats: bench.servers.nats_pid(),
        workers: load.workers.iter().map(|w| w.pid()).collect(),
        shippers: load.shippers.iter().map(|s| s.pid()).collect(),
    };
    let stop_sampling = CancellationToken::new();
    let _stop_sampling_on_error = stop_sampling.clone().drop_guard();
    let sampler = tokio::spawn(sample_until(
        stream,
        names.consumer.clone(),
        pids,
        stop_sampling.clone(),
    ));
    let window = load
        .window(bench, Duration::from_secs(cfg.fleet_secs()))
        .await?;
    stop_sampling.cancel();
    let samples = sampler.await?;
    let done = load.finish().await?;
    let readings_bytes = done.dep.table_bytes("readings").await?;
    let ledger_bytes = done.dep.table_bytes("ingest_ledger").await?;
    let ledger_rows =
        crate::stack::count(&done.dep.pool, "SELECT count(*) FROM ingest_ledger").await?;
    let ledger_entries = crate::stack::count(
        &done.dep.pool,
        "SELECT coalesce(max(id), 0) FROM ingest_ledger",
    )
    .await?;
    let messages = js
        .get_stream(&names.readings_stream)
        .await?
        .info()
        .await?
        .state
        .last_sequence;
    bench.retire(done.dep).await?;

    let figures = window.figures(&done.lines);
    let peaks: Vec<u64> = done.shipper_exits.iter().map(|e| e.peak_rss_kib).collect();
    let without_notifications = done
        .shipper_exits
        .iter()
        .filter(|e| std::fs::read_to_string(&e.log).is_ok_and(|text| text.contains(NO_NOTIFY_LOG)))
        .count() as u64;
    let rows = done.written.lines.max(1) as f64;
    Ok((
        FleetRun {
            boxes,
            window_secs: figures.window_secs,
            rate_held: figures.rate_held,
            commit_rate: figures.commit_rate,
            latency_ms: figures.latency_ms,
            poller: done.poller.into(),
            cpu: window.cpu,
            ledger_poll_postgres_secs: window.ledger_poll_postgres_secs,
            cpu_us_per_reading: CpuPerReading::of(
                &window.cpu,
                window.ledger_poll_postgres_secs,
                figures.commit_rate,
            ),
            worker_peak_rss_kib: done.worker_exits.iter().map(|e| e.peak_rss_kib).collect(),
            shippers_without_notifications: without_notifications,
            shipper_peak_rss_kib_sum: peaks.iter().sum(),
            shipper_peak_rss_kib_max: peaks.iter().copied().max().unwrap_or(0),
            shipper_peak_rss_kib_mean: peaks.iter().sum::<u64>() as f64 / peaks.len().max(1) as f64,
            window_max: WindowMax::of(&samples, window.start_us, window.end_us),
            stream_bytes_per_message: stored_bytes_per_message(
                &samples,
                window.start_us,
                window.end_us,
            ),
            samples,
            writer_max_gap_ms: done.written.max_gap.as_secs_f64() * 1000.0,
            total_lines: done.written.lines,
            messages,
            ledger_entries,
            readings_bytes,
            readings_bytes_per_row: readings_bytes as f64 / rows,
            ledger_rows,
            ledger_bytes,
        },
        done.checks,
    ))
}

/// `files` at the fleet rate over `boxes` boxes.
fn fleet_shape(bench: &Bench, label: String, boxes: u32, files: u32) -> LoadShape {
    LoadShape {
        label,
        files,
        boxes,
        rate: bench.config.fleet_rate(),
        shipper_sample_every: if boxes > SAMPLE_SLOWLY_ABOVE {
            Duration::from_secs(1)
        } else {
            SAMPLE_EVERY
        },
    }
}

/// The processes whose memory is sampled.
struct Pids {
    nats: Option<u32>,
    workers: Vec<u32>,
    shippers: Vec<u32>,
}

/// Samples the consumer and the processes' memory every second until `stop`.
async fn sample_until(
    mut stream: async_nats::jetstream::stream::Stream,
    consumer: String,
    pids: Pids,
    stop: CancellationToken,
) -> Vec<FleetSample> {
    let mut samples = Vec::new();
    let mut tick = tokio::time::interval(SAMPLE_WINDOW_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return samples,
            _ = tick.tick() => {}
        }
        let at_us = now_us();
        let info = match stream.consumer_info(&consumer).await {
            Ok(info) => Some(info),
            Err(e) => {
                warn!(error = %e, consumer = %consumer, "consumer info failed");
                None
            }
        };
        let state = match stream.info().await {
            Ok(info) => Some(info.state.clone()),
            Err(e) => {
                warn!(error = %e, "stream info failed");
                None
            }
        };
        let sum = |pids: &[u32]| -> u64 { pids.iter().filter_map(|&p| rss_kib(p)).sum() };
        samples.push(FleetSample {
            at_us,
            ack_pending: info.as_ref().map(|i| i.num_ack_pending as u64),
            pending: info.as_ref().map(|i| i.num_pending),
            redelivered: info.as_ref().map(|i| i.num_redelivered as u64),
            stream_messages: state.as_ref().map(|s| s.messages),
            stream_bytes: state.as_ref().map(|s| s.bytes),
            nats_rss_kib: pids.nats.and_then(rss_kib),
            workers_rss_kib: sum(&pids.workers),
            shippers_rss_kib: sum(&pids.shippers),
        });
    }
}

/// The soft and hard `Max open files` of `/proc/<pid>/limits` text (`u64::MAX`: unlimited).
fn parse_open_files_limit(limits: &str) -> Option<(u64, u64)> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    let mut values = line["Max open files".len()..].split_whitespace().map(|v| {
        if v == "unlimited" {
            Some(u64::MAX)
        } else {
            v.parse().ok()
        }
    });
    Some((values.next()??, values.next()??))
}

/// The writer keeps every file open: makes sure the soft limit of open files covers them,
/// raising it towards the hard limit (`prlimit`) when it does not; fails with what to do when
/// even the hard limit is too low.
fn ensure_open_files(files: u64) -> anyhow::Result<()> {
    let need = files + FD_RESERVE;
    let read = || {
        std::fs::read_to_string("/proc/self/limits")
            .ok()
            .and_then(|t| parse_open_files_limit(&t))
    };
    let Some((soft, hard)) = read() else {
        warn!("cannot read the open files limit; going on");
        return Ok(());
    };
    if soft >= need {
        return Ok(());
    }
    anyhow::ensure!(
        hard >= need,
        "the fleet part keeps {files} files open and needs about {need} file descriptors; \
         the hard limit is {hard}: raise it (ulimit -Hn) or pass fewer --fleet-boxes"
    );
    let status = std::process::Command::new("prlimit")
        .args([
            "--pid",
            &std::process::id().to_string(),
            &format!("--nofile={need}:"),
        ])
        .status();
    let raised = read().is_some_and(|(soft, _)| soft >= need);
    anyhow::ensure!(
        raised,
        "the fleet part needs about {need} file descriptors, the soft limit is {soft} and \
         `prlimit` could not raise it ({status:?}): run `ulimit -n {need}` first"
    );
    info!(
        from = soft,
        to = need,
        "raised the soft limit of open files"
    );
    Ok(())
}

/// Warns when the shippers (≈ 10 MiB each) would take more than half the available memory.
fn warn_when_memory_is_short(boxes: u32) {
    let available_kib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| crate::procstat::parse_status_kib(&t, "MemAvailable"));
    let need_kib = u64::from(boxes) * 10 * 1024;
    if let Some(available_kib) = available_kib {
        if need_kib > available_kib / 2 {
            warn!(
                boxes,
                available_mib = available_kib / 1024,
                "hundreds of shippers may not fit in memory beside the servers"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(at_us: i64, ack_pending: Option<u64>, shippers_rss_kib: u64) -> FleetSample {
        FleetSample {
            at_us,
            ack_pending,
            pending: ack_pending.map(|a| a * 2),
            redelivered: ack_pending.map(|_| 0),
            stream_messages: ack_pending,
            stream_bytes: ack_pending.map(|a| a * 500),
            nats_rss_kib: Some(1000 + at_us as u64),
            workers_rss_kib: 500,
            shippers_rss_kib,
        }
    }

    #[test]
    fn window_maxima_take_only_the_samples_inside_the_window() {
        let samples = [
            sample(5, Some(900), 9_000), // before the window
            sample(10, Some(3), 100),
            sample(20, None, 300), // consumer not readable
            sample(30, Some(7), 200),
            sample(40, Some(800), 8_000), // at the end: outside
        ];
        let m = WindowMax::of(&samples, 10, 40);
        assert_eq!(
            m,
            WindowMax {
                samples: 3,
                consumer_samples: 2,
                ack_pending: 7,
                pending: 14,
                redelivered: 0,
                nats_rss_kib: 1030,
                workers_rss_kib: 500,
                shippers_rss_kib: 300,
            }
        );
        assert_eq!(WindowMax::of(&samples, 100, 200), WindowMax::default());
    }

    #[test]
    fn stored_bytes_per_message_weigh_every_sample_by_its_messages() {
        let mut samples = vec![
            sample(10, Some(2), 0),
            sample(20, Some(0), 0), // an empty stream says nothing
            sample(30, None, 0),
        ];
        samples[0].stream_bytes = Some(1_000);
        samples.push(FleetSample {
            stream_messages: Some(8),
            stream_bytes: Some(2_000),
            ..sample(40, Some(8), 0)
        });
        // (1,000 + 2,000) bytes over (2 + 8) messages.
        assert_eq!(stored_bytes_per_message(&samples, 0, 100), Some(300.0));
        assert_eq!(stored_bytes_per_message(&samples, 15, 35), None);
    }

    #[test]
    fn cpu_per_reading_divides_by_the_readings_committed_in_the_wall_time() {
        let cpu = CpuSplit {
            wall_secs: 10.0,
            shippers_secs: 0.5,
            workers_secs: 1.0,
            nats_secs: Some(0.25),
            postgres_secs: None,
            bench_secs: 0.1,
        };
        // 1,000 readings/s for 10 s: 10,000 readings.
        let per = CpuPerReading::of(&cpu, Some(0.1), 1_000.0);
        assert!((per.shippers - 50.0).abs() < 1e-9);
        assert!((per.workers - 100.0).abs() < 1e-9);
        assert_eq!(per.nats.map(|v| v.round()), Some(25.0));
        assert_eq!(per.postgres, None);
        // PostgreSQL without the ledger poll's backend.
        let pg = CpuSplit {
            postgres_secs: Some(0.4),
            ..cpu
        };
        assert_eq!(
            CpuPerReading::of(&pg, Some(0.1), 1_000.0)
                .postgres
                .map(|v| v.round()),
            Some(30.0)
        );
        assert_eq!(
            CpuPerReading::of(&pg, None, 1_000.0)
                .postgres
                .map(|v| v.round()),
            Some(40.0)
        );
    }

    fn run_with(boxes: u32, p99: f64, rate_held: f64) -> FleetRun {
        FleetRun {
            boxes,
            window_secs: 60.0,
            rate_held,
            commit_rate: rate_held,
            latency_ms: Distribution {
                p99,
                ..Distribution::default()
            },
            poller: PollerReport {
                polls: 0,
                mean_poll_ms: 0.0,
                max_poll_ms: 0.0,
                foreign_rows: 0,
                found_by_final_scan: 0,
            },
            cpu: CpuSplit::default(),
            ledger_poll_postgres_secs: None,
            cpu_us_per_reading: CpuPerReading::default(),
            worker_peak_rss_kib: vec![],
            shippers_without_notifications: 0,
            shipper_peak_rss_kib_sum: 0,
            shipper_peak_rss_kib_max: 0,
            shipper_peak_rss_kib_mean: 0.0,
            window_max: WindowMax::default(),
            stream_bytes_per_message: None,
            samples: vec![],
            writer_max_gap_ms: 0.0,
            total_lines: 0,
            messages: 0,
            ledger_entries: 0,
            readings_bytes: 0,
            readings_bytes_per_row: 0.0,
            ledger_rows: 0,
            ledger_bytes: 0,
        }
    }

    #[test]
    fn many_boxes_hold_up_at_the_full_rate_within_the_live_target() {
        let report = |many: FleetRun| FleetReport {
            requested_rate: 1000,
            files: 300,
            files_per_box: 1,
            warmup_load_secs: 0,
            inotify_max_user_instances: None,
            runs: vec![run_with(4, 150.0, 1000.0), many],
        };
        let (met, measured) = report(run_with(300, 450.0, 999.0)).held_up().unwrap();
        assert!(met);
        assert!(measured.starts_with("p99 450 ms with 300 boxes, 150 ms with 4 (3.00 ×)"));
        assert!(report(run_with(300, 1000.0, 999.0)).held_up().unwrap().0);
        // Beyond 1 s.
        assert!(!report(run_with(300, 1001.0, 999.0)).held_up().unwrap().0);
        // The rate not held.
        assert!(!report(run_with(300, 200.0, 900.0)).held_up().unwrap().0);
        let one = FleetReport {
            runs: vec![run_with(4, 20.0, 1000.0)],
            ..report(run_with(300, 0.0, 0.0))
        };
        assert!(one.held_up().is_none());
    }

    #[test]
    fn the_open_files_limit_is_read_from_proc_limits() {
        let text = "Limit                     Soft Limit           Hard Limit           Units     \n\
                    Max processes             95000                95000                processes \n\
                    Max open files            1024                 524288               files     \n";
        assert_eq!(parse_open_files_limit(text), Some((1024, 524_288)));
        let unlimited =
            "Max open files            unlimited            unlimited            files\n";
        assert_eq!(
            parse_open_files_limit(unlimited),
            Some((u64::MAX, u64::MAX))
        );
        assert_eq!(
            parse_open_files_limit("Max processes 1 2 processes\n"),
            None
        );
        // This process's own limits parse.
        let own = std::fs::read_to_string("/proc/self/limits").unwrap();
        let (soft, hard) = parse_open_files_limit(&own).unwrap();
        assert!(soft <= hard && soft > 0);
    }
}
