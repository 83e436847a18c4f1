//! The board in a real browser: headless Chromium opens `/board` on a full mes-api (HTTP server,
//! relay, NATS, PostgreSQL), the test starts a run and reports through the HTTP API, and the
//! counts on the page change to the exact new values without a reload. The screenshot is kept
//! in `target/test-artifacts/board.png`.
//!
//! Needs Chromium (`apt-get install -y chromium`); without it the test fails, saying so.

use std::path::PathBuf;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use sqlx::PgPool;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use crate::cdp::Chromium;
use crate::support::*;

const WIDTH: u32 = 1920;
const HEIGHT: u32 = 1080;

/// One HTTP/1.1 request to the server on `port`: (status, JSON body).
async fn http(port: u16, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let body = body.map(Value::to_string).unwrap_or_default();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\
         Authorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        test_token(),
        body.len()
    );
    s.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).await.unwrap();
    let status = answer
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap();
    let body = answer
        .split_once("\r\n\r\n")
        .and_then(|(_, b)| serde_json::from_str(b).ok())
        .unwrap_or(Value::Null);
    (status, body)
}

async fn post_ok(port: u16, path: &str, body: Value) -> Value {
    let (status, answer) = http(port, "POST", path, Some(&body)).await;
    assert!(
        (200..300).contains(&status),
        "{path} {body}: {status} {answer}"
    );
    answer
}

fn ago(now: DateTime<Utc>, seconds: i64) -> DateTime<Utc> {
    now - chrono::Duration::seconds(seconds)
}

/// Other machines of the floor, so the screenshot shows every state: a running run with counts
/// and readings, a paused one, an idle machine whose run ended this shift.
async fn furnish_the_floor(port: u16, pool: &PgPool) {
    let (_, state) = http(port, "GET", "/board/state", None).await;
    let now = Utc::now();
    let shift_start: DateTime<Utc> = state["sites"][0]["shift"]["starts_at"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or(now);
    // Runs start inside the current shift, so their OEE is about this shift's time only.
    let start = |seconds: i64| ago(now, seconds).max(shift_start);
    let units = |from: DateTime<Utc>, cycle: f64, rate: f64| {
        ((now - from).num_milliseconds() as f64 / 1000.0 / cycle * rate) as i64
    };

    let t = start(2700);
    let smt02 = post_ok(
        port,
        "/op_run/start",
        json!({"work_order_id":"WO-4711","operation_id":"OP10",
        "resource_id":"SMT02","ideal_cycle_time_s":2.0,"started_at":t}),
    )
    .await;
    let good = units(t, 2.0, 0.86);
    post_ok(
        port,
        "/op_run/report",
        json!({"op_run_id":smt02["op_run_id"],"good_delta":good,
        "scrap_delta":good / 60}),
    )
    .await;

    let t = start(2400);
    let aoi = post_ok(
        port,
        "/op_run/start",
        json!({"work_order_id":"WO-4702","operation_id":"OP30",
        "resource_id":"AOI01","ideal_cycle_time_s":3.0,"started_at":t}),
    )
    .await;
    let good = units(t, 3.0, 0.55);
    post_ok(
        port,
        "/op_run/report",
        json!({"op_run_id":aoi["op_run_id"],"good_delta":good,
        "scrap_delta":good / 25,"at":ago(now, 300).max(t)}),
    )
    .await;
    post_ok(
        port,
        "/op_run/pause",
        json!({"op_run_id":aoi["op_run_id"],"reason_code":"breakdown",
        "at":ago(now, 240).max(t),"note":"conveyor jam"}),
    )
    .await;

    let t = start(3000);
    let reflow = post_ok(
        port,
        "/op_run/start",
        json!({"work_order_id":"WO-4699","operation_id":"OP20",
        "resource_id":"REF01","ideal_cycle_time_s":2.5,"started_at":t}),
    )
    .await;
    let end = ago(now, 600).max(t);
    let good = ((end - t).num_milliseconds() as f64 / 1000.0 / 2.5 * 0.7) as i64;
    post_ok(
        port,
        "/op_run/complete",
        json!({"op_run_id":reflow["op_run_id"],"good_units":good,
        "scrap_units":good / 40,"ended_at":end}),
    )
    .await;

    sqlx::query(
        "INSERT INTO resources (resource_id, site_id, name, line_id) VALUES
             ('SMT01', 'BKK', 'Placer 1', 'SMT-A'), ('SMT02', 'BKK', 'Placer 2', 'SMT-A'),
             ('AOI01', 'BKK', 'Optical inspection', 'SMT-A'), ('REF01', 'BKK', 'Reflow oven', 'SMT-B')
         ON CONFLICT (resource_id) DO UPDATE SET name = excluded.name, line_id = excluded.line_id",
    )
    .execute(pool)
    .await
    .unwrap();
    let readings: &[(&str, &str, f64, &str, i64)] = &[
        ("SMT01", "temp", 37.2, "C", 3),
        ("SMT01", "speed", 118.0, "rpm", 2),
        ("SMT01", "vacuum", -82.5, "kPa", 4),
        ("SMT02", "temp", 38.4, "C", 1),
        ("SMT02", "speed", 121.0, "rpm", 2),
        ("AOI01", "defect_rate", 0.021, "", 250),
        ("REF01", "zone5_temp", 245.3, "C", 6),
        ("REF01", "conveyor", 0.9, "m/min", 6),
    ];
    for (resource, sensor, value, unit, age) in readings {
        sqlx::query(
            "INSERT INTO readings (ts, site, resource_id, sensor, value, unit)
             VALUES ($1, 'BKK', $2, $3, $4, nullif($5, ''))",
        )
        .bind(ago(now, *age))
        .bind(resource)
        .bind(sensor)
        .bind(value)
        .bind(unit)
        .execute(pool)
        .await
        .unwrap();
    }
}

fn artifact_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| testkit::bins::workspace_root().join("target"))
        .join("test-artifacts")
}

fn count_js(resource: &str, field: &str) -> String {
    format!(
        "(document.querySelector('[data-resource=\"{resource}\"] [data-field=\"{field}\"]') || {{}}).textContent"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn board_page_shows_new_counts_live_without_reload() {
    let browser = Chromium::launch(WIDTH, HEIGHT).await;

    let t = db().await;
    let nats = testkit::nats_for_test().await.unwrap();
    let mut config = mes_api::Config::for_urls(&nats.url(), &t.url);
    config.namespace = t.name.clone();
    config.relay_poll_ms = 50;
    // Authentication on: the page signs in with a token, as on a plant's kiosk.
    config.auth = mes_api::config::AuthMode::Tokens;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(mes_api::serve(
        config,
        t.pool.clone(),
        listener,
        shutdown.clone(),
    ));
    furnish_the_floor(port, &t.pool).await;

    browser
        .navigate(&format!("http://127.0.0.1:{port}/board"))
        .await;
    // Without its cookie the page asks for a token; signing in sets the cookie (the token is
    // never in a URL) and the board fills.
    browser
        .wait_for(
            "!document.getElementById('signin').hidden",
            Duration::from_secs(20),
        )
        .await;
    browser
        .eval(&format!(
            "document.getElementById('signin-token').value = '{}'; \
             document.getElementById('signin').requestSubmit(); true",
            test_token()
        ))
        .await;
    browser
        .wait_for(
            "document.body.dataset.conn === 'live' && !!document.querySelector('[data-resource=\"SMT02\"]')",
            Duration::from_secs(20),
        )
        .await;
    assert_eq!(
        browser.eval(&count_js("SMT01", "good")).await,
        json!("\u{2014}"),
        "SMT01 is idle: no run, no counts"
    );
    // Survives only if the page is never reloaded.
    browser
        .eval("window.boardTestMarker = 'set before the run'; true")
        .await;

    let run = post_ok(
        port,
        "/op_run/start",
        json!({"work_order_id":"WO-4720","operation_id":"OP10","resource_id":"SMT01",
               "ideal_cycle_time_s":45.0,"started_at":ago(Utc::now(), 900)}),
    )
    .await;
    let id = run["op_run_id"].clone();
    browser
        .wait_for(
            &format!(
                "{} === '0' && {} === '0'",
                count_js("SMT01", "good"),
                count_js("SMT01", "scrap")
            ),
            Duration::from_secs(10),
        )
        .await;
    for (good, scrap, want_good, want_scrap) in [(7, 2, 7, 2), (5, 1, 12, 3)] {
        post_ok(
            port,
            "/op_run/report",
            json!({"op_run_id":id,"good_delta":good,"scrap_delta":scrap}),
        )
        .await;
        browser
            .wait_for(
                &format!(
                    "{} === '{want_good}' && {} === '{want_scrap}'",
                    count_js("SMT01", "good"),
                    count_js("SMT01", "scrap")
                ),
                Duration::from_secs(10),
            )
            .await;
    }
    assert_eq!(
        browser.eval("window.boardTestMarker").await,
        json!("set before the run"),
        "the page was reloaded"
    );
    assert_eq!(
        browser
            .eval("performance.getEntriesByType('navigation').length")
            .await,
        json!(1)
    );
    let card = browser
        .eval(
            "(() => { const c = document.querySelector('[data-resource=\"SMT01\"]');
                      return [c.dataset.state, c.querySelector('[data-field=\"state\"]').textContent,
                              c.querySelector('[data-field=\"work-order\"]').textContent]; })()",
        )
        .await;
    assert_eq!(card, json!(["running", "RUNNING", "WO-4720 · OP10"]));
    let paused = browser
        .eval(
            "(() => { const c = document.querySelector('[data-resource=\"AOI01\"]');
                      return [c.dataset.state, c.querySelector('.run .label').textContent]; })()",
        )
        .await;
    assert_eq!(paused[0], "paused");
    assert!(
        paused[1]
            .as_str()
            .is_some_and(|t| t.starts_with("breakdown · ")),
        "{paused}"
    );

    // The picture once the "changed" highlights have faded.
    browser
        .wait_for(
            "!document.getAnimations().some(a => a.animationName === 'flash')",
            Duration::from_secs(10),
        )
        .await;
    let png = browser.screenshot().await;
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "a PNG");
    let dir = artifact_dir();
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("board.png"), &png).unwrap();

    // A SIGTERM-like shutdown with the page still connected: the event stream ends and the
    // server stops.
    shutdown.cancel();
    let stopped = tokio::time::timeout(Duration::from_secs(15), server)
        .await
        .expect("server stopped within 15 s although a board was connected");
    assert!(stopped.unwrap().is_ok());
    browser
        .wait_for(
            "document.body.dataset.conn === 'reconnecting'",
            Duration::from_secs(10),
        )
        .await;
    browser.close().await;
}
