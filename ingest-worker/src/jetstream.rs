//! NATS connection, the streams and the shared durable consumer, created or updated idempotently.

use std::time::Duration;

use async_nats::jetstream::{
    self,
    consumer::{pull, AckPolicy, PullConsumer},
    stream::{self, DiscardPolicy, RetentionPolicy, StorageType},
    Context,
};
use protocol::streams::{DLQ_MAX_AGE, DUPLICATE_WINDOW};
use protocol::Names;
use thiserror::Error;
use tracing::{info, instrument};

use crate::config::Config;

#[derive(Debug, Error)]
pub enum SetupError {
    #[error("cannot connect to NATS: {0}")]
    Connect(#[from] async_nats::ConnectError),
    #[error(transparent)]
    Config(#[from] service::nats::NatsConfigError),
    #[error("cannot create or update stream {name}: {source}")]
    Stream {
        name: String,
        #[source]
        source: jetstream::context::CreateStreamError,
    },
    #[error("cannot look up stream {name}: {source}")]
    GetStream {
        name: String,
        #[source]
        source: jetstream::context::GetStreamError,
    },
    #[error("cannot create consumer {name}: {source}")]
    Consumer {
        name: String,
        #[source]
        source: jetstream::stream::ConsumerError,
    },
}

/// Connects to NATS; the client keeps reconnecting by itself after this.
pub async fn connect(config: &Config) -> Result<async_nats::Client, SetupError> {
    let options = config.nats.connect_options("ingest-worker").await?;
    Ok(options.connect(config.nats.servers()?).await?)
}

/// Creates or updates `READINGS` and `READINGS_DLQ` and the durable `ingest` consumer.
#[instrument(skip_all, err)]
pub async fn ensure(
    js: &Context,
    names: &Names,
    config: &Config,
) -> Result<PullConsumer, SetupError> {
    let readings = stream::Config {
        name: names.readings_stream.clone(),
        subjects: vec![names.readings_filter()],
        storage: StorageType::File,
        retention: RetentionPolicy::Limits,
        // A full stream refuses publishes: shippers wait and retry, nothing unconsumed is deleted.
        discard: DiscardPolicy::New,
        max_bytes: config.stream_max_bytes,
        max_age: Duration::from_secs(config.stream_max_age_hours * 3600),
        duplicate_window: DUPLICATE_WINDOW,
        num_replicas: config.stream_replicas,
        ..Default::default()
    };
    let dlq = stream::Config {
        name: names.dlq_stream.clone(),
        subjects: vec![names.dlq_filter()],
        storage: StorageType::File,
        retention: RetentionPolicy::Limits,
        discard: DiscardPolicy::Old,
        max_age: DLQ_MAX_AGE,
        duplicate_window: DUPLICATE_WINDOW,
        num_replicas: config.stream_replicas,
        ..Default::default()
    };
    for mut cfg in [readings, dlq] {
        let name = cfg.name.clone();
        // A hub stream may aggregate site gateways through `sources` (or be a mirror) configured
        // by operators; re-applying our settings must not drop them.
        if let Ok(existing) = js.get_stream(&name).await {
            let current = &existing.cached_info().config;
            cfg.sources = current.sources.clone();
            cfg.mirror = current.mirror.clone();
            if cfg.mirror.is_some() {
                cfg.subjects = current.subjects.clone();
            }
        }
        js.create_or_update_stream(cfg)
            .await
            .map_err(|source| SetupError::Stream {
                name: name.clone(),
                source,
            })?;
        info!(stream = %name, "stream ready");
    }
    let stream = js
        .get_stream(&names.readings_stream)
        .await
        .map_err(|source| SetupError::GetStream {
            name: names.readings_stream.clone(),
            source,
        })?;
    let consumer = stream
        .get_or_create_consumer(
            &names.consumer,
            pull::Config {
                durable_name: Some(names.consumer.clone()),
                ack_policy: AckPolicy::Explicit,
                ack_wait: Duration::from_secs(config.ack_wait_secs),
                // Never give up on a message: a database outage must not exhaust deliveries.
                max_deliver: -1,
                max_ack_pending: config.max_ack_pending,
                filter_subject: names.readings_filter(),
                ..Default::default()
            },
        )
        .await
        .map_err(|source| SetupError::Consumer {
            name: names.consumer.clone(),
            source,
        })?;
    info!(consumer = %names.consumer, "durable consumer ready");
    Ok(consumer)
}
