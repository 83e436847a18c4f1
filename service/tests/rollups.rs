//! The rollups of migration 0023 (`readings_1m`, `readings_1h`) against real PostgreSQL
//! (testkit's private server, or the one `EDGE_MES_TEST_DATABASE_URL` names; every test has its
//! own database). Plain PostgreSQL only: the TimescaleDB path (continuous aggregates) is not run
//! here.
//!
//! A load is what the worker does: the batch's rows and its ledger entry in one transaction, the
//! ledger's exclusion constraint refusing a byte range loaded before. After every scenario the
//! rollups must equal a GROUP BY over the raw readings: n, sum, min, max and mean exactly (the
//! values are multiples of 1/4, so every sum is exact in any order), m2 to rounding.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use chrono::{DateTime, TimeZone, Utc};
use service::db::{MigrateMode, PoolSettings};
use sqlx::migrate::Migrate;
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;
use testkit::PgHandle;
use tokio::sync::OnceCell;

async fn pg() -> &'static PgHandle {
    static PG: OnceCell<PgHandle> = OnceCell::const_new();
    PG.get_or_init(|| async { testkit::pg_for_test().await.expect("postgres for test") })
        .await
}

fn settings() -> PoolSettings {
    PoolSettings {
        application_name: "rollups-test",
        max_connections: 6,
        acquire_timeout: Duration::from_secs(30),
        ping_if_idle_for: None,
    }
}

async fn empty_database() -> (PgPool, String) {
    let url = pg().await.url(&testkit::unique_name("rollups"));
    let pool = service::db::connect(&url, &settings()).await.unwrap();
    (pool, url)
}

/// A database migrated by this release.
async fn migrated() -> PgPool {
    let (pool, _) = empty_database().await;
    service::db::migrate(&pool).await.expect("migrate");
    pool
}

fn at(day: u32, hour: u32, minute: u32, second: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 3, day, hour, minute, second)
        .unwrap()
}

/// One reading: (ts, resource, sensor, value).
type Row = (DateTime<Utc>, &'static str, &'static str, f64);

/// `count` readings of each of two resources and two sensors, every `step_s` seconds from
/// `start`, with values in [0, 100) that are multiples of 1/4 (deterministic per `seed`).
fn series(start: DateTime<Utc>, count: i64, step_s: i64, seed: u64) -> Vec<Row> {
    let mut state = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
    let mut rows = Vec::new();
    for i in 0..count {
        let ts = start + chrono::Duration::seconds(i * step_s);
        for resource in ["SMT01", "SMT02"] {
            for sensor in ["temp", "speed"] {
                state = state
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                let quarter = (state >> 33) % 400;
                rows.push((ts, resource, sensor, quarter as f64 / 4.0));
            }
        }
    }
    rows
}

/// Loads `rows` as the worker does: rows and ledger entry (`source`, bytes `[lo, hi)`, the rows'
/// time span) in one transaction. Returns the database's refusal, e.g. of a byte range loaded
/// before.
async fn load(pool: &PgPool, source: &str, lo: i64, hi: i64, rows: &[Row]) -> sqlx::Result<()> {
    load_with_span(pool, source, lo, hi, rows, true).await
}

/// [`load`], with the ledger entry's time span left unknown (NULL) when `span` is false, as a
/// worker older than migration 0021 writes it.
async fn load_with_span(
    pool: &PgPool,
    source: &str,
    lo: i64,
    hi: i64,
    rows: &[Row],
    span: bool,
) -> sqlx::Result<()> {
    let ts: Vec<DateTime<Utc>> = rows.iter().map(|r| r.0).collect();
    let resource: Vec<&str> = rows.iter().map(|r| r.1).collect();
    let sensor: Vec<&str> = rows.iter().map(|r| r.2).collect();
    let value: Vec<f64> = rows.iter().map(|r| r.3).collect();
    let mut tx = pool.begin().await?;
    sqlx::query(
        "INSERT INTO readings (ts, site, resource_id, sensor, value)
         SELECT t, 'BKK', r, s, v FROM unnest($1::timestamptz[], $2::text[], $3::text[],
                                               $4::float8[]) AS u(t, r, s, v)",
    )
    .bind(&ts)
    .bind(&resource)
    .bind(&sensor)
    .bind(&value)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO ingest_ledger (source, byte_range, site, box_id, path, lines, rows_loaded,
                                    rejected, min_ts, max_ts)
         VALUES ($1, int8range($2, $3), 'BKK', 'edge-01', '/hot/a.jsonl', $4, $4, 0, $5, $6)",
    )
    .bind(source)
    .bind(lo)
    .bind(hi)
    .bind(rows.len() as i64)
    .bind(ts.iter().min().copied().filter(|_| span))
    .bind(ts.iter().max().copied().filter(|_| span))
    .execute(&mut *tx)
    .await?;
    tx.commit().await
}

async fn refresh(pool: &PgPool) -> i32 {
    sqlx::query_scalar("SELECT edge_mes_refresh_rollups(1000)")
        .fetch_one(pool)
        .await
        .unwrap()
}

async fn scalar_i64(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.unwrap()
}

/// Rows of `table` that differ from a GROUP BY over readings at `width` (both ways), as text.
async fn differences(pool: &PgPool, table: &str, width: &str) -> Vec<String> {
    differences_since(pool, table, width, "-infinity").await
}

/// [`differences`] for the buckets from `since` on.
async fn differences_since(pool: &PgPool, table: &str, width: &str, since: &str) -> Vec<String> {
    let sql = format!(
        "WITH raw AS (
             SELECT date_bin(INTERVAL '{width}', ts, timestamptz 'epoch') AS bucket, site,
                    resource_id, sensor, count(*) AS n, sum(value) AS sum, min(value) AS min,
                    max(value) AS max, avg(value) AS mean
             FROM readings WHERE ts >= timestamptz '{since}' GROUP BY 1, 2, 3, 4
         ), rollup AS (
             SELECT bucket, site, resource_id, sensor, n, sum, min, max, mean FROM {table}
             WHERE bucket >= timestamptz '{since}'
         )
         SELECT 'raw only: ' || d::text FROM (SELECT * FROM raw EXCEPT ALL SELECT * FROM rollup) d
         UNION ALL
         SELECT '{table} only: ' || d::text
         FROM (SELECT * FROM rollup EXCEPT ALL SELECT * FROM raw) d
         LIMIT 20"
    );
    sqlx::query_scalar(&sql).fetch_all(pool).await.unwrap()
}

/// The largest relative difference between `table`'s m2 and n * var_pop over the raw readings.
async fn m2_error(pool: &PgPool, table: &str, width: &str) -> f64 {
    let sql = format!(
        "SELECT coalesce(max(abs(t.m2 - r.m2) / greatest(r.m2, 1)), 0)
         FROM {table} t
         JOIN (SELECT date_bin(INTERVAL '{width}', ts, timestamptz 'epoch') AS bucket, site,
                      resource_id, sensor, var_pop(value) * count(*) AS m2
               FROM readings GROUP BY 1, 2, 3, 4) r
           USING (bucket, site, resource_id, sensor)"
    );
    sqlx::query_scalar(&sql).fetch_one(pool).await.unwrap()
}

/// Both rollups equal a GROUP BY over the raw readings, and nothing is left queued.
async fn assert_rollups_match_raw(pool: &PgPool) {
    for (table, width) in [("readings_1m", "1 minute"), ("readings_1h", "1 hour")] {
        let diff = differences(pool, table, width).await;
        assert!(
            diff.is_empty(),
            "{table} differs from readings:\n{}",
            diff.join("\n")
        );
        let m2 = m2_error(pool, table, width).await;
        assert!(m2 < 1e-9, "{table}.m2 relative error {m2}");
    }
    assert_eq!(
        scalar_i64(pool, "SELECT count(*) FROM rollup_queue").await,
        0,
        "queue drained"
    );
}

/// readings_1m and readings_1h as text, to show that something did not change.
async fn snapshot(pool: &PgPool) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT 'm ' || t::text FROM readings_1m t
         UNION ALL SELECT 'h ' || t::text FROM readings_1h t ORDER BY 1",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn rollups_equal_a_group_by_over_raw_readings_after_loads() {
    let db = migrated().await;
    // Three batches of one file over two hours and a half, one of another file interleaved.
    let rows = series(at(1, 10, 0, 0), 900, 10, 1);
    let (a, b) = rows.split_at(1200);
    let (b, c) = b.split_at(1200);
    load(&db, "file-a", 0, 100, a).await.unwrap();
    load(&db, "file-a", 100, 200, b).await.unwrap();
    load(&db, "file-b", 0, 50, &series(at(1, 10, 30, 5), 100, 7, 2))
        .await
        .unwrap();
    assert!(refresh(&db).await >= 1);
    load(&db, "file-a", 200, 300, c).await.unwrap();
    refresh(&db).await;

    assert_rollups_match_raw(&db).await;
    let readings = scalar_i64(&db, "SELECT count(*) FROM readings").await;
    assert_eq!(readings, 4 * (900 + 100));
    assert_eq!(
        scalar_i64(&db, "SELECT sum(n)::bigint FROM readings_1h").await,
        readings
    );
    // Each series' 10:00 minute: 6 readings every 10 s.
    let n: i64 = sqlx::query_scalar(
        "SELECT n FROM readings_1m WHERE resource_id = 'SMT01' AND sensor = 'temp'
         AND bucket = '2025-03-01T10:00:00Z'",
    )
    .fetch_one(&db)
    .await
    .unwrap();
    assert_eq!(n, 6);
    // Nothing queued: a refresh finds nothing to do and changes nothing.
    let before = snapshot(&db).await;
    assert_eq!(refresh(&db).await, 0);
    assert_eq!(snapshot(&db).await, before);
}

#[tokio::test]
async fn late_rows_for_an_old_bucket_reach_the_rollups() {
    let db = migrated().await;
    load(&db, "live", 0, 100, &series(at(3, 8, 0, 0), 720, 5, 3))
        .await
        .unwrap();
    refresh(&db).await;
    assert_rollups_match_raw(&db).await;

    // Two days later a box ships what it had kept: rows for buckets already rolled up (8:00 to
    // 8:10 of day 3, beside the ones there) and for an hour with no rows yet.
    load(&db, "late-box", 0, 10, &series(at(3, 8, 0, 2), 120, 5, 4))
        .await
        .unwrap();
    load(
        &db,
        "late-box",
        10,
        20,
        &series(at(1, 23, 59, 58), 10, 1, 5),
    )
    .await
    .unwrap();
    // Live data goes on meanwhile.
    load(&db, "live", 100, 200, &series(at(5, 9, 0, 0), 60, 1, 6))
        .await
        .unwrap();
    let pending: Vec<(DateTime<Utc>, DateTime<Utc>)> =
        sqlx::query_as("SELECT from_ts, to_ts FROM edge_mes_rollup_pending(10)")
            .fetch_all(&db)
            .await
            .unwrap();
    // Only the minutes loaded are recomputed, not the days between them.
    assert_eq!(
        pending,
        vec![
            (at(1, 23, 59, 0), at(2, 0, 1, 0)),
            (at(3, 8, 0, 0), at(3, 8, 10, 0)),
            (at(5, 9, 0, 0), at(5, 9, 1, 0)),
        ]
    );
    refresh(&db).await;
    assert_rollups_match_raw(&db).await;
    let n: i64 = sqlx::query_scalar(
        "SELECT n FROM readings_1m WHERE resource_id = 'SMT02' AND sensor = 'speed'
         AND bucket = '2025-03-03T08:05:00Z'",
    )
    .fetch_one(&db)
    .await
    .unwrap();
    assert_eq!(n, 24, "12 live and 12 late readings");
}

#[tokio::test]
async fn a_redelivered_batch_is_refused_and_changes_no_rollup() {
    let db = migrated().await;
    let batch = series(at(2, 12, 0, 0), 300, 2, 7);
    load(&db, "file-a", 0, 100, &batch).await.unwrap();
    refresh(&db).await;
    assert_rollups_match_raw(&db).await;
    let before = snapshot(&db).await;

    // The same batch again, and one overlapping it: the ledger refuses both (exclusion
    // constraint), so neither rows nor a queue entry remain.
    for (lo, hi) in [(0, 100), (50, 150)] {
        let err = load(&db, "file-a", lo, hi, &batch).await.unwrap_err();
        let code = err.as_database_error().and_then(|e| e.code());
        assert_eq!(code.as_deref(), Some("23P01"), "{err}");
    }
    assert_eq!(
        scalar_i64(&db, "SELECT count(*) FROM rollup_queue").await,
        0
    );
    assert_eq!(refresh(&db).await, 0);
    assert_eq!(snapshot(&db).await, before);
    assert_rollups_match_raw(&db).await;
}

#[tokio::test]
async fn ledger_compaction_queues_nothing_and_loses_nothing() {
    let db = migrated().await;
    load(&db, "file-a", 0, 100, &series(at(4, 1, 0, 0), 50, 3, 8))
        .await
        .unwrap();
    load(&db, "file-a", 100, 200, &series(at(4, 1, 2, 30), 50, 3, 9))
        .await
        .unwrap();
    assert_eq!(
        scalar_i64(&db, "SELECT count(*) FROM rollup_queue").await,
        2
    );
    let merged: i32 = sqlx::query_scalar("SELECT edge_mes_compact_ledger(10)")
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(merged, 1);
    // The merged entry re-inserted by compaction queued nothing; the loads' entries stay.
    assert_eq!(
        scalar_i64(&db, "SELECT count(*) FROM rollup_queue").await,
        2
    );
    // A load after compaction, in a transaction of its own, is queued as usual.
    load(&db, "file-a", 200, 300, &series(at(4, 1, 5, 0), 10, 3, 10))
        .await
        .unwrap();
    assert_eq!(
        scalar_i64(&db, "SELECT count(*) FROM rollup_queue").await,
        3
    );
    refresh(&db).await;
    assert_rollups_match_raw(&db).await;
}

#[tokio::test]
async fn the_upkeep_protocol_leaves_what_was_queued_after_pending() {
    let db = migrated().await;
    load(&db, "file-a", 0, 100, &series(at(6, 6, 0, 0), 200, 3, 11))
        .await
        .unwrap();
    let pending: Vec<(DateTime<Utc>, DateTime<Utc>, Vec<i64>)> =
        sqlx::query_as("SELECT from_ts, to_ts, queued FROM edge_mes_rollup_pending(10)")
            .fetch_all(&db)
            .await
            .unwrap();
    assert_eq!(pending.len(), 1);
    // A load of the same minutes commits between pending and apply: the caller's apply may or
    // may not see it, so done must keep its entry.
    load(&db, "file-b", 0, 100, &series(at(6, 6, 1, 1), 20, 3, 12))
        .await
        .unwrap();
    for (from, to, queued) in &pending {
        let applied: bool = sqlx::query_scalar("SELECT edge_mes_rollup_apply($1, $2)")
            .bind(from)
            .bind(to)
            .fetch_one(&db)
            .await
            .unwrap();
        assert!(applied, "plain PostgreSQL recomputes in apply");
        sqlx::query("SELECT edge_mes_rollup_done($1, $2, $3)")
            .bind(from)
            .bind(to)
            .bind(queued)
            .execute(&db)
            .await
            .unwrap();
    }
    assert_eq!(
        scalar_i64(&db, "SELECT count(*) FROM rollup_queue").await,
        1
    );
    assert_eq!(refresh(&db).await, 1);
    assert_rollups_match_raw(&db).await;

    // A range longer than a day comes in pieces of at most one day, oldest first.
    load(&db, "file-c", 0, 100, &series(at(7, 0, 0, 0), 300, 900, 13))
        .await
        .unwrap();
    let pieces: Vec<(DateTime<Utc>, DateTime<Utc>)> =
        sqlx::query_as("SELECT from_ts, to_ts FROM edge_mes_rollup_pending(2)")
            .fetch_all(&db)
            .await
            .unwrap();
    assert_eq!(
        pieces,
        vec![
            (at(7, 0, 0, 0), at(8, 0, 0, 0)),
            (at(8, 0, 0, 0), at(9, 0, 0, 0))
        ]
    );
    assert_eq!(refresh(&db).await, 4, "three days and 2 h 46 min");
    assert_rollups_match_raw(&db).await;
}

#[tokio::test]
async fn two_refreshers_beside_a_loader_end_equal_to_raw() {
    let db = migrated().await;
    let loader = {
        let db = db.clone();
        tokio::spawn(async move {
            for i in 0..40_i64 {
                // Live minutes and, every fifth batch, late rows for the first hour.
                let start = if i % 5 == 4 {
                    at(9, 0, (i % 60) as u32, 1)
                } else {
                    at(9, 1, 0, 0) + chrono::Duration::seconds(i * 30)
                };
                let rows = series(start, 30, 1, 100 + i as u64);
                load(&db, "file-a", i * 100, (i + 1) * 100, &rows)
                    .await
                    .unwrap();
            }
        })
    };
    // One refresher calls the plain all-in-one function, the other the upkeep protocol.
    let plain = {
        let db = db.clone();
        tokio::spawn(async move {
            let mut runs = 0;
            while runs < 200 {
                refresh(&db).await;
                runs += 1;
                tokio::task::yield_now().await;
            }
        })
    };
    let protocol = {
        let db = db.clone();
        tokio::spawn(async move {
            for _ in 0..200 {
                let pending: Vec<(DateTime<Utc>, DateTime<Utc>, Vec<i64>)> =
                    sqlx::query_as("SELECT from_ts, to_ts, queued FROM edge_mes_rollup_pending(5)")
                        .fetch_all(&db)
                        .await
                        .unwrap();
                for (from, to, queued) in pending {
                    sqlx::query("SELECT edge_mes_rollup_apply($1, $2)")
                        .bind(from)
                        .bind(to)
                        .execute(&db)
                        .await
                        .unwrap();
                    sqlx::query("SELECT edge_mes_rollup_done($1, $2, $3)")
                        .bind(from)
                        .bind(to)
                        .bind(&queued)
                        .execute(&db)
                        .await
                        .unwrap();
                }
            }
        })
    };
    loader.await.unwrap();
    plain.await.unwrap();
    protocol.await.unwrap();
    // Whatever the last loads left queued is refreshed by the next call.
    let deadline = Instant::now() + Duration::from_secs(30);
    while scalar_i64(&db, "SELECT count(*) FROM rollup_queue").await > 0 {
        assert!(
            Instant::now() < deadline,
            "rollup queue not drained in 30 s"
        );
        refresh(&db).await;
    }
    assert_eq!(
        scalar_i64(&db, "SELECT count(*) FROM readings").await,
        40 * 30 * 4
    );
    assert_rollups_match_raw(&db).await;
}

#[tokio::test]
async fn a_dropped_day_keeps_its_rollups_when_late_rows_arrive() {
    let db = migrated().await;
    sqlx::query("SELECT edge_mes_ensure_partitions('2025-03-10', '2025-03-11')")
        .execute(&db)
        .await
        .unwrap();
    load(&db, "day-10", 0, 100, &series(at(10, 5, 0, 0), 360, 10, 14))
        .await
        .unwrap();
    load(&db, "day-11", 0, 100, &series(at(11, 5, 0, 0), 60, 10, 15))
        .await
        .unwrap();
    refresh(&db).await;
    assert_rollups_match_raw(&db).await;
    let kept: Vec<String> = sqlx::query_scalar(
        "SELECT t::text FROM readings_1m t WHERE bucket < '2025-03-11' ORDER BY 1",
    )
    .fetch_all(&db)
    .await
    .unwrap();
    let kept_hours: Vec<String> = sqlx::query_scalar(
        "SELECT t::text FROM readings_1h t WHERE bucket < '2025-03-11' ORDER BY 1",
    )
    .fetch_all(&db)
    .await
    .unwrap();

    // Retention drops day 10; then a late row for one of its minutes arrives (it lands in
    // readings_default). Recomputing that minute from what is left (one row) must not replace
    // the complete figures of the dropped day.
    let dropped: i32 = sqlx::query_scalar("SELECT edge_mes_drop_partitions_before('2025-03-11')")
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(dropped, 1);
    load(
        &db,
        "late",
        0,
        1,
        &[(at(10, 5, 30, 1), "SMT01", "temp", 20.25)],
    )
    .await
    .unwrap();
    refresh(&db).await;
    assert_eq!(
        scalar_i64(&db, "SELECT count(*) FROM rollup_queue").await,
        0
    );
    let after: Vec<String> = sqlx::query_scalar(
        "SELECT t::text FROM readings_1m t WHERE bucket < '2025-03-11' ORDER BY 1",
    )
    .fetch_all(&db)
    .await
    .unwrap();
    let after_hours: Vec<String> = sqlx::query_scalar(
        "SELECT t::text FROM readings_1h t WHERE bucket < '2025-03-11' ORDER BY 1",
    )
    .fetch_all(&db)
    .await
    .unwrap();
    assert_eq!(after, kept);
    assert_eq!(after_hours, kept_hours);
    // Day 11, still raw, is as before.
    for (table, width) in [("readings_1m", "1 minute"), ("readings_1h", "1 hour")] {
        let diff = differences_since(&db, table, width, "2025-03-11T00:00:00Z").await;
        assert!(diff.is_empty(), "{table}:\n{}", diff.join("\n"));
    }
}

#[tokio::test]
async fn readings_loaded_before_the_migration_are_rolled_up() {
    let (db, _) = empty_database().await;
    let migrator = &service::db::MIGRATOR;
    {
        let mut conn = db.acquire().await.unwrap();
        conn.ensure_migrations_table().await.unwrap();
        for m in migrator.iter().filter(|m| m.version < 23) {
            conn.apply(m).await.expect("apply a migration before 0023");
        }
    }
    // Rows a release without rollups loaded (its ledger entries hold no time span).
    let rows = series(at(12, 7, 0, 0), 400, 9, 16);
    load_with_span(&db, "old", 0, 100, &rows, false)
        .await
        .unwrap();
    service::db::migrate(&db).await.expect("migrate to 0023");
    assert_eq!(
        scalar_i64(&db, "SELECT count(*) FROM rollup_queue").await,
        1
    );
    refresh(&db).await;
    assert_rollups_match_raw(&db).await;

    // A load from an older worker (rows, no span) is taken to touch everything.
    load_with_span(
        &db,
        "old",
        100,
        200,
        &series(at(12, 9, 0, 0), 30, 9, 17),
        false,
    )
    .await
    .unwrap();
    let unknown: bool = sqlx::query_scalar(
        "SELECT bool_and(lower_inf(span) AND upper_inf(span)) FROM rollup_queue",
    )
    .fetch_one(&db)
    .await
    .unwrap();
    assert!(unknown, "an entry without a span is queued as everything");
    refresh(&db).await;
    assert_rollups_match_raw(&db).await;
}

#[tokio::test]
async fn the_worker_refreshes_and_the_readers_read_the_rollups() {
    let url = pg().await.url(&testkit::unique_name("rollups_lp"));
    let owner = service::db::connect(&url, &settings()).await.unwrap();
    service::db::prepare(&owner, MigrateMode::Auto)
        .await
        .unwrap();
    load(
        &owner,
        "file-a",
        0,
        100,
        &series(at(13, 3, 0, 0), 100, 6, 18),
    )
    .await
    .unwrap();
    let mut logins = Vec::new();
    for group in ["edge_mes_worker", "edge_mes_api", "edge_mes_mes_reader"] {
        let name = testkit::unique_name("login");
        sqlx::query(&format!(
            "CREATE ROLE {name} LOGIN PASSWORD 'pw' IN ROLE {group}"
        ))
        .execute(&owner)
        .await
        .unwrap();
        // A bare pool: what is checked here is the grants, not the services' connection set-up.
        let pool = PgPoolOptions::new()
            .max_connections(2)
            .connect(&testkit::with_login(&url, &name, "pw"))
            .await
            .unwrap();
        logins.push((group, pool));
    }
    let worker = &logins[0].1;
    // The protocol's first call, with the worker's retention days (no horizon on plain
    // PostgreSQL: the queued range is there whatever its age).
    let pending: Vec<(DateTime<Utc>, DateTime<Utc>, Vec<i64>)> =
        sqlx::query_as("SELECT from_ts, to_ts, queued FROM edge_mes_rollup_pending(10, 90)")
            .fetch_all(worker)
            .await
            .unwrap();
    assert_eq!(pending.len(), 1);
    assert!(refresh(worker).await >= 1);
    assert_rollups_match_raw(&owner).await;
    for (group, pool) in &logins {
        for table in ["readings_1m", "readings_1h"] {
            let n = scalar_i64(pool, &format!("SELECT sum(n)::bigint FROM {table}")).await;
            assert_eq!(n, 400, "{group} reads {table}");
        }
    }
    for (group, pool) in &logins[1..] {
        let err = sqlx::query("SELECT edge_mes_refresh_rollups(1)")
            .execute(pool)
            .await
            .unwrap_err();
        let code = err.as_database_error().and_then(|e| e.code());
        assert_eq!(code.as_deref(), Some("42501"), "{group}: {err}");
    }
}

#[tokio::test]
async fn readings_near_the_double_precision_limit_do_not_stop_the_rollups() {
    let db = migrated().await;
    // Valid readings whose sums overflow double precision, beside ordinary ones.
    let rows: Vec<Row> = vec![
        (at(14, 10, 0, 1), "SMT01", "temp", 1.7e308),
        (at(14, 10, 0, 2), "SMT01", "temp", 1.7e308),
        (at(14, 10, 1, 2), "SMT01", "temp", 1e308),
        (at(14, 10, 2, 2), "SMT01", "temp", 1e308),
        (at(14, 10, 2, 3), "SMT01", "speed", 2.5),
    ];
    load(&db, "huge", 0, 100, &rows).await.unwrap();
    assert_eq!(refresh(&db).await, 1);
    assert_eq!(
        scalar_i64(&db, "SELECT count(*) FROM rollup_queue").await,
        0
    );
    let hour: (i64, f64, f64, f64, f64) =
        sqlx::query_as("SELECT n, sum, min, max, mean FROM readings_1h WHERE sensor = 'temp'")
            .fetch_one(&db)
            .await
            .unwrap();
    assert_eq!(hour, (4, f64::INFINITY, 1e308, 1.7e308, 1.35e308));
    let minute: (i64, f64, f64) = sqlx::query_as(
        "SELECT n, sum, mean FROM readings_1m WHERE sensor = 'temp'
         AND bucket = '2025-03-14T10:00:00Z'",
    )
    .fetch_one(&db)
    .await
    .unwrap();
    assert_eq!(minute, (2, f64::INFINITY, 1.7e308));
    let speed: (i64, f64) = sqlx::query_as("SELECT n, sum FROM readings_1h WHERE sensor = 'speed'")
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(speed, (1, 2.5));
}
