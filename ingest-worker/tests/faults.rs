use std::process::Stdio;
use std::time::Duration;

use testkit::{NatsHandle, NatsServer, PgHandle, PgServer};
use tokio_util::sync::CancellationToken;

use crate::support::{frame, publish, wait_for, Env};

fn content(source: u64, lines: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for i in 0..lines {
        out.extend_from_slice(
            format!(
                r#"{{"ts":"2026-11-20T{:02}:{:02}:{:02}Z","resource_id":"R{source}","sensor":"speed","value":{i},"meta":{{"n":{i}}}}}"#,
                (i / 3600) % 24,
                (i / 60) % 60,
                i % 60
            )
            .as_bytes(),
        );
        out.push(b'\n');
    }
    out
}

#[tokio::test]
async fn postgres_outage_delays_ingest_but_loses_nothing() {
    let pg = PgServer::start().await.unwrap();
    let mut env = Env::with(
        PgHandle::Private(pg),
        testkit::nats_for_test().await.unwrap(),
    )
    .await;
    env.setup_streams().await;
    let js = env.js().await;
    let mut config = env.config();
    config.until_idle = None;
    let shutdown = CancellationToken::new();
    let worker = tokio::spawn(ingest_worker::run(config, shutdown.clone()));

    publish(&js, &env.names, &frame("a", &content(1, 2000), 8192, 65536)).await;
    wait_for(Duration::from_secs(30), "first file loaded", || async {
        env.readings().await == 2000
    })
    .await;

    let PgHandle::Private(server) = &mut env.pg else {
        unreachable!()
    };
    server.stop().await.unwrap();
    publish(&js, &env.names, &frame("b", &content(2, 3000), 8192, 65536)).await;
    // The worker naks and backs off meanwhile; give it time to fail a few times.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(!worker.is_finished(), "worker must wait out the outage");
    let PgHandle::Private(server) = &mut env.pg else {
        unreachable!()
    };
    server.restart().await.unwrap();

    wait_for(
        Duration::from_secs(90),
        "second file loaded after restart",
        || async { env.readings().await == 5000 },
    )
    .await;
    shutdown.cancel();
    worker.await.unwrap().unwrap();
    assert_eq!(env.readings().await, 5000);
    assert_eq!(
        env.scalar("SELECT count(DISTINCT (resource_id, value)) FROM readings")
            .await,
        5000
    );
}

#[tokio::test]
async fn nats_restart_mid_ingest_loses_nothing() {
    let nats = NatsServer::start().await.unwrap();
    let mut env = Env::with(
        testkit::pg_for_test().await.unwrap(),
        NatsHandle::Private(nats),
    )
    .await;
    env.setup_streams().await;
    let mut config = env.config();
    config.until_idle = None;
    let shutdown = CancellationToken::new();
    let worker = tokio::spawn(ingest_worker::run(config, shutdown.clone()));

    let js = env.js().await;
    publish(&js, &env.names, &frame("a", &content(1, 3000), 8192, 65536)).await;
    let NatsHandle::Private(server) = &mut env.nats else {
        unreachable!()
    };
    server.restart().await.unwrap();
    let js = env.js().await;
    publish(&js, &env.names, &frame("b", &content(2, 3000), 8192, 65536)).await;

    wait_for(Duration::from_secs(90), "both files loaded", || async {
        env.readings().await == 6000
    })
    .await;
    shutdown.cancel();
    worker.await.unwrap().unwrap();
    assert_eq!(
        env.scalar("SELECT count(DISTINCT (resource_id, value)) FROM readings")
            .await,
        6000
    );
}

#[tokio::test]
async fn worker_killed_mid_batch_then_restarted_loads_everything_once() {
    let env = Env::new().await;
    env.setup_streams().await;
    let js = env.js().await;
    let files = 6;
    let per_file = 20_000;
    for f in 0..files {
        publish(
            &js,
            &env.names,
            &frame(&format!("box{f}"), &content(f, per_file), 64 * 1024, 65536),
        )
        .await;
    }
    let bin = testkit::bins::bin_path("ingest-worker").unwrap();
    let spawn = |extra: &[&str]| {
        tokio::process::Command::new(&bin)
            .args(extra)
            .env("NATS_URL", env.nats.url())
            .env("DATABASE_URL", &env.db_url)
            .env("EDGE_NAMESPACE", &env.tag)
            .env("RUST_LOG", "warn")
            // 2025 test data: the default 90-day retention would remove it (tests/schema.rs
            // tests retention).
            .env("READINGS_RETENTION_DAYS", "0")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .unwrap()
    };
    for round in 0..3 {
        let mut child = spawn(&["--batch-max-messages", "8"]);
        let before = env.readings().await;
        wait_for(Duration::from_secs(60), "some progress", || async {
            env.readings().await > before
        })
        .await;
        child.start_kill().unwrap();
        child.wait().await.unwrap();
        let now = env.readings().await;
        assert!(
            now < (files * per_file as u64) as i64 || round > 0,
            "killed before the end"
        );
    }
    let status = spawn(&["--until-idle", "2"]).wait().await.unwrap();
    assert!(status.success());
    assert_eq!(env.readings().await, (files * per_file as u64) as i64);
    assert_eq!(
        env.scalar("SELECT count(DISTINCT (resource_id, value)) FROM readings")
            .await,
        (files * per_file as u64) as i64
    );
}
