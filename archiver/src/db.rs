//! The archive's state in PostgreSQL (db/migrations/0021_archive.sql): which days are pending,
//! the parts of a day, recording a part, verification, replays.

use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use sqlx::{PgConnection, PgPool};

use crate::manifest::SourcePositions;

/// A UTC day as the half-open interval of instants `[start, end)`.
pub fn day_bounds(day: NaiveDate) -> (DateTime<Utc>, DateTime<Utc>) {
    let start = day.and_time(chrono::NaiveTime::MIN).and_utc();
    (start, start + chrono::Duration::days(1))
}

/// Opens the archiver's pool.
pub async fn connect(url: &str) -> Result<PgPool, service::db::DbSetupError> {
    let settings = service::db::PoolSettings {
        application_name: "edge-mes-archiver",
        max_connections: 4,
        acquire_timeout: Duration::from_secs(30),
        ping_if_idle_for: None,
    };
    service::db::connect(url, &settings).await
}

/// Key of the session lock that keeps one archiver at work per database.
pub const RUN_LOCK_KEY: &str = "edge_mes_archiver";

/// Takes the run lock on `conn` without waiting: `true` when this session holds it.
pub async fn try_run_lock(conn: &mut PgConnection) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtext($1))")
        .bind(RUN_LOCK_KEY)
        .fetch_one(conn)
        .await
}

/// Closed days (before `closed_before`) that hold rows and have a ledger entry of known time span
/// that touches them and lies outside what their parts recorded, ascending.
pub async fn pending_days(
    pool: &PgPool,
    closed_before: NaiveDate,
) -> Result<Vec<NaiveDate>, sqlx::Error> {
    sqlx::query_scalar(
        "WITH spans AS (
             SELECT l.source, l.byte_range, g.d::date AS day
             FROM ingest_ledger l,
                  LATERAL generate_series((l.min_ts AT TIME ZONE 'UTC')::date,
                                          least((l.max_ts AT TIME ZONE 'UTC')::date, $1 - 1),
                                          INTERVAL '1 day') AS g(d)
             WHERE l.min_ts IS NOT NULL AND l.max_ts IS NOT NULL
               AND (l.min_ts AT TIME ZONE 'UTC')::date < $1
         )
         , uncovered AS (
             SELECT DISTINCT s.day FROM spans s
             WHERE NOT coalesce((SELECT s.byte_range <@ range_agg(p.byte_range)
                                 FROM archive_part_positions p
                                 WHERE p.day = s.day AND p.source = s.source), false)
         )
         -- Only days that hold rows: a span over days without any (rows removed, or a source
         -- whose readings jump in time) leaves them pending with nothing to archive.
         SELECT u.day FROM uncovered u
         WHERE EXISTS (SELECT 1 FROM readings r
                       WHERE r.ts >= (u.day::timestamp AT TIME ZONE 'UTC')
                         AND r.ts < ((u.day + 1)::timestamp AT TIME ZONE 'UTC'))
         ORDER BY u.day",
    )
    .bind(closed_before)
    .fetch_all(pool)
    .await
}

/// Whether some ledger entry has no time span (written before migration 0021 or by an older
/// worker): such an entry touches every day.
pub async fn has_unknown_spans(pool: &PgPool) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM ingest_ledger WHERE min_ts IS NULL OR max_ts IS NULL)",
    )
    .fetch_one(pool)
    .await
}

/// Closed days that hold rows, found by scanning readings: the candidates for ledger entries of
/// unknown span. A full scan, done once per start while such entries exist.
pub async fn days_with_rows(
    pool: &PgPool,
    closed_before: NaiveDate,
) -> Result<Vec<NaiveDate>, sqlx::Error> {
    let (end, _) = day_bounds(closed_before);
    sqlx::query_scalar(
        "SELECT DISTINCT (ts AT TIME ZONE 'UTC')::date AS day FROM readings WHERE ts < $1 ORDER BY 1",
    )
    .bind(end)
    .fetch_all(pool)
    .await
}

/// Closed days that have storage (a daily partition, rows in `readings_default`, or a
/// TimescaleDB chunk) but no archive part: read from the catalog, not by scanning readings
/// (except `readings_default`, which holds only the rare rows outside the partitions). Finds
/// days whose rows did not come through the ingest ledger, so no ledger entry makes them pending.
pub async fn days_without_parts(
    pool: &PgPool,
    closed_before: NaiveDate,
) -> Result<Vec<NaiveDate>, sqlx::Error> {
    let partitioned: bool = sqlx::query_scalar("SELECT edge_mes_readings_partitioned()")
        .fetch_one(pool)
        .await?;
    let (end, _) = day_bounds(closed_before);
    let days: Vec<NaiveDate> = if partitioned {
        let mut days: Vec<NaiveDate> = sqlx::query_scalar(
            "SELECT to_date(substr(c.relname, 11), 'YYYYMMDD') AS day
             FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
             WHERE i.inhparent = 'readings'::regclass AND c.relname ~ '^readings_p[0-9]{8}$'",
        )
        .fetch_all(pool)
        .await?;
        // The partition itself is readable only with a grant on it (the owner, a superuser);
        // edge_mes_archiver reads readings, so its rows in the default partition are found
        // through their ledger entries instead.
        let readable: bool = sqlx::query_scalar(
            "SELECT to_regclass('readings_default') IS NOT NULL
                    AND has_table_privilege('readings_default', 'SELECT')",
        )
        .fetch_one(pool)
        .await?;
        if readable {
            days.extend(
                sqlx::query_scalar::<_, NaiveDate>(
                    "SELECT DISTINCT (ts AT TIME ZONE 'UTC')::date FROM readings_default
                     WHERE ts < $1",
                )
                .bind(end)
                .fetch_all(pool)
                .await?,
            );
        }
        days
    } else {
        sqlx::query_scalar(
            "SELECT DISTINCT (range_start AT TIME ZONE 'UTC')::date
             FROM timescaledb_information.chunks
             WHERE hypertable_schema = 'public' AND hypertable_name = 'readings'",
        )
        .fetch_all(pool)
        .await?
    };
    let mut out = Vec::new();
    for day in days.into_iter().filter(|d| *d < closed_before) {
        let known: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM archive_parts WHERE day = $1)")
                .bind(day)
                .fetch_one(pool)
                .await?;
        if !known {
            out.push(day);
        }
    }
    out.sort_unstable();
    Ok(out)
}

pub async fn day_pending(conn: &mut PgConnection, day: NaiveDate) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT edge_mes_archive_day_pending($1)")
        .bind(day)
        .fetch_one(conn)
        .await
}

/// One row of `archive_parts`.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct PartRow {
    pub day: NaiveDate,
    pub part: i32,
    pub manifest_path: String,
    pub manifest_sha256: String,
    pub rows: i64,
    pub verified_at: Option<DateTime<Utc>>,
    pub sealed_at: Option<DateTime<Utc>>,
}

const PART_COLUMNS: &str =
    "day, part, manifest_path, manifest_sha256, rows, verified_at, sealed_at";

pub async fn parts_of_day(
    conn: &mut PgConnection,
    day: NaiveDate,
) -> Result<Vec<PartRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {PART_COLUMNS} FROM archive_parts WHERE day = $1 ORDER BY part"
    ))
    .bind(day)
    .fetch_all(conn)
    .await
}

/// Every part, optionally of days in `[from, to]`.
pub async fn parts(
    pool: &PgPool,
    from: Option<NaiveDate>,
    to: Option<NaiveDate>,
) -> Result<Vec<PartRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {PART_COLUMNS} FROM archive_parts
         WHERE ($1::date IS NULL OR day >= $1) AND ($2::date IS NULL OR day <= $2)
         ORDER BY day, part"
    ))
    .bind(from)
    .bind(to)
    .fetch_all(pool)
    .await
}

pub async fn count_day_rows(conn: &mut PgConnection, day: NaiveDate) -> Result<i64, sqlx::Error> {
    let (start, end) = day_bounds(day);
    sqlx::query_scalar("SELECT count(*) FROM readings WHERE ts >= $1 AND ts < $2")
        .bind(start)
        .bind(end)
        .fetch_one(conn)
        .await
}

/// The ledger ranges that touch `day` (unknown spans touch every day).
pub async fn day_positions(
    conn: &mut PgConnection,
    day: NaiveDate,
) -> Result<Vec<(String, i64, i64)>, sqlx::Error> {
    let (start, end) = day_bounds(day);
    sqlx::query_as(
        "SELECT source, lower(byte_range), upper(byte_range) FROM ingest_ledger
         WHERE min_ts IS NULL OR max_ts IS NULL OR (min_ts < $2 AND max_ts >= $1)",
    )
    .bind(start)
    .bind(end)
    .fetch_all(conn)
    .await
}

/// A day's rows, in whatever order the database has them (the archiver sorts per series).
pub const DAY_ROWS_SQL: &str =
    "SELECT site, resource_id, sensor, ts, work_order_id, operation_id, value, unit, meta::text
     FROM readings WHERE ts >= $1 AND ts < $2";

/// A row of [`DAY_ROWS_SQL`].
pub type DayRow = (
    String,
    String,
    String,
    DateTime<Utc>,
    Option<String>,
    Option<String>,
    f64,
    Option<String>,
    Option<String>,
);

/// What [`record_part`] writes.
#[derive(Debug, Clone)]
pub struct NewPart<'a> {
    pub day: NaiveDate,
    pub part: i32,
    pub manifest_path: &'a str,
    pub manifest_sha256: &'a str,
    pub rows: i64,
    pub files: i32,
    pub bytes: i64,
    pub positions: &'a [SourcePositions],
    /// Seal this earlier part first: its rows left the database without a release.
    pub seal_first: Option<i32>,
}

/// Outcome of [`record_part`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// New, or changed (verified_at cleared).
    Written,
    /// The same manifest was recorded already; nothing changed.
    Unchanged,
    /// The part was sealed meanwhile (retention released the day): not changed.
    Sealed,
}

/// Records a part and its positions in one transaction.
pub async fn record_part(pool: &PgPool, p: &NewPart<'_>) -> Result<Recorded, sqlx::Error> {
    let mut tx = pool.begin().await?;
    // Serialises with a release of the day (which updates these rows).
    let current: Option<(String, Option<DateTime<Utc>>)> = sqlx::query_as(
        "SELECT manifest_sha256, sealed_at FROM archive_parts WHERE day = $1 AND part = $2 FOR UPDATE",
    )
    .bind(p.day)
    .bind(p.part)
    .fetch_optional(&mut *tx)
    .await?;
    match &current {
        Some((_, Some(_))) => return Ok(Recorded::Sealed),
        Some((sha, None)) if sha == p.manifest_sha256 => return Ok(Recorded::Unchanged),
        _ => {}
    }
    if let Some(old) = p.seal_first {
        sqlx::query(
            "UPDATE archive_parts SET sealed_at = now()
             WHERE day = $1 AND part = $2 AND sealed_at IS NULL",
        )
        .bind(p.day)
        .bind(old)
        .execute(&mut *tx)
        .await?;
    }
    sqlx::query(
        "INSERT INTO archive_parts (day, part, manifest_path, manifest_sha256, rows, files, bytes)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT (day, part) DO UPDATE
         SET manifest_path = excluded.manifest_path, manifest_sha256 = excluded.manifest_sha256,
             rows = excluded.rows, files = excluded.files, bytes = excluded.bytes,
             archived_at = now(), verified_at = NULL",
    )
    .bind(p.day)
    .bind(p.part)
    .bind(p.manifest_path)
    .bind(p.manifest_sha256)
    .bind(p.rows)
    .bind(p.files)
    .bind(p.bytes)
    .execute(&mut *tx)
    .await?;
    sqlx::query("DELETE FROM archive_part_positions WHERE day = $1 AND part = $2")
        .bind(p.day)
        .bind(p.part)
        .execute(&mut *tx)
        .await?;
    let mut sources = Vec::new();
    let mut lows = Vec::new();
    let mut highs = Vec::new();
    for sp in p.positions {
        for [lo, hi] in &sp.ranges {
            sources.push(sp.source.as_str());
            lows.push(i64::try_from(*lo).unwrap_or(i64::MAX));
            highs.push(i64::try_from(*hi).unwrap_or(i64::MAX));
        }
    }
    sqlx::query(
        "INSERT INTO archive_part_positions (day, part, source, byte_range)
         SELECT $1, $2, s, int8range(lo, hi) FROM unnest($3::text[], $4::int8[], $5::int8[]) AS u(s, lo, hi)",
    )
    .bind(p.day)
    .bind(p.part)
    .bind(&sources)
    .bind(&lows)
    .bind(&highs)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Recorded::Written)
}

/// Marks a part verified if its recorded manifest is still the one verified. Returns whether a
/// row changed.
pub async fn mark_verified(
    pool: &PgPool,
    day: NaiveDate,
    part: i32,
    manifest_sha256: &str,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE archive_parts SET verified_at = now()
         WHERE day = $1 AND part = $2 AND manifest_sha256 = $3",
    )
    .bind(day)
    .bind(part)
    .bind(manifest_sha256)
    .execute(pool)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Whether a replay into this database loaded rows of `day`.
pub async fn day_replayed(conn: &mut PgConnection, day: NaiveDate) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM archive_replays WHERE day = $1)")
        .bind(day)
        .fetch_one(conn)
        .await
}
