use std::collections::BTreeMap;

use chrono::{TimeZone, Utc};
use testkit::data::{generate, Expected, GenSpec};

use crate::support::{copy_into, without_blanks, Stack};

#[tokio::test]
async fn sample_file_lands_exactly_and_a_second_run_adds_nothing() {
    let stack = Stack::new().await;
    let sample = testkit::bins::workspace_root().join("hotdata/sample_readings.jsonl");
    copy_into(
        &sample,
        &stack.box_dir("edge-01").join("sample_readings.jsonl"),
    );
    let expected = Expected::of_file(&sample).unwrap();
    assert_eq!(expected.valid, 2400);

    stack.prepare().await;
    stack.ship_until_caught_up("edge-01").await;
    stack.worker_until_idle(2).await;
    let landed = stack.landed().await;
    assert_eq!(landed, without_blanks(&expected));
    let per_sensor: BTreeMap<&str, u64> = landed
        .per_series
        .iter()
        .map(|((r, s), n)| {
            assert_eq!(r, "SMT01");
            (s.as_str(), *n)
        })
        .collect();
    assert_eq!(
        per_sensor,
        BTreeMap::from([
            ("defect_rate", 600),
            ("speed", 600),
            ("temp", 600),
            ("yield", 600)
        ])
    );

    // Both binaries again: the shipper resumes at its checkpoint, nothing new lands.
    stack.ship_until_caught_up("edge-01").await;
    stack.worker_until_idle(2).await;
    assert_eq!(stack.landed().await, without_blanks(&expected));
}

#[tokio::test]
async fn generated_multi_box_set_lands_exactly_with_two_workers() {
    let stack = Stack::new().await;
    let spec = GenSpec {
        boxes: 4,
        files_per_box: 3,
        lines: 120_000,
        malformed_ratio: 0.01,
        resources: 6,
        sensors: 5,
        seed: 7,
        start_ts: Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).unwrap(),
    };
    let (boxes, expected) = generate(stack.dir.path(), &spec).unwrap();
    assert!(expected.lines() >= 100_000);
    assert!(
        expected.rejected.len() >= 10,
        "many kinds of malformed lines"
    );
    stack.prepare().await;

    let worker_a = stack.worker(&["--until-idle", "3"]).spawn().unwrap();
    let worker_b = stack.worker(&["--until-idle", "3"]).spawn().unwrap();
    let mut shippers = Vec::new();
    for b in &boxes {
        shippers.push(
            stack
                .shipper(&b.box_id, &["--until-caught-up"])
                .spawn()
                .unwrap(),
        );
    }
    for mut s in shippers {
        assert!(s.wait().await.unwrap().success());
    }
    for mut w in [worker_a, worker_b] {
        assert!(w.wait().await.unwrap().success());
    }
    let landed = stack.landed().await;
    assert_eq!(landed.valid, expected.valid);
    assert_eq!(landed.rejected, expected.rejected);
    assert_eq!(landed.per_series, expected.per_series);
}
