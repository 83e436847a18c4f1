//! Normal operation: everything ships once, with the right headers, and is checkpointed.

use std::time::{Duration, Instant};

use clap::Parser;
use edge_shipper::Config;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use crate::support::*;

#[tokio::test]
async fn ships_every_line_of_a_multi_file_set() {
    let w = World::new("multi").await;
    w.create_stream().await;
    let dir = w.data_dir();
    let files: Vec<_> = [("a", 500), ("b", 5000), ("c", 1)]
        .iter()
        .map(|(name, n)| {
            let path = dir.join(format!("{name}.jsonl"));
            write_lines(&path, name, 0..*n);
            path
        })
        .collect();
    // Not shipped: an empty file, a non-matching file, a last line without newline.
    std::fs::write(dir.join("empty.jsonl"), b"").unwrap();
    write_lines(&dir.join("other.txt"), "txt", 0..10);
    std::fs::OpenOptions::new()
        .append(true)
        .open(&files[0])
        .and_then(|mut f| std::io::Write::write_all(&mut f, b"{\"unterminated\":"))
        .unwrap();

    let config =
        Config::try_parse_from(std::iter::once("edge-shipper".to_owned()).chain(w.args())).unwrap();
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(edge_shipper::run(config, shutdown.clone()));
    let shipped = w.wait_for_all(&files).await;
    shutdown.cancel();
    running.await.unwrap().unwrap();

    assert_exactly_once(&shipped, &files);
    let lines: u64 = shipped.iter().map(|s| s.meta.lines).sum();
    assert_eq!(lines, 5501);
    for s in &shipped {
        assert!(files.iter().any(|f| f.display().to_string() == s.meta.path));
        assert!(s.payload.len() <= protocol::streams::DEFAULT_MAX_MESSAGE_BYTES);
    }
    assert_checkpointed(&w.checkpoint().unwrap(), &files);
}

#[tokio::test]
async fn until_caught_up_exits_zero_once_everything_is_acked_and_checkpointed() {
    let w = World::new("caught_up").await;
    w.create_stream().await;
    let dir = w.data_dir();
    let files: Vec<_> = (0..4)
        .map(|i| {
            let path = dir.join(format!("f{i}.jsonl"));
            write_lines(&path, &format!("f{i}"), 0..(20_000 * i + 1));
            path
        })
        .collect();
    let mut shipper = w.spawn(&["--until-caught-up"]);
    let status = shipper.wait().await;
    assert!(
        status.success(),
        "exit {status}; log:\n{}",
        shipper.log_text()
    );
    let shipped = w.shipped().await;
    assert_exactly_once(&shipped, &files);
    assert_checkpointed(&w.checkpoint().unwrap(), &files);

    // A second run has nothing to do and ships nothing.
    let mut again = w.spawn(&["--until-caught-up"]);
    assert!(again.wait().await.success());
    assert_eq!(w.shipped().await.len(), shipped.len());
}

#[tokio::test]
async fn waits_for_a_missing_stream_then_ships() {
    let w = World::new("no_stream").await;
    let file = w.data_dir().join("a.jsonl");
    write_lines(&file, "a", 0..100);
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let mut shipper = w.spawn(&["--metrics-addr", &addr]);
    // The shipper is trying and failing: no stream yet.
    let deadline = Instant::now() + PATIENCE;
    loop {
        let metrics = scrape(&addr).await.unwrap_or_default();
        if metric(&metrics, "edge_shipper_publish_retries_total").is_some_and(|v| v >= 2.0) {
            let published = metric(&metrics, "edge_shipper_messages_published_total");
            assert_eq!(published.unwrap_or(0.0), 0.0);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no retries seen; log:\n{}",
            shipper.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    w.create_stream().await;
    let shipped = w.wait_for_all(std::slice::from_ref(&file)).await;
    assert_no_loss(&shipped, std::slice::from_ref(&file));
    shipper.signal("TERM");
    assert!(
        shipper.wait().await.success(),
        "log:\n{}",
        shipper.log_text()
    );
    assert!(shipper.log_text().contains("no stream for the subject yet"));
    assert_checkpointed(&w.checkpoint().unwrap(), std::slice::from_ref(&file));
}

async fn scrape(addr: &str) -> std::io::Result<String> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .await?;
    let mut body = String::new();
    stream.read_to_string(&mut body).await?;
    Ok(body)
}

fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}
