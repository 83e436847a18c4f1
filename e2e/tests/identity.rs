//! The worker trusts the subject, not the box. With one NATS identity per edge box, the server
//! lets box edge-01 publish only `edge.readings.BKK.edge-01` (ops-tests nats_permissions proves
//! that); here box edge-01 uses that subject with another box's or site's identity in its
//! headers, and the real worker must store nothing under that identity, nor let the spoof
//! suppress the other box's real lines.

use protocol::{BatchKind, BatchMeta, ByteRange, Fingerprint, Names, SourceKey};
use testkit::data::Expected;

use crate::support::{without_blanks, Stack, SITE};

/// `n` valid readings whose value is `value`, as one file's bytes.
fn lines(n: usize, value: u32) -> String {
    (0..n)
        .map(|i| {
            format!(
                "{{\"ts\":\"2026-01-01T00:00:{:02}Z\",\"resource_id\":\"SMT01\",\"sensor\":\"temp\",\"value\":{value}}}\n",
                i % 60
            )
        })
        .collect()
}

/// Publishes `payload` on the readings subject of `subject_box` (site BKK) with headers that
/// name `site`, `box_id` and the source `source_box/<fingerprint of fingerprint_of>`.
async fn publish_as(
    stack: &Stack,
    subject_box: &str,
    site: &str,
    box_id: &str,
    source_box: &str,
    fingerprint_of: &str,
    payload: &str,
) {
    let names = Names::isolated(&stack.tag);
    let fingerprint = Fingerprint::of_head(fingerprint_of.as_bytes(), 64 * 1024).unwrap();
    let meta = BatchMeta {
        site: site.into(),
        box_id: box_id.into(),
        source: SourceKey::new(source_box, fingerprint),
        path: "/data/line.jsonl".into(),
        range: ByteRange::new(0, payload.len() as u64).unwrap(),
        lines: protocol::framing::count_lines(payload.as_bytes()),
        kind: BatchKind::Lines,
    };
    let mut headers = async_nats::HeaderMap::new();
    for (k, v) in meta.headers() {
        headers.insert(k, v.as_str());
    }
    headers.insert("Nats-Msg-Id", meta.msg_id().as_str());
    let js = async_nats::jetstream::new(async_nats::connect(stack.nats.url()).await.unwrap());
    js.publish_with_headers(
        names.readings_subject(SITE, subject_box),
        headers,
        payload.to_owned().into(),
    )
    .await
    .unwrap()
    .await
    .unwrap();
}

#[tokio::test]
async fn a_box_cannot_make_readings_appear_under_another_box_or_site() {
    let stack = Stack::new().await;
    stack.prepare().await;

    // Box edge-02's real file, not shipped yet.
    let real = lines(20, 21);
    let real_file = stack.box_dir("edge-02").join("line.jsonl");
    std::fs::write(&real_file, &real).unwrap();

    // Box edge-01, on its own subject: as box edge-02, with the first 10 lines' range of
    // edge-02's real source (same first line, so the same source name; other values); as site
    // HAM; and under its own identity but with the first 5 lines' range of edge-02's source.
    // Had the worker believed any of them, edge-02's real lines in those ranges would count as
    // loaded. (The ranges differ from what edge-02's shipper sends, whose message id would
    // otherwise be taken within JetStream's duplicate window: docs/operations.md, "NATS in
    // production".)
    let forged = lines(20, 99);
    assert_eq!(forged.len(), real.len());
    let first = |text: &str, n: usize| text.split_inclusive('\n').take(n).collect::<String>();
    publish_as(
        &stack,
        "edge-01",
        SITE,
        "edge-02",
        "edge-02",
        &real,
        &first(&forged, 10),
    )
    .await;
    publish_as(
        &stack, "edge-01", "HAM", "edge-01", "edge-01", &forged, &forged,
    )
    .await;
    publish_as(
        &stack,
        "edge-01",
        SITE,
        "edge-01",
        "edge-02",
        &real,
        &first(&forged, 5),
    )
    .await;
    stack.worker_until_idle(2).await;

    let pool = stack.pool().await;
    let scalar = |sql: &'static str| {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>(sql)
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    };
    assert_eq!(scalar("SELECT count(*) FROM readings").await, 0);
    assert_eq!(scalar("SELECT count(*) FROM ingest_ledger").await, 0);
    let dead: Vec<(String, String)> =
        sqlx::query_as("SELECT subject, reason FROM ingest_dead_letters ORDER BY id")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(dead.len(), 3, "{dead:?}");
    let spoofer = Names::isolated(&stack.tag).readings_subject(SITE, "edge-01");
    for (subject, reason) in &dead {
        assert_eq!(subject, &spoofer);
        assert!(reason.starts_with("identity: header Edge-"), "{reason}");
    }
    assert!(dead[0].1.contains("Edge-Box \"edge-02\""), "{}", dead[0].1);
    assert!(dead[1].1.contains("Edge-Site \"HAM\""), "{}", dead[1].1);
    assert!(
        dead[2].1.contains("Edge-Source \"edge-02/"),
        "{}",
        dead[2].1
    );

    // Box edge-02 ships its real file: every line lands, none was taken as already loaded.
    stack.ship_until_caught_up("edge-02").await;
    stack.worker_until_idle(2).await;
    assert_eq!(
        stack.landed().await,
        without_blanks(&Expected::of_file(&real_file).unwrap())
    );
    assert_eq!(
        scalar("SELECT count(*) FROM readings WHERE value = 99").await,
        0
    );
    assert_eq!(
        scalar("SELECT count(*) FROM ingest_ledger WHERE box_id <> 'edge-02' OR site <> 'BKK'")
            .await,
        0
    );
    pool.close().await;
}
