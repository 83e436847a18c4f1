use chrono::{Days, Utc};
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
    ingest_worker::db::apply_retention(&pool, 1).await.unwrap();
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
