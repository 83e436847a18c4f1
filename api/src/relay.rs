//! The outbox relay: publishes run events from the `outbox` table to JetStream, in id order, with
//! `Nats-Msg-Id` = outbox id, and marks them sent only after their PubAck.
//!
//! - One relay at a time across all mes-api instances: each batch runs in a transaction holding
//!   `pg_try_advisory_xact_lock`; an instance that does not get it waits for the next round.
//! - Order: events of one run are written under that run's row lock, so their ids increase in
//!   commit order; the relay publishes a batch in id order on one connection and marks only the
//!   acknowledged prefix, so a failure in the middle never lets a later event overtake an earlier
//!   one.
//! - NATS down: publishes fail or time out, nothing is marked, the batch is retried with backoff;
//!   events wait in the outbox. A crash between PubAck and the commit of `sent_at` republishes
//!   the same ids, which JetStream drops within the stream's duplicate window.
//! - Latency: handlers wake this process's relay right after their commit (in-process, so commits
//!   are not serialized the way `NOTIFY` would); events committed by other instances are found by
//!   polling every `poll`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, message::PublishMessage, stream, Context};
use bytes::Bytes;
use protocol::streams::{OP_RUN_DUPLICATE_WINDOW, OP_RUN_MAX_AGE};
use protocol::OpRunNames;
use sqlx::PgPool;
use thiserror::Error;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// Advisory lock key of the relay (any constant unique in this database).
const RELAY_LOCK_KEY: i64 = 0x6564_6765_6d65_7301;
const HOUSEKEEPING_EVERY: Duration = Duration::from_secs(60);
/// How often the backlog gauges are refreshed.
const BACKLOG_EVERY: Duration = Duration::from_secs(1);

#[derive(Debug, Clone)]
pub struct RelaySettings {
    pub names: OpRunNames,
    pub poll: Duration,
    /// Wait after a wake-up before publishing, so one round carries the events of many commits.
    pub linger: Duration,
    pub batch: i64,
    pub ack_timeout: Duration,
    pub stream_replicas: usize,
    pub idempotency_ttl_hours: u32,
    pub outbox_retention_days: u32,
}

#[derive(Debug, Error)]
pub enum RelayError {
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("publish of outbox event {id} failed: {source}")]
    Publish {
        id: i64,
        #[source]
        source: jetstream::context::PublishError,
    },
    #[error("cannot create or update stream {name}: {source}")]
    Stream {
        name: String,
        #[source]
        source: jetstream::context::CreateStreamError,
    },
}

/// The OP_RUN stream's configuration.
pub fn stream_config(names: &OpRunNames, replicas: usize) -> stream::Config {
    stream::Config {
        name: names.stream.clone(),
        subjects: vec![names.filter()],
        storage: stream::StorageType::File,
        retention: stream::RetentionPolicy::Limits,
        discard: stream::DiscardPolicy::Old,
        max_age: OP_RUN_MAX_AGE,
        duplicate_window: OP_RUN_DUPLICATE_WINDOW,
        num_replicas: replicas,
        ..Default::default()
    }
}

/// Creates or updates the OP_RUN stream.
pub async fn ensure_stream(
    js: &Context,
    names: &OpRunNames,
    replicas: usize,
) -> Result<(), RelayError> {
    js.create_or_update_stream(stream_config(names, replicas))
        .await
        .map_err(|source| RelayError::Stream {
            name: names.stream.clone(),
            source,
        })?;
    info!(stream = %names.stream, "stream ready");
    Ok(())
}

/// A JetStream context whose PubAck wait is `ack_timeout`.
pub fn context(client: async_nats::Client, ack_timeout: Duration) -> Context {
    jetstream::ContextBuilder::new()
        .timeout(ack_timeout)
        .build(client)
}

/// Outcome of one batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Round {
    /// Another instance holds the relay lock.
    NotLeader,
    /// This many events were published and marked sent.
    Published(usize),
}

#[derive(sqlx::FromRow)]
struct Pending {
    id: i64,
    event_type: String,
    site_id: String,
    resource_id: String,
    payload: String,
}

/// Publishes up to `settings.batch` unsent events in id order and marks the acknowledged prefix.
pub async fn relay_once(
    pool: &PgPool,
    js: &Context,
    settings: &RelaySettings,
) -> Result<Round, RelayError> {
    let mut tx = pool.begin().await?;
    let leader: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)")
        .bind(RELAY_LOCK_KEY)
        .fetch_one(&mut *tx)
        .await?;
    if !leader {
        return Ok(Round::NotLeader);
    }
    let pending: Vec<Pending> = sqlx::query_as(
        "SELECT id, event_type, site_id, resource_id, payload::text AS payload
         FROM outbox WHERE sent_at IS NULL ORDER BY id LIMIT $1",
    )
    .bind(settings.batch)
    .fetch_all(&mut *tx)
    .await?;
    if pending.is_empty() {
        return Ok(Round::Published(0));
    }
    // Publish the whole batch, then await the acks in order.
    let mut futures = Vec::with_capacity(pending.len());
    let mut failure = None;
    for p in &pending {
        let subject = settings
            .names
            .subject(&p.site_id, &p.resource_id, &p.event_type);
        let message = PublishMessage::build()
            .payload(Bytes::from(p.payload.clone()))
            .message_id(p.id.to_string());
        match js.send_publish(subject, message).await {
            Ok(f) => futures.push(f),
            Err(source) => {
                failure = Some(RelayError::Publish { id: p.id, source });
                break;
            }
        }
    }
    let mut acked: Vec<i64> = Vec::with_capacity(futures.len());
    for (p, f) in pending.iter().zip(futures) {
        match f.await {
            Ok(_) => acked.push(p.id),
            Err(source) => {
                failure = Some(RelayError::Publish { id: p.id, source });
                break;
            }
        }
    }
    if !acked.is_empty() {
        sqlx::query("UPDATE outbox SET sent_at = now() WHERE id = ANY($1)")
            .bind(&acked)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        for p in pending.iter().take(acked.len()) {
            crate::metrics::published(&p.event_type, 1);
        }
    }
    match failure {
        Some(e) => Err(e),
        None => Ok(Round::Published(acked.len())),
    }
}

/// Unsent events and the age of the oldest, in seconds.
pub async fn backlog(pool: &PgPool) -> Result<(i64, f64), sqlx::Error> {
    sqlx::query_as(
        "SELECT count(*), coalesce(extract(epoch FROM now() - min(created_at))::float8, 0)
         FROM outbox WHERE sent_at IS NULL",
    )
    .fetch_one(pool)
    .await
}

/// Unsent events, read on a connection of its own within a second (for the log at a shutdown
/// deadline, when the pool may be stuck); `None` when the database does not answer in time.
pub async fn unsent_events(database_url: &str) -> Option<i64> {
    use sqlx::Connection;
    tokio::time::timeout(Duration::from_secs(1), async {
        let mut conn = sqlx::PgConnection::connect(database_url).await.ok()?;
        sqlx::query_scalar("SELECT count(*) FROM outbox WHERE sent_at IS NULL")
            .fetch_one(&mut conn)
            .await
            .ok()
    })
    .await
    .ok()
    .flatten()
}

/// Runs the relay until `shutdown`: stream setup (retried), then batches as events arrive.
pub async fn run(
    pool: PgPool,
    client: async_nats::Client,
    settings: RelaySettings,
    wake: Arc<Notify>,
    shutdown: CancellationToken,
) {
    let js = context(client, settings.ack_timeout);
    let mut delay = Duration::from_millis(100);
    loop {
        match ensure_stream(&js, &settings.names, settings.stream_replicas).await {
            Ok(()) => break,
            Err(e) => {
                crate::metrics::relay_error("stream");
                warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "stream setup failed, retrying");
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(Duration::from_secs(5));
    }
    let mut backoff = Duration::from_millis(100);
    let mut last_backlog = Instant::now()
        .checked_sub(BACKLOG_EVERY)
        .unwrap_or_else(Instant::now);
    let mut housekeeping = tokio::time::interval(HOUSEKEEPING_EVERY);
    housekeeping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    info!(stream = %settings.names.stream, "outbox relay running");
    loop {
        if shutdown.is_cancelled() {
            break;
        }
        let wait = match relay_once(&pool, &js, &settings).await {
            Ok(Round::Published(n)) if n as i64 >= settings.batch => {
                debug!(published = n, "outbox batch published");
                backoff = Duration::from_millis(100);
                continue;
            }
            Ok(Round::Published(n)) => {
                if n > 0 {
                    debug!(published = n, "outbox batch published");
                }
                backoff = Duration::from_millis(100);
                None
            }
            Ok(Round::NotLeader) => Some(settings.poll.max(Duration::from_millis(500))),
            Err(e) => {
                crate::metrics::relay_error(match e {
                    RelayError::Db(_) => "database",
                    RelayError::Publish { .. } => "publish",
                    RelayError::Stream { .. } => "stream",
                });
                warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "outbox relay failed, retrying");
                let b = backoff;
                backoff = (backoff * 2).min(Duration::from_secs(5));
                Some(b)
            }
        };
        if last_backlog.elapsed() >= BACKLOG_EVERY {
            if let Ok((n, age)) = backlog(&pool).await {
                crate::metrics::outbox_backlog(n, age);
            }
            last_backlog = Instant::now();
        }
        let wait = wait.unwrap_or(settings.poll);
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(wait) => {}
            _ = housekeeping.tick() => housekeep(&pool, &settings).await,
            // Commits during a round leave a permit, so nothing committed here is missed; the
            // linger lets a busy API fill batches instead of running one round per event.
            _ = wake.notified(), if wait == settings.poll => tokio::time::sleep(settings.linger).await,
        }
    }
    info!("outbox relay stopped");
}

async fn housekeep(pool: &PgPool, settings: &RelaySettings) {
    match crate::idempotency::expire(pool, settings.idempotency_ttl_hours).await {
        Ok(n) if n > 0 => info!(expired = n, "forgot old idempotency keys"),
        Ok(_) => {}
        Err(e) => warn!(error = %e, "idempotency key expiry failed"),
    }
    if settings.outbox_retention_days > 0 {
        let r = sqlx::query("DELETE FROM outbox WHERE sent_at < now() - make_interval(days => $1)")
            .bind(settings.outbox_retention_days as i32)
            .execute(pool)
            .await;
        if let Err(e) = r {
            warn!(error = %e, "outbox cleanup failed");
        }
    }
}
