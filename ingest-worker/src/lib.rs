//! ingest-worker: JetStream → validation → binary COPY into PostgreSQL / TimescaleDB, exactly once.
//!
//! - [`config`]: flags and environment.
//! - [`db`]: connect (create the database if missing), migrations, partitions, retention.
//! - [`jetstream`]: NATS connection, streams and the shared durable consumer.
//! - [`stream_upgrade`]: replacing a limits-retention `READINGS` of an earlier version.
//! - [`site_gateway`]: site gateways (`--site-gateway`) as sources of `READINGS`.
//! - [`site_filter`]: a deployment limited to some sites (`--sites`).
//! - [`backlog`]: what waits in `READINGS`, as metrics and early warnings.
//! - [`identity`]: the subject, which the server bound to the box, against the headers.
//! - [`decode`]: a message's lines to binary COPY rows and rejections, with byte offsets.
//! - [`copy_format`]: the binary COPY row encoding.
//! - [`ledger`]: which lines are new, given the byte ranges already loaded.
//! - [`loader`]: one batch, one transaction: ledger, COPY, rejects, commit.
//! - [`pipeline`]: pull, batch, decode, load, ack.
//! - [`metrics`]: Prometheus metrics.

pub mod backlog;
pub mod config;
pub mod copy_format;
pub mod db;
pub mod decode;
pub mod identity;
pub mod jetstream;
pub mod ledger;
pub mod loader;
pub mod metrics;
pub mod pipeline;
pub mod site_filter;
pub mod site_gateway;
pub mod stream_upgrade;

use std::time::Duration;

use service::retry::retry_until;

use thiserror::Error;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

pub use config::Config;

#[derive(Debug, Error)]
pub enum WorkerError {
    #[error("cannot start the metrics listener: {0}")]
    Metrics(#[from] metrics_exporter_prometheus::BuildError),
    #[error(transparent)]
    Db(#[from] db::DbError),
    #[error(transparent)]
    Setup(#[from] jetstream::SetupError),
    #[error("cannot pull from the consumer: {0}")]
    Pull(#[from] async_nats::jetstream::consumer::StreamError),
}

/// Runs the worker until `shutdown` is cancelled (or, with `--until-idle`, until nothing is
/// pending). Transient failures of NATS or PostgreSQL are waited out, never fatal.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), WorkerError> {
    if let Some(addr) = config.metrics_addr {
        metrics::install(addr)?;
        info!(%addr, "serving metrics");
    }
    let names = config.names();
    let pool_size = u32::try_from(config.concurrency + 2).unwrap_or(u32::MAX);
    let Some(pool) = retry_until(&shutdown, "database connection", || {
        db::connect(config.database_url.expose(), pool_size)
    })
    .await
    else {
        return Ok(());
    };
    db::prepare(&pool, config.migrate).await?;
    if let Err(e) = db::ensure_partitions(
        &pool,
        config.partition_days_back,
        config.partition_days_ahead,
    )
    .await
    {
        warn!(error = %e, "initial partition upkeep failed, rows go to readings_default meanwhile");
    }
    let client = jetstream::connect(&config).await?;
    let js = async_nats::jetstream::new(client);
    let settings = pipeline::PipelineSettings {
        names: names.clone(),
        limits: config.limits(),
        concurrency: config.concurrency,
        batch_max_messages: config.batch_max_messages,
        batch_max_bytes: config.batch_max_bytes,
        batch_linger: config.batch_linger(),
        until_idle: config.until_idle.map(Duration::from_secs),
    };

    let tracker = TaskTracker::new();
    let upkeep = shutdown.child_token();
    tracker.spawn(db::maintenance_loop(
        pool.clone(),
        config.partition_days_back,
        config.partition_days_ahead,
        db::Lifecycle {
            retention_days: config.retention_days,
            wait_for_archive: config.retention_wait_for_archive,
            compress_after_days: config.compress_after_days,
        },
        upkeep.clone(),
    ));
    let consumer =
        match stream_upgrade::ready_consumer(&js, &pool, &config, &settings, &shutdown).await {
            Ok(Some(consumer)) => consumer,
            stopped_or_failed => {
                upkeep.cancel();
                tracker.close();
                tracker.wait().await;
                pool.close().await;
                return stopped_or_failed.map(|_| ());
            }
        };
    tracker.spawn(backlog::watch(
        js.clone(),
        names.readings_stream.clone(),
        Duration::from_secs(config.backlog_check_secs.max(1)),
        upkeep.clone(),
    ));
    tracker.close();
    // The consumer and the reply inbox are what this deployment's NATS identity must be allowed
    // (nats/production/nats-server.conf); the inbox differs per plant (`--sites`).
    info!(
        stream = %names.readings_stream,
        consumer = %names.consumer,
        inbox = %site_filter::inbox_scope(&config.sites).map_or_else(
            || protocol::subject::service_inbox_prefix("ingest-worker"),
            |scope| protocol::subject::service_inbox_prefix_scoped("ingest-worker", &scope),
        ),
        concurrency = config.concurrency,
        "ingesting"
    );
    let result = pipeline::run(consumer, js, pool.clone(), settings, shutdown.clone()).await;
    upkeep.cancel();
    tracker.wait().await;
    pool.close().await;
    info!("stopped");
    Ok(result?)
}
