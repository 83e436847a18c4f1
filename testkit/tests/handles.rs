//! Private and external servers behind one handle.

use sqlx::Connection;
use testkit::{unique_name, PgHandle, PgServer};

#[tokio::test]
async fn external_postgres_handle_creates_databases_in_the_named_server() -> anyhow::Result<()> {
    let pg = PgServer::start().await?;
    for server_url in [
        pg.url("postgres"),
        format!("postgres://postgres@127.0.0.1:{}", pg.port()),
    ] {
        let handle = PgHandle::External(server_url);
        let name = unique_name("external");
        let url = handle.create_database(&name).await?;
        assert_eq!(url, pg.url(&name));
        assert_eq!(handle.url(&name), url);
        let mut conn = sqlx::PgConnection::connect(&url).await?;
        let db: String = sqlx::query_scalar("SELECT current_database()")
            .fetch_one(&mut conn)
            .await?;
        assert_eq!(db, name);
    }
    Ok(())
}

#[tokio::test]
async fn private_handles_are_used_without_environment() -> anyhow::Result<()> {
    // Only meaningful where the environment names no servers (as in CI of this crate).
    if std::env::var_os(testkit::DATABASE_URL_ENV).is_some()
        || std::env::var_os(testkit::NATS_URL_ENV).is_some()
    {
        return Ok(());
    }
    let pg = testkit::pg_for_test().await?;
    assert!(matches!(pg, PgHandle::Private(_)));
    let url = pg.create_database("private_one").await?;
    sqlx::PgConnection::connect(&url).await?;
    let nats = testkit::nats_for_test().await?;
    assert!(matches!(nats, testkit::NatsHandle::Private(_)));
    async_nats::connect(nats.url()).await?;
    Ok(())
}

#[tokio::test]
async fn servers_start_in_parallel() -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let servers = futures::future::try_join_all((0..4).map(|_| PgServer::start())).await?;
    let mut ports: Vec<u16> = servers.iter().map(PgServer::port).collect();
    ports.sort_unstable();
    ports.dedup();
    assert_eq!(ports.len(), 4);
    for pg in &servers {
        let mut conn = sqlx::PgConnection::connect(&pg.url("postgres")).await?;
        let max: String = sqlx::query_scalar("SHOW max_connections")
            .fetch_one(&mut conn)
            .await?;
        assert!(max.parse::<u32>()? >= 100);
    }
    eprintln!("4 postgres servers started in {:?}", started.elapsed());
    Ok(())
}
