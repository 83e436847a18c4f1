//! Bearer tokens and roles (`--auth tokens`): who may call what, what a refusal says (and does
//! not say), tokens managed with the `mes-api token` command, and the board's cookie sign-in.

use std::time::Duration;

use axum::http::Method;
use serde_json::json;

use crate::support::*;

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// `mes-api token <args>` against the test database; its standard output.
fn token_cli(url: &str, args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mes-api"))
        .arg("token")
        .args(args)
        .env("DATABASE_URL", url)
        .env("LOG_FORMAT", "json")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

fn create(url: &str, role: &str, name: &str, extra: &[&str]) -> String {
    let mut args = vec!["create", "--role", role, "--name", name];
    args.extend_from_slice(extra);
    let (ok, out) = token_cli(url, &args);
    assert!(ok, "{out}");
    out.lines().last().unwrap().to_owned()
}

#[tokio::test]
async fn every_route_but_the_probes_needs_a_valid_token_with_the_role() {
    let t = db().await;
    let app = app(&t.pool);
    let viewer = create(&t.url, "viewer", "kiosk-1", &[]);
    let operator = create(&t.url, "operator", "hmi-line-1", &[]);

    // The probes answer without a token (readiness says only whether the servers answer).
    assert_eq!(status_only_without_token(&app, "/health").await, 200);
    assert_ne!(status_only_without_token(&app, "/ready").await, 401);
    // No token: 401 with the scheme, also for routes that do not exist (nothing to enumerate).
    for uri in [
        "/op_run/active",
        "/kpi/oee",
        "/openapi.json",
        "/metrics",
        "/nope",
    ] {
        let a = call(&app, Method::GET, uri, None, &[("authorization", "")]).await;
        a.assert_problem(401, None, uri);
        assert_eq!(
            a.headers["www-authenticate"], r#"Bearer realm="edge-mes""#,
            "{uri}"
        );
    }
    // A bad token: 401 that says only "invalid token".
    let (_, stored) = mes_api::auth::token::generate();
    let unknown = format!("emt_{}_{}", stored.id, "0".repeat(64));
    let wrong_secret = format!("{}{}", &viewer[..viewer.len() - 1], "x");
    for bad in ["garbage", unknown.as_str(), wrong_secret.as_str()] {
        let auth = bearer(bad);
        let a = call(
            &app,
            Method::GET,
            "/op_run/active",
            None,
            &[("authorization", &auth)],
        )
        .await;
        a.assert_problem(401, None, bad);
        assert_eq!(a.body["detail"], "invalid token");
        assert!(a.headers["www-authenticate"]
            .to_str()
            .unwrap()
            .contains(r#"error="invalid_token""#));
    }
    // Roles: a viewer reads, an operator also runs production.
    let start =
        json!({"work_order_id":"WO-auth","operation_id":"OP10","resource_id":"R-auth"}).to_string();
    let as_viewer = [("authorization", bearer(&viewer))];
    let as_viewer: Vec<(&str, &str)> = as_viewer.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let a = call(&app, Method::GET, "/op_run/active", None, &as_viewer).await;
    assert_eq!(a.status.as_u16(), 200, "{}", a.body);
    let a = call(
        &app,
        Method::POST,
        "/op_run/start",
        Some(&start),
        &as_viewer,
    )
    .await;
    a.assert_problem(403, None, "viewer starts a run");
    assert!(a.body["detail"].as_str().unwrap().contains("role operator"));
    let auth = bearer(&operator);
    let a = call(
        &app,
        Method::POST,
        "/op_run/start",
        Some(&start),
        &[("authorization", &auth)],
    )
    .await;
    assert_eq!(a.status.as_u16(), 201, "{}", a.body);
    // Nothing refused wrote anything.
    assert_eq!(scalar_i64(&t.pool, "SELECT count(*) FROM op_run").await, 1);
    // Use is recorded (in the background, at most once a minute per token).
    wait_until("the operator token's last use recorded", Duration::from_secs(10), || async {
        scalar_i64(
            &t.pool,
            "SELECT count(*) FROM api_tokens WHERE name = 'hmi-line-1' AND last_used_at IS NOT NULL",
        )
        .await
            == 1
    })
    .await;
}

async fn status_only_without_token(app: &axum::Router, uri: &str) -> u16 {
    call(app, Method::GET, uri, None, &[("authorization", "")])
        .await
        .status
        .as_u16()
}

#[tokio::test]
async fn tokens_are_listed_without_secrets_and_revoked_or_expired_ones_stop_working() {
    let t = db().await;
    let app = app(&t.pool);
    let token = create(&t.url, "viewer", "andon-2", &[]);
    let expired = create(&t.url, "viewer", "temp", &["--expires-in-days", "0"]);
    let (ok, listing) = token_cli(&t.url, &["list"]);
    assert!(ok);
    assert!(listing.contains("andon-2\tviewer"), "{listing}");
    assert!(!listing.contains(&token[4..]), "the list shows no token");
    let stored: Vec<Vec<u8>> = sqlx::query_scalar("SELECT secret_hash FROM api_tokens")
        .fetch_all(&t.pool)
        .await
        .unwrap();
    assert!(stored.iter().all(|h| h.len() == 32));
    let secret = token.rsplit('_').next().unwrap();
    assert_eq!(
        scalar_i64(
            &t.pool,
            &format!("SELECT count(*) FROM api_tokens t WHERE t::text LIKE '%{secret}%'"),
        )
        .await,
        0,
        "the secret is not stored"
    );
    let auth = bearer(&token);
    let headers = [("authorization", auth.as_str())];
    let get = || call(&app, Method::GET, "/op_run/active", None, &headers);
    assert_eq!(get().await.status.as_u16(), 200);
    let auth_expired = bearer(&expired);
    let a = call(
        &app,
        Method::GET,
        "/op_run/active",
        None,
        &[("authorization", &auth_expired)],
    )
    .await;
    a.assert_problem(401, None, "expired");

    let (ok, out) = token_cli(&t.url, &["revoke", "--name", "andon-2"]);
    assert!(ok, "{out}");
    let (ok, _) = token_cli(&t.url, &["revoke", "--name", "andon-2"]);
    assert!(!ok, "revoking twice is an error");
    // Every replica reads tokens again within the cache's lifetime.
    wait_until(
        "the revoked token refused",
        mes_api::auth::middleware::CACHE_TTL * 5,
        || async { get().await.status.as_u16() == 401 },
    )
    .await;
    let (ok, _) = token_cli(&t.url, &["create", "--role", "viewer", "--name", "andon-2"]);
    assert!(!ok, "a revoked token keeps its name");
}

#[tokio::test]
async fn the_board_signs_in_with_a_cookie_that_only_reads() {
    let t = db().await;
    let app = app(&t.pool);
    let viewer = create(&t.url, "viewer", "board-hall-3", &[]);
    // The page itself is a shell without data: public.
    assert_eq!(status_only_without_token(&app, "/board").await, 200);
    let no_token = [("authorization", "")];
    let a = call(&app, Method::GET, "/board/state", None, &no_token).await;
    a.assert_problem(401, None, "board without sign-in");

    let bad = json!({"token": "emt_nope"}).to_string();
    let a = call(&app, Method::POST, "/board/session", Some(&bad), &no_token).await;
    a.assert_problem(401, None, "bad sign-in");
    assert!(a.headers.get("set-cookie").is_none());

    let body = json!({ "token": viewer }).to_string();
    let a = call(&app, Method::POST, "/board/session", Some(&body), &no_token).await;
    assert_eq!(a.status.as_u16(), 204, "{}", a.body);
    let cookie = a.headers["set-cookie"].to_str().unwrap().to_owned();
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/board"] {
        assert!(cookie.contains(attr), "{cookie}");
    }
    let pair = cookie.split(';').next().unwrap().to_owned();
    let with_cookie = [("authorization", ""), ("cookie", pair.as_str())];
    let a = call(&app, Method::GET, "/board/state", None, &with_cookie).await;
    assert_eq!(a.status.as_u16(), 200, "{}", a.body);
    // The cookie reads the board and nothing else, and never writes.
    let a = call(&app, Method::GET, "/op_run/active", None, &with_cookie).await;
    a.assert_problem(401, None, "cookie outside the board");
    let start = json!({"work_order_id":"W","operation_id":"O","resource_id":"R"}).to_string();
    let a = call(
        &app,
        Method::POST,
        "/op_run/start",
        Some(&start),
        &with_cookie,
    )
    .await;
    a.assert_problem(401, None, "cookie writes");
}

#[tokio::test]
async fn each_tokens_writes_are_rate_limited() {
    let t = db().await;
    // 2 writes per second and token, bursts of 4.
    let app = mes_api::app(
        mes_api::AppState::new(
            t.pool.clone(),
            None,
            mes_api::Settings {
                default_site: "BKK".to_owned(),
            },
        )
        .with_auth_required()
        .with_write_rate(2),
    );
    let hmi = create(&t.url, "operator", "hmi-fast", &[]);
    let other = create(&t.url, "operator", "hmi-other", &[]);
    let id = start_run(
        &app,
        json!({"work_order_id":"WO-rl","operation_id":"OP10","resource_id":"R-rl"}),
    )
    .await;
    let report = json!({"op_run_id": id, "good_delta": 1, "scrap_delta": 0}).to_string();
    let auth = bearer(&hmi);
    let as_hmi = [("authorization", auth.as_str())];
    let mut statuses = Vec::new();
    for _ in 0..8 {
        let a = call(&app, Method::POST, "/op_run/report", Some(&report), &as_hmi).await;
        if a.status.as_u16() == 429 {
            a.assert_problem(429, None, "over the rate");
            let retry: u64 = a.headers["retry-after"].to_str().unwrap().parse().unwrap();
            assert!((1..=2).contains(&retry), "{retry}");
        }
        statuses.push(a.status.as_u16());
    }
    let accepted = statuses.iter().filter(|s| **s == 200).count();
    assert!((4..=5).contains(&accepted), "{statuses:?}");
    assert!(statuses.contains(&429), "{statuses:?}");
    // Reads are not limited, and another token has its own budget.
    let a = call(&app, Method::GET, "/op_run/active", None, &as_hmi).await;
    assert_eq!(a.status.as_u16(), 200);
    let auth = bearer(&other);
    let a = call(
        &app,
        Method::POST,
        "/op_run/report",
        Some(&report),
        &[("authorization", &auth)],
    )
    .await;
    assert_eq!(a.status.as_u16(), 200, "{}", a.body);
    // Only the accepted reports counted.
    let good = get(&app, &format!("/op_run/{id}")).await.body["good_units"].clone();
    assert_eq!(good, json!(accepted + 1));
}
