//! Wiring: the tailer thread feeds chunks through a bounded channel; this task publishes them
//! with a bounded number in flight, advances per-source offsets as acks arrive, and persists
//! them. Reading stops when the channel is full or too much is in flight, so the tailer never
//! runs far ahead of JetStream.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use futures::stream::{FuturesUnordered, StreamExt};
use protocol::SourceKey;
use tokio::sync::mpsc;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::acked_offsets::AckedOffsets;
use crate::checkpoint::{CheckpointError, CheckpointStore};
use crate::config::{Config, ConfigError};
use crate::metrics as m;
use crate::publisher::{self, ConnectError, FailureLog, Outgoing, PublishTarget, SourceHeaders};
use crate::tailer::{TailEvent, Tailer};

/// Batches of tailer events waiting for the publisher (each at most about 1 MiB of chunks).
const CHANNEL_CAPACITY: usize = 2;
/// How long shutdown waits for messages in flight to be acknowledged.
/// Time kept back from `--shutdown-timeout-secs` for the final checkpoint write.
pub const CHECKPOINT_MARGIN: Duration = Duration::from_secs(1);

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
/// then waits for acks until [`CHECKPOINT_MARGIN`] before `--shutdown-timeout-secs` and persists
/// the checkpoint.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), ShipperError> {
    config.validate()?;
    if let Some(addr) = config.metrics_addr {
        m::install_exporter(addr)?;
        info!(%addr, "metrics endpoint up");
    }
    let store = CheckpointStore::open(&config.state_dir)?;
    let offsets = AckedOffsets::from_checkpoint(store.load()?, &config.box_id);
    let names = config.names();
    let subject = async_nats::Subject::from(names.readings_subject(&config.site, &config.box_id));
    let js = publisher::connect(&config.nats).await?;
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

    let mut pipeline = Pipeline {
        target: Arc::new(PublishTarget {
            js,
            subject,
            failures: FailureLog::default(),
            metrics: m::PublishMetrics::new(),
        }),
        site: config.site.clone(),
        box_id: config.box_id.clone(),
        offsets,
        headers: HashMap::new(),
        in_flight: FuturesUnordered::new(),
        in_flight_bytes: 0,
        max_in_flight: usize::try_from(config.max_in_flight).unwrap_or(usize::MAX),
        max_in_flight_bytes: config.max_in_flight_bytes,
        caught_up: false,
    };
    let mut tick = tokio::time::interval(Duration::from_millis(config.checkpoint_interval_ms));
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let ttl = Duration::from_secs(config.checkpoint_ttl_secs);
    let mut batch = Vec::new().into_iter();
    let mut tailer_gone = false;

    loop {
        // Take events from the current batch only while under the in-flight limits.
        while pipeline.has_room() {
            let Some(event) = batch.next() else { break };
            pipeline.take(event);
        }
        if pipeline.caught_up && pipeline.in_flight.is_empty() {
            break;
        }
        let want_batch = !tailer_gone && batch.len() == 0 && pipeline.has_room();
        tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            Some((msg, duplicate)) = pipeline.in_flight.next(), if !pipeline.in_flight.is_empty() => {
                pipeline.acked(&msg, duplicate);
            }
            events = rx.recv(), if want_batch => match events {
                Some(events) => batch = events.into_iter(),
                None => {
                    tailer_gone = true;
                    if !pipeline.caught_up {
                        error!("the tailer stopped unexpectedly");
                        break;
                    }
                }
            },
            _ = tick.tick() => {
                pipeline.offsets.expire(Utc::now(), ttl);
                save_if_dirty(&store, &mut pipeline.offsets, &config.box_id).await;
                metrics::gauge!(m::ACKS_IN_FLIGHT).set(pipeline.in_flight.len() as f64);
                let behind = unread.load(Ordering::Relaxed) + pipeline.in_flight_bytes as u64;
                metrics::gauge!(m::BYTES_BEHIND).set(behind as f64);
            }
        }
    }

    // Stop reading; chunks not yet published are read again after a restart.
    tailer_stop.cancel();
    waker.wake();
    drop(rx);
    if !pipeline.in_flight.is_empty() {
        info!(
            in_flight = pipeline.in_flight.len(),
            "waiting for acks before exit"
        );
        let drain = async {
            while let Some((msg, duplicate)) = pipeline.in_flight.next().await {
                pipeline.acked(&msg, duplicate);
            }
        };
        let wait = config
            .shutdown
            .grace()
            .saturating_sub(CHECKPOINT_MARGIN)
            .max(Duration::from_millis(200));
        if tokio::time::timeout(wait, drain).await.is_err() {
            warn!(
                unacked = pipeline.in_flight.len(),
                unacked_bytes = pipeline.in_flight_bytes,
                "acks still missing at the shutdown deadline; those lines stay behind the checkpoint and are sent again after the next start"
            );
        }
    }
    let caught_up = pipeline.caught_up;
    let mut offsets = pipeline.offsets;
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

type InFlight = Pin<Box<dyn Future<Output = (Outgoing, bool)> + Send>>;

/// The publishing side: messages in flight and the offsets their acks move.
struct Pipeline {
    target: Arc<PublishTarget>,
    site: String,
    box_id: String,
    offsets: AckedOffsets,
    /// Header template of each source with an open file (pruned on every `Live`).
    headers: HashMap<SourceKey, Arc<SourceHeaders>>,
    in_flight: FuturesUnordered<InFlight>,
    in_flight_bytes: usize,
    max_in_flight: usize,
    max_in_flight_bytes: usize,
    caught_up: bool,
}

impl Pipeline {
    fn has_room(&self) -> bool {
        self.in_flight.len() < self.max_in_flight && self.in_flight_bytes < self.max_in_flight_bytes
    }

    fn take(&mut self, event: TailEvent) {
        match event {
            TailEvent::Chunk(chunk) => {
                let headers = match self.headers.get(&chunk.source) {
                    Some(h) if h.fits(&chunk) => h.clone(),
                    _ => {
                        let h = Arc::new(SourceHeaders::new(&chunk, &self.site, &self.box_id));
                        self.headers.insert(chunk.source.clone(), h.clone());
                        h
                    }
                };
                let msg = Outgoing::new(chunk, headers);
                self.in_flight_bytes += msg.payload.len();
                self.in_flight.push(Box::pin(publisher::publish_until_acked(
                    self.target.clone(),
                    msg,
                )));
            }
            TailEvent::Begin {
                source,
                origin,
                offset,
            } => self.offsets.begin(source, &origin, offset, Utc::now()),
            TailEvent::Live(live) => {
                // Messages in flight keep their own reference.
                self.headers
                    .retain(|source, _| live.binary_search(source).is_ok());
                self.offsets.set_live(&live, Utc::now());
            }
            TailEvent::CaughtUp => self.caught_up = true,
        }
    }

    /// Books an acknowledged message.
    fn acked(&mut self, msg: &Outgoing, duplicate: bool) {
        self.offsets.ack(msg.source(), msg.range(), Utc::now());
        self.in_flight_bytes -= msg.payload.len();
        let metrics = &self.target.metrics;
        metrics.messages.increment(1);
        metrics.lines.increment(msg.lines());
        metrics.bytes.increment(msg.range().len());
        if duplicate {
            tracing::debug!(msg_id = msg.msg_id(), "jetstream already had this message");
        }
    }
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
