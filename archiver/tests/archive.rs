use archiver::db;
use archiver::layout;
use archiver::manifest::Manifest;
use archiver::verify;

use crate::support::{day, parquet_files, Env, SERIES};

/// Rows and value sum of the live files of `day`, read back through the archive's own reader.
async fn archived_sums(env: &Env, d: chrono::NaiveDate) -> (i64, f64, usize) {
    let mut conn = env.pool.acquire().await.unwrap();
    let mut rows = 0i64;
    let mut value = 0.0;
    let mut files = 0;
    for p in db::parts_of_day(&mut conn, d).await.unwrap() {
        let bytes = env.store.get(&p.manifest_path).await.unwrap();
        let m = Manifest::from_bytes(&bytes).unwrap();
        for f in &m.files {
            files += 1;
            let data = env.store.get(&f.path).await.unwrap();
            for (_, _, r) in archiver::parquet_file::read_rows(data).unwrap() {
                rows += 1;
                value += r.value;
            }
        }
    }
    (rows, value, files)
}

#[tokio::test]
async fn archived_days_verify_and_a_flipped_byte_fails_naming_the_file() {
    let env = Env::new().await;
    env.load(1, day(20), &SERIES, 3000).await;
    env.load(2, day(21), &SERIES[..2], 2000).await;
    let report = env.pass().await;
    assert_eq!(report.days_archived, 2);
    assert_eq!(report.failures, 0);
    assert_eq!(report.rows, 3 * 3000 + 2 * 2000);

    for (d, series) in [(day(20), 3), (day(21), 2)] {
        let sums = env.day_sums(d).await;
        let (rows, value, files) = archived_sums(&env, d).await;
        assert_eq!((rows, value, files), (sums.rows, sums.value, series));
        let mut conn = env.pool.acquire().await.unwrap();
        let parts = db::parts_of_day(&mut conn, d).await.unwrap();
        assert_eq!(parts.len(), 1);
        assert!(parts[0].verified_at.is_some(), "the run verified its part");
        let archived: bool = sqlx::query_scalar("SELECT edge_mes_day_archived($1)")
            .bind(d)
            .fetch_one(&env.pool)
            .await
            .unwrap();
        assert!(archived);
    }
    // The resource with a slash and a space is percent-encoded in its path.
    let files = parquet_files(env.root());
    assert!(
        files.contains(
            &"date=2025-08-20/site=S1/resource=Line%202%2FA/sensor=temp/part-00000.parquet"
                .to_owned()
        ),
        "{files:?}"
    );
    // A second pass finds nothing to do.
    assert_eq!(env.pass().await.days_archived, 0);

    let ok = verify::verify_archive(&env.store, Some(&env.pool), None, None)
        .await
        .unwrap();
    assert_eq!((ok.parts, ok.failures.len()), (2, 0));
    assert_eq!(ok.rows, 3 * 3000 + 2 * 2000);

    // Flip one byte in the middle of a file.
    let victim = "date=2025-08-21/site=S1/resource=SMT01/sensor=speed/part-00000.parquet";
    let path = env.root().join(victim);
    let mut bytes = std::fs::read(&path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(&path, &bytes).unwrap();
    let bad = verify::verify_archive(&env.store, Some(&env.pool), None, None)
        .await
        .unwrap();
    assert_eq!(bad.failures.len(), 1, "{:?}", bad.failures);
    assert!(bad.failures[0].contains(victim), "{}", bad.failures[0]);
    assert!(bad.failures[0].contains("SHA-256"), "{}", bad.failures[0]);

    // A file no manifest lists is reported too.
    let stray = "date=2025-08-20/site=S1/resource=SMT01/sensor=temp/part-00007.parquet";
    std::fs::write(env.root().join(stray), b"PAR1").unwrap();
    let bad = verify::verify_archive(&env.store, Some(&env.pool), None, None)
        .await
        .unwrap();
    assert_eq!(bad.failures.len(), 2, "{:?}", bad.failures);
    assert!(bad.failures[1].contains(stray), "{}", bad.failures[1]);
    std::fs::remove_file(env.root().join(stray)).unwrap();

    // The binary says the same and exits non-zero.
    let out = env.command(&["verify"]).output().await.unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(victim), "{stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("verified 2 part(s)") && stdout.contains("1 failure(s)"),
        "{stdout}"
    );
}

#[tokio::test]
async fn late_rows_for_an_archived_day_are_archived_again_exactly_once() {
    let env = Env::new().await;
    env.load(1, day(20), &SERIES, 1000).await;
    assert_eq!(env.pass().await.days_archived, 1);
    let first = env
        .store
        .get(&layout::manifest_path(day(20), 0))
        .await
        .unwrap();

    // Late rows: another source, the same day, one new series and more of an old one.
    env.load(7, day(20), &[("SMT01", "temp"), ("OVEN", "zone1")], 500)
        .await;
    let pending: bool = sqlx::query_scalar("SELECT edge_mes_archive_day_pending($1)")
        .bind(day(20))
        .fetch_one(&env.pool)
        .await
        .unwrap();
    assert!(pending, "the late source is not covered");
    let archived: bool = sqlx::query_scalar("SELECT edge_mes_day_archived($1)")
        .bind(day(20))
        .fetch_one(&env.pool)
        .await
        .unwrap();
    assert!(!archived, "retention must wait for the late rows");

    let report = env.pass().await;
    assert_eq!(report.days_archived, 1);
    assert_eq!(report.rows, 3 * 1000 + 2 * 500);
    assert_eq!(
        env.pass().await.days_archived,
        0,
        "archived once, not again"
    );

    let mut conn = env.pool.acquire().await.unwrap();
    let parts = db::parts_of_day(&mut conn, day(20)).await.unwrap();
    assert_eq!(
        parts.len(),
        1,
        "still one part: the hot day's part was rewritten"
    );
    assert_eq!(parts[0].rows, 3 * 1000 + 2 * 500);
    let sums = env.day_sums(day(20)).await;
    let (rows, value, files) = archived_sums(&env, day(20)).await;
    assert_eq!((rows, value, files), (sums.rows, sums.value, 4));
    let second = env
        .store
        .get(&layout::manifest_path(day(20), 0))
        .await
        .unwrap();
    assert_ne!(first, second);
    let m = Manifest::from_bytes(&second).unwrap();
    let sources: Vec<&str> = m
        .ingest_positions
        .iter()
        .map(|p| p.source.as_str())
        .collect();
    assert_eq!(
        sources.len(),
        2,
        "both sources' ranges are covered: {sources:?}"
    );
    assert!(parquet_files(env.root())
        .iter()
        .all(|p| p.ends_with("part-00000.parquet")));
}

#[tokio::test]
async fn a_rerun_writes_identical_files_whatever_order_the_rows_come_in() {
    let env = Env::new().await;
    env.load(1, day(22), &SERIES, 800).await;
    assert_eq!(env.pass().await.days_archived, 1);
    let files = parquet_files(env.root());
    let before: Vec<Vec<u8>> = files
        .iter()
        .map(|f| std::fs::read(env.root().join(f)).unwrap())
        .collect();
    let manifest = env
        .store
        .get(&layout::manifest_path(day(22), 0))
        .await
        .unwrap();
    // Forget the part, as if the run had been killed before recording it, and store the rows
    // in another physical order: the database returns them differently, the files are the same.
    sqlx::query("DELETE FROM archive_parts")
        .execute(&env.pool)
        .await
        .unwrap();
    sqlx::raw_sql(
        "CREATE TEMP TABLE shuffled AS SELECT * FROM readings ORDER BY random();
         DELETE FROM readings;
         INSERT INTO readings SELECT * FROM shuffled;",
    )
    .execute(&env.pool)
    .await
    .unwrap();
    assert_eq!(env.pass().await.days_archived, 1);
    let after: Vec<Vec<u8>> = files
        .iter()
        .map(|f| std::fs::read(env.root().join(f)).unwrap())
        .collect();
    assert_eq!(before, after);
    assert_eq!(
        manifest,
        env.store
            .get(&layout::manifest_path(day(22), 0))
            .await
            .unwrap()
    );
}

#[tokio::test]
async fn a_day_released_by_retention_keeps_its_part_and_late_rows_make_a_new_one() {
    let env = Env::new().await;
    // Daily partitions, as the worker creates them, so retention drops a whole table.
    sqlx::query("SELECT edge_mes_ensure_partitions($1, $2)")
        .bind(day(20))
        .bind(day(21))
        .execute(&env.pool)
        .await
        .unwrap();
    env.load(1, day(20), &SERIES, 1000).await;
    env.load(2, day(21), &SERIES, 10).await;
    assert_eq!(env.pass().await.days_archived, 2);
    let part0 = env
        .store
        .get(&layout::manifest_path(day(20), 0))
        .await
        .unwrap();

    // Retention as the worker's upkeep runs it (0022): under the day's locks it checks the
    // archive, seals the day's parts (edge_mes_archive_release_day) and drops the partition
    // (plain PostgreSQL) or the chunk (TimescaleDB) in one transaction.
    let expired: String = sqlx::query_scalar("SELECT edge_mes_expire_day($1, true)")
        .bind(day(20))
        .fetch_one(&env.pool)
        .await
        .unwrap();
    assert_eq!(expired, "dropped");
    assert_eq!(env.day_sums(day(20)).await.rows, 0);

    // Late rows for the dropped day land in readings_default.
    env.load(9, day(20), &SERIES[..1], 300).await;
    let report = env.pass().await;
    assert_eq!(report.days_archived, 1);
    assert_eq!(report.rows, 300, "only the late rows, in a new part");

    let mut conn = env.pool.acquire().await.unwrap();
    let parts = db::parts_of_day(&mut conn, day(20)).await.unwrap();
    assert_eq!(parts.len(), 2);
    assert_eq!((parts[0].rows, parts[1].rows), (3000, 300));
    assert!(parts[0].sealed_at.is_some() && parts[1].sealed_at.is_none());
    assert!(parts[1].verified_at.is_some());
    assert_eq!(
        part0,
        env.store
            .get(&layout::manifest_path(day(20), 0))
            .await
            .unwrap(),
        "the sealed part is untouched"
    );
    let ok = verify::verify_archive(&env.store, Some(&env.pool), None, None)
        .await
        .unwrap();
    assert_eq!(
        (ok.parts, ok.failures.len(), ok.rows),
        (3, 0, 3000 + 300 + 30)
    );

    // The other day was not released: its part stays open.
    let parts21 = db::parts_of_day(&mut conn, day(21)).await.unwrap();
    assert!(parts21[0].sealed_at.is_none());
}

#[tokio::test]
async fn rows_removed_without_a_release_never_shrink_a_part() {
    let env = Env::new().await;
    env.load(1, day(20), &SERIES, 400).await;
    assert_eq!(env.pass().await.days_archived, 1);
    // Removed behind the archive's back, then late rows arrive.
    sqlx::query("DELETE FROM readings")
        .execute(&env.pool)
        .await
        .unwrap();
    env.load(3, day(20), &SERIES[..1], 50).await;
    assert_eq!(env.pass().await.rows, 50);
    let mut conn = env.pool.acquire().await.unwrap();
    let parts = db::parts_of_day(&mut conn, day(20)).await.unwrap();
    assert_eq!(
        parts.iter().map(|p| p.rows).collect::<Vec<_>>(),
        vec![1200, 50]
    );
    assert!(parts[0].sealed_at.is_some());
}

#[tokio::test]
async fn the_archiver_runs_as_a_login_in_edge_mes_archiver() {
    let env = Env::new().await;
    env.load(1, day(20), &SERIES, 200).await;
    let login = testkit::unique_name("archiver_login");
    sqlx::query(&format!(
        "CREATE ROLE {login} LOGIN PASSWORD 'pw' IN ROLE edge_mes_archiver"
    ))
    .execute(&env.pool)
    .await
    .unwrap();
    let url = testkit::with_login(&env.db_url, &login, "pw");
    let out = env
        .command(&["run", "--once", "--grace-minutes", "0"])
        .env("DATABASE_URL", &url)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = env
        .command(&["verify"])
        .env("DATABASE_URL", &url)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut conn = env.pool.acquire().await.unwrap();
    let parts = db::parts_of_day(&mut conn, day(20)).await.unwrap();
    assert_eq!(parts.len(), 1);
    assert_eq!(parts[0].rows, 600);
    assert!(parts[0].verified_at.is_some());
    // It never owned anything.
    let owned: i64 = sqlx::query_scalar(&format!(
        "SELECT count(*) FROM pg_class WHERE relowner = '{login}'::regrole"
    ))
    .fetch_one(&env.pool)
    .await
    .unwrap();
    assert_eq!(owned, 0);
    // Retention's login may ask and release.
    let worker = testkit::unique_name("worker_login");
    sqlx::query(&format!(
        "CREATE ROLE {worker} LOGIN PASSWORD 'pw' IN ROLE edge_mes_worker"
    ))
    .execute(&env.pool)
    .await
    .unwrap();
    let wpool = sqlx::PgPool::connect(&testkit::with_login(&env.db_url, &worker, "pw"))
        .await
        .unwrap();
    let released: bool = sqlx::query_scalar("SELECT edge_mes_archive_release_day($1)")
        .bind(day(20))
        .fetch_one(&wpool)
        .await
        .unwrap();
    assert!(released);
}

#[tokio::test]
async fn rows_that_bypassed_the_ledger_are_archived_at_start() {
    let env = Env::new().await;
    sqlx::query("SELECT edge_mes_ensure_partitions($1, $2)")
        .bind(day(20))
        .bind(day(20))
        .execute(&env.pool)
        .await
        .unwrap();
    // Inserted by hand (no ledger entry): in a partition, and in readings_default.
    sqlx::raw_sql(
        "INSERT INTO readings (ts, site, resource_id, sensor, value)
         VALUES ('2025-08-20T10:00:00Z', 'S1', 'R', 'temp', 1.5),
                ('2025-08-24T10:00:00Z', 'S1', 'R', 'temp', 2.5);",
    )
    .execute(&env.pool)
    .await
    .unwrap();
    let blocked: bool = sqlx::query_scalar("SELECT edge_mes_day_archived($1)")
        .bind(day(24))
        .fetch_one(&env.pool)
        .await
        .unwrap();
    assert!(!blocked, "retention waits for the day");
    let report = env.pass().await;
    assert_eq!((report.days_archived, report.rows), (2, 2));
    for d in [day(20), day(24)] {
        let archived: bool = sqlx::query_scalar("SELECT edge_mes_day_archived($1)")
            .bind(d)
            .fetch_one(&env.pool)
            .await
            .unwrap();
        assert!(archived, "{d}");
    }
    assert_eq!(env.pass().await.days_archived, 0);
}
