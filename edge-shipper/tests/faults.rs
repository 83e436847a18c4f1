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

#[tokio::test]
async fn rename_rotation_and_copytruncate_while_shipping_lose_nothing() {
    let w = World::new("rotation").await;
    w.create_stream().await;
    let dir = w.data_dir();
    let mut shipper = w.spawn(&["--rotate-wait-ms", "500"]);

    // Rename rotation: the writer keeps writing through its descriptor after the rename.
    let app = dir.join("app.jsonl");
    let first = append_lines_at_rate(&app, (0..3000).map(|k| line("app1", k)).collect(), 3000);
    w.wait_for_messages(5).await;
    let rotated = dir.join("app.jsonl.1");
    std::fs::rename(&app, &rotated).expect("rotate");
    let second = append_lines_at_rate(&app, (0..2000).map(|k| line("app2", k)).collect(), 3000);
    assert_eq!(first.await.expect("writer").expect("writes"), 3000);
    assert_eq!(second.await.expect("writer").expect("writes"), 2000);

    // copytruncate of another file: copy (not matching the glob), truncate, write anew.
    let ct = dir.join("ct.jsonl");
    write_lines(&ct, "ct-before", 0..500);
    let before = w
        .wait_for_all(&[rotated.clone(), app.clone(), ct.clone()])
        .await;
    assert_no_loss(&before, &[rotated.clone(), app.clone(), ct.clone()]);
    let ct_before = std::fs::read(&ct).expect("read");
    std::fs::copy(&ct, dir.join("ct.jsonl.old")).expect("copy");
    std::fs::OpenOptions::new()
        .write(true)
        .open(&ct)
        .and_then(|f| f.set_len(0))
        .expect("truncate");
    write_lines(&ct, "ct-after", 0..700);

    let shipped = w.wait_for_all(&[app.clone(), ct.clone()]).await;
    // The rotated file is shipped whole under its own source, as is the truncated one's old
    // content.
    let old_ct = dir.join("ct.before");
    std::fs::write(&old_ct, &ct_before).expect("keep old content");
    let all = [rotated, app, ct, old_ct];
    assert!(covers_all(&shipped, &all), "{} messages", shipped.len());
    assert_exactly_once(&shipped, &all);
    shipper.signal("TERM");
    assert!(
        shipper.wait().await.success(),
        "log:\n{}",
        shipper.log_text()
    );
}

#[tokio::test]
async fn nats_down_at_start_then_up_ships_everything() {
    let mut w = World::new("nats_late").await;
    w.create_stream().await;
    w.nats.stop().await.expect("stop nats");
    let file = w.data_dir().join("a.jsonl");
    write_lines(&file, "a", 0..2000);
    let mut shipper = w.spawn(&[]);
    // The shipper has read the file while NATS is still down.
    let deadline = std::time::Instant::now() + PATIENCE;
    while !shipper.log_text().contains("reading file") {
        assert!(
            std::time::Instant::now() < deadline,
            "log:\n{}",
            shipper.log_text()
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    w.nats.restart().await.expect("restart nats");
    let files = [file];
    let shipped = w.wait_for_all(&files).await;
    assert_no_loss(&shipped, &files);
    shipper.signal("TERM");
    assert!(
        shipper.wait().await.success(),
        "log:\n{}",
        shipper.log_text()
    );
    assert_checkpointed(&w.checkpoint().expect("checkpoint"), &files);
}

#[tokio::test]
async fn a_full_stream_pushes_back_and_shipping_resumes_when_it_has_room() {
    use async_nats::jetstream::stream;
    let w = World::new("full").await;
    let js = w.js().await;
    let mut config = stream::Config {
        name: w.names.readings_stream.clone(),
        subjects: vec![w.names.readings_filter()],
        storage: stream::StorageType::File,
        discard: stream::DiscardPolicy::New,
        max_messages: 5,
        duplicate_window: protocol::streams::DUPLICATE_WINDOW,
        ..Default::default()
    };
    js.create_stream(config.clone())
        .await
        .expect("create stream");
    let file = w.data_dir().join("a.jsonl");
    write_lines(&file, "a", 0..2000);
    let mut shipper = w.spawn(&["--max-message-bytes", "4096", "--max-line-bytes", "1024"]);
    w.wait_for_messages(5).await;
    let deadline = std::time::Instant::now() + PATIENCE;
    while !shipper.log_text().contains("publish failed; retrying") {
        assert!(
            std::time::Instant::now() < deadline,
            "log:\n{}",
            shipper.log_text()
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    config.max_messages = -1;
    js.update_stream(config).await.expect("lift the limit");
    let files = [file];
    let shipped = w.wait_for_all(&files).await;
    assert_exactly_once(&shipped, &files);
    assert!(shipped.len() > 5);
    shipper.signal("TERM");
    assert!(
        shipper.wait().await.success(),
        "log:\n{}",
        shipper.log_text()
    );
}
