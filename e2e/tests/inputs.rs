use std::io::Write;
use std::os::unix::fs::symlink;
use std::time::Duration;

use protocol::RejectReason;
use testkit::data::{malformed_lines, Expected};

use crate::support::{
    eventually, metrics_addr, stop_once_everything_landed, without_blanks, Stack,
};

fn reading(i: usize) -> String {
    format!(
        r#"{{"ts":"2026-11-03T10:{:02}:{:02}Z","resource_id":"AOI01","sensor":"defects","value":{i}}}"#,
        (i / 60) % 60,
        i % 60
    )
}

#[tokio::test]
async fn bad_input_is_rejected_with_reasons_and_the_services_keep_running() {
    let stack = Stack::new().await;
    stack.prepare().await;
    let dir = stack.box_dir("bad");
    let mut expected = Expected::default();

    // Every malformed kind, between valid lines.
    let mut mixed = Vec::new();
    for (i, (bad, _)) in malformed_lines().iter().enumerate() {
        mixed.extend_from_slice(reading(i).as_bytes());
        mixed.push(b'\n');
        mixed.extend_from_slice(bad);
        mixed.push(b'\n');
    }
    std::fs::write(dir.join("mixed.jsonl"), &mixed).unwrap();
    expected.merge(&Expected::of_bytes(&mixed));

    // A 10 MB line between two valid ones.
    let mut big = format!("{}\n", reading(1000)).into_bytes();
    big.extend_from_slice(b"{\"ts\":\"2026-11-03T10:00:00Z\",\"resource_id\":\"AOI01\",\"sensor\":\"blob\",\"value\":1,\"meta\":{\"x\":\"");
    big.extend(std::iter::repeat_n(b'x', 10 * 1024 * 1024));
    big.extend_from_slice(b"\"}}\n");
    big.extend_from_slice(format!("{}\n", reading(1001)).as_bytes());
    std::fs::write(dir.join("big.jsonl"), &big).unwrap();
    expected.valid += 2;
    *expected
        .per_series
        .entry(("AOI01".into(), "defects".into()))
        .or_default() += 2;
    *expected
        .rejected
        .entry(RejectReason::LineTooLong)
        .or_default() += 1;

    // Things that are not readable files but match the glob.
    std::fs::write(dir.join("empty.jsonl"), b"").unwrap();
    std::fs::create_dir(dir.join("directory.jsonl")).unwrap();
    symlink(dir.join("loop.jsonl"), dir.join("loop.jsonl")).unwrap();
    symlink(dir.join("missing-target"), dir.join("dangling.jsonl")).unwrap();
    let fifo = dir.join("pipe.jsonl");
    assert!(std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    // A trailing line without a newline is not shipped until it is completed.
    std::fs::write(
        dir.join("partial.jsonl"),
        format!("{}\n{}", reading(2000), reading(2001)),
    )
    .unwrap();
    expected.valid += 1;
    *expected
        .per_series
        .entry(("AOI01".into(), "defects".into()))
        .or_default() += 1;

    stack.ship_until_caught_up("bad").await;
    stack.worker_until_idle(2).await;
    assert_eq!(stack.landed().await, without_blanks(&expected));

    // Completing the partial line ships it.
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(dir.join("partial.jsonl"))
        .unwrap();
    f.write_all(b"\n").unwrap();
    drop(f);
    stack.ship_until_caught_up("bad").await;
    stack.worker_until_idle(2).await;
    expected.valid += 1;
    *expected
        .per_series
        .entry(("AOI01".into(), "defects".into()))
        .or_default() += 1;
    assert_eq!(stack.landed().await, without_blanks(&expected));
}

#[tokio::test]
async fn file_deleted_while_being_read_is_shipped_whole() {
    let stack = Stack::new().await;
    stack.prepare().await;
    let dir = stack.box_dir("del");
    let mut content = String::new();
    for i in 0..200_000 {
        content.push_str(&reading(i));
        content.push('\n');
    }
    let path = dir.join("doomed.jsonl");
    std::fs::write(&path, &content).unwrap();
    let mut worker = stack.worker(&[]).spawn().unwrap();
    let (addr, metrics) = metrics_addr();
    let mut shipper = stack
        .shipper("del", &["--metrics-addr", &addr])
        .spawn()
        .unwrap();
    assert!(
        eventually(Duration::from_secs(30), || async {
            stack.readings().await > 0
        })
        .await
    );
    std::fs::remove_file(&path).unwrap();
    assert!(
        eventually(Duration::from_secs(90), || async {
            stack.readings().await >= 200_000
        })
        .await,
        "the open descriptor is read to the end"
    );
    stop_once_everything_landed(&stack, &mut shipper, metrics, &mut worker).await;
    assert_eq!(stack.readings().await, 200_000);
}
