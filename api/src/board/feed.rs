//! One snapshot feed per board view (all sites, or one site) in this process, shared by all its
//! clients.
//!
//! A feed refreshes its snapshot when a run event arrives on NATS (a core subscription to the
//! run-event subjects the relay publishes, so every replica hears every change whichever replica
//! wrote it), every refresh interval (readings and OEE move without run events, and the board
//! keeps updating while NATS is down), and at start. Bursts are coalesced: at most one snapshot
//! per `min_snapshot_interval`, covering every event received before it was read.
//!
//! The latest snapshot sits in a `watch` channel: clients see only the newest one, so a slow
//! client skips intermediate snapshots instead of queueing them. The feed ends when its last
//! client leaves or at shutdown.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use futures::{FutureExt, StreamExt};
use protocol::OpRunNames;
use tokio::sync::watch;
use tokio::time::{Instant, MissedTickBehavior};
use tracing::{debug, warn};

use super::snapshot;
use super::Board;

/// One serialized snapshot, shared by every client of a feed.
#[derive(Debug, Clone)]
pub struct Frame {
    pub generated_at: DateTime<Utc>,
    /// The snapshot as one line of JSON (an SSE `data:` line).
    pub json: Arc<str>,
}

pub type FrameSender = watch::Sender<Option<Frame>>;
pub type FrameReceiver = watch::Receiver<Option<Frame>>;

/// The subjects a feed of `site` (all sites when `None`) listens on.
pub fn subject_filter(names: &OpRunNames, site: Option<&str>) -> String {
    match site {
        None => names.filter(),
        Some(site) => format!(
            "{}.{}.>",
            names.prefix,
            protocol::subject::escape_token(site)
        ),
    }
}

/// Why a snapshot is taken (for the metrics and logs).
#[derive(Debug, Clone, Copy)]
enum Trigger {
    Start,
    RunEvent,
    Periodic,
}

impl Trigger {
    fn as_str(self) -> &'static str {
        match self {
            Trigger::Start => "start",
            Trigger::RunEvent => "run_event",
            Trigger::Periodic => "periodic",
        }
    }
}

/// Runs the feed of `site` until its last client leaves or the board shuts down.
pub async fn run(board: Board, site: Option<String>, tx: FrameSender) {
    let inner = &board.inner;
    let settings = &inner.settings;
    let subject = subject_filter(&inner.names, site.as_deref());
    let mut events: Option<async_nats::Subscriber> = None;
    let mut subscribe_due = Instant::now();
    let mut tick = tokio::time::interval(settings.refresh_interval);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    tick.tick().await; // the first tick is immediate; the start snapshot stands for it
    let mut start = true;
    let mut last_snapshot: Option<Instant> = None;
    loop {
        if events.is_none() && Instant::now() >= subscribe_due {
            events = subscribe(&board, &subject).await;
            subscribe_due = Instant::now() + settings.refresh_interval;
        }
        let trigger = if std::mem::take(&mut start) {
            Trigger::Start
        } else {
            tokio::select! {
                biased;
                _ = inner.shutdown.cancelled() => break,
                _ = tx.closed() => {
                    if board.retire_feed(site.as_deref(), &tx) {
                        break;
                    }
                    continue;
                }
                event = next_event(&mut events) => match event {
                    Some(_) => Trigger::RunEvent,
                    None => {
                        debug!(subject = %subject, "run event subscription ended");
                        events = None;
                        continue;
                    }
                },
                _ = tick.tick() => Trigger::Periodic,
            }
        };
        // Debounce: at most one snapshot per min_snapshot_interval; events arriving meanwhile
        // are covered by the snapshot taken after the wait.
        if let Some(last) = last_snapshot {
            let due = last + settings.min_snapshot_interval;
            tokio::select! {
                biased;
                _ = inner.shutdown.cancelled() => break,
                _ = tokio::time::sleep_until(due) => {}
            }
        }
        let coalesced = drain_events(&mut events);
        let started = Instant::now();
        let loaded = tokio::select! {
            biased;
            _ = inner.shutdown.cancelled() => break,
            loaded = snapshot::load(&inner.pool, site.as_deref(), &settings.limits) => loaded,
        };
        match loaded.and_then(|s| {
            serde_json::to_string(&s)
                .map(|json| (s.generated_at, json))
                .map_err(|e| crate::error::ApiError::Internal(format!("snapshot json: {e}")))
        }) {
            Ok((generated_at, json)) => {
                tx.send_replace(Some(Frame {
                    generated_at,
                    json: json.into(),
                }));
                super::metrics::snapshot(trigger.as_str(), started.elapsed());
                debug!(
                    site = site.as_deref().unwrap_or("*"),
                    trigger = trigger.as_str(),
                    coalesced,
                    "board snapshot"
                );
            }
            Err(e) => {
                super::metrics::snapshot("failed", started.elapsed());
                warn!(site = site.as_deref().unwrap_or("*"), error = %e, "board snapshot failed");
            }
        }
        last_snapshot = Some(Instant::now());
        tick.reset();
    }
    debug!(site = site.as_deref().unwrap_or("*"), "board feed stopped");
}

async fn subscribe(board: &Board, subject: &str) -> Option<async_nats::Subscriber> {
    let client = board.inner.nats.as_ref()?;
    match client.subscribe(subject.to_owned()).await {
        Ok(s) => Some(s),
        Err(e) => {
            warn!(subject, error = %e, "cannot subscribe to run events; board refreshes periodically");
            None
        }
    }
}

async fn next_event(events: &mut Option<async_nats::Subscriber>) -> Option<async_nats::Message> {
    match events {
        Some(s) => s.next().await,
        None => std::future::pending().await,
    }
}

/// Takes every event already received without waiting; returns how many.
fn drain_events(events: &mut Option<async_nats::Subscriber>) -> usize {
    let mut n = 0;
    while let Some(s) = events.as_mut() {
        match s.next().now_or_never() {
            Some(Some(_)) => n += 1,
            Some(None) => *events = None,
            None => break,
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn feeds_listen_on_the_relay_subjects_of_their_site() {
        let names = OpRunNames::isolated("t1");
        assert_eq!(subject_filter(&names, None), "mes.op_run_t1.>");
        assert_eq!(subject_filter(&names, Some("BKK")), "mes.op_run_t1.BKK.>");
        // Escaped like the relay escapes it, so a site with a dot is still one token.
        let published = names.subject("B.K", "SMT01", "reported");
        let filter = subject_filter(&names, Some("B.K"));
        assert_eq!(filter, "mes.op_run_t1.B_2EK.>");
        assert!(published.starts_with(filter.trim_end_matches('>')));
        assert_eq!(subject_filter(&OpRunNames::default(), None), "mes.op_run.>");
    }
}
