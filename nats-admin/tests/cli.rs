//! The documented command, as operators run it: the seed file, the printed line, the boxes file.
//! (ops-tests nats_permissions runs nats-server with what it writes.)

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::{Command, Output};

const BOXES: &str = "# boxes\nusers: [\n  # one line per box\n]\n";

fn admin(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_edge-mes-nats-admin"))
        .args(args)
        .env_clear()
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn add(dir: &Path, box_id: &str, seed: &str, extra: &[&str]) -> Output {
    let seed = dir.join(seed);
    let boxes = dir.join("boxes.inc");
    let mut args = vec![
        "add-box",
        "--site",
        "BKK",
        "--box-id",
        box_id,
        "--seed-file",
        seed.to_str().unwrap(),
        "--boxes-file",
        boxes.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    admin(&args)
}

#[test]
fn add_box_writes_a_private_seed_and_lists_the_box_once() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("boxes.inc"), BOXES).unwrap();

    let out = add(dir.path(), "edge-01", "edge-01.nk", &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let line = text(&out.stdout);
    assert_eq!(line.lines().count(), 1, "{line}");
    let seed = std::fs::read_to_string(dir.path().join("edge-01.nk")).unwrap();
    let key = nkeys::KeyPair::from_seed(seed.trim()).unwrap().public_key();
    assert!(line.contains(&key) && !line.contains(seed.trim()), "{line}");
    assert!(
        line.contains(r#""allow":["edge.readings.BKK.edge-01"]"#),
        "{line}"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("edge-01.nk"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let boxes = std::fs::read_to_string(dir.path().join("boxes.inc")).unwrap();
    assert!(boxes.contains(line.trim()), "{boxes}");
    let stderr = text(&out.stderr);
    assert!(stderr.contains("nats-server --signal reload"), "{stderr}");
    assert!(
        !stderr.contains(seed.trim()),
        "the seed must not be printed"
    );

    // Listed once; an existing seed file is never overwritten; neither refusal writes anything.
    let again = add(dir.path(), "edge-01", "edge-01-b.nk", &[]);
    assert!(!again.status.success());
    assert!(text(&again.stderr).contains("already listed"));
    assert!(!dir.path().join("edge-01-b.nk").exists());
    let reuse = add(dir.path(), "edge-02", "edge-01.nk", &[]);
    assert!(!reuse.status.success());
    assert!(text(&reuse.stderr).contains("never overwritten"));
    assert_eq!(
        std::fs::read_to_string(dir.path().join("edge-01.nk")).unwrap(),
        seed
    );

    // Rotation replaces the line; removal revokes the box.
    let rotated = add(dir.path(), "edge-01", "edge-01-b.nk", &["--replace"]);
    assert!(rotated.status.success(), "{}", text(&rotated.stderr));
    let boxes = std::fs::read_to_string(dir.path().join("boxes.inc")).unwrap();
    assert!(!boxes.contains(&key), "{boxes}");
    assert_eq!(boxes.matches("edge.readings.BKK.edge-01").count(), 1);
    let removed = admin(&[
        "remove-box",
        "--site",
        "BKK",
        "--box-id",
        "edge-01",
        "--boxes-file",
        dir.path().join("boxes.inc").to_str().unwrap(),
    ]);
    assert!(removed.status.success(), "{}", text(&removed.stderr));
    assert_eq!(
        std::fs::read_to_string(dir.path().join("boxes.inc")).unwrap(),
        BOXES
    );
}

#[test]
fn without_a_boxes_file_the_line_is_printed_only() {
    let dir = tempfile::tempdir().unwrap();
    let seed = dir.path().join("b.nk");
    let out = admin(&[
        "add-box",
        "--site",
        "HAM",
        "--box-id",
        "b 1",
        "--seed-file",
        seed.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("edge.readings.HAM.b_201"));
    assert!(text(&out.stderr).contains("Helm values"));
    assert!(seed.is_file());
}
