//! SQL of the run lifecycle. A change locks its run row (`FOR UPDATE`) while reading the
//! [`RunState`] the domain decides on, so changes of one run serialize while different runs
//! proceed in parallel; the change's rows, the run and its outbox event are written in the same
//! transaction.

use chrono::{DateTime, Utc};
use protocol::run_event::RunEvent;
use sqlx::PgConnection;
use uuid::Uuid;

use super::{sqlstate, StoreError};
use crate::domain::run::{event, Downtime, Effect, Reason, Run, RunState, RunStatus, Transition};

/// The columns of a [`RunRow`], in its order.
pub(crate) const RUN_COLUMNS: &str = "op_run_id, work_order_id, operation_id, resource_id, \
    site_id, status, started_at, ended_at, planned_seconds, ideal_cycle_time_s, good_units, \
    scrap_units";

/// One `op_run` row as stored (status as text).
#[derive(Debug, Clone, sqlx::FromRow)]
pub(crate) struct RunRow {
    pub op_run_id: Uuid,
    pub work_order_id: String,
    pub operation_id: String,
    pub resource_id: String,
    pub site_id: Option<String>,
    pub status: String,
    pub started_at: DateTime<Utc>,
    pub ended_at: Option<DateTime<Utc>>,
    pub planned_seconds: Option<f64>,
    pub ideal_cycle_time_s: Option<f64>,
    pub good_units: i64,
    pub scrap_units: i64,
}

impl TryFrom<RunRow> for Run {
    type Error = StoreError;
    fn try_from(r: RunRow) -> Result<Run, StoreError> {
        let status: RunStatus = r.status.parse().map_err(|source| StoreError::Corrupt {
            op_run_id: r.op_run_id,
            source,
        })?;
        Ok(Run {
            op_run_id: r.op_run_id,
            work_order_id: r.work_order_id,
            operation_id: r.operation_id,
            resource_id: r.resource_id,
            site_id: r.site_id,
            status,
            started_at: r.started_at,
            ended_at: r.ended_at,
            planned_seconds: r.planned_seconds,
            ideal_cycle_time_s: r.ideal_cycle_time_s,
            good_units: r.good_units,
            scrap_units: r.scrap_units,
        })
    }
}

fn runs(rows: Vec<RunRow>) -> Result<Vec<Run>, StoreError> {
    rows.into_iter().map(Run::try_from).collect()
}

/// One `op_run_downtime` row with its reason's classification.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DowntimeRow {
    pub id: i64,
    pub reason_code: String,
    pub planned: bool,
    pub loss_bucket: String,
    pub started_at: DateTime<Utc>,
    pub ended_at: Option<DateTime<Utc>>,
    pub note: Option<String>,
}

impl From<DowntimeRow> for Downtime {
    fn from(d: DowntimeRow) -> Self {
        Downtime {
            id: Some(d.id),
            reason: Reason {
                code: d.reason_code,
                planned: d.planned,
                loss_bucket: d.loss_bucket,
            },
            started_at: d.started_at,
            ended_at: d.ended_at,
            note: d.note,
        }
    }
}

const DOWNTIME_SELECT: &str =
    "SELECT d.id, d.reason_code, r.planned, r.loss_bucket, d.started_at, \
    d.ended_at, d.note FROM op_run_downtime d JOIN downtime_reasons r USING (reason_code)";

/// Inserts a started run (registering its resource and work order if new) and returns it as
/// stored. The resource's site wins when it has one; a request naming another site is refused.
pub async fn insert_run(
    tx: &mut PgConnection,
    run: &Run,
    default_site: &str,
    actor: Option<&str>,
) -> Result<Run, StoreError> {
    let site: Option<String> = sqlx::query_scalar(
        "INSERT INTO resources (resource_id, site_id) VALUES ($1, coalesce($2, $3))
         ON CONFLICT (resource_id) DO UPDATE SET site_id = coalesce(resources.site_id, excluded.site_id)
         RETURNING site_id",
    )
    .bind(&run.resource_id)
    .bind(&run.site_id)
    .bind(default_site)
    .fetch_one(&mut *tx)
    .await
    .map_err(|e| match sqlstate(&e).as_deref() {
        Some("23503") => StoreError::UnknownSite(
            run.site_id
                .clone()
                .unwrap_or_else(|| default_site.to_owned()),
        ),
        _ => e.into(),
    })?;
    if let (Some(asked), Some(registered)) = (&run.site_id, &site) {
        if asked != registered {
            return Err(StoreError::SiteMismatch {
                resource: run.resource_id.clone(),
                registered: registered.clone(),
                asked: asked.clone(),
            });
        }
    }
    sqlx::query("INSERT INTO work_orders (work_order_id) VALUES ($1) ON CONFLICT DO NOTHING")
        .bind(&run.work_order_id)
        .execute(&mut *tx)
        .await?;
    let sql = format!(
        "INSERT INTO op_run (op_run_id, work_order_id, operation_id, resource_id, site_id, status,
                             started_at, planned_seconds, ideal_cycle_time_s, started_by)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
         RETURNING {RUN_COLUMNS}"
    );
    let row: RunRow = sqlx::query_as(&sql)
        .bind(run.op_run_id)
        .bind(&run.work_order_id)
        .bind(&run.operation_id)
        .bind(&run.resource_id)
        .bind(site)
        .bind(run.status.as_str())
        .bind(run.started_at)
        .bind(run.planned_seconds)
        .bind(run.ideal_cycle_time_s)
        .bind(actor)
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| match sqlstate(&e).as_deref() {
            Some("23505") => StoreError::RunExists(run.op_run_id),
            // op_run_no_overlap, the only exclusion constraint on op_run.
            Some("23P01") => StoreError::RunOverlap,
            _ => e.into(),
        })?;
    row.try_into()
}

/// The run and the facts of its history the time rules need, the run locked for the rest of the
/// transaction.
pub async fn lock(tx: &mut PgConnection, id: Uuid) -> Result<RunState, StoreError> {
    #[derive(sqlx::FromRow)]
    struct Row {
        #[sqlx(flatten)]
        run: RunRow,
        last_downtime_end: Option<DateTime<Utc>>,
        last_count_at: Option<DateTime<Utc>>,
    }
    let sql = format!(
        "SELECT {RUN_COLUMNS},
                (SELECT max(ended_at) FROM op_run_downtime d WHERE d.op_run_id = r.op_run_id)
                    AS last_downtime_end,
                (SELECT max(at) FROM op_run_count c WHERE c.op_run_id = r.op_run_id)
                    AS last_count_at
         FROM op_run r WHERE op_run_id = $1 FOR UPDATE OF r"
    );
    let row: Row = sqlx::query_as(&sql)
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(StoreError::RunNotFound(id))?;
    let open: Option<DowntimeRow> = sqlx::query_as(&format!(
        "{DOWNTIME_SELECT} WHERE d.op_run_id = $1 AND d.ended_at IS NULL"
    ))
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?;
    Ok(RunState {
        run: row.run.try_into()?,
        open_downtime: open.map(Downtime::from),
        last_downtime_end: row.last_downtime_end,
        last_count_at: row.last_count_at,
    })
}

/// A downtime reason's classification, if the code exists.
pub async fn reason(tx: &mut PgConnection, code: &str) -> Result<Option<Reason>, StoreError> {
    let row: Option<(bool, String)> =
        sqlx::query_as("SELECT planned, loss_bucket FROM downtime_reasons WHERE reason_code = $1")
            .bind(code)
            .fetch_optional(&mut *tx)
            .await?;
    Ok(row.map(|(planned, loss_bucket)| Reason {
        code: code.to_owned(),
        planned,
        loss_bucket,
    }))
}

/// Writes a decided transition of a locked run: its rows, the run, its event. Returns the run
/// after it.
pub async fn write(
    tx: &mut PgConnection,
    mut transition: Transition,
    default_site: &str,
    actor: Option<&str>,
) -> Result<Run, StoreError> {
    let id = transition.run.op_run_id;
    for effect in &transition.effects {
        match effect {
            Effect::Count { at, delta, kind } => {
                sqlx::query(
                    "INSERT INTO op_run_count (op_run_id, at, good_delta, scrap_delta, kind, actor)
                     VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .bind(id)
                .bind(at)
                .bind(delta.good_delta)
                .bind(delta.scrap_delta)
                .bind(kind.as_str())
                .bind(actor)
                .execute(&mut *tx)
                .await?;
            }
            Effect::OpenDowntime {
                reason_code,
                at,
                note,
            } => {
                let downtime_id: i64 = sqlx::query_scalar(
                    "INSERT INTO op_run_downtime (op_run_id, reason_code, started_at, note, opened_by)
                     VALUES ($1, $2, $3, $4, $5) RETURNING id",
                )
                .bind(id)
                .bind(reason_code)
                .bind(at)
                .bind(note)
                .bind(actor)
                .fetch_one(&mut *tx)
                .await
                .map_err(|e| match sqlstate(&e).as_deref() {
                    Some("23P01") => StoreError::DowntimeOverlap,
                    _ => e.into(),
                })?;
                if let Some(d) = transition.event.downtime.as_mut() {
                    d.id = Some(downtime_id);
                }
            }
            Effect::CloseDowntime { id: downtime, at } => {
                sqlx::query(
                    "UPDATE op_run_downtime SET ended_at = $2, closed_by = $3 WHERE id = $1",
                )
                .bind(downtime)
                .bind(at)
                .bind(actor)
                .execute(&mut *tx)
                .await?;
            }
        }
    }
    let run = &transition.run;
    sqlx::query(
        "UPDATE op_run SET status = $2, ended_at = $3, good_units = $4, scrap_units = $5,
                           ended_by = CASE WHEN $3::timestamptz IS NULL THEN ended_by ELSE $6 END,
                           updated_at = now()
         WHERE op_run_id = $1",
    )
    .bind(id)
    .bind(run.status.as_str())
    .bind(run.ended_at)
    .bind(run.good_units)
    .bind(run.scrap_units)
    .bind(actor)
    .execute(&mut *tx)
    .await?;
    let event = event(run, &transition.event, default_site, Utc::now(), actor);
    insert_event(tx, &event).await?;
    Ok(transition.run)
}

/// Inserts a newly started run and its `started` event.
pub async fn write_start(
    tx: &mut PgConnection,
    transition: Transition,
    default_site: &str,
    actor: Option<&str>,
) -> Result<Run, StoreError> {
    let run = insert_run(tx, &transition.run, default_site, actor).await?;
    let event = event(&run, &transition.event, default_site, Utc::now(), actor);
    insert_event(tx, &event).await?;
    Ok(run)
}

/// Queues the event for the relay: the payload is the serialised [`RunEvent`], nothing else.
pub async fn insert_event(tx: &mut PgConnection, event: &RunEvent) -> Result<(), StoreError> {
    let op_run_id = event.op_run_id.parse::<Uuid>().map_err(|e| {
        StoreError::Database(sqlx::Error::Protocol(format!(
            "event of run {:?}: {e}",
            event.op_run_id
        )))
    })?;
    sqlx::query(
        "INSERT INTO outbox (op_run_id, event_type, site_id, resource_id, payload)
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(op_run_id)
    .bind(event.event_type.as_str())
    .bind(&event.site_id)
    .bind(&event.resource_id)
    .bind(sqlx::types::Json(event))
    .execute(&mut *tx)
    .await?;
    Ok(())
}

pub async fn get_run<'e>(
    exec: impl sqlx::PgExecutor<'e>,
    id: Uuid,
) -> Result<Option<Run>, StoreError> {
    let sql = format!("SELECT {RUN_COLUMNS} FROM op_run WHERE op_run_id = $1");
    let row: Option<RunRow> = sqlx::query_as(&sql).bind(id).fetch_optional(exec).await?;
    row.map(Run::try_from).transpose()
}

/// Runs that are running or paused, oldest first.
pub async fn active_runs(pool: &sqlx::PgPool) -> Result<Vec<Run>, StoreError> {
    let sql = format!(
        "SELECT {RUN_COLUMNS} FROM op_run WHERE status = ANY ($1)
         ORDER BY started_at, op_run_id"
    );
    runs(
        sqlx::query_as(&sql)
            .bind(RunStatus::OPEN)
            .fetch_all(pool)
            .await?,
    )
}

pub async fn downtimes<'e>(
    exec: impl sqlx::PgExecutor<'e>,
    id: Uuid,
) -> Result<Vec<DowntimeRow>, StoreError> {
    let sql = format!("{DOWNTIME_SELECT} WHERE d.op_run_id = $1 ORDER BY d.started_at");
    Ok(sqlx::query_as(&sql).bind(id).fetch_all(exec).await?)
}

pub async fn runs_of_work_order(
    tx: &mut PgConnection,
    work_order_id: &str,
) -> Result<Vec<Run>, StoreError> {
    let sql = format!(
        "SELECT {RUN_COLUMNS} FROM op_run WHERE work_order_id = $1 ORDER BY started_at, op_run_id"
    );
    runs(
        sqlx::query_as(&sql)
            .bind(work_order_id)
            .fetch_all(&mut *tx)
            .await?,
    )
}

/// Downtimes of several runs, with the run each belongs to.
pub async fn downtimes_of_runs(
    tx: &mut PgConnection,
    ids: &[Uuid],
) -> Result<Vec<(Uuid, DowntimeRow)>, StoreError> {
    #[derive(sqlx::FromRow)]
    struct Row {
        op_run_id: Uuid,
        #[sqlx(flatten)]
        downtime: DowntimeRow,
    }
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT d.op_run_id, d.id, d.reason_code, r.planned, r.loss_bucket, d.started_at,
                d.ended_at, d.note
         FROM op_run_downtime d JOIN downtime_reasons r USING (reason_code)
         WHERE d.op_run_id = ANY ($1) ORDER BY d.started_at",
    )
    .bind(ids)
    .fetch_all(&mut *tx)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| (r.op_run_id, r.downtime))
        .collect())
}
