//! SQL of SPC: a sensor's readings in a window, its specification limits (`spc_spec_limits`)
//! and its versioned control limits (`spc_control_limits`, read through `v_spc_control_limits`,
//! migration 0016). Versions of one (resource, sensor, chart, subgroup size) are numbered under
//! a transaction-scoped advisory lock of that key, so two concurrent settings get versions n and
//! n + 1, never the same; `set_at` is read after the lock, so a higher version never has an
//! earlier time.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgExecutor};

use super::StoreError;
use crate::domain::spc::{Chart, ChartLimits, ChartSpec, Lines, SubgroupSize};

/// The first key of the advisory locks that number versions (the second is the key's hash).
const VERSION_LOCK_CLASS: i32 = 0x5350_4300; // "SPC\0"

/// Which readings of a window.
#[derive(Debug, Clone, Copy)]
pub enum Take {
    /// The newest `n` (a chart of the latest points).
    Newest(i64),
    /// The oldest `n` (a baseline, whose size is checked by reading one more than allowed).
    Oldest(i64),
}

/// Readings `(ts, value)` of one sensor of one resource in `[from, to)`, in time order.
pub async fn readings<'e>(
    db: impl PgExecutor<'e>,
    resource_id: &str,
    sensor: &str,
    (from, to): (DateTime<Utc>, DateTime<Utc>),
    take: Take,
) -> Result<Vec<(DateTime<Utc>, f64)>, StoreError> {
    let (order, limit) = match take {
        Take::Newest(n) => ("DESC", n),
        Take::Oldest(n) => ("ASC", n),
    };
    let mut rows: Vec<(DateTime<Utc>, f64)> = sqlx::query_as(&format!(
        "SELECT ts, value FROM readings
         WHERE resource_id = $1 AND sensor = $2 AND ts >= $3 AND ts < $4
         ORDER BY ts {order} LIMIT $5"
    ))
    .bind(resource_id)
    .bind(sensor)
    .bind(from)
    .bind(to)
    .bind(limit)
    .fetch_all(db)
    .await?;
    if matches!(take, Take::Newest(_)) {
        rows.reverse();
    }
    Ok(rows)
}

/// `(lsl, usl)` of the resource and sensor, else of every resource (`*`) and the sensor.
pub async fn spec_limits<'e>(
    db: impl PgExecutor<'e>,
    resource_id: &str,
    sensor: &str,
) -> Result<Option<(Option<f64>, Option<f64>)>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT lsl, usl FROM spc_spec_limits
         WHERE sensor = $2 AND resource_id IN ($1, '*')
         ORDER BY resource_id = '*' LIMIT 1",
    )
    .bind(resource_id)
    .bind(sensor)
    .fetch_optional(db)
    .await?)
}

/// One version of stored control limits.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredLimits {
    pub resource_id: String,
    pub sensor: String,
    pub version: i32,
    pub limits: ChartLimits,
    pub baseline_from: DateTime<Utc>,
    pub baseline_to: DateTime<Utc>,
    pub baseline_points: i32,
    pub baseline_subgroups: i32,
    pub set_by: Option<String>,
    pub set_at: DateTime<Utc>,
    /// The highest version of its key: the one `GET /spc` applies.
    pub in_force: bool,
}

/// Limits to store as the next version of their key.
#[derive(Debug, Clone)]
pub struct NewLimits<'a> {
    pub resource_id: &'a str,
    pub sensor: &'a str,
    pub limits: ChartLimits,
    pub baseline_from: DateTime<Utc>,
    pub baseline_to: DateTime<Utc>,
    pub baseline_points: i32,
    pub baseline_subgroups: i32,
    pub set_by: Option<&'a str>,
}

const COLUMNS: &str = "resource_id, sensor, chart, subgroup_size, version, center_line, ucl, \
    lcl, dispersion_center, dispersion_ucl, dispersion_lcl, sigma_within, baseline_from, \
    baseline_to, baseline_points, baseline_subgroups, set_by, set_at";

#[derive(Debug, sqlx::FromRow)]
struct LimitsRow {
    resource_id: String,
    sensor: String,
    chart: String,
    subgroup_size: i16,
    version: i32,
    center_line: f64,
    ucl: f64,
    lcl: f64,
    dispersion_center: f64,
    dispersion_ucl: f64,
    dispersion_lcl: f64,
    sigma_within: f64,
    baseline_from: DateTime<Utc>,
    baseline_to: DateTime<Utc>,
    baseline_points: i32,
    baseline_subgroups: i32,
    set_by: Option<String>,
    set_at: DateTime<Utc>,
    in_force: bool,
}

fn corrupt(what: String) -> StoreError {
    StoreError::Database(sqlx::Error::Decode(what.into()))
}

impl TryFrom<LimitsRow> for StoredLimits {
    type Error = StoreError;
    fn try_from(r: LimitsRow) -> Result<Self, StoreError> {
        let chart: Chart = r
            .chart
            .parse()
            .map_err(|e| corrupt(format!("spc_control_limits.chart: {e}")))?;
        let size = u8::try_from(r.subgroup_size)
            .ok()
            .map(SubgroupSize::new)
            .transpose()
            .map_err(|e| corrupt(format!("spc_control_limits.subgroup_size: {e}")));
        let spec = match chart {
            Chart::IMr => Some(ChartSpec::IMr),
            Chart::XbarR => size?.map(ChartSpec::XbarR),
            Chart::XbarS => size?.map(ChartSpec::XbarS),
        }
        .ok_or_else(|| {
            corrupt(format!(
                "spc_control_limits: {chart} of {}",
                r.subgroup_size
            ))
        })?;
        Ok(StoredLimits {
            resource_id: r.resource_id,
            sensor: r.sensor,
            version: r.version,
            limits: ChartLimits {
                spec,
                location: Lines {
                    center: r.center_line,
                    ucl: r.ucl,
                    lcl: r.lcl,
                },
                dispersion: Lines {
                    center: r.dispersion_center,
                    ucl: r.dispersion_ucl,
                    lcl: r.dispersion_lcl,
                },
                sigma_within: r.sigma_within,
            },
            baseline_from: r.baseline_from,
            baseline_to: r.baseline_to,
            baseline_points: r.baseline_points,
            baseline_subgroups: r.baseline_subgroups,
            set_by: r.set_by,
            set_at: r.set_at,
            in_force: r.in_force,
        })
    }
}

/// Stores `new` as the next version of its key (1 for the first) and returns it.
pub async fn insert(
    tx: &mut PgConnection,
    new: &NewLimits<'_>,
) -> Result<StoredLimits, StoreError> {
    let spec = new.limits.spec;
    let chart = spec.chart().as_str();
    let size = i16::from(spec.subgroup_size());
    // Identifiers hold no control characters, so the unit separator keeps keys apart.
    let key = format!(
        "{}\u{1f}{}\u{1f}{chart}\u{1f}{size}",
        new.resource_id, new.sensor
    );
    sqlx::query("SELECT pg_advisory_xact_lock($1, hashtext($2))")
        .bind(VERSION_LOCK_CLASS)
        .bind(&key)
        .execute(&mut *tx)
        .await?;
    let (l, d) = (&new.limits.location, &new.limits.dispersion);
    let row: LimitsRow = sqlx::query_as(&format!(
        "INSERT INTO spc_control_limits ({COLUMNS})
         SELECT $1, $2, $3, $4, coalesce(max(version), 0) + 1, $5, $6, $7, $8, $9, $10, $11, $12,
                $13, $14, $15, $16, clock_timestamp()
         FROM spc_control_limits
         WHERE resource_id = $1 AND sensor = $2 AND chart = $3 AND subgroup_size = $4
         RETURNING {COLUMNS}, true AS in_force"
    ))
    .bind(new.resource_id)
    .bind(new.sensor)
    .bind(chart)
    .bind(size)
    .bind(l.center)
    .bind(l.ucl)
    .bind(l.lcl)
    .bind(d.center)
    .bind(d.ucl)
    .bind(d.lcl)
    .bind(new.limits.sigma_within)
    .bind(new.baseline_from)
    .bind(new.baseline_to)
    .bind(new.baseline_points)
    .bind(new.baseline_subgroups)
    .bind(new.set_by)
    .fetch_one(&mut *tx)
    .await?;
    row.try_into()
}

/// The limits in force for the resource and sensor: of `chart` (and `subgroup_size`) if given,
/// else of whichever chart was set last.
pub async fn in_force<'e>(
    db: impl PgExecutor<'e>,
    resource_id: &str,
    sensor: &str,
    chart: Option<Chart>,
    subgroup_size: Option<i16>,
) -> Result<Option<StoredLimits>, StoreError> {
    let row: Option<LimitsRow> = sqlx::query_as(&format!(
        "SELECT {COLUMNS}, in_force FROM v_spc_control_limits
         WHERE resource_id = $1 AND sensor = $2 AND in_force
           AND ($3::text IS NULL OR chart = $3)
           AND ($4::smallint IS NULL OR subgroup_size = $4)
         ORDER BY set_at DESC, version DESC LIMIT 1"
    ))
    .bind(resource_id)
    .bind(sensor)
    .bind(chart.map(Chart::as_str))
    .bind(subgroup_size)
    .fetch_optional(db)
    .await?;
    row.map(StoredLimits::try_from).transpose()
}

/// Every version for the resource and sensor (of `chart` only, if given), newest first, at most
/// `limit`.
pub async fn versions<'e>(
    db: impl PgExecutor<'e>,
    resource_id: &str,
    sensor: &str,
    chart: Option<Chart>,
    limit: i64,
) -> Result<Vec<StoredLimits>, StoreError> {
    let rows: Vec<LimitsRow> = sqlx::query_as(&format!(
        "SELECT {COLUMNS}, in_force FROM v_spc_control_limits
         WHERE resource_id = $1 AND sensor = $2 AND ($3::text IS NULL OR chart = $3)
         ORDER BY set_at DESC, version DESC LIMIT $4"
    ))
    .bind(resource_id)
    .bind(sensor)
    .bind(chart.map(Chart::as_str))
    .bind(limit)
    .fetch_all(db)
    .await?;
    rows.into_iter().map(StoredLimits::try_from).collect()
}
