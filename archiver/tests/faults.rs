use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, SystemTime};

use archiver::db;
use archiver::manifest::Manifest;
use testkit::{PgHandle, PgServer};

use crate::support::{day, eventually, parquet_files, Env, SERIES};

/// Every file under `root` (staging files included) with its modification time.
fn signature(root: &Path) -> BTreeSet<(String, SystemTime)> {
    let mut out = BTreeSet::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(d) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                dirs.push(p);
            } else if let Ok(m) = e.metadata().and_then(|m| m.modified()) {
                out.insert((p.display().to_string(), m));
            }
        }
    }
    out
}

#[tokio::test]
async fn archiver_killed_mid_archive_again_and_again_leaves_every_row_in_one_live_file() {
    // A private server: this test must not share one with others.
    let env = Env::with(PgHandle::Private(PgServer::start().await.unwrap())).await;
    for (i, d) in [20u32, 21, 22, 23].into_iter().enumerate() {
        env.load(i as u64 + 1, day(d), &SERIES, 6000).await;
    }
    let mut killed_mid_run = 0;
    for round in 0..8u32 {
        if round == 4 {
            // Late rows for days archived (or half-archived) by now.
            env.load(50, day(21), &SERIES[..2], 900).await;
            env.load(51, day(20), &[("NEW", "x")], 300).await;
        }
        let mut child = env
            .command(&["run", "--once", "--grace-minutes", "0"])
            .spawn()
            .unwrap();
        // Kill after the archive changed 1..=4 times in this round (a file, a manifest, a
        // staging file appearing or being renamed), or let it finish.
        let changes_wanted = round % 4 + 1;
        let mut last = signature(env.root());
        let mut changes = 0;
        let mut exited = false;
        let progressed = eventually(Duration::from_secs(60), || {
            let now = signature(env.root());
            if now != last {
                changes += 1;
                last = now;
            }
            exited = matches!(child.try_wait(), Ok(Some(_)));
            let done = exited || changes >= changes_wanted;
            async move { done }
        })
        .await;
        assert!(
            progressed,
            "round {round}: the archiver neither wrote nor exited"
        );
        if !exited {
            child.start_kill().unwrap();
            let status = child.wait().await.unwrap();
            if status.code().is_none() {
                killed_mid_run += 1;
            }
        }
    }
    assert!(
        killed_mid_run >= 4,
        "only {killed_mid_run} kills landed mid-run"
    );

    let out = env
        .command(&["run", "--once", "--grace-minutes", "0"])
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Every manifest verifies and every part is marked verified.
    let report = archiver::verify::verify_archive(&env.store, Some(&env.pool), None, None)
        .await
        .unwrap();
    assert!(report.failures.is_empty(), "{:?}", report.failures);
    let parts = db::parts(&env.pool, None, None).await.unwrap();
    assert_eq!(parts.len(), 4, "one open part per day: {parts:?}");
    assert!(parts.iter().all(|p| p.verified_at.is_some()));

    // The live files are exactly the files on disk: nothing stray, no staging leftovers.
    let mut live = Vec::new();
    for p in &parts {
        let m = Manifest::from_bytes(&env.store.get(&p.manifest_path).await.unwrap()).unwrap();
        let mut rows = 0i64;
        let mut value = 0.0;
        for f in &m.files {
            live.push(f.path.clone());
            for (_, _, r) in
                archiver::parquet_file::read_rows(env.store.get(&f.path).await.unwrap()).unwrap()
            {
                rows += 1;
                value += r.value;
            }
        }
        // Each row of the database is in the files once: same count, same sum.
        let sums = env.day_sums(p.day).await;
        assert_eq!((rows, value), (sums.rows, sums.value), "{}", p.day);
        assert_eq!(p.rows, sums.rows);
    }
    live.sort();
    assert_eq!(live, parquet_files(env.root()));
    assert_eq!(env.day_sums(day(20)).await.rows, 3 * 6000 + 300);
    assert_eq!(env.day_sums(day(21)).await.rows, 3 * 6000 + 2 * 900);
    // And a further run has nothing to do.
    assert_eq!(env.pass().await.days_archived, 0);
}

#[tokio::test]
async fn replay_killed_mid_way_and_run_again_loads_every_row_once() {
    let env = Env::with(PgHandle::Private(PgServer::start().await.unwrap())).await;
    for (i, d) in [20u32, 21, 22, 23].into_iter().enumerate() {
        env.load(i as u64 + 1, day(d), &SERIES, 4000).await;
    }
    assert_eq!(env.pass().await.days_archived, 4);
    let url = env
        .pg
        .create_database(&testkit::unique_name("replay_kill"))
        .await
        .unwrap();
    let target = crate::support::migrated_pool(&url).await;
    let replayed = |pool: sqlx::PgPool| async move {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM archive_replays")
            .fetch_one(&pool)
            .await
            .unwrap()
    };
    let mut killed = 0;
    for round in 1..=3i64 {
        let mut child = env
            .command(&["replay", "--from", "2025-08-20", "--to", "2025-08-23"])
            .env("DATABASE_URL", &url)
            .spawn()
            .unwrap();
        // Kill once `round` parts are in (the next one is then under way), or let it finish.
        let mut exited = false;
        assert!(
            eventually(Duration::from_secs(60), || {
                exited = matches!(child.try_wait(), Ok(Some(_)));
                let target = target.clone();
                async move { exited || replayed(target).await >= round }
            })
            .await,
            "round {round}: replay made no progress"
        );
        if !exited {
            child.start_kill().unwrap();
            if child.wait().await.unwrap().code().is_none() {
                killed += 1;
            }
        }
    }
    assert!(killed >= 1, "no kill landed mid-replay");
    let out = env
        .command(&["replay", "--from", "2025-08-20", "--to", "2025-08-23"])
        .env("DATABASE_URL", &url)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(replayed(target.clone()).await, 4);
    for d in [20u32, 21, 22, 23] {
        assert_eq!(
            crate::support::day_sums(&target, day(d)).await,
            env.day_sums(day(d)).await,
            "{}",
            day(d)
        );
    }
}

#[tokio::test]
async fn run_stops_cleanly_on_sigterm() {
    let env = Env::new().await;
    env.load(1, day(20), &SERIES, 300).await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let mut child = env
        .command(&[
            "run",
            "--grace-minutes",
            "0",
            "--poll-secs",
            "1",
            "--metrics-addr",
            &addr,
        ])
        .spawn()
        .unwrap();
    let pool = env.pool.clone();
    assert!(
        eventually(Duration::from_secs(60), || {
            let pool = pool.clone();
            async move {
                sqlx::query_scalar::<_, bool>(
                    "SELECT EXISTS (SELECT 1 FROM archive_parts WHERE verified_at IS NOT NULL)",
                )
                .fetch_one(&pool)
                .await
                .unwrap()
            }
        })
        .await,
        "the day was archived and verified"
    );
    // The pass's figures are on /metrics.
    let mut metrics = String::new();
    assert!(
        eventually(Duration::from_secs(30), || {
            metrics = scrape(&addr);
            let ok = metrics.contains("archive_rows_total 900")
                && metrics.contains("archive_days_total 1");
            async move { ok }
        })
        .await,
        "{metrics}"
    );
    let pid = child.id().unwrap();
    std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    let status = tokio::time::timeout(Duration::from_secs(15), child.wait())
        .await
        .expect("exits within its shutdown timeout")
        .unwrap();
    assert!(status.success(), "{status:?}");
}

/// `GET /metrics` over a plain TCP connection (empty on any error).
fn scrape(addr: &str) -> String {
    use std::io::{Read, Write};
    let Ok(mut conn) = std::net::TcpStream::connect(addr) else {
        return String::new();
    };
    let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = conn.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let mut out = String::new();
    let _ = conn.read_to_string(&mut out);
    out
}
