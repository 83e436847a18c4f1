//! What the board shows, read in one database snapshot: sites with their current shift, resources
//! with their active run, current-shift OEE per resource and the last reading per sensor.
//!
//! OEE comes from the same SQL as `GET /kpi/oee` and the MES views (`edge_mes_shift_elements_q`
//! for the elements, `edge_mes_oee_q` for the ratios with the one quality rule, migration 0018),
//! over the current shift instance of each site, so the board never disagrees with the KPI
//! endpoint.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::domain::RunStatus;
use crate::error::ApiError;
use crate::kpi::Kpis;

/// Everything the board page shows, as of `generated_at`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct BoardSnapshot {
    /// Database time of the snapshot (all parts are read in one transaction at this time).
    pub generated_at: DateTime<Utc>,
    /// The `site` filter of the request, if any.
    pub site: Option<String>,
    /// The sites shown, each with its current shift.
    pub sites: Vec<BoardSite>,
    /// Resources ordered by line, then id.
    pub resources: Vec<BoardResource>,
    /// More resources exist than one board shows; narrow it with `site`.
    pub truncated: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct BoardSite {
    pub site_id: String,
    pub name: String,
    /// IANA zone the site's shifts are local to.
    pub time_zone: String,
    /// The shift instance running now; `null` where the calendar has none.
    pub shift: Option<CurrentShift>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, sqlx::FromRow)]
pub struct CurrentShift {
    pub shift_name: String,
    /// Local production day the shift starts on.
    pub shift_date: NaiveDate,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
}

/// What a resource is doing now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ResourceState {
    Running,
    Paused,
    /// No active run.
    Idle,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct BoardResource {
    pub resource_id: String,
    pub name: String,
    pub site_id: Option<String>,
    /// `resources.line_id`; the page groups resources by it.
    pub line_id: Option<String>,
    pub state: ResourceState,
    /// The active (running or paused) run; at most one per resource.
    pub run: Option<BoardRun>,
    /// OEE of the site's current shift; `null` when the resource ran nothing in it.
    pub oee: Option<ShiftKpis>,
    /// Last reading of each sensor heard from in the lookback window, by sensor name.
    pub readings: Vec<LastReading>,
    /// The machine stands: an open stop detected from its readings (`GET /machine_stops`),
    /// whether or not a run is paused; `null` while it runs.
    pub machine_stop: Option<BoardMachineStop>,
}

/// An open stop detected from a machine's readings.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct BoardMachineStop {
    pub stop_id: i64,
    /// `unassigned` until an operator assigns a reason (`POST /machine_stops/{stop_id}/reason`).
    pub reason_code: String,
    pub since: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct BoardRun {
    pub op_run_id: Uuid,
    pub work_order_id: String,
    pub operation_id: String,
    /// `running` or `paused`.
    pub status: String,
    pub started_at: DateTime<Utc>,
    /// `generated_at` − `started_at`, seconds.
    pub elapsed_seconds: f64,
    pub good_units: i64,
    pub scrap_units: i64,
    pub planned_seconds: Option<f64>,
    pub ideal_cycle_time_s: Option<f64>,
    /// Reason code of the open downtime of a paused run.
    pub pause_reason: Option<String>,
    pub paused_since: Option<DateTime<Utc>>,
}

/// ISO 22400-2 KPIs of one resource in the current shift (as `GET /kpi/oee` reports them).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, sqlx::FromRow)]
pub struct ShiftKpis {
    pub shift_name: String,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    #[sqlx(flatten)]
    #[serde(flatten)]
    pub kpis: Kpis,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct LastReading {
    pub sensor: String,
    pub value: f64,
    pub unit: Option<String>,
    pub ts: DateTime<Utc>,
    /// `generated_at` − `ts`, seconds (negative for readings stamped ahead of the database clock).
    pub age_seconds: f64,
}

/// Bounds of one snapshot.
#[derive(Debug, Clone, Copy)]
pub struct SnapshotLimits {
    /// Most resources listed.
    pub max_resources: usize,
    /// Most sensors listed per resource.
    pub max_sensors: usize,
    /// Sensors without a reading in this window are not listed (it also bounds the partitions
    /// or chunks the readings queries touch).
    pub readings_lookback: Duration,
}

impl Default for SnapshotLimits {
    fn default() -> Self {
        Self {
            max_resources: 500,
            max_sensors: 16,
            readings_lookback: Duration::from_secs(24 * 3600),
        }
    }
}

/// Each site's shift instance containing `now()`. Shift instances of the previous local day are
/// included, so a shift running over midnight is found.
const CURRENT_SHIFTS: &str = "
    SELECT s.site_id, s.name, s.time_zone, cur.shift_name, cur.shift_date, cur.starts_at,
           cur.ends_at
    FROM sites s
    LEFT JOIN LATERAL (
        SELECT si.shift_name, si.shift_date, si.starts_at, si.ends_at
        FROM edge_mes_shift_instances((now() AT TIME ZONE s.time_zone)::date - 1,
                                      (now() AT TIME ZONE s.time_zone)::date, s.site_id) si
        WHERE si.starts_at <= now() AND now() < si.ends_at
        ORDER BY si.starts_at DESC
        LIMIT 1
    ) cur ON true
    WHERE $1::text IS NULL OR s.site_id = $1";

#[derive(sqlx::FromRow)]
struct SiteRow {
    site_id: String,
    name: String,
    time_zone: String,
    shift_name: Option<String>,
    shift_date: Option<NaiveDate>,
    starts_at: Option<DateTime<Utc>>,
    ends_at: Option<DateTime<Utc>>,
}

impl SiteRow {
    fn into_site(self) -> BoardSite {
        let shift = match (
            self.shift_name,
            self.shift_date,
            self.starts_at,
            self.ends_at,
        ) {
            (Some(shift_name), Some(shift_date), Some(starts_at), Some(ends_at)) => {
                Some(CurrentShift {
                    shift_name,
                    shift_date,
                    starts_at,
                    ends_at,
                })
            }
            _ => None,
        };
        BoardSite {
            site_id: self.site_id,
            name: self.name,
            time_zone: self.time_zone,
            shift,
        }
    }
}

#[derive(sqlx::FromRow)]
struct ResourceRow {
    resource_id: String,
    name: String,
    site_id: Option<String>,
    line_id: Option<String>,
    op_run_id: Option<Uuid>,
    work_order_id: Option<String>,
    operation_id: Option<String>,
    status: Option<String>,
    started_at: Option<DateTime<Utc>>,
    elapsed_seconds: Option<f64>,
    good_units: Option<i64>,
    scrap_units: Option<i64>,
    planned_seconds: Option<f64>,
    ideal_cycle_time_s: Option<f64>,
    pause_reason: Option<String>,
    paused_since: Option<DateTime<Utc>>,
    stop_id: Option<i64>,
    stop_reason: Option<String>,
    stopped_since: Option<DateTime<Utc>>,
}

impl ResourceRow {
    fn machine_stop(&mut self) -> Option<BoardMachineStop> {
        Some(BoardMachineStop {
            stop_id: self.stop_id?,
            reason_code: self.stop_reason.take()?,
            since: self.stopped_since?,
        })
    }

    fn run(&mut self) -> Option<BoardRun> {
        Some(BoardRun {
            op_run_id: self.op_run_id?,
            work_order_id: self.work_order_id.take()?,
            operation_id: self.operation_id.take()?,
            status: self.status.take()?,
            started_at: self.started_at?,
            elapsed_seconds: self.elapsed_seconds.unwrap_or(0.0),
            good_units: self.good_units.unwrap_or(0),
            scrap_units: self.scrap_units.unwrap_or(0),
            planned_seconds: self.planned_seconds,
            ideal_cycle_time_s: self.ideal_cycle_time_s,
            pause_reason: self.pause_reason.take(),
            paused_since: self.paused_since,
        })
    }
}

#[derive(sqlx::FromRow)]
struct OeeRow {
    site_id: String,
    resource_id: String,
    #[sqlx(flatten)]
    kpis: ShiftKpis,
}

#[derive(sqlx::FromRow)]
struct ReadingRow {
    resource_id: String,
    sensor: String,
    value: f64,
    unit: Option<String>,
    ts: DateTime<Utc>,
    age_seconds: f64,
}

/// Reads the board of `site` (all sites when `None`) in one read-only snapshot. An unknown site
/// is refused (422) rather than shown as an empty board.
#[tracing::instrument(skip_all, fields(site = site.unwrap_or("*")))]
pub async fn load(
    pool: &PgPool,
    site: Option<&str>,
    limits: &SnapshotLimits,
) -> Result<BoardSnapshot, ApiError> {
    let mut tx = pool
        .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .await?;
    let generated_at: DateTime<Utc> = sqlx::query_scalar("SELECT now()")
        .fetch_one(&mut *tx)
        .await?;
    let site_rows: Vec<SiteRow> = sqlx::query_as(&format!("{CURRENT_SHIFTS} ORDER BY s.site_id"))
        .bind(site)
        .fetch_all(&mut *tx)
        .await?;
    if let (Some(site), true) = (site, site_rows.is_empty()) {
        return Err(unknown_site(site));
    }
    let max_resources = i64::try_from(limits.max_resources).unwrap_or(i64::MAX);
    let mut resource_rows: Vec<ResourceRow> = sqlx::query_as(
        "SELECT res.resource_id, res.name, coalesce(res.site_id, r.site_id) AS site_id,
                res.line_id, r.op_run_id, r.work_order_id, r.operation_id, r.status, r.started_at,
                greatest(extract(epoch FROM now() - r.started_at), 0)::float8 AS elapsed_seconds,
                r.good_units, r.scrap_units, r.planned_seconds, r.ideal_cycle_time_s,
                d.reason_code AS pause_reason, d.started_at AS paused_since,
                ms.id AS stop_id, ms.reason_code AS stop_reason, ms.started_at AS stopped_since
         FROM resources res
         LEFT JOIN LATERAL (
             SELECT o.op_run_id, o.work_order_id, o.operation_id, o.status, o.started_at,
                    o.good_units, o.scrap_units, o.planned_seconds, o.ideal_cycle_time_s, o.site_id
             FROM op_run o
             WHERE o.resource_id = res.resource_id AND o.status = ANY ($3)
             ORDER BY o.started_at DESC
             LIMIT 1
         ) r ON true
         LEFT JOIN LATERAL (
             SELECT od.reason_code, od.started_at
             FROM op_run_downtime od
             WHERE od.op_run_id = r.op_run_id AND od.ended_at IS NULL
             LIMIT 1
         ) d ON true
         LEFT JOIN LATERAL (
             SELECT m.id, m.reason_code, m.started_at
             FROM machine_stops m
             WHERE m.resource_id = res.resource_id AND m.ended_at IS NULL
             LIMIT 1
         ) ms ON true
         WHERE $1::text IS NULL OR coalesce(res.site_id, r.site_id) = $1
         ORDER BY res.line_id NULLS LAST, res.resource_id
         LIMIT $2 + 1",
    )
    .bind(site)
    .bind(max_resources)
    .bind(RunStatus::OPEN)
    .fetch_all(&mut *tx)
    .await?;
    let truncated = resource_rows.len() > limits.max_resources;
    resource_rows.truncate(limits.max_resources);

    // Elements and ratios exactly as GET /kpi/oee computes them, over each site's current shift.
    let oee_rows: Vec<OeeRow> = sqlx::query_as(&format!(
        "WITH cur AS ({CURRENT_SHIFTS})
         SELECT e.site_id, e.resource_id, e.shift_name, e.starts_at, e.ends_at, e.pbt_seconds,
                e.apt_seconds, e.pq, e.gq, k.*
         FROM cur
         CROSS JOIN LATERAL edge_mes_shift_elements_q(cur.starts_at, cur.ends_at, cur.site_id, NULL) e
         CROSS JOIN LATERAL edge_mes_oee_q(e.pbt_seconds, e.apt_seconds, e.pq, e.gq,
              e.pru_pq_seconds, e.pru_gq_seconds, e.ideal_cycle_time_missing,
              e.q_readings_sum, e.q_readings_n, e.q_readings_source) k
         WHERE cur.starts_at IS NOT NULL
           AND e.starts_at = cur.starts_at AND e.shift_name = cur.shift_name"
    ))
    .bind(site)
    .fetch_all(&mut *tx)
    .await?;

    let resource_ids: Vec<&str> = resource_rows
        .iter()
        .map(|r| r.resource_id.as_str())
        .collect();
    let max_sensors = i32::try_from(limits.max_sensors).unwrap_or(i32::MAX);
    // Distinct sensors per resource by a skip scan of the (resource_id, sensor, ts DESC) index,
    // then the newest row of each: a few index probes per sensor, never a scan of readings.
    let reading_rows: Vec<ReadingRow> = sqlx::query_as(
        "WITH RECURSIVE sensors AS (
             SELECT r.resource_id,
                    (SELECT min(x.sensor) FROM readings x
                     WHERE x.resource_id = r.resource_id
                       AND x.ts > now() - make_interval(secs => $2)) AS sensor,
                    1 AS n
             FROM unnest($1::text[]) AS r (resource_id)
             UNION ALL
             SELECT s.resource_id,
                    (SELECT min(x.sensor) FROM readings x
                     WHERE x.resource_id = s.resource_id AND x.sensor > s.sensor
                       AND x.ts > now() - make_interval(secs => $2)),
                    s.n + 1
             FROM sensors s
             WHERE s.sensor IS NOT NULL AND s.n < $3
         )
         SELECT s.resource_id, s.sensor, l.value, l.unit, l.ts,
                extract(epoch FROM now() - l.ts)::float8 AS age_seconds
         FROM sensors s
         CROSS JOIN LATERAL (
             SELECT x.value, x.unit, x.ts FROM readings x
             WHERE x.resource_id = s.resource_id AND x.sensor = s.sensor
               AND x.ts > now() - make_interval(secs => $2)
             ORDER BY x.ts DESC
             LIMIT 1
         ) l
         WHERE s.sensor IS NOT NULL
         ORDER BY s.resource_id, s.sensor",
    )
    .bind(&resource_ids)
    .bind(limits.readings_lookback.as_secs_f64())
    .bind(max_sensors)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;

    Ok(assemble(
        generated_at,
        site,
        site_rows,
        resource_rows,
        oee_rows,
        reading_rows,
        truncated,
    ))
}

/// Refuses an unknown `site` filter (422 naming the parameter).
pub fn unknown_site(site: &str) -> ApiError {
    ApiError::invalid("site", format!("unknown site {site:?}"))
}

/// Whether site `site` exists.
pub async fn site_exists(pool: &PgPool, site: &str) -> Result<bool, ApiError> {
    Ok(
        sqlx::query_scalar::<_, bool>("SELECT EXISTS (SELECT 1 FROM sites WHERE site_id = $1)")
            .bind(site)
            .fetch_one(pool)
            .await?,
    )
}

fn assemble(
    generated_at: DateTime<Utc>,
    site: Option<&str>,
    site_rows: Vec<SiteRow>,
    resource_rows: Vec<ResourceRow>,
    oee_rows: Vec<OeeRow>,
    reading_rows: Vec<ReadingRow>,
    truncated: bool,
) -> BoardSnapshot {
    let mut oee: HashMap<(String, String), ShiftKpis> = oee_rows
        .into_iter()
        .map(|r| ((r.site_id, r.resource_id), r.kpis))
        .collect();
    let mut readings: HashMap<String, Vec<LastReading>> = HashMap::new();
    for r in reading_rows {
        readings
            .entry(r.resource_id)
            .or_default()
            .push(LastReading {
                sensor: r.sensor,
                value: r.value,
                unit: r.unit,
                ts: r.ts,
                age_seconds: r.age_seconds,
            });
    }
    let resources = resource_rows
        .into_iter()
        .map(|mut row| {
            let run = row.run();
            let machine_stop = row.machine_stop();
            let state = match run.as_ref().map(|r| r.status.parse::<RunStatus>()) {
                Some(Ok(RunStatus::Paused)) => ResourceState::Paused,
                Some(_) => ResourceState::Running,
                None => ResourceState::Idle,
            };
            let oee = row
                .site_id
                .clone()
                .and_then(|s| oee.remove(&(s, row.resource_id.clone())));
            BoardResource {
                readings: readings.remove(&row.resource_id).unwrap_or_default(),
                resource_id: row.resource_id,
                name: row.name,
                site_id: row.site_id,
                line_id: row.line_id,
                state,
                run,
                oee,
                machine_stop,
            }
        })
        .collect();
    BoardSnapshot {
        generated_at,
        site: site.map(str::to_owned),
        sites: site_rows.into_iter().map(SiteRow::into_site).collect(),
        resources,
        truncated,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resource(id: &str, site: &str, status: Option<&str>) -> ResourceRow {
        ResourceRow {
            resource_id: id.to_owned(),
            name: String::new(),
            site_id: Some(site.to_owned()),
            line_id: None,
            op_run_id: status.map(|_| Uuid::nil()),
            work_order_id: status.map(|_| "WO1".to_owned()),
            operation_id: status.map(|_| "OP10".to_owned()),
            status: status.map(str::to_owned),
            started_at: status.map(|_| DateTime::<Utc>::UNIX_EPOCH),
            elapsed_seconds: status.map(|_| 60.0),
            good_units: status.map(|_| 7),
            scrap_units: status.map(|_| 2),
            planned_seconds: None,
            ideal_cycle_time_s: None,
            pause_reason: None,
            paused_since: None,
            stop_id: None,
            stop_reason: None,
            stopped_since: None,
        }
    }

    #[test]
    fn states_follow_the_active_run() {
        let snapshot = assemble(
            DateTime::<Utc>::UNIX_EPOCH,
            None,
            Vec::new(),
            vec![
                resource("R1", "BKK", Some("running")),
                resource("R2", "BKK", Some("paused")),
                resource("R3", "BKK", None),
            ],
            Vec::new(),
            vec![ReadingRow {
                resource_id: "R3".to_owned(),
                sensor: "temp".to_owned(),
                value: 37.5,
                unit: Some("C".to_owned()),
                ts: DateTime::<Utc>::UNIX_EPOCH,
                age_seconds: 0.0,
            }],
            false,
        );
        let states: Vec<ResourceState> = snapshot.resources.iter().map(|r| r.state).collect();
        assert_eq!(
            states,
            [
                ResourceState::Running,
                ResourceState::Paused,
                ResourceState::Idle
            ]
        );
        let run = snapshot.resources[0]
            .run
            .as_ref()
            .map(|r| (r.good_units, r.scrap_units));
        assert_eq!(run, Some((7, 2)));
        assert!(snapshot.resources[2].run.is_none());
        assert_eq!(snapshot.resources[2].readings.len(), 1);
        assert!(snapshot.resources[0].readings.is_empty());
    }
}
