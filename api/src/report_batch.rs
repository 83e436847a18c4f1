//! Group commit of count reports sent without an `Idempotency-Key`.
//!
//! A report costs the database far more per statement (executor start, constraint checks, the
//! foreign-key trigger, commit, a network round trip each way) than per row. So reports queue per
//! *lane* and each lane writes what has queued while its previous write ran, up to `max_batch`
//! reports, with one [`store::reports::write`] (the one report path: a lone report is a batch of
//! one). An idle lane writes a lone report at once: batching adds no wait, it only shares the work
//! of reports that would otherwise wait for a connection or a CPU.
//!
//! - A run always maps to the same lane, so a run's reports are written, and its `reported`
//!   events numbered, in arrival order, and two lanes never compete for one run.
//! - Each report keeps its own answer: the run with the totals right after it, or its own refusal
//!   (404 unknown run, 422 `at` before the start, 409 run not open).
//! - A batch is one autocommit statement: written whole or not at all. If it fails, its reports
//!   are written one by one, so one report can never fail the others.

use std::hash::{Hash, Hasher};
use std::sync::{Arc, OnceLock};

use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot, Notify};
use tracing::warn;
use uuid::Uuid;

use crate::domain::Run;
use crate::store::reports::{self, ReportJob, RunCache};
use crate::store::StoreError;

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
    report: ReportJob,
    answer: oneshot::Sender<Result<Run, StoreError>>,
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

    /// Writes `report` (see [`store::reports::write`] for the answers).
    pub async fn report(&self, report: ReportJob) -> Result<Run, StoreError> {
        if self.settings.lanes == 0 {
            let id = report.op_run_id;
            let answer = write(
                &self.pool,
                &self.default_site,
                &[report],
                &mut RunCache::default(),
            )
            .await
            .pop()
            .unwrap_or(Err(StoreError::Contended(id)));
            if answer.is_ok() {
                self.committed.notify_one();
            }
            return answer;
        }
        let lanes = self.lanes.get_or_init(|| self.start());
        let (answer, answered) = oneshot::channel();
        lanes[lane_of(report.op_run_id, lanes.len())]
            .send(Job { report, answer })
            .map_err(|_| StoreError::Database(sqlx::Error::PoolClosed))?;
        answered
            .await
            .map_err(|_| StoreError::Database(sqlx::Error::WorkerCrashed))?
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
    // This lane's runs as it last wrote them (see RunCache): usually one round trip per batch.
    let mut cache = RunCache::default();
    while queue.recv_many(&mut jobs, max_batch).await > 0 {
        // Answers of callers that gave up (request timeout) are dropped; their reports count
        // like any other, as they would have without batching.
        let (reports, senders): (Vec<ReportJob>, Vec<_>) = std::mem::take(&mut jobs)
            .into_iter()
            .map(|j| (j.report, j.answer))
            .unzip();
        let answers = write(&pool, &default_site, &reports, &mut cache).await;
        if answers.iter().any(Result::is_ok) {
            committed.notify_one();
        }
        for (sender, answer) in senders.into_iter().zip(answers) {
            let _ = sender.send(answer);
        }
    }
}

/// One answer per report, in order: the batch in one write, or, if that write failed, each
/// report alone.
async fn write(
    pool: &PgPool,
    default_site: &str,
    reports: &[ReportJob],
    cache: &mut RunCache,
) -> Vec<Result<Run, StoreError>> {
    match write_batch(pool, default_site, reports, cache).await {
        Ok(answers) => return answers,
        Err(e) if reports.len() > 1 => {
            warn!(error = %e, reports = reports.len(), "report batch failed, writing its reports one by one");
        }
        Err(e) => return vec![Err(e)],
    }
    // The failed write may have left runs in the cache that its rollback undid.
    *cache = RunCache::default();
    let mut answers = Vec::with_capacity(reports.len());
    for r in reports {
        let one = write_batch(pool, default_site, std::slice::from_ref(r), cache).await;
        answers.push(match one {
            Ok(mut one) => one.pop().unwrap_or(Err(StoreError::Contended(r.op_run_id))),
            Err(e) => Err(e),
        });
    }
    answers
}

async fn write_batch(
    pool: &PgPool,
    default_site: &str,
    reports: &[ReportJob],
    cache: &mut RunCache,
) -> Result<Vec<Result<Run, StoreError>>, StoreError> {
    let mut conn = pool.acquire().await?;
    reports::write_cached(&mut conn, reports, default_site, cache).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Count, CycleTime, Ident};
    use chrono::{DateTime, SubsecRound, Utc};

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
        let req = crate::domain::Start {
            op_run_id: None,
            work_order_id: Ident::parse("WO1").unwrap(),
            operation_id: Ident::parse("OP10").unwrap(),
            resource_id: Ident::parse(resource).unwrap(),
            site_id: None,
            started_at: Some(started_at),
            planned_seconds: None,
            ideal_cycle_time_s: Some(CycleTime::new(1.0).unwrap()),
        };
        let t = crate::domain::start(&req, Utc::now()).unwrap();
        let run = crate::store::runs::write_start(&mut tx, t, "BKK", None)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        run.op_run_id
    }

    fn job(id: Uuid, good: i64, scrap: i64, at: DateTime<Utc>) -> ReportJob {
        ReportJob {
            op_run_id: id,
            good_delta: Count::new(good).unwrap(),
            scrap_delta: Count::new(scrap).unwrap(),
            at: Some(at),
            received: Utc::now(),
            actor: Some("lane-test".to_owned()),
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
        let answers = write_batch(&pool, "BKK", &jobs, &mut RunCache::default())
            .await
            .unwrap();
        let totals = |i: usize| {
            let r = answers[i].as_ref().unwrap();
            (r.op_run_id, r.good_units, r.scrap_units)
        };
        assert_eq!(totals(0), (a, 1, 0));
        assert_eq!(totals(1), (b, 5, 0));
        assert_eq!(totals(2), (a, 3, 1));
        assert_eq!(totals(6), (a, 6, 1));
        let status = |i: usize| {
            answers[i]
                .as_ref()
                .err()
                .map(|e| crate::error::ApiError::from_store_ref(e).problem().status)
        };
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
            sqlx::query_scalar(
                "SELECT payload::text FROM outbox WHERE op_run_id = $1 AND event_type = 'reported' ORDER BY id",
            )
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
        assert_eq!(
            batcher.report(job(b, 4, 0, now)).await.unwrap().good_units,
            9
        );
        // Another writer (an Idempotency-Key report, another replica) counts on run B behind the
        // lane's cache; the lane's next report is checked against the database and sees it.
        let mut conn = pool.acquire().await.unwrap();
        let other = reports::write(&mut conn, &[job(b, 1, 0, now)], "BKK")
            .await
            .unwrap();
        assert_eq!(other[0].as_ref().unwrap().good_units, 10);
        drop(conn);
        let after = batcher.report(job(b, 4, 0, now)).await.unwrap();
        assert_eq!(after.good_units, 14);
        // Completed behind the cache: refused, not counted.
        sqlx::query(
            "UPDATE op_run SET status = 'completed', ended_at = now() WHERE op_run_id = $1",
        )
        .bind(b)
        .execute(&pool)
        .await
        .unwrap();
        let refused = batcher.report(job(b, 1, 0, now)).await.unwrap_err();
        assert!(matches!(refused, StoreError::Refused(_)), "{refused:?}");
        let total: i64 = sqlx::query_scalar("SELECT good_units FROM op_run WHERE op_run_id = $1")
            .bind(b)
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(total, 14);
        pool.close().await;
    }
}
