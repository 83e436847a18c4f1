use std::collections::BTreeMap;

use protocol::{decode_line, Limits, RejectReason};

use crate::support::{frame, publish, Env};

/// Valid readings interleaved with every malformed kind testkit knows; returns the content and
/// the expected (rows, rejections by reason), computed with the protocol's own validator.
fn mixed_content(seed: u64, valid: usize) -> (Vec<u8>, u64, BTreeMap<RejectReason, u64>) {
    let bad = testkit::data::malformed_lines();
    let mut content = Vec::new();
    let mut rows = 0;
    let mut rejected = BTreeMap::new();
    for i in 0..valid {
        let line = format!(
            r#"{{"ts":"2026-11-20T08:{:02}:{:02}.{:03}Z","resource_id":"SMT{:02}","work_order_id":"WO{seed}","operation_id":"OP10","sensor":"temp","value":{}.{},"unit":"C","meta":{{"site":"BKK"}}}}"#,
            (i / 60) % 60,
            i % 60,
            i % 1000,
            i % 7,
            35 + i % 5,
            i % 10
        );
        content.extend_from_slice(line.as_bytes());
        content.push(b'\n');
        // Every malformed kind, spread evenly through the file.
        let stride = (valid / bad.len()).max(1);
        if i % stride == 0 {
            if let Some((bytes, _)) = bad.get(i / stride) {
                content.extend_from_slice(bytes);
                content.push(b'\n');
            }
        }
        if i % 500 == 0 {
            content.extend_from_slice(b"\n");
        }
    }
    for line in content.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match decode_line(line, &Limits::default()) {
            Ok(_) => rows += 1,
            Err(r) => *rejected.entry(r.reason).or_default() += 1,
        }
    }
    (content, rows, rejected)
}

async fn rejected_by_reason(env: &Env) -> BTreeMap<RejectReason, u64> {
    let pool = env.pool().await;
    let rows: Vec<(String, i64)> =
        sqlx::query_as("SELECT reason, count(*) FROM rejected_readings GROUP BY reason")
            .fetch_all(&pool)
            .await
            .unwrap();
    rows.into_iter()
        .map(|(r, n)| (RejectReason::parse(&r).expect("known reason"), n as u64))
        .collect()
}

#[tokio::test]
async fn every_line_loads_once_across_rebatching_and_redelivery() {
    let env = Env::new().await;
    env.setup_streams().await;
    let js = env.js().await;
    let (content, rows, rejected) = mixed_content(1, 3000);
    assert!(rejected.len() > 5, "the fixture covers many reasons");
    // The same file three times: two framings (a shipper that restarted and re-batched) and an
    // exact republish (deduplicated by JetStream itself).
    let a = frame("box1", &content, 4096, 65536);
    let b = frame("box1", &content, 7000, 65536);
    publish(&js, &env.names, &a).await;
    publish(&js, &env.names, &b).await;
    publish(&js, &env.names, &a).await;
    env.run_until_idle().await;

    assert_eq!(env.readings().await as u64, rows);
    assert_eq!(rejected_by_reason(&env).await, rejected);
    // Redelivery of everything again (a shipper that lost its state) changes nothing.
    let c = frame("box1", &content, 1500, 65536);
    publish(&js, &env.names, &c).await;
    env.run_until_idle().await;
    assert_eq!(env.readings().await as u64, rows);
    assert_eq!(rejected_by_reason(&env).await, rejected);
    // The ledger covers the whole file with no gap once compacted.
    let pool = env.pool().await;
    ingest_worker::db::compact_ledger(&pool, 100).await.unwrap();
    let (lo, hi, n): (i64, i64, i64) = sqlx::query_as(
        "SELECT min(lower(byte_range)), max(upper(byte_range)), count(*) FROM ingest_ledger",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!((lo, hi as usize, n), (0, content.len(), 1));
}

#[tokio::test]
async fn rows_keep_their_fields_and_rejections_their_reason_and_offset() {
    let env = Env::new().await;
    env.setup_streams().await;
    let js = env.js().await;
    let good = br#"{"ts":"2025-08-22T00:37:41Z","resource_id":"SMT01","work_order_id":"WO123","operation_id":"OP10","sensor":"temp","value":37.2,"unit":"C","meta":{"site":"BKK"},"line":"L1"}"#;
    let bad = br#"{"ts":"2025-08-22T00:37:42Z","resource_id":"SMT01","sensor":"temp","value":NaN}"#;
    let mut content = good.to_vec();
    content.extend_from_slice(b"\r\n");
    content.extend_from_slice(bad);
    content.push(b'\n');
    publish(&js, &env.names, &frame("box1", &content, 65536, 65536)).await;
    env.run_until_idle().await;

    let pool = env.pool().await;
    let row: (String, String, String, Option<String>, Option<String>, String, f64, Option<String>, serde_json::Value, i64) =
        sqlx::query_as(
            "SELECT to_char(ts AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS'), site, resource_id, work_order_id,
                    operation_id, sensor, value, unit, meta, count(*) OVER ()
             FROM readings",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(row.0, "2025-08-22T00:37:41");
    assert_eq!(row.1, "BKK");
    assert_eq!(row.2, "SMT01");
    assert_eq!(row.3.as_deref(), Some("WO123"));
    assert_eq!(row.4.as_deref(), Some("OP10"));
    assert_eq!(row.5, "temp");
    assert_eq!(row.6, 37.2);
    assert_eq!(row.7.as_deref(), Some("C"));
    assert_eq!(row.8, serde_json::json!({"site":"BKK","line":"L1"}));
    assert_eq!(row.9, 1);

    let (reason, offset, line, box_id): (String, i64, String, String) =
        sqlx::query_as("SELECT reason, byte_offset, line, box_id FROM rejected_readings")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(reason, "non_finite_value");
    assert_eq!(offset as usize, good.len() + 2);
    assert_eq!(line.as_bytes(), bad);
    assert_eq!(box_id, "box1");
}

#[tokio::test]
async fn two_workers_share_the_consumer_without_duplicates() {
    let env = Env::new().await;
    env.setup_streams().await;
    let js = env.js().await;
    let mut expected_rows = 0;
    let mut expected_rejected = 0;
    for source in 0..8u64 {
        let (content, rows, rejected) = mixed_content(source, 1500);
        expected_rows += rows;
        expected_rejected += rejected.values().sum::<u64>();
        let box_id = format!("box{source}");
        // Two framings of each file, so both workers race for the same ranges.
        publish(&js, &env.names, &frame(&box_id, &content, 3000, 65536)).await;
        publish(&js, &env.names, &frame(&box_id, &content, 5000, 65536)).await;
    }
    let mut c1 = env.config();
    c1.batch_max_messages = 4;
    let mut c2 = c1.clone();
    c2.until_idle = Some(2);
    let shutdown = tokio_util::sync::CancellationToken::new();
    let (r1, r2) = tokio::join!(
        ingest_worker::run(c1, shutdown.clone()),
        ingest_worker::run(c2, shutdown.clone())
    );
    r1.unwrap();
    r2.unwrap();
    assert_eq!(env.readings().await as u64, expected_rows);
    assert_eq!(env.rejected().await as u64, expected_rejected);
}

#[tokio::test]
async fn oversize_line_is_rejected_and_the_rest_of_the_file_loads() {
    let env = Env::new().await;
    env.setup_streams().await;
    let js = env.js().await;
    let line = |v: u32| {
        format!(r#"{{"ts":"2026-01-01T00:00:0{v}Z","resource_id":"R","sensor":"s","value":{v}}}"#)
    };
    let mut content = format!("{}\n", line(1)).into_bytes();
    let big_at = content.len();
    content.extend_from_slice(b"{\"ts\":\"");
    content.extend(std::iter::repeat_n(b'x', 10 * 1024 * 1024));
    content.extend_from_slice(b"\"}\n");
    content.extend_from_slice(format!("{}\n{}\n", line(2), line(3)).as_bytes());
    let messages = frame("box1", &content, 256 * 1024, 65536);
    assert!(messages
        .iter()
        .any(|(m, _)| m.kind == protocol::BatchKind::Oversize));
    publish(&js, &env.names, &messages).await;
    env.run_until_idle().await;
    assert_eq!(env.readings().await, 3);
    let pool = env.pool().await;
    let (reason, offset, bytes): (String, i64, i64) =
        sqlx::query_as("SELECT reason, byte_offset, line_bytes FROM rejected_readings")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(reason, "line_too_long");
    assert_eq!(offset as usize, big_at);
    assert_eq!(
        bytes as usize,
        10 * 1024 * 1024 + 9,
        "line length without its newline"
    );
}

#[tokio::test]
async fn unframeable_message_goes_to_dead_letters_and_others_load() {
    let env = Env::new().await;
    env.setup_streams().await;
    let js = env.js().await;
    let content = br#"{"ts":"2026-01-01T00:00:00Z","resource_id":"R","sensor":"s","value":1}
"#;
    let mut messages = frame("box1", content, 65536, 65536);
    // A message whose header claims more bytes than it carries.
    let (mut bad_meta, payload) = frame("box2", content, 65536, 65536).remove(0);
    bad_meta.range.end += 10;
    messages.push((bad_meta, payload));
    publish(&js, &env.names, &messages).await;
    // And one without any edge headers at all.
    js.publish(env.names.readings_subject("BKK", "box3"), "hello".into())
        .await
        .unwrap()
        .await
        .unwrap();
    env.run_until_idle().await;

    assert_eq!(env.readings().await, 1);
    assert_eq!(
        env.scalar("SELECT count(*) FROM ingest_dead_letters").await,
        2
    );
    let reasons: Vec<String> =
        sqlx::query_scalar("SELECT reason FROM ingest_dead_letters ORDER BY id")
            .fetch_all(&env.pool().await)
            .await
            .unwrap();
    assert!(
        reasons.iter().any(|r| r.contains("payload is")),
        "{reasons:?}"
    );
    assert!(reasons.iter().any(|r| r.contains("missing")), "{reasons:?}");
    let mut dlq = js.get_stream(&env.names.dlq_stream).await.unwrap();
    assert_eq!(dlq.info().await.unwrap().state.messages, 2);
}

#[tokio::test]
async fn row_the_database_refuses_is_rejected_alone() {
    let env = Env::new().await;
    env.setup_streams().await;
    let js = env.js().await;
    // A row that passes validation but that this database refuses: a constraint of the test's
    // own, as a plant's extra CHECK or a jsonb rule the decoder does not know would.
    let pool = env.pool().await;
    sqlx::query("ALTER TABLE readings ADD CONSTRAINT test_refuses_17 CHECK (value <> 17)")
        .execute(&pool)
        .await
        .unwrap();
    let mut content = Vec::new();
    for i in 0..50 {
        content.extend_from_slice(
            format!(r#"{{"ts":"2026-01-01T00:00:00Z","resource_id":"R","sensor":"s","value":{i},"meta":{{"a":"ok"}}}}"#)
                .as_bytes(),
        );
        content.push(b'\n');
    }
    publish(&js, &env.names, &frame("box1", &content, 2000, 65536)).await;
    env.run_until_idle().await;
    assert_eq!(env.readings().await, 49);
    let (reason, detail): (String, String) =
        sqlx::query_as("SELECT reason, detail FROM rejected_readings")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(reason, "database_rejected");
    assert!(detail.contains("test_refuses_17"), "{detail}");
    let missing: Option<f64> = sqlx::query_scalar("SELECT value FROM readings WHERE value = 17")
        .fetch_optional(&pool)
        .await
        .unwrap();
    assert_eq!(missing, None);
}
