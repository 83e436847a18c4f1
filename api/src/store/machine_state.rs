//! Machine-state rules, detected stops and the detector's pass over one resource's readings.

use std::collections::{BTreeMap, HashSet};

use chrono::{DateTime, TimeDelta, Utc};
use serde_json::{Map, Value};
use sqlx::{PgConnection, PgPool};

use super::StoreError;
use crate::domain::machine_state::{
    self as ms, parse_code, Rule, Sample, Stop, StopWhen, StoredStop, UNASSIGNED,
};

/// A rule as stored.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct RuleRow {
    pub resource_id: String,
    pub sensor: String,
    pub kind: String,
    pub stopped_at_or_below: Option<f64>,
    pub stop_codes: Option<sqlx::types::Json<Map<String, Value>>>,
    pub min_stop_seconds: f64,
    pub updated_at: DateTime<Utc>,
    pub updated_by: Option<String>,
}

impl RuleRow {
    /// The domain's rule; `None` (logged by the caller) for a row edited in SQL into something
    /// the rule cannot mean.
    pub fn rule(&self) -> Option<Rule> {
        let stop_when = match (
            self.kind.as_str(),
            self.stopped_at_or_below,
            &self.stop_codes,
        ) {
            ("threshold", Some(t), _) => StopWhen::AtOrBelow(t),
            ("codes", _, Some(codes)) => {
                let mut map = BTreeMap::new();
                for (k, v) in codes.0.iter() {
                    map.insert(parse_code(k).ok()?, v.as_str()?.to_owned());
                }
                StopWhen::Codes(map)
            }
            _ => return None,
        };
        Rule::new(self.sensor.clone(), stop_when, self.min_stop_seconds).ok()
    }
}

const RULE_COLUMNS: &str = "resource_id, sensor, kind, stopped_at_or_below, stop_codes, \
                            min_stop_seconds, updated_at, updated_by";

pub async fn rules<'e>(exec: impl sqlx::PgExecutor<'e>) -> Result<Vec<RuleRow>, StoreError> {
    let sql = format!("SELECT {RULE_COLUMNS} FROM machine_state_rules ORDER BY resource_id");
    Ok(sqlx::query_as(&sql).fetch_all(exec).await?)
}

/// Inserts or replaces the rule of a resource.
pub async fn put_rule(
    conn: &mut PgConnection,
    resource_id: &str,
    rule: &Rule,
    actor: Option<&str>,
) -> Result<RuleRow, StoreError> {
    let (kind, threshold, codes) = match &rule.stop_when {
        StopWhen::AtOrBelow(t) => ("threshold", Some(*t), None),
        StopWhen::Codes(c) => {
            let map: Map<String, Value> = c
                .iter()
                .map(|(k, v)| (k.to_string(), Value::from(v.as_str())))
                .collect();
            ("codes", None, Some(sqlx::types::Json(map)))
        }
    };
    let sql = format!(
        "INSERT INTO machine_state_rules
             (resource_id, sensor, kind, stopped_at_or_below, stop_codes, min_stop_seconds,
              updated_by)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT (resource_id) DO UPDATE SET
             sensor = EXCLUDED.sensor, kind = EXCLUDED.kind,
             stopped_at_or_below = EXCLUDED.stopped_at_or_below,
             stop_codes = EXCLUDED.stop_codes, min_stop_seconds = EXCLUDED.min_stop_seconds,
             updated_at = now(), updated_by = EXCLUDED.updated_by
         RETURNING {RULE_COLUMNS}"
    );
    Ok(sqlx::query_as(&sql)
        .bind(resource_id)
        .bind(&rule.sensor)
        .bind(kind)
        .bind(threshold)
        .bind(codes)
        .bind(rule.min_stop.num_microseconds().unwrap_or(0) as f64 / 1e6)
        .bind(actor)
        .fetch_one(conn)
        .await?)
}

/// Deletes the rule of a resource (its stops stay); false when it had none.
pub async fn delete_rule(conn: &mut PgConnection, resource_id: &str) -> Result<bool, StoreError> {
    let n = sqlx::query("DELETE FROM machine_state_rules WHERE resource_id = $1")
        .bind(resource_id)
        .execute(conn)
        .await?
        .rows_affected();
    Ok(n > 0)
}

/// The reason codes that exist.
pub async fn reason_codes<'e>(
    exec: impl sqlx::PgExecutor<'e>,
) -> Result<HashSet<String>, StoreError> {
    let codes: Vec<String> = sqlx::query_scalar("SELECT reason_code FROM downtime_reasons")
        .fetch_all(exec)
        .await?;
    Ok(codes.into_iter().collect())
}

/// What one detector pass over a resource did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PassOutcome {
    /// Another replica held the resource.
    pub skipped: bool,
    pub readings: usize,
    pub inserted: usize,
    pub updated: usize,
    pub deleted: usize,
}

/// How far back a pass looks.
#[derive(Debug, Clone, Copy)]
pub struct PassWindow {
    /// Readings this old are judged again each pass (late readings within it are seen).
    pub horizon: TimeDelta,
    /// An open stop older than the horizon widens the window back to its start, at most this far.
    pub max_lookback: TimeDelta,
    /// Most readings one pass reads; the rest wait for the next pass.
    pub max_readings: i64,
}

/// Judges the readings of one resource against its rule and brings its stored stops in line,
/// in one transaction under a per-resource advisory lock (replicas never race on a resource).
pub async fn detect_pass(
    pool: &PgPool,
    resource_id: &str,
    rule: &Rule,
    window: PassWindow,
    now: DateTime<Utc>,
) -> Result<PassOutcome, StoreError> {
    let mut tx = pool.begin().await?;
    let locked: bool = sqlx::query_scalar(
        "SELECT pg_try_advisory_xact_lock(hashtext('edge_mes_machine_state'), hashtext($1))",
    )
    .bind(resource_id)
    .fetch_one(&mut *tx)
    .await?;
    if !locked {
        return Ok(PassOutcome {
            skipped: true,
            ..PassOutcome::default()
        });
    }
    let oldest_open: Option<DateTime<Utc>> = sqlx::query_scalar(
        "SELECT min(started_at) FROM machine_stops WHERE resource_id = $1 AND ended_at IS NULL",
    )
    .bind(resource_id)
    .fetch_one(&mut *tx)
    .await?;
    let mut from = now - window.horizon;
    if let Some(open) = oldest_open {
        from = from.min(open.max(now - window.max_lookback));
    }
    let prior: Option<(DateTime<Utc>, f64)> = sqlx::query_as(
        "SELECT ts, value FROM readings
         WHERE resource_id = $1 AND sensor = $2 AND ts < $3
         ORDER BY ts DESC LIMIT 1",
    )
    .bind(resource_id)
    .bind(&rule.sensor)
    .bind(from)
    .fetch_optional(&mut *tx)
    .await?;
    let rows: Vec<(DateTime<Utc>, f64)> = sqlx::query_as(
        "SELECT ts, value FROM readings
         WHERE resource_id = $1 AND sensor = $2 AND ts >= $3 AND ts <= $4
         ORDER BY ts LIMIT $5",
    )
    .bind(resource_id)
    .bind(&rule.sensor)
    .bind(from)
    .bind(now)
    .bind(window.max_readings)
    .fetch_all(&mut *tx)
    .await?;
    let start = prior.map_or(from, |(ts, _)| ts);
    let samples: Vec<Sample> = prior
        .into_iter()
        .chain(rows)
        .map(|(ts, value)| Sample { ts, value })
        .collect();
    let stored = stored_stops(&mut tx, resource_id, start).await?;
    let known = reason_codes(&mut *tx).await?;
    let mut detected = ms::detect(rule, &samples);
    for stop in &mut detected {
        if !known.contains(&stop.reason_code) {
            tracing::warn!(
                resource_id, reason_code = %stop.reason_code,
                "machine-state rule maps a code to an unknown reason; recorded as unassigned"
            );
            stop.reason_code = UNASSIGNED.to_owned();
        }
    }
    let plan = ms::reconcile(start, &stored, &detected);
    let outcome = PassOutcome {
        skipped: false,
        readings: samples.len(),
        inserted: plan.insert.len(),
        updated: plan.update.len(),
        deleted: plan.delete.len(),
    };
    if !plan.delete.is_empty() {
        sqlx::query("DELETE FROM machine_stops WHERE id = ANY($1)")
            .bind(&plan.delete)
            .execute(&mut *tx)
            .await?;
    }
    for (id, stop) in &plan.update {
        sqlx::query(
            "UPDATE machine_stops SET started_at = $2, ended_at = $3, reason_code = $4,
                                      state_code = $5, updated_at = now()
             WHERE id = $1",
        )
        .bind(id)
        .bind(stop.started_at)
        .bind(stop.ended_at)
        .bind(&stop.reason_code)
        .bind(stop.state_code)
        .execute(&mut *tx)
        .await?;
    }
    for stop in &plan.insert {
        sqlx::query(
            "INSERT INTO machine_stops (resource_id, started_at, ended_at, reason_code, state_code)
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(resource_id)
        .bind(stop.started_at)
        .bind(stop.ended_at)
        .bind(&stop.reason_code)
        .bind(stop.state_code)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(outcome)
}

async fn stored_stops(
    conn: &mut PgConnection,
    resource_id: &str,
    after: DateTime<Utc>,
) -> Result<Vec<StoredStop>, StoreError> {
    type Row = (
        i64,
        DateTime<Utc>,
        Option<DateTime<Utc>>,
        String,
        Option<i64>,
        bool,
    );
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT id, started_at, ended_at, reason_code, state_code, assigned_by IS NOT NULL
                OR assigned_at IS NOT NULL
         FROM machine_stops
         WHERE resource_id = $1 AND coalesce(ended_at, 'infinity'::timestamptz) > $2
         ORDER BY started_at
         FOR UPDATE",
    )
    .bind(resource_id)
    .bind(after)
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(
            |(id, started_at, ended_at, reason_code, state_code, assigned)| StoredStop {
                id,
                stop: Stop {
                    started_at,
                    ended_at,
                    reason_code,
                    state_code,
                },
                assigned,
            },
        )
        .collect())
}

/// A stop with its reason's classification (`v_machine_stops`).
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct StopRow {
    pub stop_id: i64,
    pub site_id: String,
    pub resource_id: String,
    pub started_at: DateTime<Utc>,
    pub ended_at: Option<DateTime<Utc>>,
    pub duration_seconds: f64,
    pub reason_code: String,
    pub planned: bool,
    pub loss_bucket: String,
    pub state_code: Option<i64>,
    pub assigned_by: Option<String>,
    pub assigned_at: Option<DateTime<Utc>>,
    pub note: Option<String>,
}

const STOP_COLUMNS: &str = "stop_id, site_id, resource_id, started_at, ended_at, \
    duration_seconds, reason_code, planned, loss_bucket, state_code, assigned_by, assigned_at, note";

/// What `GET /machine_stops` asks for.
#[derive(Debug, Clone)]
pub struct StopQuery<'a> {
    pub resource_id: Option<&'a str>,
    pub site_id: Option<&'a str>,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub unassigned_only: bool,
    pub limit: i64,
}

/// Stops overlapping `[from, to)`, oldest first.
pub async fn stops<'e>(
    exec: impl sqlx::PgExecutor<'e>,
    q: &StopQuery<'_>,
) -> Result<Vec<StopRow>, StoreError> {
    let sql = format!(
        "SELECT {STOP_COLUMNS} FROM v_machine_stops
         WHERE started_at < $2 AND coalesce(ended_at, 'infinity'::timestamptz) > $1
           AND ($3::text IS NULL OR resource_id = $3)
           AND ($4::text IS NULL OR site_id = $4)
           AND (NOT $5 OR unassigned)
         ORDER BY started_at, stop_id
         LIMIT $6"
    );
    Ok(sqlx::query_as(&sql)
        .bind(q.from)
        .bind(q.to)
        .bind(q.resource_id)
        .bind(q.site_id)
        .bind(q.unassigned_only)
        .bind(q.limit)
        .fetch_all(exec)
        .await?)
}

pub async fn stop<'e>(
    exec: impl sqlx::PgExecutor<'e>,
    id: i64,
) -> Result<Option<StopRow>, StoreError> {
    let sql = format!("SELECT {STOP_COLUMNS} FROM v_machine_stops WHERE stop_id = $1");
    Ok(sqlx::query_as(&sql).bind(id).fetch_optional(exec).await?)
}

/// Locks a stop for a change; false when there is none.
pub async fn lock_stop(conn: &mut PgConnection, id: i64) -> Result<bool, StoreError> {
    let found: Option<i64> =
        sqlx::query_scalar("SELECT id FROM machine_stops WHERE id = $1 FOR UPDATE")
            .bind(id)
            .fetch_optional(conn)
            .await?;
    Ok(found.is_some())
}

/// Sets the reason an operator gives a stop.
pub async fn assign_reason(
    conn: &mut PgConnection,
    id: i64,
    reason_code: &str,
    note: Option<&str>,
    actor: Option<&str>,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE machine_stops SET reason_code = $2, note = coalesce($3, note), assigned_by = $4,
                                  assigned_at = now(), updated_at = now()
         WHERE id = $1",
    )
    .bind(id)
    .bind(reason_code)
    .bind(note)
    .bind(actor)
    .execute(conn)
    .await?;
    Ok(())
}

/// The runs on the stop's resource whose time overlaps it: they get the run event.
pub async fn runs_during(
    conn: &mut PgConnection,
    resource_id: &str,
    from: DateTime<Utc>,
    to: Option<DateTime<Utc>>,
) -> Result<Vec<uuid::Uuid>, StoreError> {
    Ok(sqlx::query_scalar(
        "SELECT op_run_id FROM op_run
         WHERE resource_id = $1
           AND tstzrange(started_at, coalesce(ended_at, 'infinity'::timestamptz), '[)')
               && tstzrange($2, coalesce($3, 'infinity'::timestamptz), '[)')
         ORDER BY started_at",
    )
    .bind(resource_id)
    .bind(from)
    .bind(to)
    .fetch_all(conn)
    .await?)
}
