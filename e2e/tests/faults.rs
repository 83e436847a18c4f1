use std::io::Write;
use std::time::Duration;

use chrono::{TimeZone, Utc};
use testkit::data::{generate, Expected, GenSpec, ReadingGen};
use testkit::{NatsHandle, NatsServer, PgHandle, PgServer};

use crate::support::{
    eventually, metric, metrics_addr, sigterm, stop_once_everything_landed, without_blanks, Stack,
};

fn lines(seed: u64, n: usize) -> Vec<String> {
    ReadingGen::new(
        seed,
        Utc.with_ymd_and_hms(2026, 11, 2, 0, 0, 0).unwrap(),
        3,
        4,
    )
    .with_box("live")
    .lines(n)
}

fn expected_of(lines: &[String]) -> Expected {
    let mut e = Expected::default();
    for l in lines {
        e.record(l.as_bytes());
    }
    e
}

#[tokio::test]
async fn shipper_killed_repeatedly_while_files_grow_loses_and_doubles_nothing() {
    let stack = Stack::new().await;
    stack.prepare().await;
    let dir = stack.box_dir("live");
    let a = lines(1, 12_000);
    let b = lines(2, 12_000);
    let mut expected = expected_of(&a);
    expected.merge(&expected_of(&b));
    let writer_a = testkit::data::append_lines_at_rate(dir.join("a.jsonl"), a, 3000);
    let writer_b = testkit::data::append_lines_at_rate(dir.join("b.jsonl"), b, 3000);
    let mut worker = stack.worker(&[]).spawn().unwrap();

    for _ in 0..5 {
        let mut shipper = stack.shipper("live", &[]).spawn().unwrap();
        let before = stack.readings().await;
        assert!(
            eventually(Duration::from_secs(30), || async {
                stack.readings().await > before
            })
            .await,
            "the shipper made progress before it was killed"
        );
        shipper.start_kill().unwrap();
        shipper.wait().await.unwrap();
    }
    writer_a.await.unwrap().unwrap();
    writer_b.await.unwrap().unwrap();
    stack.ship_until_caught_up("live").await;
    assert!(
        eventually(Duration::from_secs(60), || async {
            stack.readings().await >= expected.valid
        })
        .await
    );
    sigterm(&worker);
    assert!(
        worker.wait().await.unwrap().success(),
        "worker stops cleanly on SIGTERM"
    );
    stack.worker_until_idle(2).await;
    assert_eq!(stack.landed().await, without_blanks(&expected));
}

#[tokio::test]
async fn rotation_and_copytruncate_while_writing_keep_every_line_once() {
    let stack = Stack::new().await;
    stack.prepare().await;
    let dir = stack.box_dir("rot");
    let all = lines(3, 9_000);
    let expected = expected_of(&all);
    let mut worker = stack.worker(&[]).spawn().unwrap();
    let (addr, metrics) = metrics_addr();
    let mut shipper = stack
        .shipper("rot", &["--metrics-addr", &addr])
        .spawn()
        .unwrap();

    let app = dir.join("app.jsonl");
    let chunks: Vec<&[String]> = all.chunks(100).collect();
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&app)
        .unwrap();
    for (i, chunk) in chunks.iter().enumerate() {
        for l in *chunk {
            writeln!(file, "{l}").unwrap();
        }
        file.flush().unwrap();
        if i == 30 {
            // Rename rotation, as logrotate's default: the old file keeps matching the glob
            // under another name, a new file takes the name.
            std::fs::rename(&app, dir.join("app-1.jsonl")).unwrap();
            file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&app)
                .unwrap();
        }
        if i == 60 {
            // copytruncate: copy (still matching the glob), then truncate in place; the writer
            // keeps its append-mode descriptor and continues at offset 0.
            std::fs::copy(&app, dir.join("app-2.jsonl")).unwrap();
            file.set_len(0).unwrap();
        }
        // Pacing, not waiting: a live writer, so the shipper reads while the files rotate.
        tokio::time::sleep(Duration::from_millis(15)).await;
    }
    drop(file);
    assert!(
        eventually(Duration::from_secs(60), || async {
            stack.readings().await >= expected.valid
        })
        .await,
        "all lines arrive"
    );
    // A late duplicate would be in the count: nothing is left to ship or to load.
    stop_once_everything_landed(&stack, &mut shipper, metrics, &mut worker).await;
    assert_eq!(stack.landed().await, without_blanks(&expected));
}

#[tokio::test]
async fn deleted_state_dir_reships_everything_and_nothing_doubles() {
    let stack = Stack::new().await;
    let spec = GenSpec {
        boxes: 1,
        files_per_box: 3,
        lines: 20_000,
        ..GenSpec::default()
    };
    let (boxes, expected) = generate(stack.dir.path(), &spec).unwrap();
    let box_id = boxes[0].box_id.clone();
    stack.prepare().await;
    stack.ship_until_caught_up(&box_id).await;
    stack.worker_until_idle(2).await;
    assert_eq!(stack.landed().await, without_blanks(&expected));

    let js = async_nats::jetstream::new(async_nats::connect(stack.nats.url()).await.unwrap());
    let stream_name = protocol::Names::isolated(&stack.tag).readings_stream;
    let before = js
        .get_stream(&stream_name)
        .await
        .unwrap()
        .get_info()
        .await
        .unwrap()
        .state
        .messages;
    std::fs::remove_dir_all(stack.state_dir(&box_id)).unwrap();
    // Other message boundaries than the first time, so JetStream's own deduplication (same
    // Nats-Msg-Id within its window) cannot hide the re-ship: only the ledger stands in the way.
    stack
        .ship_until_caught_up_with(&box_id, &["--max-message-bytes", "100000"])
        .await;
    let after = js
        .get_stream(&stream_name)
        .await
        .unwrap()
        .get_info()
        .await
        .unwrap()
        .state
        .messages;
    assert!(
        after > before,
        "the files were shipped again ({before} → {after} messages)"
    );
    stack.worker_until_idle(2).await;
    assert_eq!(stack.landed().await, without_blanks(&expected));
}

#[tokio::test]
async fn nats_restart_while_shipping_loses_and_doubles_nothing() {
    let nats = NatsServer::start().await.unwrap();
    let mut stack = Stack::with(
        testkit::pg_for_test().await.unwrap(),
        NatsHandle::Private(nats),
    )
    .await;
    stack.prepare().await;
    let dir = stack.box_dir("live");
    let all = lines(4, 12_000);
    let expected = expected_of(&all);
    let writer = testkit::data::append_lines_at_rate(dir.join("a.jsonl"), all, 3000);
    let mut worker = stack.worker(&[]).spawn().unwrap();
    let mut shipper = stack.shipper("live", &[]).spawn().unwrap();
    assert!(
        eventually(Duration::from_secs(30), || async {
            stack.readings().await > 1000
        })
        .await
    );
    let NatsHandle::Private(server) = &mut stack.nats else {
        unreachable!()
    };
    server.restart().await.unwrap();
    writer.await.unwrap().unwrap();
    assert!(
        eventually(Duration::from_secs(90), || async {
            stack.readings().await >= expected.valid
        })
        .await,
        "all lines arrive after the NATS restart"
    );
    sigterm(&shipper);
    assert!(shipper.wait().await.unwrap().success());
    sigterm(&worker);
    assert!(worker.wait().await.unwrap().success());
    assert_eq!(stack.landed().await, without_blanks(&expected));
}

#[tokio::test]
async fn postgres_stopped_for_a_while_loses_and_doubles_nothing() {
    let pg = PgServer::start().await.unwrap();
    let mut stack = Stack::with(
        PgHandle::Private(pg),
        testkit::nats_for_test().await.unwrap(),
    )
    .await;
    stack.prepare().await;
    let dir = stack.box_dir("live");
    let all = lines(5, 12_000);
    let expected = expected_of(&all);
    let writer = testkit::data::append_lines_at_rate(dir.join("a.jsonl"), all, 3000);
    let (addr, metrics) = metrics_addr();
    let mut worker = stack.worker(&["--metrics-addr", &addr]).spawn().unwrap();
    let mut shipper = stack.shipper("live", &[]).spawn().unwrap();
    assert!(
        eventually(Duration::from_secs(30), || async {
            stack.readings().await > 1000
        })
        .await
    );
    let PgHandle::Private(server) = &mut stack.pg else {
        unreachable!()
    };
    server.stop().await.unwrap();
    // A while: until a load fails against the stopped server (the worker gives up on a
    // connection after its 10 s acquire timeout) and its messages go back for redelivery.
    let retries = r#"ingest_retries_total{kind="unavailable"}"#;
    let before = metric(metrics, retries).await.unwrap_or(0.0);
    assert!(
        eventually(Duration::from_secs(60), || async {
            metric(metrics, retries).await.is_some_and(|n| n > before)
        })
        .await,
        "a load failed while PostgreSQL was down"
    );
    let PgHandle::Private(server) = &mut stack.pg else {
        unreachable!()
    };
    server.restart().await.unwrap();
    writer.await.unwrap().unwrap();
    assert!(
        eventually(Duration::from_secs(90), || async {
            stack.readings().await >= expected.valid
        })
        .await,
        "all lines arrive after PostgreSQL came back"
    );
    sigterm(&shipper);
    assert!(shipper.wait().await.unwrap().success());
    sigterm(&worker);
    assert!(worker.wait().await.unwrap().success());
    assert_eq!(stack.landed().await, without_blanks(&expected));
}
