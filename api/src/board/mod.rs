//! The live shop-floor board: `GET /board` (one HTML page with its CSS and JavaScript, shipped in
//! the binary), `GET /board/state` (the snapshot as JSON) and `GET /board/events` (server-sent
//! events, one `snapshot` event per refresh).
//!
//! - [`snapshot`]: what the board shows, read in one database snapshot.
//! - [`feed`]: one refreshing snapshot per view, fed by the run events on NATS and a timer.
//! - [`metrics`]: connected clients, snapshots taken.
//!
//! The page loads `/board/state`, then listens on `/board/events`; every replica refreshes on
//! every run event because the events come from NATS, not from this process's own writes.

pub mod feed;
pub mod metrics;
pub mod snapshot;

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use axum::http::header;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use futures::{Stream, StreamExt};
use protocol::OpRunNames;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::error::{ApiError, Problem};
use crate::extract::QueryParams;
use crate::state::AppState;
use feed::{Frame, FrameReceiver, FrameSender};
pub use snapshot::{BoardSnapshot, SnapshotLimits};

const INDEX_HTML: &str = include_str!("../../board/index.html");
const BOARD_CSS: &str = include_str!("../../board/board.css");
const BOARD_JS: &str = include_str!("../../board/board.js");

/// The page loads nothing but itself and the board endpoints of this origin.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'unsafe-inline'; \
     style-src 'unsafe-inline'; connect-src 'self'; img-src data:; base-uri 'none'; \
     form-action 'none'";

/// How an EventSource should wait before reconnecting after the stream ends.
const SSE_RETRY: Duration = Duration::from_secs(3);

/// Timing and bounds of the board.
#[derive(Debug, Clone, Copy)]
pub struct BoardSettings {
    /// A snapshot is pushed at least this often, run events or not (readings and OEE move).
    pub refresh_interval: Duration,
    /// At most one snapshot per this interval per view; run events in between are coalesced.
    pub min_snapshot_interval: Duration,
    /// SSE comment sent when nothing else was, so proxies keep the stream open.
    pub keep_alive: Duration,
    /// Most `/board/events` clients of this process; more get 503.
    pub max_clients: usize,
    pub limits: SnapshotLimits,
}

impl Default for BoardSettings {
    fn default() -> Self {
        Self {
            refresh_interval: Duration::from_secs(5),
            min_snapshot_interval: Duration::from_millis(250),
            keep_alive: Duration::from_secs(15),
            max_clients: 1024,
            limits: SnapshotLimits::default(),
        }
    }
}

/// The board's shared state: a handle to clone into the router (as an `Extension`).
#[derive(Clone)]
pub struct Board {
    inner: Arc<BoardInner>,
}

struct BoardInner {
    pool: PgPool,
    nats: Option<async_nats::Client>,
    names: OpRunNames,
    settings: BoardSettings,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    /// Live feeds by `site` filter (`None`: all sites).
    feeds: Mutex<HashMap<Option<String>, FrameSender>>,
    clients: AtomicUsize,
}

impl Board {
    /// A board over `state`'s pool and NATS client, listening for the run events of `names`.
    /// Its SSE streams and feeds end when `shutdown` is cancelled; feeds run on `tracker`.
    pub fn new(
        state: &AppState,
        names: OpRunNames,
        settings: BoardSettings,
        shutdown: CancellationToken,
        tracker: TaskTracker,
    ) -> Self {
        metrics::describe();
        let settings = BoardSettings {
            refresh_interval: settings.refresh_interval.max(Duration::from_millis(100)),
            keep_alive: settings.keep_alive.max(Duration::from_secs(1)),
            ..settings
        };
        Self {
            inner: Arc::new(BoardInner {
                pool: state.pool.clone(),
                nats: state.nats.clone(),
                names,
                settings,
                shutdown,
                tracker,
                feeds: Mutex::new(HashMap::new()),
                clients: AtomicUsize::new(0),
            }),
        }
    }

    /// A board with default settings and the standard subject names that stops only when the
    /// process does (for [`crate::app`]; `serve` builds its own).
    pub fn detached(state: &AppState) -> Self {
        Self::new(
            state,
            OpRunNames::default(),
            BoardSettings::default(),
            CancellationToken::new(),
            TaskTracker::new(),
        )
    }

    /// A receiver of the feed of `site`, starting the feed if none runs.
    fn subscribe(&self, site: Option<String>) -> FrameReceiver {
        let mut feeds = self
            .inner
            .feeds
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(tx) = feeds.get(&site) {
            return tx.subscribe();
        }
        let (tx, rx) = tokio::sync::watch::channel(None);
        feeds.insert(site.clone(), tx.clone());
        self.inner.tracker.spawn(feed::run(self.clone(), site, tx));
        rx
    }

    /// Called by a feed whose clients all left: removes it unless a client came meanwhile.
    fn retire_feed(&self, site: Option<&str>, tx: &FrameSender) -> bool {
        let mut feeds = self
            .inner
            .feeds
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if tx.receiver_count() > 0 {
            return false;
        }
        feeds.remove(&site.map(str::to_owned));
        true
    }

    fn connect_client(&self) -> Result<ClientGuard, ApiError> {
        if self.inner.shutdown.is_cancelled() {
            return Err(ApiError::Unavailable("shutting down".to_owned()));
        }
        let max = self.inner.settings.max_clients;
        let before = self.inner.clients.fetch_add(1, Ordering::Relaxed);
        if before >= max {
            self.inner.clients.fetch_sub(1, Ordering::Relaxed);
            return Err(ApiError::Unavailable(format!(
                "board clients: all {max} connections of this instance are in use"
            )));
        }
        metrics::client_connected();
        Ok(ClientGuard {
            board: self.clone(),
        })
    }
}

/// Counts one connected SSE client while it lives.
struct ClientGuard {
    board: Board,
}

impl Drop for ClientGuard {
    fn drop(&mut self) {
        self.board.inner.clients.fetch_sub(1, Ordering::Relaxed);
        metrics::client_disconnected();
    }
}

/// The page: `index.html` with the stylesheet and script put inline, built once.
pub fn page_html() -> &'static str {
    static PAGE: OnceLock<String> = OnceLock::new();
    PAGE.get_or_init(|| {
        INDEX_HTML
            .replace("/*{{board.css}}*/", BOARD_CSS)
            .replace("/*{{board.js}}*/", BOARD_JS)
    })
}

/// The live shop-floor board (HTML for a large screen; it loads `/board/state`, then listens on
/// `/board/events`).
#[utoipa::path(get, path = "/board", tag = "board",
    params(("site" = Option<crate::domain::Ident>, Query, description = "only this site; the page passes it on to /board/state and /board/events")),
    responses((status = 200, description = "one HTML document with its CSS and JavaScript inline; it loads nothing from elsewhere", body = String, content_type = "text/html")))]
pub async fn board_page() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
            (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        page_html(),
    )
        .into_response()
}

/// The board's snapshot now: sites with their current shift; per resource its active run with
/// counts, current-shift OEE (A, P, Q) and the last reading of each sensor.
#[utoipa::path(get, path = "/board/state", tag = "board",
    params(("site" = Option<crate::domain::Ident>, Query, description = "only this site; empty or absent: all")),
    responses(crate::http::ServerFaults,
        (status = 200, description = "the board snapshot", body = BoardSnapshot),
        (status = 400, description = "a query parameter is malformed, unknown or repeated", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "unknown site", body = Problem, content_type = "application/problem+json")))]
pub async fn board_state(
    Extension(board): Extension<Board>,
    mut q: QueryParams,
) -> Result<Response, ApiError> {
    let site = q.take_ident("site")?.map(String::from);
    q.finish()?;
    let snapshot = snapshot::load(
        &board.inner.pool,
        site.as_deref(),
        &board.inner.settings.limits,
    )
    .await?;
    Ok(([(header::CACHE_CONTROL, "no-store")], Json(snapshot)).into_response())
}

/// One event of `GET /board/events` as the OpenAPI document states it (in OpenAPI 3.1 an event
/// stream's `schema` is that of each event): `event: snapshot`, `retry` in milliseconds, `data`
/// a one-line JSON `BoardSnapshot`.
pub struct SnapshotEvent;

impl utoipa::PartialSchema for SnapshotEvent {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, Type};
        // utoipa 5 has no builder for JSON Schema's `contentSchema`; the extensions map is
        // written flat into the schema object, so it carries the keyword.
        let data_schema: utoipa::openapi::extensions::Extensions = [(
            "contentSchema",
            serde_json::json!({"$ref": "#/components/schemas/BoardSnapshot"}),
        )]
        .into_iter()
        .collect();
        ObjectBuilder::new()
            .description(Some("one server-sent event"))
            .property(
                "event",
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .enum_values(Some(["snapshot"])),
            )
            .required("event")
            .property(
                "data",
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .content_media_type("application/json")
                    .extensions(Some(data_schema)),
            )
            .required("data")
            .property(
                "retry",
                ObjectBuilder::new()
                    .schema_type(Type::Integer)
                    .minimum(Some(0)),
            )
            .into()
    }
}

impl utoipa::ToSchema for SnapshotEvent {
    fn schemas(
        schemas: &mut Vec<(
            String,
            utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>,
        )>,
    ) {
        use utoipa::PartialSchema;
        schemas.push(("BoardSnapshot".to_owned(), BoardSnapshot::schema()));
        <BoardSnapshot as utoipa::ToSchema>::schemas(schemas);
    }
}

/// Server-sent events: `event: snapshot` with a one-line JSON `BoardSnapshot` as `data`, on
/// connect, after run events (coalesced, at most a few per second) and every 5 s.
#[utoipa::path(get, path = "/board/events", tag = "board",
    params(("site" = Option<crate::domain::Ident>, Query, description = "only this site; empty or absent: all")),
    responses(crate::http::ServerFaults,
        (status = 200, description = "text/event-stream of `snapshot` events whose data is a BoardSnapshot (see /board/state); comments keep the stream alive; it ends at server shutdown and EventSource reconnects", body = SnapshotEvent, content_type = "text/event-stream"),
        (status = 400, description = "a query parameter is malformed, unknown or repeated", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "unknown site", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "too many board clients on this instance, shutting down, or the database is unreachable", body = Problem, content_type = "application/problem+json")))]
pub async fn board_events(
    Extension(board): Extension<Board>,
    mut q: QueryParams,
) -> Result<Response, ApiError> {
    let site = q.take_ident("site")?.map(String::from);
    q.finish()?;
    if let Some(site) = &site {
        if !snapshot::site_exists(&board.inner.pool, site).await? {
            return Err(snapshot::unknown_site(site));
        }
    }
    let guard = board.connect_client()?;
    let rx = board.subscribe(site);
    let keep_alive = KeepAlive::new().interval(board.inner.settings.keep_alive);
    let stream = client_frames(rx, board.inner.shutdown.clone(), guard)
        .map(|frame| Ok::<_, Infallible>(snapshot_event(&frame)));
    Ok((
        // Reverse proxies (nginx) must pass events on at once, not buffer them.
        [("x-accel-buffering", "no")],
        Sse::new(stream).keep_alive(keep_alive),
    )
        .into_response())
}

/// The snapshots of one client: the feed's current snapshot at once, then each newer one. Only
/// the latest snapshot is ever held, so a slow client skips snapshots instead of queueing them.
/// Ends at shutdown; `guard` lives as long as the stream.
fn client_frames<G: Send + 'static>(
    rx: FrameReceiver,
    shutdown: CancellationToken,
    guard: G,
) -> impl Stream<Item = Frame> {
    struct Client<G> {
        rx: FrameReceiver,
        shutdown: CancellationToken,
        first: bool,
        _guard: G,
    }
    let client = Client {
        rx,
        shutdown,
        first: true,
        _guard: guard,
    };
    futures::stream::unfold(client, |mut client| async move {
        if std::mem::take(&mut client.first) {
            let current = client.rx.borrow_and_update().clone();
            if let Some(frame) = current {
                return Some((frame, client));
            }
        }
        loop {
            tokio::select! {
                biased;
                _ = client.shutdown.cancelled() => return None,
                changed = client.rx.changed() => changed.ok()?,
            }
            let latest = client.rx.borrow_and_update().clone();
            if let Some(frame) = latest {
                return Some((frame, client));
            }
        }
    })
}

fn snapshot_event(frame: &Frame) -> Event {
    Event::default()
        .event("snapshot")
        .retry(SSE_RETRY)
        .data(&*frame.json)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(n: u32) -> Option<Frame> {
        Some(Frame {
            generated_at: chrono::DateTime::<chrono::Utc>::UNIX_EPOCH,
            json: format!("{{\"n\":{n}}}").into(),
        })
    }

    #[test]
    fn page_is_self_contained() {
        let page = page_html();
        assert!(page.contains("<style>") && page.contains("EventSource"));
        assert!(!page.contains("{{board."), "placeholders replaced");
        for external in ["http://", "https://", "//cdn", "@import", "url("] {
            assert!(!page.contains(external), "page references {external}");
        }
    }

    #[tokio::test]
    async fn a_slow_client_gets_only_the_latest_snapshot() {
        let (tx, rx) = tokio::sync::watch::channel(frame(1));
        let shutdown = CancellationToken::new();
        let frames = client_frames(rx, shutdown.clone(), ());
        futures::pin_mut!(frames);
        let first = frames.next().await.map(|f| f.json);
        assert_eq!(
            first.as_deref(),
            Some("{\"n\":1}"),
            "the current snapshot at once"
        );
        for n in 2..=50 {
            tx.send_replace(frame(n));
        }
        // 49 snapshots were published while the client did not read: it gets the last one only.
        let next = tokio::time::timeout(Duration::from_secs(1), frames.next()).await;
        assert_eq!(
            next.ok().flatten().map(|f| f.json).as_deref(),
            Some("{\"n\":50}")
        );
        let pending = tokio::time::timeout(Duration::from_millis(50), frames.next()).await;
        assert!(
            pending.is_err(),
            "nothing queued behind the latest snapshot"
        );
        shutdown.cancel();
        let end = tokio::time::timeout(Duration::from_secs(1), frames.next()).await;
        assert!(matches!(end, Ok(None)), "the stream ends at shutdown");
    }
}
