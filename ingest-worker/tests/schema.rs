use std::time::Duration;

use chrono::{Days, Utc};
use ingest_worker::config::ArchiveGate;
use ingest_worker::db::{Lifecycle, RetentionOutcome};
use sqlx::PgPool;

use crate::support::Env;

async fn migrated() -> (Env, PgPool) {
    let env = Env::new().await;
    let pool = ingest_worker::db::connect(&env.db_url, 4).await.unwrap();
    ingest_worker::db::migrate(&pool).await.unwrap();
    (env, pool)
}

#[tokio::test]
async fn migrations_apply_once_when_workers_start_together() {
    let env = Env::new().await;
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let url = env.db_url.clone();
        tasks.push(tokio::spawn(async move {
            let pool = ingest_worker::db::connect(&url, 2).await.unwrap();
            ingest_worker::db::migrate(&pool).await.unwrap();
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let applied = env
        .scalar("SELECT count(*) FROM _sqlx_migrations WHERE success")
        .await;
    assert_eq!(applied as usize, ingest_worker::db::MIGRATOR.iter().count());
}

#[tokio::test]
async fn worker_creates_its_database_when_missing() {
    let env = Env::new().await;
    let url = env.pg.url(&testkit::unique_name("fresh"));
    let pool = ingest_worker::db::connect(&url, 1).await.unwrap();
    let one: i32 = sqlx::query_scalar("SELECT 1")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(one, 1);
}

#[tokio::test]
async fn daily_partitions_are_created_ahead_and_dropped_by_retention() {
    let (_env, pool) = migrated().await;
    let created = ingest_worker::db::ensure_partitions(&pool, 2, 3)
        .await
        .unwrap();
    assert_eq!(created, 6);
    assert_eq!(
        ingest_worker::db::ensure_partitions(&pool, 2, 3)
            .await
            .unwrap(),
        0
    );
    let today = Utc::now().date_naive();
    let name = format!("readings_p{}", today.format("%Y%m%d"));
    sqlx::query(
        "INSERT INTO readings (ts, site, resource_id, sensor, value) VALUES (now(), 's', 'r', 'x', 1)",
    )
    .execute(&pool)
    .await
    .unwrap();
    let routed: String = sqlx::query_scalar("SELECT tableoid::regclass::text FROM readings")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(routed, name);
    // Retention of 1 day drops the partitions of 2 days ago and yesterday, never today's.
    let outcome = ingest_worker::db::apply_retention(&pool, lifecycle(1, ArchiveGate::Auto))
        .await
        .unwrap();
    assert_eq!(
        outcome.dropped, 1,
        "2 days ago; yesterday is not older than one day"
    );
    let left: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_inherits WHERE inhparent = 'readings'::regclass",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(left, 1 + 4 + 1, "default + today + 3 ahead + yesterday");
    let old = format!(
        "readings_p{}",
        today
            .checked_sub_days(Days::new(2))
            .unwrap()
            .format("%Y%m%d")
    );
    let exists: Option<String> = sqlx::query_scalar("SELECT to_regclass($1)::text")
        .bind(&old)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(exists, None);
}

fn lifecycle(retention_days: u32, wait_for_archive: ArchiveGate) -> Lifecycle {
    Lifecycle {
        retention_days,
        wait_for_archive,
        compress_after_days: 7,
    }
}

async fn count(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.unwrap()
}

#[tokio::test]
async fn retention_empties_readings_default_waits_for_the_archive_and_zero_keeps_all() {
    let (_env, pool) = migrated().await;
    // 100 and 91 days ago (no partitions that far back: the rows sit in readings_default), and
    // today's partition.
    ingest_worker::db::ensure_partitions(&pool, 0, 0)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO readings (ts, site, resource_id, sensor, value)
         SELECT now() - make_interval(days => d), 's', 'r', 'x', d
         FROM unnest(ARRAY[100, 100, 91, 0]) d",
    )
    .execute(&pool)
    .await
    .unwrap();
    let old = "SELECT count(*) FROM readings WHERE ts < now() - interval '90 days'";
    assert_eq!(count(&pool, old).await, 3);
    // 0 keeps everything.
    let kept = ingest_worker::db::apply_retention(&pool, lifecycle(0, ArchiveGate::Always))
        .await
        .unwrap();
    assert_eq!(kept, RetentionOutcome::default());
    // With the archive gate on and no archive: nothing goes, and the pass says how many days wait.
    let waiting = ingest_worker::db::apply_retention(&pool, lifecycle(90, ArchiveGate::Always))
        .await
        .unwrap();
    assert_eq!(
        waiting,
        RetentionOutcome {
            dropped: 0,
            waiting_for_archive: 2
        }
    );
    assert_eq!(count(&pool, old).await, 3);
    // auto: no archiver has written here, so retention does not wait.
    let done = ingest_worker::db::apply_retention(&pool, lifecycle(90, ArchiveGate::Auto))
        .await
        .unwrap();
    assert_eq!(done.dropped, 2);
    assert_eq!(count(&pool, old).await, 0);
    assert_eq!(
        count(&pool, "SELECT count(*) FROM readings").await,
        1,
        "today's row stays"
    );
    // Plain PostgreSQL: the expired rows sat in readings_default, which is now empty too.
    // (On TimescaleDB, where this test also runs by hand, they were chunks.)
    let partitioned: bool = sqlx::query_scalar("SELECT edge_mes_readings_partitioned()")
        .fetch_one(&pool)
        .await
        .unwrap();
    if partitioned {
        assert_eq!(
            count(&pool, "SELECT count(*) FROM readings_default").await,
            0
        );
    }
}

#[tokio::test]
async fn the_upkeep_brings_the_rollups_up_to_date_with_what_was_loaded() {
    let (_env, pool) = migrated().await;
    // A load as the loader writes it: rows and, in the same transaction, their ledger entry.
    let mut tx = pool.begin().await.unwrap();
    sqlx::query(
        "INSERT INTO readings (ts, site, resource_id, sensor, value)
         SELECT '2025-08-22T00:00:00Z'::timestamptz + i * interval '10 s', 'BKK', 'R1', 'temp', i
         FROM generate_series(0, 719) i",
    )
    .execute(&mut *tx)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO ingest_ledger (source, byte_range, site, box_id, path, lines, rows_loaded,
                                    rejected, min_ts, max_ts)
         VALUES ('s1', int8range(0, 720), 'BKK', 'b', '/p', 720, 720, 0,
                 '2025-08-22T00:00:00Z', '2025-08-22T01:59:50Z')",
    )
    .execute(&mut *tx)
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let refreshed = ingest_worker::db::refresh_rollups(&pool, 0).await.unwrap();
    assert!(refreshed >= 1);
    // Two hours of 10-second readings: 120 minutes of 6, 2 hours of 360; sums exact.
    let (minutes, n, sum): (i64, i64, f64) =
        sqlx::query_as("SELECT count(*), sum(n)::bigint, sum(sum) FROM readings_1m")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!((minutes, n, sum), (120, 720, (0..720).sum::<i64>() as f64));
    let hours: Vec<(i64, f64)> = sqlx::query_as("SELECT n, mean FROM readings_1h ORDER BY bucket")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(hours, vec![(360, 179.5), (360, 539.5)]);
    assert_eq!(
        ingest_worker::db::refresh_rollups(&pool, 0).await.unwrap(),
        0,
        "nothing left"
    );
}

#[tokio::test]
async fn a_database_created_with_timescaledb_refuses_connections_on_a_server_without_it() {
    let (env, pool) = migrated().await;
    let settings = |timeout| service::db::PoolSettings {
        application_name: "storage-test",
        max_connections: 1,
        acquire_timeout: timeout,
        ping_if_idle_for: None,
    };
    let (engine, loaded): (String, bool) =
        sqlx::query_as("SELECT engine, timescaledb_loaded FROM edge_mes_storage_state()")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!((engine.as_str(), loaded), ("postgresql", false));
    // What a database created with TimescaleDB looks like to a server without the preload.
    sqlx::query("UPDATE edge_mes_storage SET engine = 'timescaledb'")
        .execute(&pool)
        .await
        .unwrap();
    let refused = service::db::connect(&env.db_url, &settings(Duration::from_secs(2))).await;
    assert!(refused.is_err(), "a connection to it must be refused");
    let database = env.db_url.rsplit('/').next().unwrap().to_owned();
    let status = service::storage::status(&database).expect("a status after the check");
    assert_eq!(status.engine, service::storage::Engine::TimescaleDb);
    let problem = status.problem.expect("the reason");
    assert!(problem.contains("shared_preload_libraries"), "{problem}");
    // Restored: connections work again.
    sqlx::query("UPDATE edge_mes_storage SET engine = 'postgresql'")
        .execute(&pool)
        .await
        .unwrap();
    let ok = service::db::connect(&env.db_url, &settings(Duration::from_secs(10)))
        .await
        .unwrap();
    assert_eq!(count(&ok, "SELECT count(*) FROM readings").await, 0);
    assert_eq!(service::storage::status(&database).unwrap().problem, None);
}

#[tokio::test]
async fn a_day_already_in_the_default_partition_is_left_there() {
    let (_env, pool) = migrated().await;
    sqlx::query(
        "INSERT INTO readings (ts, site, resource_id, sensor, value) VALUES (now(), 's', 'r', 'x', 1)",
    )
    .execute(&pool)
    .await
    .unwrap();
    let created = ingest_worker::db::ensure_partitions(&pool, 0, 1)
        .await
        .unwrap();
    assert_eq!(
        created, 1,
        "only tomorrow: today's rows already sit in the default partition"
    );
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM readings")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(n, 1);
}

#[tokio::test]
async fn ledger_refuses_overlaps_and_compaction_merges_neighbours() {
    let (_env, pool) = migrated().await;
    let insert = |lo: i64, hi: i64| {
        sqlx::query(
            "INSERT INTO ingest_ledger (source, byte_range, site, box_id, path, lines, rows_loaded, rejected)
             VALUES ('s1', int8range($1, $2), 'S', 'b', '/p', 1, 1, 0)",
        )
        .bind(lo)
        .bind(hi)
        .execute(&pool)
    };
    insert(0, 10).await.unwrap();
    insert(10, 20).await.unwrap();
    insert(30, 40).await.unwrap();
    let err = insert(15, 25).await.unwrap_err();
    let code = err.as_database_error().and_then(|e| e.code()).unwrap();
    assert_eq!(code, "23P01");
    assert_eq!(
        ingest_worker::db::compact_ledger(&pool, 10).await.unwrap(),
        1
    );
    let ranges: Vec<(i64, i64, i64)> = sqlx::query_as(
        "SELECT lower(byte_range), upper(byte_range), lines FROM ingest_ledger ORDER BY 1",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(ranges, vec![(0, 20, 2), (30, 40, 1)]);
    insert(20, 30).await.unwrap();
    ingest_worker::db::compact_ledger(&pool, 10).await.unwrap();
    let ranges: Vec<(i64, i64, i64)> = sqlx::query_as(
        "SELECT lower(byte_range), upper(byte_range), lines FROM ingest_ledger ORDER BY 1",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(ranges, vec![(0, 40, 4)]);
}

#[tokio::test]
async fn stream_setup_keeps_operator_configured_sources_also_through_the_upgrade() {
    use async_nats::jetstream::stream::{
        Config as StreamConfig, DiscardPolicy, RetentionPolicy, Source,
    };
    let env = Env::new().await;
    let js = env.js().await;
    let gateway = format!("GW_{}", env.tag);
    js.create_stream(StreamConfig {
        name: gateway.clone(),
        subjects: vec![format!("gw_{}.>", env.tag)],
        ..Default::default()
    })
    .await
    .unwrap();
    // A hub stream as an earlier version left it: limits retention, discard old, a source.
    js.create_stream(StreamConfig {
        name: env.names.readings_stream.clone(),
        subjects: vec![env.names.readings_filter()],
        retention: RetentionPolicy::Limits,
        discard: DiscardPolicy::Old,
        sources: Some(vec![Source {
            name: gateway.clone(),
            ..Default::default()
        }]),
        ..Default::default()
    })
    .await
    .unwrap();
    env.run_until_idle().await;
    let info = |js: async_nats::jetstream::Context| {
        let name = env.names.readings_stream.clone();
        async move {
            js.get_stream(&name)
                .await
                .unwrap()
                .info()
                .await
                .unwrap()
                .clone()
        }
    };
    let sources = |i: &async_nats::jetstream::stream::Info| -> Vec<String> {
        i.config
            .sources
            .clone()
            .unwrap_or_default()
            .into_iter()
            .map(|s| s.name)
            .collect()
    };
    let upgraded = info(js.clone()).await;
    assert_eq!(sources(&upgraded), vec![gateway.clone()]);
    assert_eq!(upgraded.config.retention, RetentionPolicy::WorkQueue);
    assert_eq!(
        upgraded.config.discard,
        DiscardPolicy::New,
        "our settings were applied too"
    );
    // A second start finds the work-queue stream and keeps the source again.
    env.run_until_idle().await;
    assert_eq!(sources(&info(js).await), vec![gateway]);
}
