//! Wiring: the tailer thread feeds chunks through a bounded channel; this task publishes them
//! with a bounded number in flight, advances per-source offsets as acks arrive, and persists
//! them. Reading stops when the channel is full or too much is in flight, so the tailer never
//! runs far ahead of JetStream.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use futures::stream::{FuturesUnordered, StreamExt};
use tokio::sync::mpsc;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::acked_offsets::AckedOffsets;
use crate::checkpoint::{CheckpointError, CheckpointStore};
use crate::config::{Config, ConfigError};
use crate::metrics as m;
use crate::publisher::{self, ConnectError, FailureLog, Outgoing};
use crate::tailer::{TailEvent, Tailer};

/// Chunks waiting between the tailer and the publisher.
const CHANNEL_CAPACITY: usize = 8;
/// How long shutdown waits for messages in flight to be acknowledged.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(15);

#[derive(Debug, thiserror::Error)]
pub enum ShipperError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error("cannot start the metrics endpoint: {0}")]
    Metrics(#[from] metrics_exporter_prometheus::BuildError),
    #[error("the tailer stopped unexpectedly")]
    TailerFailed,
    #[error("the checkpoint writer panicked")]
    CheckpointPanicked,
}

/// Ships until `shutdown` fires (or, with `--until-caught-up`, until everything is shipped),
/// then waits up to [`SHUTDOWN_GRACE`] for acks and persists the checkpoint.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), ShipperError> {
    config.validate()?;
    if let Some(addr) = config.metrics_addr {
        m::install_exporter(addr)?;
        info!(%addr, "metrics endpoint up");
    }
    let store = CheckpointStore::open(&config.state_dir)?;
    let mut offsets = AckedOffsets::from_checkpoint(store.load()?, &config.box_id);
    let names = config.names();
    let subject = async_nats::Subject::from(names.readings_subject(&config.site, &config.box_id));
    let js = publisher::connect(
        &config.nats_url,
        &config.nats_url_redacted(),
        config.nats_creds.as_deref(),
    )
    .await?;
    info!(%subject, stream = %names.readings_stream, watch = %config.watch,
        box_id = %config.box_id, "edge-shipper started");

    let (tx, mut rx) = mpsc::channel(CHANNEL_CAPACITY);
    let (tailer, waker) = Tailer::new(config.tailer(), tx, offsets.resume_offsets());
    let unread = tailer.unread_bytes();
    let tailer_stop = shutdown.child_token();
    let tailer_task = {
        let stop = tailer_stop.clone();
        tokio::task::spawn_blocking(move || tailer.run(&stop))
    };

    let failures = Arc::new(FailureLog::default());
    let publish_metrics = m::PublishMetrics::new();
    let mut in_flight = FuturesUnordered::new();
    let mut in_flight_bytes = 0usize;
    let max_in_flight = usize::try_from(config.max_in_flight).unwrap_or(usize::MAX);
    let mut tick = tokio::time::interval(Duration::from_millis(config.checkpoint_interval_ms));
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let ttl = Duration::from_secs(config.checkpoint_ttl_secs);
    let mut caught_up = false;
    let mut tailer_gone = false;

    loop {
        if caught_up && in_flight.is_empty() {
            break;
        }
        let can_take = !tailer_gone
            && in_flight.len() < max_in_flight
            && in_flight_bytes < config.max_in_flight_bytes;
        tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            Some((msg, duplicate)) = in_flight.next(), if !in_flight.is_empty() => {
                in_flight_bytes -= acked(&mut offsets, &msg, duplicate, &publish_metrics);
            }
            event = rx.recv(), if can_take => match event {
                Some(TailEvent::Chunk(chunk)) => {
                    let msg = Outgoing::new(chunk, &config.site, &config.box_id);
                    in_flight_bytes += msg.payload.len();
                    in_flight.push(publisher::publish_until_acked(
                        js.clone(), subject.clone(), msg, failures.clone(),
                        publish_metrics.clone()));
                }
                Some(TailEvent::Begin { source, origin, offset }) => {
                    offsets.begin(source, &origin, offset, Utc::now());
                }
                Some(TailEvent::Live(live)) => offsets.set_live(&live, Utc::now()),
                Some(TailEvent::CaughtUp) => {
                    caught_up = true;
                    tailer_gone = true;
                }
                None => {
                    error!("the tailer stopped unexpectedly");
                    tailer_gone = true;
                    break;
                }
            },
            _ = tick.tick() => {
                offsets.expire(Utc::now(), ttl);
                save_if_dirty(&store, &mut offsets, &config.box_id).await;
                metrics::gauge!(m::ACKS_IN_FLIGHT).set(in_flight.len() as f64);
                let behind = unread.load(Ordering::Relaxed) + in_flight_bytes as u64;
                metrics::gauge!(m::BYTES_BEHIND).set(behind as f64);
            }
        }
    }

    // Stop reading; chunks still in the channel were never published and are read again later.
    tailer_stop.cancel();
    waker.wake();
    drop(rx);
    if !in_flight.is_empty() {
        info!(in_flight = in_flight.len(), "waiting for acks before exit");
        let drain = async {
            while let Some((msg, duplicate)) = in_flight.next().await {
                acked(&mut offsets, &msg, duplicate, &publish_metrics);
            }
        };
        if tokio::time::timeout(SHUTDOWN_GRACE, drain).await.is_err() {
            warn!(
                unacked = in_flight.len(),
                "acks still missing at exit; those messages are re-sent on restart"
            );
        }
    }
    metrics::gauge!(m::ACKS_IN_FLIGHT).set(0.0);
    offsets.expire(Utc::now(), ttl);
    let file = offsets.snapshot(&config.box_id);
    let final_store = store.clone();
    let saved = tokio::task::spawn_blocking(move || final_store.save(&file)).await;
    let tailer_ok = tailer_task.await.is_ok();
    match saved {
        Ok(Ok(())) => info!(path = %store.path().display(), "checkpoint saved"),
        Ok(Err(e)) => {
            error!(error = %e, "final checkpoint write failed");
            return Err(e.into());
        }
        Err(e) => {
            error!(error = %e, "final checkpoint write panicked");
            return Err(ShipperError::CheckpointPanicked);
        }
    }
    if !tailer_ok || (tailer_gone && !caught_up && !shutdown.is_cancelled()) {
        return Err(ShipperError::TailerFailed);
    }
    info!(caught_up, "edge-shipper stopped");
    Ok(())
}

/// Books an acknowledged message; returns its payload size.
fn acked(
    offsets: &mut AckedOffsets,
    msg: &Outgoing,
    duplicate: bool,
    metrics: &m::PublishMetrics,
) -> usize {
    offsets.ack(msg.source(), msg.range(), Utc::now());
    metrics.messages.increment(1);
    metrics.lines.increment(msg.meta.lines);
    metrics.bytes.increment(msg.range().len());
    if duplicate {
        tracing::debug!(msg_id = msg.msg_id(), "jetstream already had this message");
    }
    msg.payload.len()
}

async fn save_if_dirty(store: &CheckpointStore, offsets: &mut AckedOffsets, box_id: &str) {
    if !offsets.is_dirty() {
        return;
    }
    let file = offsets.snapshot(box_id);
    let store = store.clone();
    match tokio::task::spawn_blocking(move || store.save(&file)).await {
        Ok(Ok(())) => metrics::counter!(m::CHECKPOINT_WRITES_TOTAL).increment(1),
        Ok(Err(e)) => {
            metrics::counter!(m::CHECKPOINT_ERRORS_TOTAL).increment(1);
            error!(error = %e, "checkpoint write failed; retrying at the next interval");
            offsets.mark_dirty();
        }
        Err(e) => {
            metrics::counter!(m::CHECKPOINT_ERRORS_TOTAL).increment(1);
            error!(error = %e, "checkpoint write panicked");
            offsets.mark_dirty();
        }
    }
}
