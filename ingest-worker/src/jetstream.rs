//! NATS connection, the streams and the shared durable consumer, created or updated idempotently.
//!
//! `READINGS` has **work-queue retention**: JetStream removes a message once the shared durable
//! consumer acknowledged it (after its rows committed), so the stream holds only what is not yet
//! loaded and its size limit bounds the backlog, not the traffic carried. (A limits stream
//! refuses every publish once it has *carried* its size, until messages age out.) Work-queue
//! and not interest retention: an interest stream drops a message stored while it has no
//! consumer, and on nats-server 2.9 it lost acknowledged messages across a server restart in our
//! fault test; a work queue keeps every message until it is acknowledged. The cost: a work queue
//! allows one consumer per subject, so the archive reads loaded days from the database rather
//! than from this stream (README, design notes).
//!
//! JetStream cannot change a stream's retention in place. A `READINGS` with another retention
//! (an earlier version made limits) is sealed (shippers are refused and wait, their checkpoints
//! stay), drained by the ordinary pipeline, then replaced: see [`crate::stream_upgrade`].

use std::time::Duration;

use async_nats::jetstream::{
    self,
    consumer::{pull, AckPolicy, PullConsumer},
    stream::{self, DiscardPolicy, RetentionPolicy, StorageType},
    Context, ErrorCode,
};
use protocol::streams::{DLQ_MAX_AGE, DUPLICATE_WINDOW};
use protocol::Names;
use thiserror::Error;
use tracing::{info, instrument, warn};

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
    #[error("cannot change stream {name}: {source}")]
    UpdateStream {
        name: String,
        #[source]
        source: jetstream::context::UpdateStreamError,
    },
    #[error("cannot look up stream {name}: {source}")]
    GetStream {
        name: String,
        #[source]
        source: jetstream::context::GetStreamError,
    },
    #[error("cannot delete stream {name}: {source}")]
    DeleteStream {
        name: String,
        #[source]
        source: jetstream::context::DeleteStreamError,
    },
    #[error("cannot create consumer {name}: {source}")]
    Consumer {
        name: String,
        #[source]
        source: jetstream::stream::ConsumerError,
    },
    #[error("cannot read the state of consumer {name}: {source}")]
    ConsumerInfo {
        name: String,
        #[source]
        source: jetstream::context::ConsumerInfoError,
    },
    /// The stream is in a shape the worker must not change by itself; the message says what to do.
    #[error("stream {name} {problem}; see docs/operations.md, \"The readings buffer: limits, alerts, upgrades\"")]
    Unsupported { name: String, problem: &'static str },
    #[error("stream {name} still has {pending} messages not loaded; not replacing it")]
    NotDrained { name: String, pending: u64 },
}

impl SetupError {
    /// Errors that waiting cannot cure: the worker stops and says why instead of retrying.
    pub fn is_fatal(&self) -> bool {
        matches!(self, Self::Unsupported { .. })
    }
}

/// What the worker found at start.
#[derive(Debug)]
pub enum Readings {
    /// The stream has work-queue retention and the shared consumer exists: ingest.
    Ready(PullConsumer),
    /// The stream has another retention (an earlier version made limits). It is sealed now;
    /// load everything its consumer holds, then call [`replace_drained`].
    Sealed(PullConsumer),
}

/// Connects to NATS; the client keeps reconnecting by itself after this.
pub async fn connect(config: &Config) -> Result<async_nats::Client, SetupError> {
    let scope = crate::site_filter::inbox_scope(&config.sites);
    let options = config
        .nats
        .connect_options_scoped("ingest-worker", scope.as_deref())
        .await?;
    Ok(options.connect(config.nats.servers()?).await?)
}

/// The `READINGS` configuration this version runs with.
pub fn readings_config(names: &Names, config: &Config) -> stream::Config {
    stream::Config {
        name: names.readings_stream.clone(),
        subjects: vec![names.readings_filter()],
        storage: StorageType::File,
        retention: RetentionPolicy::WorkQueue,
        // A full stream refuses publishes: shippers wait and retry, nothing unconsumed is deleted.
        discard: DiscardPolicy::New,
        max_bytes: config.stream_max_bytes,
        max_age: Duration::from_secs(config.stream_max_age_hours * 3600),
        duplicate_window: DUPLICATE_WINDOW,
        num_replicas: config.stream_replicas,
        ..Default::default()
    }
}

fn dlq_config(names: &Names, config: &Config) -> stream::Config {
    stream::Config {
        name: names.dlq_stream.clone(),
        subjects: vec![names.dlq_filter()],
        storage: StorageType::File,
        // Dead letters are also rows of `ingest_dead_letters` (reason, headers, payload prefix):
        // the stream keeps whole payloads for replay and may drop its oldest when full rather
        // than take space the readings need.
        retention: RetentionPolicy::Limits,
        discard: DiscardPolicy::Old,
        max_age: DLQ_MAX_AGE,
        max_bytes: config.dlq_max_bytes,
        duplicate_window: DUPLICATE_WINDOW,
        num_replicas: config.stream_replicas,
        ..Default::default()
    }
}

fn consumer_config(names: &Names, config: &Config) -> pull::Config {
    pull::Config {
        durable_name: Some(names.consumer.clone()),
        ack_policy: AckPolicy::Explicit,
        ack_wait: Duration::from_secs(config.ack_wait_secs),
        // Never give up on a message: a database outage must not exhaust deliveries.
        max_deliver: -1,
        max_ack_pending: config.max_ack_pending,
        // No filter: the stream carries readings only (its own subjects and sourced gateways);
        // a deployment limited to some sites (`--sites`) takes only theirs.
        ..crate::site_filter::consumer_filter(names, &config.sites)
    }
}

async fn get_stream(js: &Context, name: &str) -> Result<stream::Stream, SetupError> {
    js.get_stream(name)
        .await
        .map_err(|source| SetupError::GetStream {
            name: name.to_owned(),
            source,
        })
}

async fn update_stream(js: &Context, cfg: stream::Config) -> Result<(), SetupError> {
    let name = cfg.name.clone();
    js.update_stream(cfg)
        .await
        .map(|_| ())
        .map_err(|source| SetupError::UpdateStream { name, source })
}

/// The stream does not exist (as opposed to NATS being unreachable).
pub(crate) fn is_not_found(e: &jetstream::context::GetStreamError) -> bool {
    matches!(e.kind(), jetstream::context::GetStreamErrorKind::JetStream(err)
        if err.error_code() == ErrorCode::STREAM_NOT_FOUND)
}

/// Creates or updates `READINGS_DLQ`, and `READINGS` with the durable `ingest` consumer.
#[instrument(skip_all, err)]
pub async fn ensure(js: &Context, names: &Names, config: &Config) -> Result<Readings, SetupError> {
    let dlq = dlq_config(names, config);
    js.create_or_update_stream(dlq.clone())
        .await
        .map_err(|source| SetupError::Stream {
            name: dlq.name.clone(),
            source,
        })?;
    info!(stream = %dlq.name, "stream ready");

    let name = &names.readings_stream;
    let current = match js.get_stream(name).await {
        Ok(existing) => Some(existing.cached_info().config.clone()),
        Err(e) if is_not_found(&e) => None,
        Err(source) => {
            return Err(SetupError::GetStream {
                name: name.clone(),
                source,
            })
        }
    };
    match current {
        None => Ok(Readings::Ready(
            create_fresh(js, names, config, None).await?,
        )),
        Some(current) => match current.retention {
            RetentionPolicy::WorkQueue => Ok(Readings::Ready(
                apply(js, names, config, Some(&current)).await?,
            )),
            // Draining an old stream loads every site: not for a deployment limited to some.
            RetentionPolicy::Limits | RetentionPolicy::Interest if !config.sites.is_empty() => {
                Err(SetupError::Unsupported {
                    name: name.clone(),
                    problem: "has the retention of an earlier version; upgrade it with a worker \
                              without --sites before starting workers limited to sites",
                })
            }
            RetentionPolicy::Limits | RetentionPolicy::Interest => {
                Ok(Readings::Sealed(seal(js, names, config, current).await?))
            }
        },
    }
}

/// A new stream with our settings (and the sources of the stream it replaces), then its consumer.
/// Messages that arrive in between wait in the work queue for the consumer.
async fn create_fresh(
    js: &Context,
    names: &Names,
    config: &Config,
    carried_over: Option<&stream::Config>,
) -> Result<PullConsumer, SetupError> {
    let mut cfg = readings_config(names, config);
    let kept = carried_over.and_then(|old| old.sources.clone());
    cfg.sources = crate::site_gateway::merge_sources(kept, &config.site_gateways, names);
    match js.create_stream(cfg).await {
        Ok(_) => info!(stream = %names.readings_stream, "stream created"),
        Err(e)
            if matches!(e.kind(), jetstream::context::CreateStreamErrorKind::JetStream(ref err)
            if err.error_code() == ErrorCode::STREAM_NAME_EXIST) =>
        {
            // Another worker created it a moment ago: continue as it does.
        }
        Err(source) => {
            return Err(SetupError::Stream {
                name: names.readings_stream.clone(),
                source,
            })
        }
    }
    apply(js, names, config, carried_over).await
}

/// Makes sure the consumer exists and applies our settings to the work-queue stream, keeping the
/// `sources` an operator configured (a hub aggregating site gateways) and adding the configured
/// site gateways ([`crate::site_gateway`]).
async fn apply(
    js: &Context,
    names: &Names,
    config: &Config,
    current: Option<&stream::Config>,
) -> Result<PullConsumer, SetupError> {
    let name = &names.readings_stream;
    let stream = get_stream(js, name).await?;
    let consumer = stream
        .get_or_create_consumer(&names.consumer, consumer_config(names, config))
        .await
        .map_err(|source| SetupError::Consumer {
            name: names.consumer.clone(),
            source,
        })?;
    let mut cfg = readings_config(names, config);
    let kept = current.and_then(|current| current.sources.clone());
    cfg.sources = crate::site_gateway::merge_sources(kept, &config.site_gateways, names);
    update_stream(js, cfg).await?;
    info!(stream = %name, consumer = %names.consumer, retention = "workqueue", "stream and durable consumer ready");
    Ok(consumer)
}

/// Seals a `READINGS` of an earlier version so that it takes no more messages while the worker loads
/// what it holds. Shippers get an error for every publish and retry; their checkpoints stay.
async fn seal(
    js: &Context,
    names: &Names,
    config: &Config,
    mut current: stream::Config,
) -> Result<PullConsumer, SetupError> {
    let name = &names.readings_stream;
    if current.mirror.is_some() {
        return Err(SetupError::Unsupported {
            name: name.clone(),
            problem: "is a mirror without work-queue retention; recreate it as a stream that \
                      sources the origin",
        });
    }
    if !current.sealed {
        warn!(stream = %name, retention = ?current.retention, "stream made by an earlier version keeps what was loaded: \
              sealing it, loading what it holds, then replacing it with a work-queue stream; shippers wait meanwhile");
        current.sealed = true;
        update_stream(js, current).await?;
    } else {
        warn!(stream = %name, "stream of an earlier version is sealed (an upgrade was under way): loading what it holds");
    }
    let stream = get_stream(js, name).await?;
    // The old consumer has a filter and its own ack floor: keep it if it is there, so nothing
    // loaded is delivered again (the ledger would skip it anyway).
    let mut old = consumer_config(names, config);
    old.filter_subject = names.readings_filter();
    stream
        .get_or_create_consumer(&names.consumer, old)
        .await
        .map_err(|source| SetupError::Consumer {
            name: names.consumer.clone(),
            source,
        })
}

/// Replaces the sealed, fully loaded stream of an earlier version by a work-queue one with our
/// limits and its sources. Safe to call from several workers at once: a worker that finds the new
/// stream already in place just uses it.
#[instrument(skip_all, err)]
pub async fn replace_drained(
    js: &Context,
    names: &Names,
    config: &Config,
) -> Result<PullConsumer, SetupError> {
    let name = &names.readings_stream;
    let stream = match js.get_stream(name).await {
        Ok(s) => s,
        Err(e) if is_not_found(&e) => return create_fresh(js, names, config, None).await,
        Err(source) => {
            return Err(SetupError::GetStream {
                name: name.clone(),
                source,
            })
        }
    };
    let current = stream.cached_info().config.clone();
    if current.retention == RetentionPolicy::WorkQueue {
        return apply(js, names, config, Some(&current)).await;
    }
    let info = stream
        .consumer_info(&names.consumer)
        .await
        .map_err(|source| SetupError::ConsumerInfo {
            name: names.consumer.clone(),
            source,
        })?;
    let pending = info.num_pending + info.num_ack_pending as u64;
    if !current.sealed || pending > 0 {
        return Err(SetupError::NotDrained {
            name: name.clone(),
            pending,
        });
    }
    match js.delete_stream(name).await {
        Ok(_) => info!(stream = %name, "drained stream of the earlier version deleted"),
        Err(e) if is_not_found(&e) => {}
        Err(source) => {
            return Err(SetupError::DeleteStream {
                name: name.clone(),
                source,
            })
        }
    }
    let consumer = create_fresh(js, names, config, Some(&current)).await?;
    info!(stream = %name, "stream upgraded to work-queue retention; shippers resume");
    Ok(consumer)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream_file(name: &str) -> stream::Config {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../nats/streams")
            .join(name);
        let text = std::fs::read_to_string(&path).expect("stream file");
        serde_json::from_str(&text).expect("stream file parses")
    }

    /// Operators who create the streams ahead from `nats/streams/` get what the worker applies.
    #[test]
    fn the_stream_files_match_what_the_worker_applies() {
        let config = Config::for_urls("nats://127.0.0.1:4222", "postgres://x@127.0.0.1/x");
        let names = Names::default();
        for (ours, file) in [
            (readings_config(&names, &config), "READINGS.json"),
            (dlq_config(&names, &config), "READINGS_DLQ.json"),
        ] {
            let theirs = stream_file(file);
            assert_eq!(ours.name, theirs.name, "{file}");
            assert_eq!(ours.subjects, theirs.subjects, "{file}");
            assert_eq!(ours.retention, theirs.retention, "{file}");
            assert_eq!(ours.discard, theirs.discard, "{file}");
            assert_eq!(ours.max_bytes, theirs.max_bytes, "{file}");
            assert_eq!(ours.max_age, theirs.max_age, "{file}");
            assert_eq!(ours.storage, theirs.storage, "{file}");
            assert_eq!(ours.duplicate_window, theirs.duplicate_window, "{file}");
        }
        assert_eq!(
            readings_config(&names, &config).retention,
            RetentionPolicy::WorkQueue
        );
    }
}
