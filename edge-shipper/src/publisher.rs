//! Publishing chunks to JetStream until they are acknowledged.
//!
//! Each message is published with `Nats-Msg-Id` = `<source>:<start>-<end>` and retried with the
//! same id and payload, with exponential backoff and jitter, until JetStream acknowledges it: a
//! missing stream (the worker creates it), a full stream with `discard new`, a timeout or a lost
//! connection all just mean waiting. A retry of a message that was stored but whose ack was lost
//! is dropped by JetStream's duplicate window, or later by the ingest ledger.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::{self, Context};
use async_nats::{HeaderMap, Subject};
use bytes::Bytes;
use protocol::{BatchMeta, ByteRange, SourceKey};
use rand::Rng;
use tracing::{debug, error, instrument, warn};

use crate::metrics as m;
use crate::tailer::Chunk;

const BACKOFF_START: Duration = Duration::from_millis(100);
const BACKOFF_CAP: Duration = Duration::from_secs(5);
/// Publish failures are logged at warn at most this often; the rest at debug.
const WARN_EVERY: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error(transparent)]
    Config(#[from] service::nats::NatsConfigError),
    #[error("cannot connect to NATS: {0}")]
    Connect(#[from] async_nats::ConnectError),
}

/// Connects, retrying the first connection and every later one forever.
#[instrument(skip_all, fields(url = %nats.url_redacted()))]
pub async fn connect(nats: &service::nats::NatsArgs) -> Result<Context, ConnectError> {
    let options = nats.connect_options("edge-shipper").await?;
    let client = options.connect(nats.servers()?).await?;
    Ok(jetstream::new(client))
}

/// A message ready to publish, kept until acknowledged so a retry sends the same bytes.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub meta: BatchMeta,
    pub payload: Bytes,
    msg_id: String,
}

impl Outgoing {
    pub fn new(chunk: Chunk, site: &str, box_id: &str) -> Self {
        let meta = BatchMeta {
            site: site.to_owned(),
            box_id: box_id.to_owned(),
            source: chunk.source,
            path: chunk.path.to_string(),
            range: chunk.range,
            lines: chunk.lines,
            kind: chunk.kind,
        };
        Self {
            msg_id: meta.msg_id(),
            meta,
            payload: chunk.payload,
        }
    }

    pub fn msg_id(&self) -> &str {
        &self.msg_id
    }

    pub fn source(&self) -> &SourceKey {
        &self.meta.source
    }

    pub fn range(&self) -> ByteRange {
        self.meta.range
    }

    /// The protocol headers; built per attempt (cheaper than cloning a header map).
    fn headers(&self) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in self.meta.headers() {
            headers.insert(name, value);
        }
        headers
    }
}

/// Logs publish failures without flooding: one warn per [`WARN_EVERY`].
#[derive(Debug, Default)]
pub struct FailureLog {
    last_warn: Mutex<Option<Instant>>,
}

impl FailureLog {
    fn log(
        &self,
        msg: &Outgoing,
        attempt: u32,
        err: &async_nats::jetstream::context::PublishError,
    ) {
        let kind = err.kind();
        if kind == PublishErrorKind::MaxPayloadExceeded {
            error!(msg_id = %msg.msg_id, bytes = msg.payload.len(), error = %err,
                "message exceeds the server's max_payload; lower --max-message-bytes");
            return;
        }
        let now = Instant::now();
        let warn_now = {
            let mut last = self.last_warn.lock().unwrap_or_else(|p| p.into_inner());
            let due = last.is_none_or(|t| now.duration_since(t) >= WARN_EVERY);
            if due {
                *last = Some(now);
            }
            due
        };
        let hint = match kind {
            PublishErrorKind::StreamNotFound => {
                "no stream for the subject yet (the ingest worker creates it); retrying"
            }
            PublishErrorKind::TimedOut => "no ack in time (nats down or slow); retrying",
            _ => "publish failed; retrying",
        };
        if warn_now {
            warn!(msg_id = %msg.msg_id, attempt, error = %err, "{hint}");
        } else {
            debug!(msg_id = %msg.msg_id, attempt, error = %err, "{hint}");
        }
    }
}

/// What every publish shares: one `Arc` keeps each message's future small.
pub struct PublishTarget {
    pub js: Context,
    pub subject: Subject,
    pub failures: FailureLog,
    pub metrics: m::PublishMetrics,
}

/// Publishes `msg` until JetStream acknowledges it; never gives up. Returns the message and
/// whether JetStream saw it as a duplicate.
///
/// Allocation sizes matter at a thousand messages a second: the future stays well under 1 KiB
/// (the publish step is boxed separately), which keeps glibc's malloc off its slow path.
pub async fn publish_until_acked(target: Arc<PublishTarget>, msg: Outgoing) -> (Outgoing, bool) {
    let started = Instant::now();
    let mut backoff = BACKOFF_START;
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        let publish = PublishMessage::build()
            .payload(msg.payload.clone())
            .headers(msg.headers())
            .message_id(&msg.msg_id);
        let sent = Box::pin(target.js.send_publish(target.subject.clone(), publish)).await;
        let result = match sent {
            Ok(ack) => ack.await,
            Err(e) => Err(e),
        };
        match result {
            Ok(ack) => {
                target
                    .metrics
                    .latency
                    .record(started.elapsed().as_secs_f64());
                if attempt > 1 {
                    debug!(msg_id = %msg.msg_id, attempt, "published after retries");
                }
                return (msg, ack.duplicate);
            }
            Err(e) => {
                target.metrics.retries.increment(1);
                target.failures.log(&msg, attempt, &e);
                tokio::time::sleep(jitter(backoff)).await;
                backoff = (backoff * 2).min(BACKOFF_CAP);
            }
        }
    }
}

/// A random duration in `[d/2, d]`.
fn jitter(d: Duration) -> Duration {
    let half = d / 2;
    half + half.mul_f64(rand::rng().random::<f64>())
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::{BatchKind, Fingerprint};

    #[test]
    fn outgoing_carries_the_protocol_headers_and_msg_id() {
        let source = SourceKey::new("b1", Fingerprint { crc: 5, len: 9 });
        let chunk = Chunk {
            source: source.clone(),
            path: Arc::from("/d/a b.jsonl"),
            range: ByteRange { start: 10, end: 20 },
            lines: 2,
            kind: BatchKind::Lines,
            payload: Bytes::from_static(b"abcd\nefgh\n"),
        };
        let out = Outgoing::new(chunk, "BKK", "b1");
        assert_eq!(out.msg_id(), format!("{source}:10-20"));
        let headers = out.headers();
        let get = |k: &str| headers.get(k).map(|v| v.as_str());
        let meta = BatchMeta::from_headers(get).unwrap();
        assert_eq!(meta.path, "/d/a b.jsonl");
        assert_eq!(meta.range, ByteRange { start: 10, end: 20 });
        assert_eq!(meta.site, "BKK");
        meta.check_payload(&out.payload).unwrap();
    }

    #[test]
    fn jitter_stays_within_half_and_full() {
        for _ in 0..100 {
            let j = jitter(Duration::from_millis(100));
            assert!(j >= Duration::from_millis(50) && j <= Duration::from_millis(100));
        }
    }
}
