//! The READINGS stream as a buffer, not an archive: it frees what was loaded, so it carries many
//! times its size limit; when the workers stop it fills, shippers wait, and nothing is lost; a
//! limits-retention stream of an earlier version is upgraded in place without loss or doubles.

use std::cell::Cell;
use std::io::Write;
use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream};
use chrono::{TimeZone, Utc};
use protocol::Names;
use testkit::data::{Expected, ReadingGen};

use crate::support::{eventually, sigterm, without_blanks, Stack};

/// Small enough that a test carries several times the limit in seconds.
const LIMIT: i64 = 2 * 1024 * 1024;
const LIMIT_ARG: &str = "2097152";

fn write_lines(path: &std::path::Path, seed: u64, n: usize) -> Expected {
    let lines = ReadingGen::new(
        seed,
        Utc.with_ymd_and_hms(2026, 11, 3, 0, 0, 0).unwrap(),
        4,
        4,
    )
    .with_box("buf")
    .lines(n);
    let mut e = Expected::default();
    let mut f = std::fs::File::create(path).unwrap();
    for l in &lines {
        writeln!(f, "{l}").unwrap();
        e.record(l.as_bytes());
    }
    e
}

/// Files of `box_id` holding at least `bytes`, each ≈ 1 MiB; their expected outcome.
fn fill_box(stack: &Stack, box_id: &str, bytes: u64, seed: u64) -> Expected {
    let dir = stack.box_dir(box_id);
    let mut expected = Expected::default();
    let mut written = 0u64;
    let mut i = 0;
    while written < bytes {
        let path = dir.join(format!("part-{i}.jsonl"));
        expected.merge(&write_lines(&path, seed + i, 6_000));
        written += std::fs::metadata(&path).unwrap().len();
        i += 1;
    }
    expected
}

async fn js(stack: &Stack) -> jetstream::Context {
    jetstream::new(async_nats::connect(stack.nats.url()).await.unwrap())
}

async fn stream_state(js: &jetstream::Context, name: &str) -> stream::Info {
    js.get_stream(name)
        .await
        .unwrap()
        .info()
        .await
        .unwrap()
        .clone()
}

#[tokio::test]
async fn carries_three_times_its_size_limit_through_a_running_worker() {
    let stack = Stack::new().await;
    let names = Names::isolated(&stack.tag);
    let expected = fill_box(&stack, "buf", 3 * LIMIT as u64 + LIMIT as u64 / 2, 10);
    let mut worker = stack
        .worker(&["--stream-max-bytes", LIMIT_ARG])
        .spawn()
        .unwrap();
    let js = js(&stack).await;
    assert!(
        eventually(Duration::from_secs(60), || async {
            js.get_stream(&names.readings_stream).await.is_ok()
        })
        .await,
        "the worker created the stream"
    );
    let mut shipper = stack.shipper("buf", &[]).spawn().unwrap();
    let largest = Cell::new(0u64);
    let arrived = eventually(Duration::from_secs(180), || async {
        let info = stream_state(&js, &names.readings_stream).await;
        largest.set(largest.get().max(info.state.bytes));
        stack.readings().await >= expected.valid
    })
    .await;
    let largest = largest.get();
    assert!(arrived, "every valid line arrived while the shipper ran");
    let info = stream_state(&js, &names.readings_stream).await;
    assert!(
        info.state.last_sequence > 0 && largest <= LIMIT as u64,
        "the stream never held more than its limit ({largest} bytes seen)"
    );
    assert!(
        eventually(Duration::from_secs(30), || async {
            stream_state(&js, &names.readings_stream)
                .await
                .state
                .messages
                == 0
        })
        .await,
        "the stream is empty once everything is loaded"
    );
    sigterm(&shipper);
    assert!(shipper.wait().await.unwrap().success());
    sigterm(&worker);
    assert!(worker.wait().await.unwrap().success());
    assert_eq!(stack.landed().await, without_blanks(&expected));
    let carried: u64 = stream_state(&js, &names.readings_stream)
        .await
        .state
        .last_sequence;
    eprintln!(
        "carried {} lines in {carried} messages through a {LIMIT}-byte stream; largest backlog {largest} bytes",
        expected.lines()
    );
}

#[tokio::test]
async fn worker_stopped_until_the_stream_is_full_then_restarted_loads_everything_once() {
    let stack = Stack::new().await;
    let names = Names::isolated(&stack.tag);
    // The worker creates the stream and its consumer, then stops.
    let status = stack
        .worker(&["--stream-max-bytes", LIMIT_ARG, "--until-idle", "1"])
        .status()
        .await
        .unwrap();
    assert!(status.success());
    let expected = fill_box(&stack, "buf", 3 * LIMIT as u64, 20);
    let mut shipper = stack.shipper("buf", &[]).spawn().unwrap();
    let js = js(&stack).await;
    // Full: what is left is less than one message of the shipper (256 KiB by default).
    assert!(
        eventually(Duration::from_secs(60), || async {
            let info = stream_state(&js, &names.readings_stream).await;
            info.state.bytes + 256 * 1024 > LIMIT as u64
        })
        .await,
        "the stream filled up to its limit"
    );
    let held = stream_state(&js, &names.readings_stream).await.state;
    assert!(held.bytes <= LIMIT as u64);
    assert_eq!(
        stack.readings().await,
        0,
        "nothing loaded while no worker runs"
    );
    // The shipper waits, it does not give up: still running while the stream stays full.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        shipper.try_wait().unwrap().is_none(),
        "the shipper keeps waiting"
    );
    assert_eq!(
        stream_state(&js, &names.readings_stream)
            .await
            .state
            .last_sequence,
        held.last_sequence,
        "a full stream takes nothing more"
    );

    let mut worker = stack
        .worker(&["--stream-max-bytes", LIMIT_ARG])
        .spawn()
        .unwrap();
    assert!(
        eventually(Duration::from_secs(180), || async {
            stack.readings().await >= expected.valid
        })
        .await,
        "everything lands once the worker is back"
    );
    sigterm(&shipper);
    assert!(shipper.wait().await.unwrap().success());
    sigterm(&worker);
    assert!(worker.wait().await.unwrap().success());
    assert_eq!(stack.landed().await, without_blanks(&expected));
    assert_eq!(
        stream_state(&js, &names.readings_stream)
            .await
            .state
            .messages,
        0
    );
}

#[tokio::test]
async fn limits_stream_of_an_earlier_version_is_upgraded_without_loss_or_doubles() {
    let stack = Stack::new().await;
    let names = Names::isolated(&stack.tag);
    let js = js(&stack).await;
    // The shape an earlier version created: limits retention, a filtered durable consumer.
    js.create_stream(stream::Config {
        name: names.readings_stream.clone(),
        subjects: vec![names.readings_filter()],
        retention: stream::RetentionPolicy::Limits,
        discard: stream::DiscardPolicy::New,
        max_bytes: 64 * 1024 * 1024,
        ..Default::default()
    })
    .await
    .unwrap();
    js.get_stream(&names.readings_stream)
        .await
        .unwrap()
        .create_consumer(consumer::pull::Config {
            durable_name: Some(names.consumer.clone()),
            ack_policy: consumer::AckPolicy::Explicit,
            filter_subject: names.readings_filter(),
            ..Default::default()
        })
        .await
        .unwrap();
    // Lines shipped into it before the upgrade, never loaded.
    let mut expected = fill_box(&stack, "old", 1024 * 1024, 30);
    stack.ship_until_caught_up("old").await;
    let before = stream_state(&js, &names.readings_stream).await.state;
    assert!(before.messages > 0);
    // A shipper keeps going through the upgrade: its lines written while the stream is sealed.
    let mut shipper = stack.shipper("live", &[]).spawn().unwrap();
    let live_dir = stack.box_dir("live");
    expected.merge(&write_lines(&live_dir.join("a.jsonl"), 31, 4_000));

    let mut worker = stack.worker(&[]).spawn().unwrap();
    assert!(
        eventually(Duration::from_secs(120), || async {
            stream_state(&js, &names.readings_stream)
                .await
                .config
                .retention
                == stream::RetentionPolicy::WorkQueue
        })
        .await,
        "the worker replaced the stream by an work-queue one"
    );
    expected.merge(&write_lines(&live_dir.join("b.jsonl"), 32, 4_000));
    assert!(
        eventually(Duration::from_secs(120), || async {
            stack.readings().await >= expected.valid
        })
        .await,
        "every line arrived"
    );
    sigterm(&shipper);
    assert!(shipper.wait().await.unwrap().success());
    sigterm(&worker);
    assert!(worker.wait().await.unwrap().success());
    let after = stream_state(&js, &names.readings_stream).await;
    assert_eq!(
        after.config.max_bytes,
        protocol::streams::READINGS_MAX_BYTES
    );
    assert!(!after.config.sealed);
    assert_eq!(
        after.state.messages, 0,
        "the new stream frees what was loaded"
    );
    assert_eq!(stack.landed().await, without_blanks(&expected));
}
