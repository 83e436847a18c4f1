//! Servers never outlive their owner: not after a panic, not after the process exits without
//! dropping them.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use testkit::{NatsServer, PgServer};

const LEAK_HELPER_ENV: &str = "TESTKIT_LEAK_HELPER";

fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat
                .rsplit(')')
                .next()
                .and_then(|s| s.split_whitespace().next());
            !matches!(state, Some("Z" | "X") | None)
        }
        Err(_) => false,
    }
}

async fn wait_gone(pids: &[u32]) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while pids.iter().any(|&p| alive(p)) {
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    true
}

#[tokio::test]
async fn panicking_test_leaves_no_server_or_dir_behind() -> anyhow::Result<()> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(async move {
        let nats = NatsServer::start().await.expect("nats starts");
        let pg = PgServer::start().await.expect("postgres starts");
        let info = (
            [
                nats.pid().expect("nats pid"),
                pg.pid().expect("postgres pid"),
            ],
            [nats.dir().to_path_buf(), pg.dir().to_path_buf()],
        );
        tx.send(info).expect("send");
        panic!("a test fails while its servers run");
    });
    let (pids, dirs): ([u32; 2], [PathBuf; 2]) = rx.await?;
    assert!(task.await.is_err_and(|e| e.is_panic()));
    assert!(
        wait_gone(&pids).await,
        "servers {pids:?} outlived the panic"
    );
    for dir in dirs {
        assert!(!dir.exists(), "{} was not removed", dir.display());
    }
    Ok(())
}

/// Run in a child process by the test below: starts both servers, leaks them (as a `static`
/// would), prints their pids and exits without any `Drop`.
#[tokio::test]
#[ignore = "helper, run by servers_die_with_the_test_process"]
async fn leak_servers_helper() -> anyhow::Result<()> {
    if std::env::var_os(LEAK_HELPER_ENV).is_none() {
        return Ok(());
    }
    let nats = NatsServer::start().await?;
    let pg = PgServer::start().await?;
    println!(
        "LEAKED {} {} {} {}",
        nats.pid().unwrap_or_default(),
        pg.pid().unwrap_or_default(),
        nats.dir().display(),
        pg.dir().display()
    );
    std::mem::forget(nats);
    std::mem::forget(pg);
    std::process::exit(0);
}

/// Runs [`leak_servers_helper`] in a child process; returns the leaked pids and dirs.
async fn run_leaking_process() -> anyhow::Result<(Vec<u32>, Vec<PathBuf>)> {
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.args([
        "cleanup::leak_servers_helper",
        "--exact",
        "--ignored",
        "--nocapture",
    ])
    .env(LEAK_HELPER_ENV, "1");
    let out = tokio::process::Command::from(cmd).output().await?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("LEAKED "))
        .ok_or_else(|| {
            anyhow::anyhow!(
                "helper printed no pids: {stdout}\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        })?;
    let fields: Vec<&str> = line.split_whitespace().collect();
    anyhow::ensure!(fields.len() == 4, "unexpected helper output {line}");
    let pids = fields[..2]
        .iter()
        .map(|p| p.parse())
        .collect::<Result<Vec<u32>, _>>()?;
    let dirs = fields[2..].iter().map(PathBuf::from).collect();
    Ok((pids, dirs))
}

#[tokio::test]
async fn servers_die_with_the_test_process_and_their_dirs_are_swept() -> anyhow::Result<()> {
    let (pids, dirs) = run_leaking_process().await?;
    assert!(pids.iter().all(|&p| p > 0));
    assert!(
        wait_gone(&pids).await,
        "servers {pids:?} outlived their process"
    );
    assert!(dirs.iter().all(|d| d.exists()), "nothing dropped them");
    // The next process that starts a server removes dirs whose owner is gone.
    let (pids2, dirs2) = run_leaking_process().await?;
    let swept = dirs.iter().all(|d| !d.exists());
    assert!(
        wait_gone(&pids2).await,
        "servers {pids2:?} outlived their process"
    );
    for dir in dirs.iter().chain(&dirs2) {
        let _ = std::fs::remove_dir_all(dir);
    }
    assert!(swept, "stale dirs {dirs:?} were not swept");
    Ok(())
}
