//! An independent reader: pyarrow (from the venv .ci/tools.sh builds) reads the archive's files
//! and checks its manifests' SHA-256 and Merkle roots with its own code.

use std::path::PathBuf;

use crate::support::{day, Env, SERIES};

fn python() -> Option<PathBuf> {
    let py = testkit::bins::workspace_root().join("target/ops-tools/venv/bin/python");
    let ok = std::process::Command::new(&py)
        .args(["-c", "import pyarrow.parquet"])
        .output()
        .is_ok_and(|o| o.status.success());
    if ok {
        return Some(py);
    }
    if std::env::var("EDGE_MES_SKIP_MISSING_TOOLS").as_deref() == Ok("1") {
        eprintln!(
            "SKIPPED: pyarrow missing in target/ops-tools/venv (EDGE_MES_SKIP_MISSING_TOOLS=1)"
        );
        return None;
    }
    panic!(
        "pyarrow is missing in target/ops-tools/venv: run `bash .ci/tools.sh` \
         (or set EDGE_MES_SKIP_MISSING_TOOLS=1 to skip)"
    );
}

#[tokio::test]
async fn pyarrow_reads_the_same_rows_and_checks_the_manifests() {
    let Some(py) = python() else { return };
    let env = Env::new().await;
    env.load(1, day(20), &SERIES, 2500).await;
    env.load(2, day(21), &SERIES[..2], 1200).await;
    assert_eq!(env.pass().await.days_archived, 2);

    let script = testkit::bins::workspace_root().join("archiver/tests/read_archive.py");
    let out = tokio::process::Command::new(&py)
        .arg(&script)
        .arg(env.root())
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["errors"], serde_json::json!([]), "{report}");
    assert_eq!(report["manifests_checked"], 2);
    for d in [day(20), day(21)] {
        let sums = env.day_sums(d).await;
        let got = &report["days"][d.to_string()];
        assert_eq!(got["rows"].as_i64(), Some(sums.rows), "{d}: {got}");
        assert_eq!(
            got["ts_micros"]
                .as_str()
                .map(|s| s.parse::<i128>().unwrap()),
            Some(sums.ts_micros),
            "{d}: {got}"
        );
        assert_eq!(got["value"].as_f64(), Some(sums.value), "{d}: {got}");
        assert_eq!(got["sites"], serde_json::json!(["S1"]));
    }
    let resources = &report["days"]["2025-08-20"]["resources"];
    assert_eq!(resources, &serde_json::json!(["Line 2/A", "SMT01"]));
}
