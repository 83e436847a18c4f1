//! Faults: the shipper stopped or killed mid-stream, NATS restarted mid-stream.

use std::path::PathBuf;

use testkit::data::append_lines_at_rate;

use crate::support::*;

/// Starts writers appending `per_file` lines to each of `n` files at `rate` lines/s each.
fn start_writers(
    w: &World,
    n: usize,
    per_file: usize,
    rate: u32,
) -> (
    Vec<PathBuf>,
    Vec<tokio::task::JoinHandle<anyhow::Result<u64>>>,
) {
    let dir = w.data_dir();
    (0..n)
        .map(|i| {
            let name = format!("live{i}");
            let path = dir.join(format!("{name}.jsonl"));
            let lines = (0..per_file).map(|k| line(&name, k)).collect();
            (path.clone(), append_lines_at_rate(path, lines, rate))
        })
        .unzip()
}

async fn finish_writers(
    writers: Vec<tokio::task::JoinHandle<anyhow::Result<u64>>>,
    per_file: usize,
) {
    for writer in writers {
        let written = writer.await.expect("writer task").expect("writer");
        assert_eq!(written, per_file as u64);
    }
}

#[tokio::test]
async fn resumes_after_sigterm_without_duplicates() {
    let w = World::new("sigterm").await;
    w.create_stream().await;
    let (files, writers) = start_writers(&w, 3, 4000, 2000);
    let mut shipper = w.spawn(&[]);
    w.wait_for_messages(10).await;
    shipper.signal("TERM");
    let status = shipper.wait().await;
    assert!(
        status.success(),
        "exit {status}; log:\n{}",
        shipper.log_text()
    );
    finish_writers(writers, 4000).await;

    let mut again = w.spawn(&["--until-caught-up"]);
    assert!(again.wait().await.success(), "log:\n{}", again.log_text());
    let shipped = w.shipped().await;
    assert_exactly_once(&shipped, &files);
    assert_checkpointed(&w.checkpoint().unwrap(), &files);
}

#[tokio::test]
async fn sigkill_mid_stream_then_restart_loses_nothing() {
    let w = World::new("sigkill").await;
    w.create_stream().await;
    let (files, writers) = start_writers(&w, 3, 4000, 2000);
    let mut shipper = w.spawn(&[]);
    w.wait_for_messages(10).await;
    shipper.kill().await;
    finish_writers(writers, 4000).await;

    let mut again = w.spawn(&["--until-caught-up"]);
    assert!(again.wait().await.success(), "log:\n{}", again.log_text());
    let shipped = w.shipped().await;
    // Re-sent ranges are allowed here (the worker's ledger drops them); lost ones are not.
    assert_no_loss(&shipped, &files);
    assert_checkpointed(&w.checkpoint().unwrap(), &files);
}

#[tokio::test]
async fn nats_restart_mid_stream_loses_nothing() {
    let mut w = World::new("nats_restart").await;
    w.create_stream().await;
    let (files, writers) = start_writers(&w, 3, 4000, 2000);
    let mut shipper = w.spawn(&[]);
    w.wait_for_messages(10).await;
    w.nats.restart().await.unwrap();
    finish_writers(writers, 4000).await;
    let shipped = w.wait_for_all(&files).await;
    assert_no_loss(&shipped, &files);
    shipper.signal("TERM");
    assert!(
        shipper.wait().await.success(),
        "log:\n{}",
        shipper.log_text()
    );
    assert_checkpointed(&w.checkpoint().unwrap(), &files);
}
