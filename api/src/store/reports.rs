//! Count reports, the one path for all of them: a lone report, a report with an
//! `Idempotency-Key` (inside its transaction) and a lane's batch ([`crate::report_batch`]) are all
//! written by [`write`].
//!
//! The runs are read without a lock, the domain decides each report in arrival order on that
//! state (so each gets the totals right after it, or its own refusal), and one statement writes
//! everything: each run's new totals *only if the run still has the status and totals that were
//! read* (compare-and-set), the count rows and the `reported` events — serialised
//! [`protocol::RunEvent`]s — of the runs it updated, in arrival order. Two round trips and one
//! autocommit, whatever the batch size; no lock is held while Rust decides. A run changed
//! meanwhile (another replica's report, a pause, its completion) is read again and its reports
//! decided again. Refusals are final on any state read: a run's start never changes, and a run
//! that has ended never reopens.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use sqlx::types::Json;
use sqlx::PgConnection;
use uuid::Uuid;

use super::runs::{RunRow, RUN_COLUMNS};
use super::StoreError;
use crate::domain::run::{decide, event, Command, Run, RunState, Transition};
use crate::domain::Count;

/// A run changed by others this many times in a row while its reports were decided: the answer
/// is 503 (retry), not a wait without end.
const MAX_ATTEMPTS: usize = 8;

/// One count report.
#[derive(Debug, Clone)]
pub struct ReportJob {
    pub op_run_id: Uuid,
    pub good_delta: Count,
    pub scrap_delta: Count,
    /// When the units were made; `None`: `received`.
    pub at: Option<DateTime<Utc>>,
    /// Server time when the request arrived (the domain's "now").
    pub received: DateTime<Utc>,
    /// Who reported (the token's name); recorded on the count row and the event.
    pub actor: Option<String>,
}

/// Runs as this writer last wrote them. A lane's runs are written by that lane alone in this
/// process, so its next batch can usually skip reading them: the compare-and-set of the write
/// still checks each run against the database, and a run found changed is dropped from here and
/// read again. Bounded: emptied when it reaches [`RunCache::MAX_RUNS`].
#[derive(Debug, Default)]
pub struct RunCache {
    runs: HashMap<Uuid, Run>,
}

impl RunCache {
    pub const MAX_RUNS: usize = 10_000;

    fn remember(&mut self, run: Run) {
        if self.runs.len() >= Self::MAX_RUNS && !self.runs.contains_key(&run.op_run_id) {
            self.runs.clear();
        }
        self.runs.insert(run.op_run_id, run);
    }
}

/// Writes `jobs` (in arrival order); one answer per job: the run right after it, or why it was
/// refused. `Err` only when the statement itself failed (nothing of it was written).
pub async fn write(
    conn: &mut PgConnection,
    jobs: &[ReportJob],
    default_site: &str,
) -> Result<Vec<Result<Run, StoreError>>, StoreError> {
    write_cached(conn, jobs, default_site, &mut RunCache::default()).await
}

/// [`write`], starting from the runs in `cache` where it has them, and leaving the written runs
/// there.
pub async fn write_cached(
    conn: &mut PgConnection,
    jobs: &[ReportJob],
    default_site: &str,
    cache: &mut RunCache,
) -> Result<Vec<Result<Run, StoreError>>, StoreError> {
    let mut answers: Vec<Option<Result<Run, StoreError>>> = jobs.iter().map(|_| None).collect();
    let mut pending: Vec<usize> = (0..jobs.len()).collect();
    for _ in 0..MAX_ATTEMPTS {
        if pending.is_empty() {
            break;
        }
        let missing: Vec<usize> = pending
            .iter()
            .copied()
            .filter(|&i| !cache.runs.contains_key(&jobs[i].op_run_id))
            .collect();
        let mut read = read_runs(conn, jobs, &missing).await?;
        for &i in &pending {
            let id = jobs[i].op_run_id;
            if let Some(run) = cache.runs.get(&id) {
                read.entry(id).or_insert_with(|| run.clone());
            }
        }
        let mut current = read.clone();
        let mut accepted: Vec<(usize, Transition)> = Vec::new();
        for &i in &pending {
            let job = &jobs[i];
            let Some(run) = current.get(&job.op_run_id) else {
                answers[i] = Some(Err(StoreError::RunNotFound(job.op_run_id)));
                continue;
            };
            // A report needs only the run itself, not its downtime or count history.
            let command = Command::Report {
                good_delta: job.good_delta,
                scrap_delta: job.scrap_delta,
                at: job.at,
            };
            match decide(&RunState::new(run.clone()), command, job.received) {
                Ok(t) => {
                    current.insert(job.op_run_id, t.run.clone());
                    accepted.push((i, t));
                }
                Err(e) => answers[i] = Some(Err(e.into())),
            }
        }
        let updated = write_accepted(conn, &read, &current, &accepted, jobs, default_site).await?;
        pending = Vec::new();
        for (i, t) in accepted {
            if updated.contains(&t.run.op_run_id) {
                answers[i] = Some(Ok(t.run));
            } else {
                // Changed by another writer: read it again.
                cache.runs.remove(&t.run.op_run_id);
                pending.push(i);
            }
        }
        for id in &updated {
            if let Some(run) = current.remove(id) {
                cache.remember(run);
            }
        }
    }
    Ok(answers
        .into_iter()
        .zip(jobs)
        .map(|(a, job)| a.unwrap_or(Err(StoreError::Contended(job.op_run_id))))
        .collect())
}

async fn read_runs(
    conn: &mut PgConnection,
    jobs: &[ReportJob],
    pending: &[usize],
) -> Result<HashMap<Uuid, Run>, StoreError> {
    if pending.is_empty() {
        return Ok(HashMap::new());
    }
    let ids: Vec<Uuid> = pending
        .iter()
        .map(|&i| jobs[i].op_run_id)
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    let sql = format!("SELECT {RUN_COLUMNS} FROM op_run WHERE op_run_id = ANY ($1)");
    let rows: Vec<RunRow> = sqlx::query_as(&sql)
        .bind(&ids)
        .fetch_all(&mut *conn)
        .await?;
    rows.into_iter()
        .map(|r| Run::try_from(r).map(|run| (run.op_run_id, run)))
        .collect()
}

/// `$1..$6`: per run, its id, the status and totals read, the totals after its reports;
/// `$7..$14`: per accepted report in arrival order, its run, time, deltas, event, the event's
/// subject fields and who reported.
const WRITE_SQL: &str = "
WITH expected AS (
    SELECT * FROM unnest($1::uuid[], $2::text[], $3::int8[], $4::int8[], $5::int8[], $6::int8[])
        AS e(op_run_id, status, good_before, scrap_before, good_after, scrap_after)
), upd AS (
    UPDATE op_run r SET good_units = e.good_after, scrap_units = e.scrap_after, updated_at = now()
    FROM expected e
    WHERE r.op_run_id = e.op_run_id AND r.status = e.status
      AND r.good_units = e.good_before AND r.scrap_units = e.scrap_before
    RETURNING r.op_run_id
), reports AS (
    SELECT * FROM unnest($7::uuid[], $8::timestamptz[], $9::int8[], $10::int8[], $11::jsonb[],
                         $12::text[], $13::text[], $14::text[])
        WITH ORDINALITY AS x(op_run_id, at, good_delta, scrap_delta, payload, site_id,
                             resource_id, actor, ord)
    WHERE x.op_run_id IN (SELECT op_run_id FROM upd)
), counted AS (
    INSERT INTO op_run_count (op_run_id, at, good_delta, scrap_delta, kind, actor)
    SELECT op_run_id, at, good_delta, scrap_delta, 'report', actor FROM reports ORDER BY ord
), evented AS (
    INSERT INTO outbox (op_run_id, event_type, site_id, resource_id, payload)
    SELECT op_run_id, 'reported', site_id, resource_id, payload FROM reports ORDER BY ord
)
SELECT op_run_id FROM upd";

/// Writes the accepted reports of the runs whose state is still `read`; the ids of those runs.
async fn write_accepted(
    conn: &mut PgConnection,
    read: &HashMap<Uuid, Run>,
    after: &HashMap<Uuid, Run>,
    accepted: &[(usize, Transition)],
    jobs: &[ReportJob],
    default_site: &str,
) -> Result<HashSet<Uuid>, StoreError> {
    if accepted.is_empty() {
        return Ok(HashSet::new());
    }
    let touched: Vec<Uuid> = accepted
        .iter()
        .map(|(_, t)| t.run.op_run_id)
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    let before = |id: &Uuid| &read[id];
    let now = Utc::now();
    let events: Vec<_> = accepted
        .iter()
        .map(|(i, t)| {
            event(
                &t.run,
                &t.event,
                default_site,
                now,
                jobs[*i].actor.as_deref(),
            )
        })
        .collect();
    let updated: Vec<Uuid> = sqlx::query_scalar(WRITE_SQL)
        .bind(&touched)
        .bind(
            touched
                .iter()
                .map(|id| before(id).status.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(
            touched
                .iter()
                .map(|id| before(id).good_units)
                .collect::<Vec<_>>(),
        )
        .bind(
            touched
                .iter()
                .map(|id| before(id).scrap_units)
                .collect::<Vec<_>>(),
        )
        .bind(
            touched
                .iter()
                .map(|id| after[id].good_units)
                .collect::<Vec<_>>(),
        )
        .bind(
            touched
                .iter()
                .map(|id| after[id].scrap_units)
                .collect::<Vec<_>>(),
        )
        .bind(
            accepted
                .iter()
                .map(|(_, t)| t.run.op_run_id)
                .collect::<Vec<_>>(),
        )
        .bind(
            accepted
                .iter()
                .map(|(_, t)| t.event.occurred_at)
                .collect::<Vec<_>>(),
        )
        .bind(
            accepted
                .iter()
                .map(|(_, t)| t.event.delta.map_or(0, |d| d.good_delta))
                .collect::<Vec<_>>(),
        )
        .bind(
            accepted
                .iter()
                .map(|(_, t)| t.event.delta.map_or(0, |d| d.scrap_delta))
                .collect::<Vec<_>>(),
        )
        .bind(events.iter().map(Json).collect::<Vec<_>>())
        .bind(
            events
                .iter()
                .map(|e| e.site_id.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(
            events
                .iter()
                .map(|e| e.resource_id.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(
            events
                .iter()
                .map(|e| e.actor.as_deref())
                .collect::<Vec<_>>(),
        )
        .fetch_all(&mut *conn)
        .await?;
    Ok(updated.into_iter().collect())
}
