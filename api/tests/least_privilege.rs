//! mes-api at run time as a least-privilege login (`edge_mes_api`): after the schema's owner
//! migrated, every endpoint family works — the run lifecycle (batched and keyed reports), OEE,
//! trace, SPC, the board — and the outbox relay publishes and marks events as that login.

use std::time::Duration;

use mes_api::relay;
use mes_api::{AppState, Settings};
use protocol::OpRunNames;
use serde_json::json;
use testkit::NatsServer;
use tokio_util::sync::CancellationToken;

use crate::support::*;

#[tokio::test]
async fn the_api_runs_as_a_login_in_edge_mes_api() {
    let t = db().await;
    let login = testkit::unique_name("api_login");
    sqlx::query(&format!(
        "CREATE ROLE {login} LOGIN PASSWORD 'pw' IN ROLE edge_mes_api"
    ))
    .execute(&t.pool)
    .await
    .unwrap();
    let pool = mes_api::db::connect(&testkit::with_login(&t.url, &login, "pw"), 8)
        .await
        .unwrap();
    // At start: a check, not a migration, then its default site.
    mes_api::db::prepare(&pool, service::db::MigrateMode::Auto)
        .await
        .unwrap();
    mes_api::db::ensure_site(&pool, "LP", "Europe/Berlin")
        .await
        .unwrap();
    let app = mes_api::app(AppState::new(
        pool.clone(),
        None,
        Settings {
            default_site: "BKK".to_owned(),
        },
    ));

    let id = start_run(
        &app,
        json!({"work_order_id":"WO-lp","operation_id":"OP10","resource_id":"R-lp","ideal_cycle_time_s":1.0}),
    )
    .await;
    for (uri, body, key) in [
        (
            "/op_run/report",
            json!({"op_run_id":id,"good_delta":5,"scrap_delta":1}),
            None,
        ),
        (
            "/op_run/report",
            json!({"op_run_id":id,"good_delta":2,"scrap_delta":0}),
            Some("lp-1"),
        ),
        (
            "/op_run/pause",
            json!({"op_run_id":id,"reason_code":"breakdown"}),
            None,
        ),
        ("/op_run/resume", json!({"op_run_id":id}), None),
        (
            "/op_run/complete",
            json!({"op_run_id":id,"good_units":10}),
            Some("lp-2"),
        ),
    ] {
        let answer = match key {
            Some(k) => post_with_key(&app, uri, body, k).await,
            None => post(&app, uri, body).await,
        };
        assert!(answer.status.is_success(), "{uri}: {}", answer.body);
    }
    for uri in [
        format!("/op_run/{id}"),
        "/op_run/active".to_owned(),
        "/kpi/oee?site_id=BKK".to_owned(),
        "/trace/work_order/WO-lp".to_owned(),
        "/spc?resource_id=R-lp&sensor=temp".to_owned(),
        "/board/state".to_owned(),
    ] {
        let answer = get(&app, &uri).await;
        assert_eq!(answer.status.as_u16(), 200, "{uri}: {}", answer.body);
    }
    assert_eq!(
        get(&app, &format!("/op_run/{id}")).await.body["good_units"],
        10
    );

    // The relay, as the same login: publishes, marks sent, trims old keys and events.
    let nats = NatsServer::start().await.unwrap();
    let client = async_nats::connect(nats.url()).await.unwrap();
    let stop = CancellationToken::new();
    let relay_task = tokio::spawn(relay::run(
        pool.clone(),
        client,
        relay_settings(OpRunNames::isolated(&t.name)),
        Default::default(),
        stop.clone(),
    ));
    wait_until(
        "every event sent by the login's relay",
        Duration::from_secs(30),
        || async {
            scalar_i64(&t.pool, "SELECT count(*) FROM outbox WHERE sent_at IS NULL").await == 0
        },
    )
    .await;
    assert_eq!(scalar_i64(&t.pool, "SELECT count(*) FROM outbox").await, 6);
    stop.cancel();
    relay_task.await.unwrap();
}

/// `mes-api migrate`, the owner's one-shot job, with its URL from a secrets file
/// (`DATABASE_URL_FILE`, as Docker and Kubernetes mount secrets); both set is refused.
#[tokio::test]
async fn migrate_takes_the_owner_url_from_a_file() {
    let name = testkit::unique_name("api_migrate");
    let url = pg().await.url(&name);
    let file = std::env::temp_dir().join(format!("{name}.url"));
    std::fs::write(&file, format!("{url}\n")).unwrap();
    let run = |both: bool| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_mes-api"));
        cmd.arg("migrate")
            .env_remove("DATABASE_URL")
            .env("DATABASE_URL_FILE", &file)
            .env("LOG_FORMAT", "json");
        if both {
            cmd.env("DATABASE_URL", "postgres://elsewhere/db");
        }
        cmd.output().unwrap()
    };
    let refused = run(true);
    assert!(!refused.status.success());
    let text = String::from_utf8_lossy(&refused.stderr);
    assert!(
        text.contains("DATABASE_URL and DATABASE_URL_FILE are both set"),
        "{text}"
    );
    let out = run(false);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pool = mes_api::db::connect(&url, 1).await.unwrap();
    let applied: i64 = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations WHERE success")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(applied as usize, service::db::MIGRATOR.iter().count());
    std::fs::remove_file(&file).unwrap();
}
