use sqlx::Connection;
use testkit::PgServer;

async fn connect(url: &str) -> anyhow::Result<sqlx::PgConnection> {
    Ok(sqlx::PgConnection::connect(url).await?)
}

#[tokio::test]
async fn committed_row_survives_kill_and_restart() -> anyhow::Result<()> {
    let mut pg = PgServer::start().await?;
    assert!(pg.is_running());
    let url = pg.create_database("crash").await?;
    assert_eq!(
        url,
        format!("postgres://postgres@127.0.0.1:{}/crash", pg.port())
    );
    let mut conn = connect(&url).await?;
    sqlx::query("CREATE TABLE t (id int PRIMARY KEY)")
        .execute(&mut conn)
        .await?;
    sqlx::query("INSERT INTO t VALUES (1)")
        .execute(&mut conn)
        .await?;
    pg.kill().await?;
    assert!(!pg.is_running());
    assert!(sqlx::query("SELECT 1").execute(&mut conn).await.is_err());
    pg.restart().await?;
    assert!(pg.is_running());
    let mut conn = connect(&url).await?;
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM t")
        .fetch_one(&mut conn)
        .await?;
    assert_eq!(n, 1);
    Ok(())
}

#[tokio::test]
async fn committed_row_survives_stop_and_restart() -> anyhow::Result<()> {
    let mut pg = PgServer::start().await?;
    let url = pg.create_database("graceful").await?;
    let mut conn = connect(&url).await?;
    sqlx::query("CREATE TABLE t (id int PRIMARY KEY)")
        .execute(&mut conn)
        .await?;
    sqlx::query("INSERT INTO t VALUES (1)")
        .execute(&mut conn)
        .await?;
    pg.stop().await?;
    assert!(!pg.is_running());
    pg.restart().await?;
    let mut conn = connect(&url).await?;
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM t")
        .fetch_one(&mut conn)
        .await?;
    assert_eq!(n, 1);
    Ok(())
}
