//! Least privilege at run time, against real PostgreSQL: the schema's owner migrates; logins in
//! `edge_mes_worker`, `edge_mes_api` and `edge_mes_mes_reader` can do their work and nothing
//! else, and a login that may not migrate refuses to start on a schema that is behind.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use service::db::{DbSetupError, MigrateMode, PoolSettings};
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
        application_name: "least-privilege-test",
        max_connections: 2,
        acquire_timeout: Duration::from_secs(30),
        ping_if_idle_for: None,
    }
}

/// A database migrated by its owner (the server's superuser in tests), with its URL.
async fn owned() -> (PgPool, String) {
    let url = pg().await.url(&testkit::unique_name("lp"));
    let pool = service::db::connect(&url, &settings()).await.unwrap();
    service::db::prepare(&pool, MigrateMode::Auto)
        .await
        .unwrap();
    (pool, url)
}

/// A new login in `group` (cluster-wide, so uniquely named) and a pool of it on `url`'s database.
async fn login(owner: &PgPool, url: &str, group: &str) -> PgPool {
    let name = testkit::unique_name("login");
    sqlx::query(&format!(
        "CREATE ROLE {name} LOGIN PASSWORD 'pw' IN ROLE {group}"
    ))
    .execute(owner)
    .await
    .unwrap();
    service::db::connect(&testkit::with_login(url, &name, "pw"), &settings())
        .await
        .unwrap()
}

/// Runs `sql` and expects PostgreSQL's refusal for lack of privilege (42501).
async fn denied(pool: &PgPool, sql: &str) {
    match sqlx::query(sql).execute(pool).await {
        Err(sqlx::Error::Database(db)) => assert_eq!(
            db.code().as_deref(),
            Some("42501"),
            "{sql}: {}",
            db.message()
        ),
        other => panic!("{sql}: expected permission denied, got {other:?}"),
    }
}

async fn allowed(pool: &PgPool, sql: &str) {
    if let Err(e) = sqlx::query(sql).execute(pool).await {
        panic!("{sql}: {e}");
    }
}

const READING: &str = "INSERT INTO readings (ts, site, resource_id, sensor, value)
                       VALUES (now(), 'BKK', 'R1', 'temp', 1.0)";

#[tokio::test]
async fn the_worker_login_loads_and_keeps_partitions_and_touches_nothing_else() {
    let (owner, url) = owned().await;
    let worker = login(&owner, &url, "edge_mes_worker").await;
    // At start it checks the schema instead of migrating, and the check passes.
    service::db::prepare(&worker, MigrateMode::Auto)
        .await
        .unwrap();
    allowed(&worker, READING).await;
    allowed(&worker, "SELECT count(*) FROM readings").await;
    allowed(
        &worker,
        "SELECT edge_mes_ensure_partitions(current_date, current_date + 3)",
    )
    .await;
    allowed(
        &worker,
        "SELECT edge_mes_drop_partitions_before(current_date - 400)",
    )
    .await;
    allowed(&worker, "SELECT edge_mes_compact_ledger(10)").await;
    // Retention and compression (0022) as the worker's upkeep calls them; the storage check
    // every connection makes.
    allowed(
        &worker,
        "SELECT edge_mes_expired_days(current_date - 90, 10)",
    )
    .await;
    allowed(
        &worker,
        "SELECT edge_mes_expire_day(current_date - 400, true)",
    )
    .await;
    allowed(&worker, "SELECT edge_mes_archive_in_use()").await;
    allowed(&worker, "SELECT edge_mes_compress_one(now())").await;
    allowed(&worker, "SELECT * FROM edge_mes_storage_state()").await;
    for sql in [
        "SELECT * FROM op_run",
        "INSERT INTO sites (site_id, time_zone) VALUES ('X', 'UTC')",
        "DELETE FROM readings",
        "UPDATE readings SET value = 0",
        "TRUNCATE readings",
        "DROP TABLE readings",
        "ALTER TABLE readings ADD COLUMN x int",
        "CREATE TABLE evil (x int)",
        "SELECT * FROM outbox",
        "SELECT * FROM idempotency_keys",
        "DELETE FROM _sqlx_migrations",
    ] {
        denied(&worker, sql).await;
    }
}

#[tokio::test]
async fn the_api_login_runs_production_and_cannot_write_readings_or_change_the_schema() {
    let (owner, url) = owned().await;
    let api = login(&owner, &url, "edge_mes_api").await;
    service::db::prepare(&api, MigrateMode::Auto).await.unwrap();
    allowed(&api, "SELECT edge_mes_ensure_site('LP', 'Europe/Berlin')").await;
    allowed(&api, "SELECT count(*) FROM v_oee_shift_real").await;
    allowed(&api, "SELECT count(*) FROM readings").await;
    for sql in [
        READING,
        "DELETE FROM readings",
        "DELETE FROM op_run",
        "DROP TABLE op_run",
        "ALTER TABLE op_run ADD COLUMN x int",
        "CREATE TABLE evil (x int)",
        "SELECT edge_mes_ensure_partitions(current_date, current_date + 1)",
        "SELECT edge_mes_drop_partitions_before(current_date)",
        "SELECT edge_mes_expire_day(current_date - 400, false)",
        "SELECT edge_mes_compress_one(now())",
        "UPDATE edge_mes_storage SET engine = 'timescaledb'",
        "SELECT * FROM ingest_ledger",
        "UPDATE downtime_reasons SET planned = true",
        "DELETE FROM _sqlx_migrations",
    ] {
        denied(&api, sql).await;
    }
}

#[tokio::test]
async fn the_mes_reader_reads_the_documented_views_and_nothing_else() {
    let (owner, url) = owned().await;
    let mes = login(&owner, &url, "edge_mes_mes_reader").await;
    for view in [
        "v_runtime_per_shift",
        "v_quality_per_shift",
        "v_oee_shift_real",
        "v_oee_day_real",
        "v_oee_line_shift",
        "v_oee_site_day",
        "v_mtbf_mttr_per_day",
    ] {
        allowed(&mes, &format!("SELECT * FROM {view} LIMIT 1")).await;
    }
    for sql in [
        "SELECT * FROM op_run",
        "SELECT * FROM readings",
        "SELECT * FROM outbox",
        READING,
        "INSERT INTO sites (site_id, time_zone) VALUES ('X', 'UTC')",
        "CREATE TABLE evil (x int)",
    ] {
        denied(&mes, sql).await;
    }
}

#[tokio::test]
async fn a_login_that_may_not_migrate_refuses_a_schema_that_is_behind() {
    // The roles exist (cluster-wide) once any database was migrated.
    let (owner, _) = owned().await;
    let url = pg().await.url(&testkit::unique_name("lp_empty"));
    let empty = service::db::connect(&url, &settings()).await.unwrap();
    let worker = login(&owner, &url, "edge_mes_worker").await;
    let err = service::db::prepare(&worker, MigrateMode::Auto)
        .await
        .unwrap_err();
    match &err {
        DbSetupError::NotMigrated { missing, .. } => {
            assert_eq!(missing.len(), service::db::MIGRATOR.iter().count())
        }
        other => panic!("expected NotMigrated, got {other}"),
    }
    assert!(err.to_string().contains("mes-api migrate"), "{err}");
    // Asked to migrate anyway, it fails without changing anything.
    assert!(service::db::prepare(&worker, MigrateMode::Always)
        .await
        .is_err());
    let tables: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_tables WHERE schemaname = 'public' AND tablename <> '_sqlx_migrations'",
    )
    .fetch_one(&empty)
    .await
    .unwrap();
    assert_eq!(tables, 0);
    // The owner's `never` only checks, and fails the same way; its `auto` migrates.
    assert!(matches!(
        service::db::prepare(&empty, MigrateMode::Never).await,
        Err(DbSetupError::NotMigrated { .. })
    ));
    service::db::prepare(&empty, MigrateMode::Auto)
        .await
        .unwrap();
    service::db::prepare(&worker, MigrateMode::Auto)
        .await
        .unwrap();
}
