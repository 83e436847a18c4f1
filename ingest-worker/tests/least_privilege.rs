//! The worker at run time as a least-privilege login (`edge_mes_worker`): after the schema's
//! owner migrated, it starts (checking, not migrating), keeps the partitions, loads and rejects
//! lines exactly as it does as the owner.

use crate::support::*;

#[tokio::test]
async fn the_worker_runs_as_a_login_in_edge_mes_worker() {
    let env = Env::new().await;
    // The owner (the test server's superuser) migrates and creates the streams.
    env.setup_streams().await;
    let owner = env.pool().await;
    let login = testkit::unique_name("worker_login");
    sqlx::query(&format!(
        "CREATE ROLE {login} LOGIN PASSWORD 'pw' IN ROLE edge_mes_worker"
    ))
    .execute(&owner)
    .await
    .unwrap();

    let js = env.js().await;
    let good = br#"{"ts":"2025-08-22T00:37:41Z","resource_id":"SMT01","sensor":"temp","value":37.2,"meta":{"site":"BKK"}}"#;
    let bad = br#"{"ts":"2025-08-22T00:37:42Z","resource_id":"SMT01","sensor":"temp"}"#;
    let mut content = good.to_vec();
    content.push(b'\n');
    content.extend_from_slice(bad);
    content.push(b'\n');
    publish(&js, &env.names, &frame("box1", &content, 65536, 65536)).await;

    let mut config = env.config();
    config.database_url =
        service::secrets::SecretUrl::new(testkit::with_login(&env.db_url, &login, "pw"));
    tokio::time::timeout(
        std::time::Duration::from_secs(120),
        ingest_worker::run(config, tokio_util::sync::CancellationToken::new()),
    )
    .await
    .expect("worker did not go idle within 120 s")
    .expect("worker failed as a least-privilege login");

    assert_eq!(env.readings().await, 1);
    assert_eq!(env.rejected().await, 1);
    // It never owned anything: every table is still the owner's.
    let owned: i64 = sqlx::query_scalar(&format!(
        "SELECT count(*) FROM pg_class WHERE relowner = '{login}'::regrole"
    ))
    .fetch_one(&owner)
    .await
    .unwrap();
    assert_eq!(owned, 0);
}
