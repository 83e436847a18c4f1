//! Upgrading a `READINGS` stream of an earlier version (limits retention: it keeps what was
//! loaded) to work-queue retention, without losing or doubling a line.
//!
//! JetStream cannot change retention in place, so the stream is replaced:
//! 1. [`jetstream::ensure`] seals it: every publish is refused, shippers retry and keep their
//!    checkpoints, so nothing new is acknowledged into a stream about to be deleted.
//! 2. The ordinary pipeline loads everything the old consumer still holds (the ledger skips what
//!    was loaded before), until the consumer has nothing pending or unacknowledged.
//! 3. [`jetstream::replace_drained`] checks that again, deletes the stream and creates the new one
//!    (consumer before subjects); shippers resume.
//!
//! Interrupted at any step, the next start resumes it: a sealed old stream is drained again.
//! Several workers may run it at once; whichever finishes first replaces the stream and the
//! others notice and stop draining.

use std::time::Duration;

use async_nats::jetstream::{consumer::PullConsumer, stream::RetentionPolicy, Context};
use protocol::Names;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::Config;
use crate::jetstream::{self, Readings, SetupError};
use crate::pipeline::{self, PipelineSettings};
use crate::WorkerError;

/// Returns the consumer to ingest from, upgrading the stream first if needed; `None` when
/// `shutdown` came first (a later start resumes).
pub async fn ready_consumer(
    js: &Context,
    pool: &PgPool,
    config: &Config,
    settings: &PipelineSettings,
    shutdown: &CancellationToken,
) -> Result<Option<PullConsumer>, WorkerError> {
    let names = &settings.names;
    loop {
        let Some(found) = setup_step(shutdown, "jetstream setup", || {
            jetstream::ensure(js, names, config)
        })
        .await?
        else {
            return Ok(None);
        };
        let old = match found {
            Readings::Ready(consumer) => return Ok(Some(consumer)),
            Readings::Sealed(old) => old,
        };
        let drain = PipelineSettings {
            until_idle: Some(Duration::from_millis(500)),
            ..settings.clone()
        };
        let stop_draining = shutdown.child_token();
        let watcher = tokio::spawn(stop_when_replaced(
            js.clone(),
            names.clone(),
            stop_draining.clone(),
        ));
        info!(stream = %names.readings_stream, "loading what the sealed stream holds");
        let drained =
            pipeline::run(old, js.clone(), pool.clone(), drain, stop_draining.clone()).await;
        stop_draining.cancel();
        let _ = watcher.await;
        if shutdown.is_cancelled() {
            return Ok(None);
        }
        if let Err(e) = drained {
            warn!(error = %e, "draining the sealed stream failed, starting over");
            continue;
        }
        match setup_step(shutdown, "stream upgrade", || {
            jetstream::replace_drained(js, names, config)
        })
        .await?
        {
            Some(consumer) => return Ok(Some(consumer)),
            None => return Ok(None),
        }
    }
}

/// Retries `op` like [`service::retry::retry_until`], except that a fatal error (one that
/// waiting cannot cure) stops the worker. A stream not yet drained (another worker still
/// loading) is waited out too.
async fn setup_step<T, F, Fut>(
    shutdown: &CancellationToken,
    what: &str,
    mut op: F,
) -> Result<Option<T>, WorkerError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, SetupError>>,
{
    let outcome = service::retry::retry_until(shutdown, what, || {
        let attempt = op();
        async move {
            match attempt.await {
                Ok(v) => Ok(Ok(v)),
                Err(e) if e.is_fatal() => Ok(Err(e)),
                Err(e) => Err(e),
            }
        }
    })
    .await;
    match outcome {
        None => Ok(None),
        Some(Ok(v)) => Ok(Some(v)),
        Some(Err(e)) => Err(e.into()),
    }
}

/// Stops this worker's drain once another worker has replaced the stream (the old consumer is
/// gone then, and this worker's drain would wait for it forever).
async fn stop_when_replaced(js: Context, names: Names, stop: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let replaced = match js.get_stream(&names.readings_stream).await {
            Ok(s) => s.cached_info().config.retention == RetentionPolicy::WorkQueue,
            Err(e) => jetstream::is_not_found(&e),
        };
        if replaced {
            info!(stream = %names.readings_stream, "another worker replaced the sealed stream");
            stop.cancel();
            return;
        }
    }
}
