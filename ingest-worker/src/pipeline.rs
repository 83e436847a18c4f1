//! The consume loop: pull → batch → decode (blocking pool) → load (N concurrent transactions) →
//! ack.
//!
//! One fetcher task assembles batches from the durable consumer and hands each to the blocking
//! pool for decoding; the handles queue in a bounded channel, so decoding of the next batches
//! overlaps the COPY of the current ones and memory stays bounded. `concurrency` loader tasks take
//! decoded batches and load them, each on its own connection. A message is acknowledged only after
//! the transaction that recorded its range committed; a database outage naks with backoff. A
//! message that can never load (bad framing, or headers that disagree with the subject: see
//! [`crate::identity`]) goes to the dead-letter stream with the reason.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer::PullConsumer, AckKind, Context, Message};
use futures::StreamExt;
use protocol::framing::{HDR_BOX, HDR_DLQ_REASON, HDR_SITE};
use protocol::subject::parse_readings_subject;
use protocol::{BatchMeta, FramingError, Limits, Names};
use sqlx::PgPool;
use tokio::sync::{mpsc, Mutex};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::decode::{decode_message, lossy_prefix, DecodedMessage};
use crate::identity::{self, IdentityError};
use crate::loader::{self, LoadError};
use crate::metrics;

/// Settings of the loop, taken from [`crate::config::Config`].
#[derive(Debug, Clone)]
pub struct PipelineSettings {
    pub names: Names,
    pub limits: Limits,
    pub concurrency: usize,
    pub batch_max_messages: usize,
    pub batch_max_bytes: usize,
    pub batch_linger: Duration,
    pub until_idle: Option<Duration>,
}

/// A batch after decoding: messages that framed correctly, and those refused with the reason
/// their dead letter carries.
struct DecodedBatch {
    good: Vec<(Message, DecodedMessage)>,
    bad: Vec<(Message, Refusal)>,
    assembled: Instant,
}

/// Why a message can never be loaded.
#[derive(Debug, thiserror::Error)]
enum Refusal {
    #[error("framing: {0}")]
    Framing(#[from] FramingError),
    #[error("identity: {0}")]
    Identity(#[from] IdentityError),
}

type Queue = Arc<Mutex<mpsc::Receiver<JoinHandle<DecodedBatch>>>>;

pub async fn run(
    consumer: PullConsumer,
    js: Context,
    pool: PgPool,
    settings: PipelineSettings,
    shutdown: CancellationToken,
) -> Result<(), jetstream::consumer::StreamError> {
    let (tx, rx) = mpsc::channel::<JoinHandle<DecodedBatch>>(settings.concurrency.max(1));
    let queue: Queue = Arc::new(Mutex::new(rx));
    let in_flight = Arc::new(AtomicUsize::new(0));
    let mut loaders = Vec::new();
    for id in 0..settings.concurrency.max(1) {
        loaders.push(tokio::spawn(loader_task(
            id,
            queue.clone(),
            pool.clone(),
            js.clone(),
            settings.names.clone(),
            in_flight.clone(),
            shutdown.clone(),
        )));
    }
    let result = fetch_loop(consumer, tx, &settings, in_flight, &shutdown).await;
    // The sender is dropped: loaders finish what is queued (acking after commit), then stop.
    for l in loaders {
        if let Err(e) = l.await {
            error!(error = %e, "loader task failed");
        }
    }
    result
}

async fn fetch_loop(
    mut consumer: PullConsumer,
    tx: mpsc::Sender<JoinHandle<DecodedBatch>>,
    settings: &PipelineSettings,
    in_flight: Arc<AtomicUsize>,
    shutdown: &CancellationToken,
) -> Result<(), jetstream::consumer::StreamError> {
    let mut messages = open_stream(&consumer, settings).await?;
    let mut last_message = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let mut last_pending_probe = Instant::now();
    loop {
        let first = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = tick.tick() => {
                if last_pending_probe.elapsed() >= Duration::from_secs(5) {
                    last_pending_probe = Instant::now();
                    if let Ok(info) = consumer.info().await {
                        metrics::consumer_pending(info.num_pending);
                    }
                }
                if let Some(idle) = settings.until_idle {
                    if last_message.elapsed() >= idle
                        && in_flight.load(Ordering::SeqCst) == 0
                        && consumer_drained(&mut consumer).await
                    {
                        info!(idle_secs = idle.as_secs(), "nothing pending, exiting (--until-idle)");
                        return Ok(());
                    }
                }
                continue;
            }
            next = messages.next() => next,
        };
        let first = match first {
            Some(Ok(m)) => m,
            Some(Err(e)) => {
                // Missed heartbeats or a server restart: the client reconnects; re-open the pull.
                warn!(error = %e, "pull stream error, reopening");
                tokio::time::sleep(Duration::from_millis(500)).await;
                messages = match open_stream(&consumer, settings).await {
                    Ok(s) => s,
                    Err(e) => {
                        warn!(error = %e, "cannot reopen the pull stream yet");
                        continue;
                    }
                };
                continue;
            }
            None => {
                messages = open_stream(&consumer, settings).await?;
                continue;
            }
        };
        let mut batch = vec![first];
        let mut bytes = batch[0].payload.len();
        let deadline = tokio::time::Instant::now() + settings.batch_linger;
        while batch.len() < settings.batch_max_messages && bytes < settings.batch_max_bytes {
            match tokio::time::timeout_at(deadline, messages.next()).await {
                Ok(Some(Ok(m))) => {
                    bytes += m.payload.len();
                    batch.push(m);
                }
                Ok(Some(Err(e))) => {
                    debug!(error = %e, "pull stream error while filling a batch");
                    break;
                }
                Ok(None) | Err(_) => break,
            }
        }
        last_message = Instant::now();
        in_flight.fetch_add(1, Ordering::SeqCst);
        let limits = settings.limits;
        let prefix = settings.names.readings_prefix.clone();
        let handle = tokio::task::spawn_blocking(move || decode_batch(batch, &limits, &prefix));
        if tx.send(handle).await.is_err() {
            return Ok(());
        }
    }
}

async fn open_stream(
    consumer: &PullConsumer,
    settings: &PipelineSettings,
) -> Result<jetstream::consumer::pull::Stream, jetstream::consumer::StreamError> {
    consumer
        .stream()
        .max_messages_per_batch(settings.batch_max_messages * 2)
        // Bounds what the client buffers ahead of the loaders.
        .max_bytes_per_batch(settings.batch_max_bytes)
        .heartbeat(Duration::from_secs(5))
        .expires(Duration::from_secs(30))
        .messages()
        .await
}

async fn consumer_drained(consumer: &mut PullConsumer) -> bool {
    match consumer.info().await {
        Ok(info) => info.num_pending == 0 && info.num_ack_pending == 0,
        Err(e) => {
            debug!(error = %e, "consumer info failed");
            false
        }
    }
}

/// `prefix`: the readings subject prefix; site and box are the subject's ([`identity`]).
fn decode_batch(batch: Vec<Message>, limits: &Limits, prefix: &str) -> DecodedBatch {
    let started = Instant::now();
    let mut good = Vec::with_capacity(batch.len());
    let mut bad = Vec::new();
    for m in batch {
        let framed = frame(&m, prefix);
        match framed {
            Ok(meta) => {
                let decoded = decode_message(meta, &m.payload, limits);
                good.push((m, decoded));
            }
            Err(e) => bad.push((m, e)),
        }
    }
    metrics::decode_duration(started.elapsed());
    DecodedBatch {
        good,
        bad,
        assembled: started,
    }
}

/// The message's headers, checked against its payload and its subject.
fn frame(m: &Message, prefix: &str) -> Result<BatchMeta, Refusal> {
    let headers = m.headers.as_ref();
    let meta =
        BatchMeta::from_headers(|name| headers.and_then(|h| h.get(name)).map(|v| v.as_str()))?;
    meta.check_payload(&m.payload)?;
    identity::check(&meta, m.subject.as_str(), prefix)?;
    Ok(meta)
}

async fn loader_task(
    id: usize,
    queue: Queue,
    pool: PgPool,
    js: Context,
    names: Names,
    in_flight: Arc<AtomicUsize>,
    shutdown: CancellationToken,
) {
    let mut failures: u32 = 0;
    loop {
        let handle = {
            let mut rx = queue.lock().await;
            rx.recv().await
        };
        let Some(handle) = handle else {
            debug!(loader = id, "queue closed, loader stopping");
            return;
        };
        let batch = match handle.await {
            Ok(b) => b,
            Err(e) => {
                // Decoding panicked: the messages are lost to this process only; JetStream
                // redelivers them after ack_wait.
                error!(loader = id, error = %e, "decode task failed");
                in_flight.fetch_sub(1, Ordering::SeqCst);
                continue;
            }
        };
        for (m, reason) in &batch.bad {
            warn!(subject = %m.subject, error = %reason, "message refused, dead-lettering");
            dead_letter(&js, &pool, &names, m, &reason.to_string()).await;
        }
        let (messages, decoded): (Vec<Message>, Vec<DecodedMessage>) =
            batch.good.into_iter().unzip();
        load_and_ack(
            &pool,
            &js,
            &names,
            &messages,
            &decoded,
            &mut failures,
            &shutdown,
        )
        .await;
        metrics::batch(batch.assembled.elapsed());
        in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Loads and acknowledges, splitting a batch that holds a poison message down to single messages
/// so that only that message goes to the dead-letter stream.
async fn load_and_ack(
    pool: &PgPool,
    js: &Context,
    names: &Names,
    messages: &[Message],
    decoded: &[DecodedMessage],
    failures: &mut u32,
    shutdown: &CancellationToken,
) {
    if messages.is_empty() {
        return;
    }
    let mut pending: Vec<(usize, usize)> = vec![(0, messages.len())];
    while let Some((from, to)) = pending.pop() {
        let (ms, ds) = (&messages[from..to], &decoded[from..to]);
        match loader::load(pool, ds).await {
            Ok(stats) => {
                *failures = 0;
                metrics::rows(stats.rows);
                metrics::skipped(stats.skipped_lines);
                metrics::messages("loaded", ms.len() as u64);
                for m in ms {
                    if let Err(e) = m.ack().await {
                        // The rows are committed; a redelivery is deduplicated by the ledger.
                        warn!(error = %e, "ack failed after commit");
                    }
                }
            }
            Err(LoadError::Poison(e)) if ms.len() > 1 => {
                warn!(error = %e, messages = ms.len(), "batch holds a message that cannot be loaded, splitting");
                let mid = from + (to - from) / 2;
                pending.push((mid, to));
                pending.push((from, mid));
            }
            Err(LoadError::Poison(e)) => {
                error!(error = %e, "message cannot be loaded, dead-lettering");
                dead_letter(js, pool, names, &ms[0], &format!("database: {e}")).await;
            }
            Err(e) => {
                *failures = failures.saturating_add(1);
                let delay = backoff(*failures);
                metrics::retry("unavailable");
                warn!(error = %e, retry_in_ms = delay.as_millis() as u64, messages = ms.len(), "load failed, messages will be redelivered");
                for m in ms {
                    let _ = m.ack_with(AckKind::Nak(Some(delay))).await;
                }
                metrics::messages("nak", ms.len() as u64);
                for (f, t) in pending.drain(..) {
                    for m in &messages[f..t] {
                        let _ = m.ack_with(AckKind::Nak(Some(delay))).await;
                    }
                }
                if !shutdown.is_cancelled() {
                    tokio::select! {
                        _ = shutdown.cancelled() => {}
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
    }
}

/// 0.5 s, 1 s, 2 s … capped at 30 s.
fn backoff(failures: u32) -> Duration {
    let ms = 500u64.saturating_mul(1u64 << failures.saturating_sub(1).min(6));
    Duration::from_millis(ms.min(30_000))
}

/// Publishes the message to the dead-letter stream with the reason, records it in
/// `ingest_dead_letters`, then terminates it. If the DLQ publish fails the message is nak'ed and
/// comes back later: it is never dropped.
///
/// The dead letter goes to `edge.dlq.<site>.<box>` of the subject's site and box (the sender the
/// server accepted), or of its headers when the subject names none.
async fn dead_letter(js: &Context, pool: &PgPool, names: &Names, m: &Message, reason: &str) {
    let header = |name: &str| {
        m.headers
            .as_ref()
            .and_then(|h| h.get(name))
            .map(|v| v.as_str().to_owned())
    };
    let (site, box_id) = parse_readings_subject(&names.readings_prefix, m.subject.as_str())
        .unwrap_or_else(|| {
            (
                header(HDR_SITE).unwrap_or_else(|| "unknown".into()),
                header(HDR_BOX).unwrap_or_else(|| "unknown".into()),
            )
        });
    let reason_header: String = reason
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(1000)
        .collect();
    let seq = m.info().map(|i| i.stream_sequence).unwrap_or(0);
    let mut headers = m.headers.clone().unwrap_or_default();
    headers.insert(HDR_DLQ_REASON, reason_header.as_str());
    headers.insert(
        "Nats-Msg-Id",
        format!("dlq:{}:{seq}", names.readings_stream).as_str(),
    );
    let published = match js
        .publish_with_headers(
            names.dlq_subject(&site, &box_id),
            headers,
            m.payload.clone(),
        )
        .await
    {
        Ok(ack) => ack.await.map(|_| ()).map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    if let Err(e) = published {
        warn!(error = %e, "dead-letter publish failed, message will be redelivered");
        let _ = m.ack_with(AckKind::Nak(Some(Duration::from_secs(5)))).await;
        return;
    }
    let headers_json: serde_json::Map<String, serde_json::Value> = m
        .headers
        .iter()
        .flat_map(|h| h.iter())
        .map(|(k, v)| {
            (
                k.to_string(),
                serde_json::Value::Array(
                    v.iter()
                        .map(|x| serde_json::Value::String(x.as_str().to_owned()))
                        .collect(),
                ),
            )
        })
        .collect();
    let recorded = sqlx::query(
        "INSERT INTO ingest_dead_letters (stream_sequence, subject, reason, headers, payload_bytes, payload_prefix)
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(i64::try_from(seq).unwrap_or(i64::MAX))
    .bind(m.subject.as_str())
    .bind(&reason_header)
    .bind(serde_json::Value::Object(headers_json))
    .bind(m.payload.len() as i64)
    .bind(lossy_prefix(&m.payload))
    .execute(pool)
    .await;
    if let Err(e) = recorded {
        warn!(error = %e, "dead letter is in the stream but could not be recorded in ingest_dead_letters");
    }
    metrics::dead_letter();
    metrics::messages("dead_letter", 1);
    if let Err(e) = m.ack_with(AckKind::Term).await {
        warn!(error = %e, "term ack of a dead letter failed; it will be dead-lettered again (deduplicated)");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_caps() {
        assert_eq!(backoff(1), Duration::from_millis(500));
        assert_eq!(backoff(2), Duration::from_secs(1));
        assert_eq!(backoff(3), Duration::from_secs(2));
        assert_eq!(backoff(50), Duration::from_secs(30));
    }
}
