//! The simulator binary on its own (`--no-runs`): it writes a JSONL file per resource at the
//! requested cadence, every line a valid reading except the planted bad ones, and stops cleanly
//! on SIGTERM.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn writes_readings_per_resource_with_planted_bad_lines_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut child = Command::new(env!("CARGO_BIN_EXE_edge-mes-sim"))
        .arg("--hot-dir")
        .arg(dir.path())
        .args(["--no-runs", "--resources", "R1,R2", "--tick-ms", "20"])
        .args(["--bad-line-every", "25"])
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .spawn()
        .expect("spawn edge-mes-sim");
    let lines_of = |r: &str| -> Vec<String> {
        std::fs::read_to_string(dir.path().join(format!("{r}.jsonl")))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while lines_of("R1").len() < 200 || lines_of("R2").len() < 200 {
        assert!(
            Instant::now() < deadline,
            "waited 30 s for 200 lines per resource"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let exit = child.wait().expect("wait");
    assert!(exit.success(), "exits 0 on SIGTERM, got {exit}");

    for r in ["R1", "R2"] {
        let (mut good, mut bad) = (0, 0);
        for line in lines_of(r) {
            let v: Option<serde_json::Value> = serde_json::from_str(&line).ok();
            let valid = v.as_ref().is_some_and(|v| {
                v["resource_id"] == r
                    && v["value"].as_f64().is_some_and(f64::is_finite)
                    && chrono::DateTime::parse_from_rfc3339(v["ts"].as_str().unwrap_or("")).is_ok()
            });
            if valid {
                good += 1;
            } else {
                bad += 1;
            }
        }
        assert!(good >= 190, "{r}: {good} valid readings");
        assert!(bad >= 1, "{r}: the planted bad lines are there");
        assert!(bad * 20 < good, "{r}: {bad} bad of {good}");
    }
}
