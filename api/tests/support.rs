use std::future::Future;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use mes_api::{AppState, Settings};
use serde_json::Value;
use sqlx::PgPool;
use testkit::PgHandle;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::OnceCell;
use tower::ServiceExt;

/// One PostgreSQL server for the whole test binary; each test gets its own database.
pub async fn pg() -> &'static PgHandle {
    static PG: OnceCell<PgHandle> = OnceCell::const_new();
    PG.get_or_init(|| async { testkit::pg_for_test().await.expect("postgres for test") })
        .await
}

#[allow(dead_code)]
pub struct TestDb {
    pub name: String,
    pub url: String,
    pub pool: PgPool,
}

/// The admin token every test database holds (name `tests`), sent by [`call`] unless a test
/// sends its own `Authorization`.
pub fn test_token() -> &'static str {
    &test_token_parts().0
}

fn test_token_parts() -> &'static (String, mes_api::auth::token::Stored) {
    static TOKEN: std::sync::OnceLock<(String, mes_api::auth::token::Stored)> =
        std::sync::OnceLock::new();
    TOKEN.get_or_init(mes_api::auth::token::generate)
}

/// Inserts [`test_token`] (role admin) into the database of `pool`.
pub async fn insert_test_token(pool: &PgPool) {
    let (_, stored) = test_token_parts();
    sqlx::query(
        "INSERT INTO api_tokens (id, name, role, salt, secret_hash) VALUES ($1, 'tests', 'admin', $2, $3)
         ON CONFLICT DO NOTHING",
    )
    .bind(&stored.id)
    .bind(&stored.salt)
    .bind(&stored.hash)
    .execute(pool)
    .await
    .expect("test token");
}

/// A fresh migrated database with site BKK (Asia/Bangkok) and the admin [`test_token`].
pub async fn db() -> TestDb {
    let name = testkit::unique_name("api");
    let url = pg().await.create_database(&name).await.expect("create db");
    let pool = mes_api::db::connect(&url, 60).await.expect("connect");
    mes_api::db::migrate(&pool).await.expect("migrate");
    mes_api::db::ensure_site(&pool, "BKK", "Asia/Bangkok")
        .await
        .expect("site");
    insert_test_token(&pool).await;
    TestDb { name, url, pool }
}

/// The API with authentication on; [`call`] sends the admin [`test_token`].
pub fn app(pool: &PgPool) -> Router {
    mes_api::app(
        AppState::new(
            pool.clone(),
            None,
            Settings {
                default_site: "BKK".to_owned(),
            },
        )
        .with_auth_required(),
    )
}

pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
}

impl Answer {
    /// Asserts a problem+json answer with `status` naming `field`.
    pub fn assert_problem(&self, status: u16, field: Option<&str>, context: &str) {
        assert_eq!(self.status.as_u16(), status, "{context}: {}", self.body);
        assert_eq!(
            self.headers
                .get("content-type")
                .and_then(|v| v.to_str().ok()),
            Some("application/problem+json"),
            "{context}"
        );
        assert_eq!(
            self.body["status"].as_u64(),
            Some(status as u64),
            "{context}"
        );
        assert!(
            self.body["type"]
                .as_str()
                .is_some_and(|t| t.starts_with("urn:edge-mes:problem:")),
            "{context}: {}",
            self.body
        );
        assert!(self.body["detail"].as_str().is_some_and(|d| !d.is_empty()));
        if let Some(field) = field {
            assert_eq!(
                self.body["field"].as_str(),
                Some(field),
                "{context}: {}",
                self.body
            );
            assert!(
                self.body["detail"].as_str().unwrap().contains(field),
                "{context}: detail names the field: {}",
                self.body
            );
        }
    }
}

/// One request through the router (no network).
pub async fn call(
    app: &Router,
    method: Method,
    uri: &str,
    body: Option<&str>,
    headers: &[(&str, &str)],
) -> Answer {
    let mut request = Request::builder().method(method).uri(uri);
    if body.is_some()
        && !headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("content-type"))
    {
        request = request.header("content-type", "application/json");
    }
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    if !headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("authorization"))
    {
        request = request.header("authorization", format!("Bearer {}", test_token()));
    }
    let request = request
        .body(body.map_or_else(Body::empty, |b| Body::from(b.to_owned())))
        .unwrap();
    let response = tokio::time::timeout(Duration::from_secs(30), app.clone().oneshot(request))
        .await
        .expect("request timed out")
        .unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
    };
    Answer {
        status,
        headers,
        body,
    }
}

/// The status of one request whose body is not read (an event stream never ends).
pub async fn status_only(app: &Router, method: Method, uri: &str) -> StatusCode {
    let request = Request::builder()
        .method(method)
        .uri(uri)
        .header("authorization", format!("Bearer {}", test_token()))
        .body(Body::empty())
        .unwrap();
    tokio::time::timeout(Duration::from_secs(30), app.clone().oneshot(request))
        .await
        .expect("request timed out")
        .unwrap()
        .status()
}

pub async fn post(app: &Router, uri: &str, body: Value) -> Answer {
    call(app, Method::POST, uri, Some(&body.to_string()), &[]).await
}

pub async fn post_with_key(app: &Router, uri: &str, body: Value, key: &str) -> Answer {
    call(
        app,
        Method::POST,
        uri,
        Some(&body.to_string()),
        &[("idempotency-key", key)],
    )
    .await
}

pub async fn get(app: &Router, uri: &str) -> Answer {
    call(app, Method::GET, uri, None, &[]).await
}

/// Starts a run and returns its id.
pub async fn start_run(app: &Router, body: Value) -> String {
    let a = post(app, "/op_run/start", body).await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    a.body["op_run_id"].as_str().unwrap().to_owned()
}

pub async fn scalar_i64(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.expect(sql)
}

/// Polls `poll` every 50 ms until it yields a value; panics after `within`, naming `what` it
/// waited for.
pub async fn wait_for<T, F, Fut>(what: &str, within: Duration, mut poll: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(value) = poll().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "waited {within:?} for {what}, in vain"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// [`wait_for`] a condition.
pub async fn wait_until<F, Fut>(what: &str, within: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    wait_for(what, within, || {
        let holds = check();
        async move { holds.await.then_some(()) }
    })
    .await
}

/// A relay that polls often and waits briefly, for tests that need the events on the bus.
pub fn relay_settings(names: protocol::OpRunNames) -> mes_api::relay::RelaySettings {
    mes_api::relay::RelaySettings {
        names,
        poll: Duration::from_millis(50),
        linger: Duration::from_millis(5),
        batch: 16,
        ack_timeout: Duration::from_secs(2),
        stream_replicas: 1,
        idempotency_ttl_hours: 24,
        outbox_retention_days: 7,
    }
}

/// One HTTP/1.1 request to a binary on 127.0.0.1:`port`: (status, body); `None` when nothing answers.
pub async fn http_request(
    port: u16,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> Option<(u16, String)> {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    let body = body.map(Value::to_string).unwrap_or_default();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(request.as_bytes()).await.ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).await.ok()?;
    let status = out.split(' ').nth(1)?.parse().ok()?;
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Some((status, body))
}
