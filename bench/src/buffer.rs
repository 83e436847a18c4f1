//! Part 5: the READINGS stream carries many times its size limit at the live rate (issue 17).
//!
//! The workers run with a small `--stream-max-bytes`; lines are appended at the live rate until
//! the stream has carried `--buffer-carry` times that limit (or, with `--soak`, for that long).
//! Every second the stream's bytes and messages, and the resident memory of the worker(s), the
//! shippers and nats-server are sampled: with a stream that frees what was loaded they stay flat.
//! At the end every line must be a row exactly once, and the shippers' metrics tell how long
//! their publishes waited for an acknowledgement and how often a full stream refused them.

use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;
use tracing::info;

use crate::monitored::{terminate_all, Monitored};
use crate::procstat::rss_kib;
use crate::report::Check;
use crate::stack::{wait_until, Bench};
use crate::writer::{LineLogs, RateWriter};

const EXIT_LIMIT: Duration = Duration::from_secs(60);
const SAMPLE_EVERY: Duration = Duration::from_secs(1);

/// One sample: seconds since the load started, the stream, and resident memory in KiB.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Sample {
    pub t_secs: f64,
    pub stream_bytes: u64,
    pub stream_messages: u64,
    /// Messages the stream has taken since it was created (its last sequence).
    pub stream_last_seq: u64,
    pub workers_rss_kib: u64,
    pub shippers_rss_kib: u64,
    pub nats_rss_kib: Option<u64>,
}

/// How a series moved: mean of its first and last quarter, and its largest value.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Trend {
    pub first_quarter_mean: f64,
    pub last_quarter_mean: f64,
    pub max: f64,
}

impl Trend {
    pub fn of(values: &[f64]) -> Option<Self> {
        if values.len() < 4 {
            return None;
        }
        let q = values.len() / 4;
        let mean = |s: &[f64]| s.iter().sum::<f64>() / s.len() as f64;
        Some(Self {
            first_quarter_mean: mean(&values[..q]),
            last_quarter_mean: mean(&values[values.len() - q..]),
            max: values.iter().copied().fold(f64::MIN, f64::max),
        })
    }

    /// Last quarter over first quarter (1.0 = flat).
    pub fn growth(&self) -> f64 {
        if self.first_quarter_mean > 0.0 {
            self.last_quarter_mean / self.first_quarter_mean
        } else {
            1.0
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct BufferReport {
    pub soak: bool,
    pub stream_limit_bytes: u64,
    pub requested_rate: u32,
    pub secs: f64,
    pub lines: u64,
    /// Bytes of JSONL written (what the stream carried, less message headers).
    pub bytes_written: u64,
    /// `bytes_written / stream_limit_bytes`.
    pub carried_limits: f64,
    pub stream_messages_carried: u64,
    pub stream_bytes_max: u64,
    pub stream_bytes: Option<Trend>,
    pub workers_rss: Option<Trend>,
    pub shippers_rss: Option<Trend>,
    pub nats_rss: Option<Trend>,
    /// Publishes a full stream (or anything else) refused, all shippers.
    pub shipper_publish_retries: u64,
    /// Mean time from a message's first publish attempt to its acknowledgement.
    pub shipper_ack_wait_mean_ms: Option<f64>,
    pub samples: Vec<Sample>,
}

pub async fn run(bench: &Bench) -> anyhow::Result<(BufferReport, Vec<Check>)> {
    let cfg = bench.config.clone();
    let limit = cfg.buffer_stream_bytes();
    let rate = cfg.live_rate();
    let soak = cfg.soak;
    let drain = Duration::from_secs(cfg.drain_timeout_secs);
    let dep = bench.deploy("buffer").await?;
    let stream = protocol::Names::isolated(&dep.namespace).readings_stream;
    let (files, boxes) = crate::live::layout(
        &bench.dir("buffer")?,
        cfg.live_files,
        cfg.live_boxes,
        cfg.resources,
        cfg.sensors,
    )?;
    let logs = LineLogs::new(files.len());

    let mut workers = Vec::new();
    for w in 0..cfg.workers {
        let mut cmd = bench.worker(&dep);
        cmd.args(["--stream-max-bytes", &limit.to_string()]);
        workers.push(bench.spawn(&format!("buffer-worker-{}", w + 1), cmd)?);
    }
    let mut shippers = Vec::new();
    let mut metric_ports = Vec::new();
    for (box_id, dir) in &boxes {
        let port = testkit::nats::free_port()?;
        let mut cmd = bench.shipper(&dep, box_id, dir, false)?;
        cmd.args(["--metrics-addr", &format!("127.0.0.1:{port}")]);
        metric_ports.push(port);
        shippers.push(bench.spawn(&format!("buffer-shipper-{box_id}"), cmd)?);
    }
    let js = async_nats::jetstream::new(
        async_nats::connect(bench.servers.nats_url())
            .await
            .context("connect to NATS")?,
    );
    // The workers apply the small limit at start: wait for it before loading.
    let watched: Vec<&Monitored> = shippers.iter().chain(&workers).collect();
    wait_until(
        "the workers to apply the stream limit",
        Duration::from_secs(60),
        &watched,
        || {
            let js = js.clone();
            let stream = stream.clone();
            async move {
                let mut s = js.get_stream(&stream).await?;
                Ok(s.info().await?.config.max_bytes == i64::try_from(limit).unwrap_or(i64::MAX))
            }
        },
    )
    .await?;
    drop(watched);

    let writer = RateWriter::start(files.clone(), f64::from(rate), logs.clone(), cfg.seed)?;
    let started = Instant::now();
    info!(rate, limit, soak = ?soak, "buffer load started");
    let mut samples = Vec::new();
    let target_bytes = limit.saturating_mul(u64::from(cfg.buffer_carry));
    loop {
        tokio::time::sleep(SAMPLE_EVERY).await;
        let info = js.get_stream(&stream).await?.info().await?.clone();
        let nats_pid = bench.servers.nats_pid();
        samples.push(Sample {
            t_secs: started.elapsed().as_secs_f64(),
            stream_bytes: info.state.bytes,
            stream_messages: info.state.messages,
            stream_last_seq: info.state.last_sequence,
            workers_rss_kib: workers.iter().filter_map(|w| rss_kib(w.pid())).sum(),
            shippers_rss_kib: shippers.iter().filter_map(|s| rss_kib(s.pid())).sum(),
            nats_rss_kib: nats_pid.and_then(rss_kib),
        });
        if let Some(p) = shippers.iter().chain(&workers).find(|p| p.has_exited()) {
            anyhow::bail!("{} exited during the buffer part", p.name());
        }
        let written_bytes: u64 = files
            .iter()
            .filter_map(|f| std::fs::metadata(&f.path).ok())
            .map(|m| m.len())
            .sum();
        let done = match soak {
            Some(d) => started.elapsed() >= d,
            None => written_bytes >= target_bytes,
        };
        if done {
            break;
        }
        if samples.len() % 30 == 0 {
            info!(
                secs = started.elapsed().as_secs(),
                written_mib = written_bytes / (1 << 20),
                stream_bytes = info.state.bytes,
                "buffer part running"
            );
        }
    }
    let written = writer.stop().await?;
    let secs = started.elapsed().as_secs_f64();
    let watched: Vec<&Monitored> = shippers.iter().chain(&workers).collect();
    wait_until("every line to be loaded", drain, &watched, || {
        let pool = dep.pool.clone();
        async move {
            let n: i64 = sqlx::query_scalar(
                "SELECT coalesce(sum(rows_loaded), 0)::bigint FROM ingest_ledger",
            )
            .fetch_one(&pool)
            .await?;
            Ok(u64::try_from(n).unwrap_or(0) >= written.lines)
        }
    })
    .await?;
    wait_until(
        "the stream to free what was loaded",
        Duration::from_secs(60),
        &watched,
        || {
            let js = js.clone();
            let stream = stream.clone();
            async move { Ok(js.get_stream(&stream).await?.info().await?.state.messages == 0) }
        },
    )
    .await?;
    drop(watched);
    let mut retries = 0;
    let (mut wait_sum, mut wait_count) = (0.0, 0.0);
    for port in &metric_ports {
        let text = scrape(*port).await?;
        retries += metric(&text, "edge_shipper_publish_retries_total").unwrap_or(0.0) as u64;
        wait_sum += metric(&text, "edge_shipper_publish_latency_seconds_sum").unwrap_or(0.0);
        wait_count += metric(&text, "edge_shipper_publish_latency_seconds_count").unwrap_or(0.0);
    }
    let carried = js
        .get_stream(&stream)
        .await?
        .info()
        .await?
        .state
        .last_sequence;
    let exits = terminate_all(shippers.into_iter().chain(workers).collect(), EXIT_LIMIT).await?;
    for e in &exits {
        e.ensure_success()?;
    }

    let stream_bytes_max = samples.iter().map(|s| s.stream_bytes).max().unwrap_or(0);
    let series = |f: &dyn Fn(&Sample) -> Option<f64>| -> Option<Trend> {
        let v: Vec<f64> = samples.iter().filter_map(f).collect();
        Trend::of(&v)
    };
    let report = BufferReport {
        soak: soak.is_some(),
        stream_limit_bytes: limit,
        requested_rate: rate,
        secs,
        lines: written.lines,
        bytes_written: written.bytes,
        carried_limits: written.bytes as f64 / limit as f64,
        stream_messages_carried: carried,
        stream_bytes_max,
        stream_bytes: series(&|s| Some(s.stream_bytes as f64)),
        workers_rss: series(&|s| Some(s.workers_rss_kib as f64)),
        shippers_rss: series(&|s| Some(s.shippers_rss_kib as f64)),
        nats_rss: series(&|s| s.nats_rss_kib.map(|v| v as f64)),
        shipper_publish_retries: retries,
        shipper_ack_wait_mean_ms: (wait_count > 0.0).then(|| wait_sum / wait_count * 1000.0),
        samples,
    };
    let mut checks = vec![
        Check::equal(
            "buffer: ledger sum(rows_loaded)",
            written.lines,
            dep.rows_loaded().await?,
        ),
        Check::equal(
            "buffer: count(*) of readings",
            written.lines,
            dep.readings().await?,
        ),
        Check::equal("buffer: rejected_readings", 0, dep.rejected().await?),
        Check::equal(
            "buffer: stream never above its limit (bytes over)",
            0,
            stream_bytes_max.saturating_sub(limit),
        ),
    ];
    if soak.is_none() {
        checks.push(Check::equal(
            "buffer: carried at least --buffer-carry limits (0 = yes)",
            0,
            target_bytes.saturating_sub(written.bytes),
        ));
    }
    bench.retire(dep).await?;
    Ok((report, checks))
}

/// The Prometheus text of `127.0.0.1:<port>/metrics`.
async fn scrape(port: u16) -> anyhow::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut conn = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .with_context(|| format!("connect to the shipper's metrics on port {port}"))?;
    conn.write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .await?;
    let mut text = String::new();
    tokio::time::timeout(Duration::from_secs(10), conn.read_to_string(&mut text))
        .await
        .context("metrics did not answer within 10 s")??;
    Ok(text)
}

/// The value of an unlabelled sample `name` in Prometheus text.
fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        let rest = l.strip_prefix(name)?;
        let value = rest.strip_prefix(' ')?;
        value.trim().parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flat_series_has_growth_one_and_a_rising_one_more() {
        let flat = Trend::of(&[5.0, 5.0, 5.0, 5.0, 5.0, 5.0, 5.0, 5.0]).unwrap();
        assert_eq!(flat.growth(), 1.0);
        assert_eq!(flat.max, 5.0);
        let rising = Trend::of(&[1.0, 1.0, 2.0, 2.0, 3.0, 3.0, 4.0, 4.0]).unwrap();
        assert_eq!(rising.growth(), 4.0);
        assert!(Trend::of(&[1.0, 2.0, 3.0]).is_none());
    }

    #[test]
    fn unlabelled_samples_are_read_from_prometheus_text() {
        let text = "# TYPE edge_shipper_publish_retries_total counter\n\
                    edge_shipper_publish_retries_total 7\n\
                    edge_shipper_publish_latency_seconds_sum 1.5\n\
                    edge_shipper_publish_latency_seconds_count 30\n\
                    edge_shipper_publish_latency_seconds_bucket{le=\"0.1\"} 3\n";
        assert_eq!(
            metric(text, "edge_shipper_publish_retries_total"),
            Some(7.0)
        );
        assert_eq!(
            metric(text, "edge_shipper_publish_latency_seconds_count"),
            Some(30.0)
        );
        assert_eq!(metric(text, "edge_shipper_publish_latency_seconds"), None);
        assert_eq!(metric(text, "missing"), None);
    }
}
