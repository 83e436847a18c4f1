//! When did each written line become a committed row? A poller reads the new rows of
//! `ingest_ledger` every few milliseconds and marks the lines inside each loaded byte range as
//! visible at the time the poll's answer arrived.
//!
//! The worker inserts a batch's ledger rows in the same transaction as its readings, so a range
//! in the ledger means its rows are committed: nothing is added to the schema and no trigger
//! changes what is measured. A line's visible time is an upper bound of its commit time, late by
//! at most one poll interval plus the poll's own duration.
//!
//! Polls are incremental (`id > floor`) but safe against transactions that commit out of id
//! order: the floor only moves to the largest id seen by an earlier poll once every
//! transaction that was running at that poll's snapshot has ended (its snapshot's `xmax` is at or
//! below the current snapshot's `xmin`), and that poll is at least [`FLOOR_DELAY`] old. A final
//! full scan checks that nothing was missed.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::writer::{now_us, LineLogs};

/// Least age of a poll before the floor may move to its largest id.
const FLOOR_DELAY: Duration = Duration::from_secs(2);

/// `(xmin, xmax, id, path, lower, upper)`; the ledger columns are NULL when no row is new.
type PollRow = (
    i64,
    i64,
    Option<i64>,
    Option<String>,
    Option<i64>,
    Option<i64>,
);

const POLL_SQL: &str = "
    WITH snap AS (SELECT pg_current_snapshot() AS s)
    SELECT pg_snapshot_xmin(snap.s)::text::bigint, pg_snapshot_xmax(snap.s)::text::bigint,
           l.id, l.path, lower(l.byte_range), upper(l.byte_range)
    FROM snap LEFT JOIN ingest_ledger l ON l.id > $1";

/// What the poller saw.
#[derive(Debug, Clone, Copy, Default)]
pub struct PollerSummary {
    pub polls: u64,
    /// Mean and longest duration of one poll.
    pub mean_poll: Duration,
    pub max_poll: Duration,
    /// Ledger rows for files this benchmark did not write (should be 0).
    pub foreign_rows: u64,
    /// Lines first found by the final full scan instead of a timed poll (should be 0; they are
    /// stamped with the final scan's time, which only overstates their delay).
    pub found_by_final_scan: u64,
}

/// Tracks visibility of the lines in `logs`, whose files are known by file name.
pub struct Visibility {
    logs: Arc<LineLogs>,
    by_name: HashMap<String, usize>,
    floor: i64,
    /// `(when, largest id seen, snapshot xmax)` of earlier polls, oldest first.
    history: VecDeque<(Instant, i64, i64)>,
    /// Lines seen so far, for progress checks.
    pub visible: Arc<AtomicU64>,
    summary: PollerSummary,
    total_poll: Duration,
}

impl Visibility {
    /// `names[i]` is the file name (not the path) of the file logged at `logs.file(i)`.
    pub fn new(logs: Arc<LineLogs>, names: &[String]) -> Self {
        Self {
            logs,
            by_name: names
                .iter()
                .enumerate()
                .map(|(i, n)| (n.clone(), i))
                .collect(),
            floor: 0,
            history: VecDeque::new(),
            visible: Arc::new(AtomicU64::new(0)),
            summary: PollerSummary::default(),
            total_poll: Duration::ZERO,
        }
    }

    /// One poll: marks the lines of every ledger row with an id above the floor.
    pub async fn poll(&mut self, pool: &PgPool) -> anyhow::Result<u64> {
        let started = Instant::now();
        let rows: Vec<PollRow> = sqlx::query_as(POLL_SQL)
            .bind(self.floor)
            .fetch_all(pool)
            .await
            .context("poll the ledger")?;
        let at = now_us();
        let took = started.elapsed();
        self.summary.polls += 1;
        self.total_poll += took;
        self.summary.max_poll = self.summary.max_poll.max(took);
        let marked = self.apply(&rows, at);
        let (xmin, xmax) = rows.first().map_or((0, 0), |r| (r.0, r.1));
        let max_id = rows.iter().filter_map(|r| r.2).max().unwrap_or(self.floor);
        self.history.push_back((started, max_id, xmax));
        while let Some(&(when, id, old_xmax)) = self.history.front() {
            if old_xmax > xmin || when.elapsed() < FLOOR_DELAY {
                break;
            }
            self.floor = self.floor.max(id);
            self.history.pop_front();
        }
        Ok(marked)
    }

    fn apply(&mut self, rows: &[PollRow], at: i64) -> u64 {
        let mut marked = 0;
        for row in rows {
            let (Some(path), Some(lo), Some(hi)) = (&row.3, row.4, row.5) else {
                continue;
            };
            let name = path.rsplit('/').next().unwrap_or(path);
            let Some(&i) = self.by_name.get(name) else {
                self.summary.foreign_rows += 1;
                continue;
            };
            let (lo, hi) = (
                u64::try_from(lo).unwrap_or(0),
                u64::try_from(hi).unwrap_or(0),
            );
            marked += self.logs.file(i).mark(lo, hi, at);
        }
        self.visible.fetch_add(marked, Ordering::Relaxed);
        marked
    }

    /// A full scan of the ledger after the last timed poll; returns the summary.
    pub async fn finish(mut self, pool: &PgPool) -> anyhow::Result<PollerSummary> {
        self.floor = 0;
        let rows: Vec<PollRow> = sqlx::query_as(POLL_SQL)
            .bind(0i64)
            .fetch_all(pool)
            .await
            .context("final scan of the ledger")?;
        self.summary.found_by_final_scan = self.apply(&rows, now_us());
        if self.summary.found_by_final_scan > 0 {
            warn!(
                lines = self.summary.found_by_final_scan,
                "lines found only by the final ledger scan"
            );
        }
        if self.summary.polls > 0 {
            self.summary.mean_poll =
                self.total_poll / u32::try_from(self.summary.polls).unwrap_or(u32::MAX);
        }
        Ok(self.summary)
    }
}

/// Polls every `every` until `stop`; returns the tracker for its final scan.
pub async fn poll_until(
    mut vis: Visibility,
    pool: PgPool,
    every: Duration,
    stop: CancellationToken,
) -> anyhow::Result<Visibility> {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return Ok(vis),
            _ = tick.tick() => {}
        }
        if let Err(e) = vis.poll(&pool).await {
            // A transient failure only delays detection (it overstates delays, never hides them).
            warn!(error = %e, "ledger poll failed");
        }
    }
}
