//! The migrations against real PostgreSQL (testkit's private server, or the one
//! `EDGE_MES_TEST_DATABASE_URL` names; every test has its own databases).
//!
//! A fresh database migrated by this release and a database created by the legacy migrations
//! (`tests/fixtures/legacy-migrations`: `db/migrations` as released before issue 12 split it by
//! concern) and then migrated by this release must have the same schema, object by object
//! ([`catalog`]), and the same `_sqlx_migrations`; a legacy history that is not complete is
//! refused.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod catalog;

use std::path::Path;
use std::time::Duration;

use service::db::{DbSetupError, PoolSettings, UnknownHistory, LEGACY_HISTORY};
use sqlx::migrate::{Migrate, Migrator};
use sqlx::PgPool;
use testkit::PgHandle;
use tokio::sync::OnceCell;

use crate::catalog::Schema;

const LEGACY_DIR: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/legacy-migrations"
);

/// One PostgreSQL server for the whole test binary.
async fn pg() -> &'static PgHandle {
    static PG: OnceCell<PgHandle> = OnceCell::const_new();
    PG.get_or_init(|| async { testkit::pg_for_test().await.expect("postgres for test") })
        .await
}

/// A new empty database (created the way the binaries create theirs).
async fn database(prefix: &str) -> PgPool {
    let url = pg().await.url(&testkit::unique_name(prefix));
    let settings = PoolSettings {
        application_name: "service-migrations-test",
        max_connections: 4,
        acquire_timeout: Duration::from_secs(30),
        ping_if_idle_for: None,
    };
    service::db::connect(&url, &settings)
        .await
        .expect("connect")
}

/// A database migrated by this release only.
async fn fresh() -> PgPool {
    let pool = database("fresh").await;
    service::db::migrate(&pool)
        .await
        .expect("migrate a fresh database");
    pool
}

async fn legacy_migrator() -> Migrator {
    Migrator::new(Path::new(LEGACY_DIR))
        .await
        .expect("legacy migrations fixture")
}

/// A database that the legacy migrations 1..=`through` created, applied the way sqlx applies
/// them (one transaction each, recorded in `_sqlx_migrations`).
async fn legacy(through: i64) -> PgPool {
    let pool = database("legacy").await;
    let migrator = legacy_migrator().await;
    let mut conn = pool.acquire().await.unwrap();
    conn.ensure_migrations_table().await.unwrap();
    for m in migrator.iter().filter(|m| m.version <= through) {
        conn.apply(m).await.expect("apply a legacy migration");
    }
    pool
}

/// `_sqlx_migrations` as (version, description, checksum in hex, success).
async fn history(pool: &PgPool) -> Vec<(i64, String, String, bool)> {
    sqlx::query_as(
        "SELECT version, description, encode(checksum, 'hex'), success
         FROM _sqlx_migrations ORDER BY version",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

async fn scalar_i64(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.unwrap()
}

/// Asserts that `a` and `b` have the same schema, naming every object that differs.
fn assert_same_schema(a: &Schema, a_name: &str, b: &Schema, b_name: &str) {
    for category in catalog::NEVER_EMPTY {
        assert!(
            a.objects(category) > 0,
            "no {category} read from the {a_name} database: is the catalog query broken?"
        );
    }
    let differences = a.differences(a_name, b, b_name);
    assert!(
        differences.is_empty(),
        "{} schema differences:\n{}",
        differences.len(),
        differences.join("\n")
    );
}

const RUN: &str = "01890000-0000-7000-8000-000000000001";

/// A little of everything a plant has in a legacy database: its own resource, work order, a
/// completed run with counts and a breakdown, an event, a planned break in the seeded site's
/// calendar, an edited downtime reason, SPC limits, a reading and a ledger range.
const LEGACY_DATA: &str = "
    INSERT INTO resources (resource_id, site_id, name, line_id) VALUES ('SMT01', 'BKK', 'Placer 1', 'L1');
    INSERT INTO work_orders (work_order_id, product_id, planned_qty) VALUES ('WO1', 'P1', 100);
    INSERT INTO op_run (op_run_id, work_order_id, operation_id, resource_id, site_id, status,
                        started_at, ended_at, ideal_cycle_time_s, good_units, scrap_units)
    VALUES ('01890000-0000-7000-8000-000000000001', 'WO1', 'OP10', 'SMT01', 'BKK', 'completed',
            '2025-01-06T02:00:00Z', '2025-01-06T04:00:00Z', 1.5, 90, 10);
    INSERT INTO op_run_count (op_run_id, at, good_delta, scrap_delta)
    VALUES ('01890000-0000-7000-8000-000000000001', '2025-01-06T03:00:00Z', 90, 10);
    INSERT INTO op_run_downtime (op_run_id, reason_code, started_at, ended_at)
    VALUES ('01890000-0000-7000-8000-000000000001', 'breakdown',
            '2025-01-06T02:30:00Z', '2025-01-06T02:45:00Z');
    INSERT INTO outbox (op_run_id, event_type, site_id, resource_id, payload)
    VALUES ('01890000-0000-7000-8000-000000000001', 'completed', 'BKK', 'SMT01', '{}');
    INSERT INTO shift_breaks (shift_definition_id, break_name, start_local, duration)
    SELECT id, 'lunch', '12:00', '30 minutes' FROM shift_definitions
    WHERE site_id = 'BKK' AND shift_name = 'Day';
    UPDATE downtime_reasons SET loss_bucket = 'performance' WHERE reason_code = 'quality_hold';
    INSERT INTO spc_spec_limits (sensor, lsl, usl) VALUES ('temp', 30, 40);
    INSERT INTO readings (ts, site, resource_id, sensor, value)
    VALUES ('2025-01-06T03:00:00Z', 'BKK', 'SMT01', 'temp', 36.5);
    INSERT INTO ingest_ledger (source, byte_range, site, box_id, path, lines, rows_loaded, rejected)
    VALUES ('s1', int8range(0, 100), 'BKK', 'edge-01', '/hot/a.jsonl', 1, 1, 0);
";

#[tokio::test]
async fn legacy_fixture_is_the_released_history() {
    let migrator = legacy_migrator().await;
    let fixture: Vec<(i64, String)> = migrator
        .iter()
        .map(|m| {
            let hex: String = m.checksum.iter().map(|b| format!("{b:02x}")).collect();
            (m.version, hex)
        })
        .collect();
    let constants: Vec<(i64, String)> = LEGACY_HISTORY
        .iter()
        .map(|(v, c)| (*v, (*c).to_owned()))
        .collect();
    assert_eq!(fixture, constants, "fixture and LEGACY_HISTORY must agree");
}

#[tokio::test]
async fn legacy_database_is_rebaselined_to_the_schema_of_a_fresh_one() {
    let fresh = fresh().await;
    let upgraded = legacy(8).await;
    sqlx::raw_sql(LEGACY_DATA).execute(&upgraded).await.unwrap();

    service::db::migrate(&upgraded)
        .await
        .expect("migrate a legacy database");

    let fresh_schema = Schema::read(&fresh).await;
    let upgraded_schema = Schema::read(&upgraded).await;
    assert_same_schema(&fresh_schema, "fresh", &upgraded_schema, "upgraded");
    let fresh_history = history(&fresh).await;
    assert_eq!(history(&upgraded).await, fresh_history);
    assert_eq!(
        fresh_history.len(),
        service::db::MIGRATOR.iter().count(),
        "every migration recorded once"
    );

    // A second start finds nothing to do.
    service::db::migrate(&upgraded).await.unwrap();
    assert_eq!(history(&upgraded).await, fresh_history);

    // Plant data is no migration's business: a fresh database has no site, only the documented
    // downtime reason defaults (0005's eight and 0020's `unassigned`, the reason of a stop
    // detected from readings).
    assert_eq!(scalar_i64(&fresh, "SELECT count(*) FROM sites").await, 0);
    assert_eq!(
        scalar_i64(&fresh, "SELECT count(*) FROM shift_definitions").await,
        0
    );
    assert_eq!(
        scalar_i64(&fresh, "SELECT count(*) FROM downtime_reasons").await,
        9
    );

    // The legacy database's data survived, the seeded site and the plant's edits included.
    let site: (String, String) =
        sqlx::query_as("SELECT name, time_zone FROM sites WHERE site_id = 'BKK'")
            .fetch_one(&upgraded)
            .await
            .unwrap();
    assert_eq!(site, ("Bangkok".to_owned(), "Asia/Bangkok".to_owned()));
    for (table, rows) in [
        ("shift_definitions", 3),
        ("shift_breaks", 1),
        ("resources", 1),
        ("work_orders", 1),
        ("op_run", 1),
        ("op_run_count", 1),
        ("op_run_downtime", 1),
        ("outbox", 1),
        ("downtime_reasons", 9),
        ("spc_spec_limits", 1),
        ("readings", 1),
        ("ingest_ledger", 1),
    ] {
        let n = scalar_i64(&upgraded, &format!("SELECT count(*) FROM {table}")).await;
        assert_eq!(n, rows, "rows in {table}");
    }
    let bucket: String = sqlx::query_scalar(
        "SELECT loss_bucket FROM downtime_reasons WHERE reason_code = 'quality_hold'",
    )
    .fetch_one(&upgraded)
    .await
    .unwrap();
    assert_eq!(bucket, "performance", "the plant's edit is kept");
    // And the views compute from it: Day shift 01:00Z-09:00Z, run 02:00Z-04:00Z (PBT 7200 s), a
    // 15-minute breakdown (APT 6300 s), 90 good of 100 at 1.5 s: OEE = 1.5 * 90 / 7200.
    let (shift, pbt, apt, oee): (String, f64, f64, f64) = sqlx::query_as(
        "SELECT shift_name, pbt_seconds, apt_seconds, oee FROM v_oee_shift_real
         WHERE resource_id = 'SMT01'",
    )
    .fetch_one(&upgraded)
    .await
    .unwrap();
    assert_eq!((shift.as_str(), pbt, apt), ("Day", 7200.0, 6300.0));
    assert!((oee - 1.5 * 90.0 / 7200.0).abs() < 1e-12, "oee {oee}");
    let run: String = sqlx::query_scalar("SELECT op_run_id::text FROM op_run")
        .fetch_one(&upgraded)
        .await
        .unwrap();
    assert_eq!(run, RUN);
}

#[tokio::test]
async fn replicas_starting_together_rebaseline_a_legacy_database_once() {
    let upgraded = legacy(8).await;
    let mut replicas = Vec::new();
    for _ in 0..4 {
        let pool = upgraded.clone();
        replicas.push(tokio::spawn(
            async move { service::db::migrate(&pool).await },
        ));
    }
    for replica in replicas {
        replica.await.unwrap().expect("every replica starts");
    }
    let fresh = fresh().await;
    assert_eq!(history(&upgraded).await, history(&fresh).await);
}

#[tokio::test]
async fn half_applied_legacy_database_is_refused() {
    let half = legacy(5).await;
    let before = history(&half).await;
    assert_eq!(before.len(), 5);

    let err = service::db::migrate(&half).await.unwrap_err();
    assert!(
        matches!(
            &err,
            DbSetupError::UnknownHistory(UnknownHistory::IncompleteLegacy { versions })
                if *versions == [1, 2, 3, 4, 5]
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("1..=8"), "{err}");
    assert_eq!(history(&half).await, before, "nothing changed");
    // The refusal released the migration lock: a second attempt is refused the same way.
    assert!(matches!(
        service::db::migrate(&half).await,
        Err(DbSetupError::UnknownHistory(
            UnknownHistory::IncompleteLegacy { .. }
        ))
    ));
}

#[tokio::test]
async fn legacy_history_of_the_unchanged_files_continues_like_a_fresh_one() {
    // 0001 and 0002 kept their bytes: a legacy database stopped after them is a current one.
    let early = legacy(2).await;
    service::db::migrate(&early).await.unwrap();
    let fresh = fresh().await;
    assert_same_schema(
        &Schema::read(&fresh).await,
        "fresh",
        &Schema::read(&early).await,
        "continued",
    );
    assert_eq!(history(&early).await, history(&fresh).await);
}

#[tokio::test]
async fn a_migration_applied_from_an_unknown_file_is_refused() {
    let db = fresh().await;
    sqlx::query("UPDATE _sqlx_migrations SET checksum = sha384('edited') WHERE version = 6")
        .execute(&db)
        .await
        .unwrap();
    let err = service::db::migrate(&db).await.unwrap_err();
    assert!(
        matches!(
            err,
            DbSetupError::UnknownHistory(UnknownHistory::ChecksumMismatch { version: 6, .. })
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn schema_comparison_reports_each_kind_of_difference() {
    let a = fresh().await;
    let b = fresh().await;
    sqlx::raw_sql(
        "ALTER TABLE sites ALTER COLUMN time_zone SET DEFAULT 'UTC';
         ALTER TABLE work_orders ALTER COLUMN product_id TYPE varchar(40);
         ALTER TABLE work_orders ADD CONSTRAINT work_orders_product CHECK (product_id <> '');
         DROP INDEX op_run_work_order;
         CREATE OR REPLACE FUNCTION edge_mes_ratio(num double precision, den double precision)
         RETURNS double precision LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ SELECT num / den $$;
         DO $$ BEGIN
             EXECUTE 'CREATE OR REPLACE VIEW v_mtbf_mttr_per_day AS '
                 || replace(rtrim(pg_get_viewdef('v_mtbf_mttr_per_day'::regclass), ';'),
                            'no_failures', 'none');
         END $$;
         CREATE FUNCTION t_touch() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NULL; END $$;
         CREATE TRIGGER outbox_touch AFTER INSERT ON outbox FOR EACH STATEMENT EXECUTE FUNCTION t_touch();
         GRANT DELETE ON sites TO PUBLIC;
         COMMENT ON VIEW v_oee_site_day IS 'changed';
         ALTER SEQUENCE outbox_id_seq INCREMENT BY 2;",
    )
    .execute(&b)
    .await
    .unwrap();

    let differences = Schema::read(&a)
        .await
        .differences("a", &Schema::read(&b).await, "b");
    let text = differences.join("\n");
    for expected in [
        "columns sites.time_zone",
        "columns work_orders.product_id",
        "constraints work_orders.work_orders_product: only in b",
        "indexes op_run_work_order: only in a",
        "functions edge_mes_ratio(double precision,double precision)",
        "functions t_touch(): only in b",
        "views v_mtbf_mttr_per_day",
        "triggers outbox.outbox_touch: only in b",
        "privileges relation sites to PUBLIC: only in b",
        "comments view public.v_oee_site_day",
        "sequences outbox_id_seq",
    ] {
        assert!(
            differences.iter().any(|d| d.starts_with(expected)),
            "no difference {expected:?} in:\n{text}"
        );
    }
}
