//! `GET /kpi/oee`: OEE per resource and shift for a window, the window's roll-up, and MTBF/MTTR
//! per resource — all from the same SQL as the MES views (`edge_mes_shift_elements_q`,
//! `edge_mes_oee_q`, with the one quality rule of migration 0018), so the API, the views, the
//! board and the dashboards never disagree.

use axum::extract::State;
use axum::Json;
use chrono::{DateTime, Duration, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::{ApiError, Problem};
use crate::extract::{parse_timestamp, QueryParams};
use crate::state::AppState;

const MAX_WINDOW_DAYS: i64 = 93;

/// ISO 22400-2 KPIs with the elements they come from. A ratio is `null` when its denominator is
/// 0, with the reason beside it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, sqlx::FromRow)]
pub struct Kpis {
    /// Planned busy time PBT, seconds.
    pub pbt_seconds: f64,
    /// Actual production time APT, seconds.
    pub apt_seconds: f64,
    /// Produced quantity PQ.
    pub pq: i64,
    /// Good quantity GQ.
    pub gq: i64,
    /// A = APT / PBT.
    pub availability: Option<f64>,
    /// E = PRU·PQ / APT (effectiveness).
    pub performance: Option<f64>,
    /// QR = GQ / PQ from counts; without counts, the mean of the resource's `yield` readings
    /// (0..1) in the shifts, else 1 − the mean of its `defect_rate` readings (`quality_source`).
    pub quality: Option<f64>,
    /// OEE = PRU·GQ / PBT.
    pub oee: Option<f64>,
    /// E > 1: the ideal cycle time is too slow or counts are wrong. Never clamped.
    pub performance_over_100: bool,
    pub availability_null_reason: Option<String>,
    pub performance_null_reason: Option<String>,
    pub quality_null_reason: Option<String>,
    pub oee_null_reason: Option<String>,
    /// Where `quality` comes from: `counts`, `yield_readings`, `defect_rate_readings`,
    /// `readings` (a roll-up mixing the two); `null` with `quality`.
    pub quality_source: Option<String>,
}

/// OEE of one resource in one shift instance.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, sqlx::FromRow)]
pub struct ShiftOee {
    pub site_id: String,
    pub resource_id: String,
    pub line_id: Option<String>,
    pub shift_name: String,
    /// Local production day the shift starts on.
    pub shift_date: NaiveDate,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    #[sqlx(flatten)]
    #[serde(flatten)]
    pub kpis: Kpis,
}

/// MTBF and MTTR of one resource over the window's shifts.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, sqlx::FromRow)]
pub struct Reliability {
    pub resource_id: String,
    pub failure_events: i64,
    pub operating_seconds: f64,
    pub repair_seconds: f64,
    /// Operating time / failure events; `null` without failures.
    pub mtbf_seconds: Option<f64>,
    /// Failure downtime / failure events; `null` without failures.
    pub mttr_seconds: Option<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct OeeReport {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    /// Whole shifts overlapping [from, to), ordered by start and resource.
    pub shifts: Vec<ShiftOee>,
    /// Roll-up of the listed shifts: elements summed, then divided.
    pub total: Kpis,
    pub reliability: Vec<Reliability>,
}

const KPI_COLUMNS: &str = "k.availability, k.performance, k.quality, k.oee, k.performance_over_100, \
    k.availability_null_reason, k.performance_null_reason, k.quality_null_reason, k.oee_null_reason, \
    k.quality_source";

/// OEE per resource and shift.
#[utoipa::path(get, path = "/kpi/oee", tag = "kpi",
    params(
        ("site_id" = Option<crate::domain::Ident>, Query, description = "only this site; empty or absent: all"),
        ("resource_id" = Option<crate::domain::Ident>, Query, description = "only this resource; empty or absent: all"),
        ("from" = Option<DateTime<Utc>>, Query, description = "window start (RFC 3339 with offset); empty or absent: `to` minus 24 h. Before `to`, at most 93 days before it"),
        ("to" = Option<DateTime<Utc>>, Query, description = "window end (RFC 3339 with offset); empty or absent: now")),
    responses(crate::http::ServerFaults,
        (status = 200, description = "OEE per shift, total and MTBF/MTTR", body = OeeReport),
        (status = 400, description = "a query parameter is malformed, unknown or repeated", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "`from` is not before `to`, or the window is longer than 93 days", body = Problem, content_type = "application/problem+json")))]
pub async fn oee(
    State(state): State<AppState>,
    mut q: QueryParams,
) -> Result<Json<OeeReport>, ApiError> {
    let site = q.take_ident("site_id")?.map(String::from);
    let resource = q.take_ident("resource_id")?.map(String::from);
    let to = q
        .take_parsed("to", parse_timestamp)?
        .unwrap_or_else(Utc::now);
    let from = q
        .take_parsed("from", parse_timestamp)?
        .unwrap_or(to - Duration::hours(24));
    q.finish()?;
    if from >= to {
        return Err(ApiError::invalid(
            "from",
            format!("{from} is not before to ({to})"),
        ));
    }
    if to - from > Duration::days(MAX_WINDOW_DAYS) {
        return Err(ApiError::invalid(
            "from",
            format!("window longer than {MAX_WINDOW_DAYS} days"),
        ));
    }
    let mut tx = state.pool.begin().await?;
    // One snapshot for the three reads; the elements are computed once into a temp table.
    sqlx::query(
        "CREATE TEMP TABLE kpi_elements ON COMMIT DROP AS
         SELECT * FROM edge_mes_shift_elements_q($1, $2, $3, $4)",
    )
    .bind(from)
    .bind(to)
    .bind(&site)
    .bind(&resource)
    .execute(&mut *tx)
    .await?;
    let shifts: Vec<ShiftOee> = sqlx::query_as(&format!(
        "SELECT e.site_id, e.resource_id, e.line_id, e.shift_name, e.shift_date, e.starts_at,
                e.ends_at, e.pbt_seconds, e.apt_seconds, e.pq, e.gq, {KPI_COLUMNS}
         FROM kpi_elements e
         CROSS JOIN LATERAL edge_mes_oee_q(e.pbt_seconds, e.apt_seconds, e.pq, e.gq,
              e.pru_pq_seconds, e.pru_gq_seconds, e.ideal_cycle_time_missing,
              e.q_readings_sum, e.q_readings_n, e.q_readings_source) k
         ORDER BY e.starts_at, e.resource_id"
    ))
    .fetch_all(&mut *tx)
    .await?;
    let total: Kpis = sqlx::query_as(&format!(
        "SELECT s.pbt_seconds, s.apt_seconds, s.pq, s.gq, {KPI_COLUMNS}
         FROM (SELECT coalesce(sum(pbt_seconds), 0)::float8 AS pbt_seconds,
                      coalesce(sum(apt_seconds), 0)::float8 AS apt_seconds,
                      coalesce(sum(pq), 0)::int8 AS pq, coalesce(sum(gq), 0)::int8 AS gq,
                      coalesce(sum(pru_pq_seconds), 0)::float8 AS pru_pq,
                      coalesce(sum(pru_gq_seconds), 0)::float8 AS pru_gq,
                      coalesce(bool_or(ideal_cycle_time_missing), false) AS ict_missing,
                      sum(q_readings_sum) AS q_sum,
                      coalesce(sum(q_readings_n), 0)::int8 AS q_n,
                      edge_mes_q_source(array_agg(q_readings_source)) AS q_source
               FROM kpi_elements) s
         CROSS JOIN LATERAL edge_mes_oee_q(s.pbt_seconds, s.apt_seconds, s.pq, s.gq, s.pru_pq,
              s.pru_gq, s.ict_missing, s.q_sum, s.q_n, s.q_source) k"
    ))
    .fetch_one(&mut *tx)
    .await?;
    let reliability: Vec<Reliability> = sqlx::query_as(
        "SELECT resource_id, sum(failure_events)::int8 AS failure_events,
                sum(apt_seconds)::float8 AS operating_seconds,
                sum(failure_seconds)::float8 AS repair_seconds,
                edge_mes_ratio(sum(apt_seconds), sum(failure_events)) AS mtbf_seconds,
                edge_mes_ratio(sum(failure_seconds), sum(failure_events)) AS mttr_seconds
         FROM kpi_elements GROUP BY resource_id ORDER BY resource_id",
    )
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Json(OeeReport {
        from,
        to,
        shifts,
        total,
        reliability,
    }))
}
