use archiver::replay::replay;
use archiver::ArchiveError;

use crate::support::{day, day_sums, load, migrated_pool, Env, SERIES};

#[tokio::test]
async fn replay_into_an_empty_database_restores_the_window_exactly_once() {
    let env = Env::new().await;
    env.load(1, day(20), &SERIES, 1500).await;
    env.load(2, day(21), &SERIES[1..], 700).await;
    env.load(3, day(22), &SERIES, 100).await;
    assert_eq!(env.pass().await.days_archived, 3);

    let url = env
        .pg
        .create_database(&testkit::unique_name("replay"))
        .await
        .unwrap();
    let target = migrated_pool(&url).await;
    let r = replay(&target, &env.store, day(20), day(21)).await.unwrap();
    assert_eq!((r.parts_loaded, r.rows_loaded), (2, 3 * 1500 + 2 * 700));
    for d in [day(20), day(21)] {
        assert_eq!(day_sums(&target, d).await, env.day_sums(d).await, "{d}");
    }
    assert_eq!(
        day_sums(&target, day(22)).await.rows,
        0,
        "outside the window"
    );
    // Every column comes back as it was (meta as jsonb, NULLs as NULLs).
    let digest = |pool: sqlx::PgPool| async move {
        let s: String = sqlx::query_scalar(
            "SELECT md5(string_agg(concat_ws('|', ts, site, resource_id, work_order_id, operation_id,
                                             sensor, value, unit, meta::text, (work_order_id IS NULL)::text),
                                   ',' ORDER BY ts, resource_id, sensor))
             FROM readings WHERE ts < '2025-08-22'",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        s
    };
    assert_eq!(digest(env.pool.clone()).await, digest(target.clone()).await);

    // Again, from the library and from the binary: nothing more.
    let again = replay(&target, &env.store, day(20), day(22)).await.unwrap();
    assert_eq!((again.parts_already, again.parts_loaded), (2, 1));
    let out = env
        .command(&["replay", "--from", "2025-08-20", "--to", "2025-08-22"])
        .env("DATABASE_URL", &url)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("replayed 0 part(s), 0 row(s); 3 part(s) replayed before"),
        "{stdout}"
    );
    for d in [day(20), day(21), day(22)] {
        assert_eq!(day_sums(&target, d).await, env.day_sums(d).await, "{d}");
    }

    // Into the database whose rows are hot: skipped, nothing doubled.
    let hot = replay(&env.pool, &env.store, day(20), day(22))
        .await
        .unwrap();
    assert_eq!((hot.parts_hot, hot.parts_loaded), (3, 0));
    assert_eq!(env.day_sums(day(20)).await.rows, 3 * 1500);

    // A database that holds live rows of a day it knows no part of: refused.
    let url2 = env
        .pg
        .create_database(&testkit::unique_name("replay_live"))
        .await
        .unwrap();
    let live = migrated_pool(&url2).await;
    load(&live, 5, day(21), &SERIES[..1], 10).await;
    let err = replay(&live, &env.store, day(21), day(21))
        .await
        .unwrap_err();
    assert!(matches!(err, ArchiveError::Refused(_)), "{err}");
    assert_eq!(day_sums(&live, day(21)).await.rows, 10);
}
