//! Group commit of count reports sent without an `Idempotency-Key`.
//!
//! A report costs the database far more per statement (executor start, constraint checks, the
//! foreign-key trigger, commit, a network round trip each way) than per row. So reports queue per
//! *lane* and each lane writes what has queued while its previous statement ran, up to
//! `max_batch` reports, in one statement and one commit. An idle lane writes a lone report at once
//! with the single-report statement ([`run_store::report`]): batching adds no wait, it only
//! shares the work of reports that would otherwise wait for a connection or a CPU.
//!
//! - A run always maps to the same lane, so two batches never lock the same runs (no deadlock
//!   between lanes), and a run's reports are written, and its `reported` events numbered, in
//!   arrival order.
//! - Each report keeps its own answer: the run with the totals right after it, or its own refusal
//!   (404 unknown run, 422 `at` before the start, 409 run not open). The statement adds each run's
//!   accepted counts under the run's row lock; the status is checked under that lock.
//! - A batch is one autocommit statement: it is written whole or not at all. If it fails, its
//!   reports are written one by one, so one report can never fail the others.

use std::hash::{Hash, Hasher};
use std::sync::{Arc, OnceLock};

use chrono::{DateTime, Utc};
use protocol::run_event::{CountDelta, RUN_EVENT_SCHEMA_VERSION};
use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot, Notify};
use tracing::warn;
use uuid::Uuid;

use crate::error::ApiError;
use crate::run_store::{self, RunRow};

/// How reports are batched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReportBatching {
    /// Lanes (each writes one batch at a time); 0 writes every report with its own statement.
    pub lanes: usize,
    /// Most reports in one statement.
    pub max_batch: usize,
}

impl Default for ReportBatching {
    fn default() -> Self {
        Self {
            lanes: 4,
            max_batch: 64,
        }
    }
}

/// A report waiting for its lane.
struct Job {
    id: Uuid,
    delta: CountDelta,
    at: DateTime<Utc>,
    answer: oneshot::Sender<Result<RunRow, ApiError>>,
}

/// The lanes, started at the first report (so building an `AppState` needs no runtime).
pub struct ReportBatcher {
    pool: PgPool,
    default_site: String,
    settings: ReportBatching,
    /// Woken after every commit that wrote events (the outbox relay).
    committed: Arc<Notify>,
    lanes: OnceLock<Vec<mpsc::UnboundedSender<Job>>>,
}

impl ReportBatcher {
    pub fn new(
        pool: PgPool,
        default_site: String,
        settings: ReportBatching,
        committed: Arc<Notify>,
    ) -> Self {
        Self {
            pool,
            default_site,
            settings,
            committed,
            lanes: OnceLock::new(),
        }
    }

    /// Counts `delta` at `at` on run `id` (see [`run_store::report`] for the answers).
    pub async fn report(
        &self,
        id: Uuid,
        delta: CountDelta,
        at: DateTime<Utc>,
    ) -> Result<RunRow, ApiError> {
        if self.settings.lanes == 0 {
            let mut conn = self.pool.acquire().await?;
            let run = run_store::report(&mut conn, id, delta, at, &self.default_site).await;
            drop(conn);
            if run.is_ok() {
                self.committed.notify_one();
            }
            return run;
        }
        let lanes = self.lanes.get_or_init(|| self.start());
        let (answer, answered) = oneshot::channel();
        let job = Job {
            id,
            delta,
            at,
            answer,
        };
        lanes[lane_of(id, lanes.len())]
            .send(job)
            .map_err(|_| ApiError::Unavailable("report writer stopped".to_owned()))?;
        answered
            .await
            .map_err(|_| ApiError::Internal("report writer dropped a report".to_owned()))?
    }

    fn start(&self) -> Vec<mpsc::UnboundedSender<Job>> {
        (0..self.settings.lanes)
            .map(|_| {
                let (tx, rx) = mpsc::unbounded_channel();
                tokio::spawn(lane(
                    rx,
                    self.pool.clone(),
                    self.default_site.clone(),
                    self.settings.max_batch.max(1),
                    self.committed.clone(),
                ));
                tx
            })
            .collect()
    }
}

/// The lane of a run.
fn lane_of(id: Uuid, lanes: usize) -> usize {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    id.hash(&mut h);
    (h.finish() % lanes.max(1) as u64) as usize
}

/// Writes the reports of one lane until every sender is gone.
async fn lane(
    mut queue: mpsc::UnboundedReceiver<Job>,
    pool: PgPool,
    default_site: String,
    max_batch: usize,
    committed: Arc<Notify>,
) {
    let mut jobs = Vec::with_capacity(max_batch);
    while queue.recv_many(&mut jobs, max_batch).await > 0 {
        // Answers of callers that gave up (request timeout) are dropped; their reports count
        // like any other, as they would have without batching.
        let batch = std::mem::take(&mut jobs);
        let answers = write(&pool, &default_site, &batch).await;
        if answers.iter().any(Result::is_ok) {
            committed.notify_one();
        }
        for (job, answer) in batch.into_iter().zip(answers) {
            let _ = job.answer.send(answer);
        }
    }
}

/// One answer per job, in order.
async fn write(pool: &PgPool, default_site: &str, jobs: &[Job]) -> Vec<Result<RunRow, ApiError>> {
    if jobs.len() > 1 {
        match write_batch(pool, default_site, jobs).await {
            Ok(answers) => return answers,
            Err(e) => {
                warn!(error = %e, reports = jobs.len(), "report batch failed, writing its reports one by one");
            }
        }
    }
    let mut answers = Vec::with_capacity(jobs.len());
    for job in jobs {
        answers.push(write_one(pool, default_site, job).await);
    }
    answers
}

async fn write_one(pool: &PgPool, default_site: &str, job: &Job) -> Result<RunRow, ApiError> {
    let mut conn = pool.acquire().await?;
    run_store::report(&mut conn, job.id, job.delta, job.at, default_site).await
}

/// Several reports in one statement: `$1..$5` are the reports' run ids, good and scrap deltas,
/// times and event ids (in arrival order); `$6` the default site, `$7` the event schema version.
///
/// A run's `started_at` never changes, so the statement's snapshot decides which reports come
/// before their run's start; the status is checked by the UPDATE under each run's row lock. A
/// report's totals are its run's new totals minus the counts of the run's later reports in the
/// batch. Count rows and events are inserted in arrival order.
const BATCH_SQL: &str = "
WITH input AS (
    SELECT * FROM unnest($1::uuid[], $2::int8[], $3::int8[], $4::timestamptz[], $5::text[])
        WITH ORDINALITY AS i(run_id, good_delta, scrap_delta, at, event_id, ord)
), known AS (
    SELECT i.*, r.status AS seen_status, r.started_at AS run_started_at
    FROM input i LEFT JOIN op_run r ON r.op_run_id = i.run_id
), per_run AS (
    SELECT run_id, sum(good_delta)::int8 AS good, sum(scrap_delta)::int8 AS scrap
    FROM known WHERE at >= run_started_at GROUP BY run_id
), upd AS (
    UPDATE op_run r SET good_units = r.good_units + p.good, scrap_units = r.scrap_units + p.scrap,
                        updated_at = now()
    FROM per_run p
    WHERE r.op_run_id = p.run_id AND r.status IN ('running', 'paused')
    RETURNING r.op_run_id, r.work_order_id, r.operation_id, r.resource_id, r.site_id, r.status,
              r.started_at, r.ended_at, r.planned_seconds, r.ideal_cycle_time_s, r.good_units,
              r.scrap_units
), accepted AS (
    SELECT k.ord, k.at, k.good_delta, k.scrap_delta, k.event_id,
           u.op_run_id, u.work_order_id, u.operation_id, u.resource_id, u.site_id, u.status,
           u.started_at, u.ended_at, u.planned_seconds, u.ideal_cycle_time_s,
           (u.good_units - coalesce(sum(k.good_delta) OVER later, 0))::int8 AS good_units,
           (u.scrap_units - coalesce(sum(k.scrap_delta) OVER later, 0))::int8 AS scrap_units
    FROM known k JOIN upd u ON u.op_run_id = k.run_id
    WHERE k.at >= k.run_started_at
    WINDOW later AS (PARTITION BY k.run_id ORDER BY k.ord DESC
                     ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING)
), report AS (
    INSERT INTO op_run_count (op_run_id, at, good_delta, scrap_delta, kind)
    SELECT op_run_id, at, good_delta, scrap_delta, 'report' FROM accepted ORDER BY ord
), event AS (
    INSERT INTO outbox (op_run_id, event_type, site_id, resource_id, payload)
    SELECT op_run_id, 'reported', coalesce(site_id, $6), resource_id,
           jsonb_build_object(
               'schema_version', $7::int, 'event_id', event_id, 'event_type', 'reported',
               'occurred_at', at, 'recorded_at', clock_timestamp(),
               'op_run_id', op_run_id, 'work_order_id', work_order_id,
               'operation_id', operation_id, 'resource_id', resource_id,
               'site_id', coalesce(site_id, $6), 'status', status, 'started_at', started_at,
               'ended_at', ended_at, 'planned_seconds', planned_seconds,
               'ideal_cycle_time_s', ideal_cycle_time_s, 'good_units', good_units,
               'scrap_units', scrap_units,
               'delta', jsonb_build_object('good_delta', good_delta, 'scrap_delta', scrap_delta),
               'downtime', NULL::jsonb)
    FROM accepted ORDER BY ord
)
SELECT k.ord, k.seen_status, k.run_started_at,
       a.op_run_id, a.work_order_id, a.operation_id, a.resource_id, a.site_id, a.status,
       a.started_at, a.ended_at, a.planned_seconds, a.ideal_cycle_time_s, a.good_units,
       a.scrap_units
FROM known k LEFT JOIN accepted a ON a.ord = k.ord
ORDER BY k.ord";

/// One report's outcome in a batch.
#[derive(sqlx::FromRow)]
struct Outcome {
    ord: i64,
    seen_status: Option<String>,
    run_started_at: Option<DateTime<Utc>>,
    op_run_id: Option<Uuid>,
    work_order_id: Option<String>,
    operation_id: Option<String>,
    resource_id: Option<String>,
    site_id: Option<String>,
    status: Option<String>,
    started_at: Option<DateTime<Utc>>,
    ended_at: Option<DateTime<Utc>>,
    planned_seconds: Option<f64>,
    ideal_cycle_time_s: Option<f64>,
    good_units: Option<i64>,
    scrap_units: Option<i64>,
}

async fn write_batch(
    pool: &PgPool,
    default_site: &str,
    jobs: &[Job],
) -> Result<Vec<Result<RunRow, ApiError>>, sqlx::Error> {
    let ids: Vec<Uuid> = jobs.iter().map(|j| j.id).collect();
    let good: Vec<i64> = jobs.iter().map(|j| j.delta.good_delta).collect();
    let scrap: Vec<i64> = jobs.iter().map(|j| j.delta.scrap_delta).collect();
    let at: Vec<DateTime<Utc>> = jobs.iter().map(|j| j.at).collect();
    let event_ids: Vec<String> = jobs.iter().map(|_| Uuid::now_v7().to_string()).collect();
    let outcomes: Vec<Outcome> = sqlx::query_as(BATCH_SQL)
        .bind(&ids)
        .bind(&good)
        .bind(&scrap)
        .bind(&at)
        .bind(&event_ids)
        .bind(default_site)
        .bind(RUN_EVENT_SCHEMA_VERSION as i32)
        .fetch_all(pool)
        .await?;
    if outcomes.len() != jobs.len()
        || outcomes
            .iter()
            .enumerate()
            .any(|(i, o)| o.ord != i as i64 + 1)
    {
        return Err(sqlx::Error::Protocol(format!(
            "report batch of {} answered {} rows out of order",
            jobs.len(),
            outcomes.len()
        )));
    }
    Ok(jobs
        .iter()
        .zip(outcomes)
        .map(|(job, o)| answer(job, o))
        .collect())
}

/// A report's answer from its outcome row: the run after it, or why it was refused.
fn answer(job: &Job, o: Outcome) -> Result<RunRow, ApiError> {
    match o {
        Outcome {
            op_run_id: Some(op_run_id),
            work_order_id: Some(work_order_id),
            operation_id: Some(operation_id),
            resource_id: Some(resource_id),
            status: Some(status),
            started_at: Some(started_at),
            good_units: Some(good_units),
            scrap_units: Some(scrap_units),
            site_id,
            ended_at,
            planned_seconds,
            ideal_cycle_time_s,
            ..
        } => Ok(RunRow {
            op_run_id,
            work_order_id,
            operation_id,
            resource_id,
            site_id,
            status,
            started_at,
            ended_at,
            planned_seconds,
            ideal_cycle_time_s,
            good_units,
            scrap_units,
        }),
        Outcome {
            seen_status: None, ..
        } => Err(ApiError::NotFound(format!("op_run_id: no run {}", job.id))),
        Outcome {
            run_started_at: Some(start),
            ..
        } if job.at < start => Err(ApiError::invalid(
            "at",
            format!("{} is before the run's start ({start})", job.at),
        )),
        Outcome { seen_status, .. } => Err(ApiError::Conflict {
            field: Some("op_run_id".to_owned()),
            detail: format!(
                "op_run_id: run {} is {}",
                job.id,
                match seen_status.as_deref() {
                    Some("running") | Some("paused") | None => "no longer open",
                    Some(other) => other,
                }
            ),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::SubsecRound;

    #[test]
    fn a_run_always_maps_to_the_same_lane() {
        let id = Uuid::now_v7();
        let lane = lane_of(id, 4);
        assert!(lane < 4);
        assert!((0..10).all(|_| lane_of(id, 4) == lane));
        assert_eq!(lane_of(id, 1), 0);
        assert_eq!(lane_of(id, 0), 0);
        // Many runs spread over every lane.
        let used: std::collections::HashSet<usize> =
            (0..200).map(|_| lane_of(Uuid::now_v7(), 4)).collect();
        assert_eq!(used.len(), 4);
    }

    async fn run(pool: &PgPool, resource: &str, started_at: DateTime<Utc>) -> Uuid {
        let mut tx = pool.begin().await.unwrap();
        let id = Uuid::now_v7();
        run_store::insert_run(
            &mut tx,
            &run_store::NewRun {
                op_run_id: id,
                work_order_id: "WO1",
                operation_id: "OP10",
                resource_id: resource,
                site_id: None,
                default_site: "BKK",
                started_at,
                planned_seconds: None,
                ideal_cycle_time_s: Some(1.0),
            },
        )
        .await
        .unwrap();
        tx.commit().await.unwrap();
        id
    }

    fn job(id: Uuid, good: i64, scrap: i64, at: DateTime<Utc>) -> Job {
        Job {
            id,
            delta: CountDelta {
                good_delta: good,
                scrap_delta: scrap,
            },
            at,
            answer: oneshot::channel().0,
        }
    }

    #[tokio::test]
    async fn one_batch_answers_each_report_with_its_own_totals_or_refusal() {
        let pg = testkit::pg_for_test().await.unwrap();
        let url = pg
            .create_database(&testkit::unique_name("report_batch"))
            .await
            .unwrap();
        let pool = crate::db::connect(&url, 4).await.unwrap();
        crate::db::migrate(&pool).await.unwrap();
        crate::db::ensure_site(&pool, "BKK", "Asia/Bangkok")
            .await
            .unwrap();
        let start = Utc::now() - chrono::Duration::hours(1);
        let (a, b, done) = (
            run(&pool, "R-A", start).await,
            run(&pool, "R-B", start).await,
            run(&pool, "R-C", start).await,
        );
        sqlx::query(
            "UPDATE op_run SET status = 'completed', ended_at = now() WHERE op_run_id = $1",
        )
        .bind(done)
        .execute(&pool)
        .await
        .unwrap();
        let now = Utc::now().trunc_subsecs(6);
        let jobs = vec![
            job(a, 1, 0, now),
            job(b, 5, 0, now),
            job(a, 2, 1, now),
            job(Uuid::now_v7(), 1, 0, now),
            job(b, 1, 0, start - chrono::Duration::minutes(1)),
            job(done, 1, 0, now),
            job(a, 3, 0, now),
        ];
        let answers = write_batch(&pool, "BKK", &jobs).await.unwrap();
        let totals = |i: usize| {
            let r = answers[i].as_ref().unwrap();
            (r.op_run_id, r.good_units, r.scrap_units)
        };
        assert_eq!(totals(0), (a, 1, 0));
        assert_eq!(totals(1), (b, 5, 0));
        assert_eq!(totals(2), (a, 3, 1));
        assert_eq!(totals(6), (a, 6, 1));
        let status = |i: usize| answers[i].as_ref().err().map(|e| e.problem().status);
        assert_eq!(
            (status(3), status(4), status(5)),
            (Some(404), Some(422), Some(409))
        );

        let run_totals: Vec<(Uuid, i64, i64)> = sqlx::query_as(
            "SELECT op_run_id, good_units, scrap_units FROM op_run WHERE op_run_id = ANY($1)",
        )
        .bind(vec![a, b, done])
        .fetch_all(&pool)
        .await
        .unwrap();
        assert!(run_totals.contains(&(a, 6, 1)));
        assert!(run_totals.contains(&(b, 5, 0)));
        assert!(run_totals.contains(&(done, 0, 0)));
        let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM op_run_count")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(rows, 4);
        // The events of run A, in outbox order, carry the totals after each of its reports.
        let payloads: Vec<String> =
            sqlx::query_scalar("SELECT payload::text FROM outbox WHERE op_run_id = $1 ORDER BY id")
                .bind(a)
                .fetch_all(&pool)
                .await
                .unwrap();
        let events: Vec<protocol::RunEvent> = payloads
            .iter()
            .map(|p| serde_json::from_str(p).unwrap())
            .collect();
        let seen: Vec<(i64, i64, i64)> = events
            .iter()
            .map(|e| {
                let d = e.delta.unwrap();
                (e.good_units, e.scrap_units, d.good_delta)
            })
            .collect();
        assert_eq!(seen, vec![(1, 0, 1), (3, 1, 2), (6, 1, 3)]);
        assert!(events.iter().all(|e| e.occurred_at == now));

        // The batcher answers through its lanes the same way, a lone report included.
        let batcher = ReportBatcher::new(
            pool.clone(),
            "BKK".to_owned(),
            ReportBatching {
                lanes: 2,
                max_batch: 8,
            },
            Arc::new(Notify::new()),
        );
        let delta = CountDelta {
            good_delta: 4,
            scrap_delta: 0,
        };
        assert_eq!(batcher.report(b, delta, now).await.unwrap().good_units, 9);
        pool.close().await;
    }
}
