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
use async_nats::{HeaderMap, HeaderName, HeaderValue, Subject};
use bytes::Bytes;
use protocol::{BatchKind, BatchMeta, ByteRange, SourceKey};
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

/// The protocol headers that every message of one source, read through one path, shares: built
/// once from [`BatchMeta::headers`] (the one place the wire contract lives); a message clones
/// them and sets its own range and line count. At a thousand one-line messages a second, building
/// all nine headers afresh (name validation and copies, a growing hash table) was a fifth of the
/// shipper's publishing CPU.
#[derive(Debug)]
pub struct SourceHeaders {
    path: Arc<str>,
    map: HeaderMap,
}

impl SourceHeaders {
    pub fn new(chunk: &Chunk, site: &str, box_id: &str) -> Self {
        let meta = BatchMeta {
            site: site.to_owned(),
            box_id: box_id.to_owned(),
            source: chunk.source.clone(),
            path: chunk.path.to_string(),
            range: chunk.range,
            lines: chunk.lines,
            kind: BatchKind::Lines,
        };
        let map = meta
            .headers()
            .into_iter()
            .map(|(name, value)| (HeaderName::from_static(name), HeaderValue::from(value)))
            .collect();
        Self {
            path: chunk.path.clone(),
            map,
        }
    }

    /// Whether these headers are the ones for `chunk` (same path; the source is the caller's key).
    pub fn fits(&self, chunk: &Chunk) -> bool {
        Arc::ptr_eq(&self.path, &chunk.path) || *self.path == *chunk.path
    }
}

/// A message ready to publish, kept until acknowledged so a retry sends the same bytes.
#[derive(Debug, Clone)]
pub struct Outgoing {
    source: SourceKey,
    range: ByteRange,
    lines: u64,
    kind: BatchKind,
    pub payload: Bytes,
    msg_id: String,
    headers: Arc<SourceHeaders>,
}

impl Outgoing {
    /// `headers` must be the [`SourceHeaders`] of the chunk's source that [`SourceHeaders::fits`]
    /// it.
    pub fn new(chunk: Chunk, headers: Arc<SourceHeaders>) -> Self {
        let msg_id = protocol::framing::msg_id(&chunk.source, chunk.range);
        Self {
            source: chunk.source,
            range: chunk.range,
            lines: chunk.lines,
            kind: chunk.kind,
            payload: chunk.payload,
            msg_id,
            headers,
        }
    }

    pub fn msg_id(&self) -> &str {
        &self.msg_id
    }

    pub fn source(&self) -> &SourceKey {
        &self.source
    }

    pub fn range(&self) -> ByteRange {
        self.range
    }

    pub fn lines(&self) -> u64 {
        self.lines
    }

    /// The protocol headers; built per attempt from the source's (cheaper than keeping a copy).
    fn headers(&self) -> HeaderMap {
        let mut headers = self.headers.map.clone();
        headers.insert(HDR_START_NAME, self.range.start.to_string());
        headers.insert(HDR_END_NAME, self.range.end.to_string());
        headers.insert(HDR_LINES_NAME, self.lines.to_string());
        if self.kind != BatchKind::Lines {
            headers.insert(HDR_KIND_NAME, self.kind.as_str());
        }
        headers
    }
}

const HDR_START_NAME: HeaderName = HeaderName::from_static(protocol::framing::HDR_START);
const HDR_END_NAME: HeaderName = HeaderName::from_static(protocol::framing::HDR_END);
const HDR_LINES_NAME: HeaderName = HeaderName::from_static(protocol::framing::HDR_LINES);
const HDR_KIND_NAME: HeaderName = HeaderName::from_static(protocol::framing::HDR_KIND);

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
    use protocol::Fingerprint;

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
        let template = Arc::new(SourceHeaders::new(&chunk, "BKK", "b1"));
        let out = Outgoing::new(chunk.clone(), template.clone());
        assert_eq!(out.msg_id(), format!("{source}:10-20"));
        let headers = out.headers();
        let get = |k: &str| headers.get(k).map(|v| v.as_str());
        let meta = BatchMeta::from_headers(get).unwrap();
        assert_eq!(meta.path, "/d/a b.jsonl");
        assert_eq!(meta.range, ByteRange { start: 10, end: 20 });
        assert_eq!(meta.site, "BKK");
        meta.check_payload(&out.payload).unwrap();

        // A later message of the source: its own range, line count and kind over the shared
        // headers, the same as building them afresh.
        let later = Chunk {
            range: ByteRange {
                start: 20,
                end: 4120,
            },
            lines: 1,
            kind: BatchKind::Oversize,
            payload: Bytes::from(vec![b'x'; 100]),
            ..chunk
        };
        assert!(template.fits(&later));
        let out = Outgoing::new(later.clone(), template.clone());
        let headers = out.headers();
        let got = BatchMeta::from_headers(|k| headers.get(k).map(|v| v.as_str())).unwrap();
        let fresh = SourceHeaders::new(&later, "BKK", "b1");
        let mut expected = fresh.map.clone();
        expected.insert(HDR_KIND_NAME, "oversize");
        let want = BatchMeta::from_headers(|k| expected.get(k).map(|v| v.as_str())).unwrap();
        assert_eq!(got, want);
        assert_eq!(got.kind, BatchKind::Oversize);
        assert_eq!((got.range, got.lines), (later.range, 1));
        let moved = Chunk {
            path: Arc::from("/d/rotated.jsonl"),
            ..later
        };
        assert!(!template.fits(&moved));
    }

    #[test]
    fn jitter_stays_within_half_and_full() {
        for _ in 0..100 {
            let j = jitter(Duration::from_millis(100));
            assert!(j >= Duration::from_millis(50) && j <= Duration::from_millis(100));
        }
    }
}
