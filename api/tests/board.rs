//! The shop-floor board's API: `/board/state` after runs and reports, `/board/events` fed by the
//! run events on NATS (also across replicas), the periodic refresh while NATS is down, the
//! client gauge and the end of the streams at shutdown.

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::Request;
use axum::Router;
use chrono::{DateTime, Utc};
use http_body_util::BodyExt;
use mes_api::board::{Board, BoardSettings};
use mes_api::relay::{self, RelaySettings};
use mes_api::{AppState, Limits, Settings};
use protocol::OpRunNames;
use serde_json::{json, Value};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use crate::support::*;

/// One API replica with its board (and, when `relay`, its outbox relay).
struct Replica {
    app: Router,
    shutdown: CancellationToken,
    tracker: TaskTracker,
}

impl Replica {
    async fn start(
        pool: &PgPool,
        nats_url: &str,
        names: &OpRunNames,
        settings: BoardSettings,
        relay: bool,
    ) -> Self {
        let client = async_nats::ConnectOptions::new()
            .retry_on_initial_connect()
            .max_reconnects(None)
            .connect(nats_url)
            .await
            .unwrap();
        let state = AppState::new(
            pool.clone(),
            Some(client.clone()),
            Settings {
                default_site: "BKK".to_owned(),
            },
        );
        let shutdown = CancellationToken::new();
        let tracker = TaskTracker::new();
        if relay {
            tracker.spawn(relay::run(
                pool.clone(),
                client,
                RelaySettings {
                    names: names.clone(),
                    poll: Duration::from_millis(50),
                    linger: Duration::from_millis(5),
                    batch: 256,
                    ack_timeout: Duration::from_millis(500),
                    stream_replicas: 1,
                    idempotency_ttl_hours: 24,
                    outbox_retention_days: 7,
                },
                state.outbox_signal.clone(),
                shutdown.clone(),
            ));
        }
        let board = Board::new(
            &state,
            names.clone(),
            settings,
            shutdown.clone(),
            tracker.clone(),
        );
        let app = mes_api::app_with_board(state, Limits::default(), board);
        Self {
            app,
            shutdown,
            tracker,
        }
    }

    async fn stop(self) {
        self.shutdown.cancel();
        self.tracker.close();
        tokio::time::timeout(Duration::from_secs(10), self.tracker.wait())
            .await
            .expect("board feeds and relay stop at shutdown");
    }
}

/// Settings whose timer is too slow to matter: an update that arrives fast came from NATS.
fn event_driven() -> BoardSettings {
    BoardSettings {
        refresh_interval: Duration::from_secs(600),
        ..BoardSettings::default()
    }
}

/// Reads the `snapshot` events of one `/board/events` response.
pub struct SseClient {
    body: Body,
    buffer: String,
}

impl SseClient {
    pub async fn connect(app: &Router, uri: &str) -> Self {
        let request = Request::get(uri).body(Body::empty()).unwrap();
        let response = app.clone().oneshot(request).await.unwrap();
        assert_eq!(response.status(), 200, "{uri}");
        assert_eq!(
            response
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok()),
            Some("text/event-stream")
        );
        Self {
            body: response.into_body(),
            buffer: String::new(),
        }
    }

    /// The next snapshot; `None` when the stream ended. Panics after `within`.
    pub async fn next_snapshot(&mut self, within: Duration) -> Option<Value> {
        tokio::time::timeout(within, self.read_snapshot())
            .await
            .unwrap_or_else(|_| panic!("no snapshot within {within:?}"))
    }

    async fn read_snapshot(&mut self) -> Option<Value> {
        loop {
            while let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut event = "message";
                let mut data = Vec::new();
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        event = if v.trim() == "snapshot" {
                            "snapshot"
                        } else {
                            "other"
                        };
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push(v.strip_prefix(' ').unwrap_or(v).to_owned());
                    }
                }
                if event == "snapshot" {
                    return Some(serde_json::from_str(&data.join("\n")).unwrap());
                }
            }
            let frame = self.body.frame().await?.unwrap();
            if let Ok(bytes) = frame.into_data() {
                self.buffer.push_str(std::str::from_utf8(&bytes).unwrap());
            }
        }
    }

    /// Waits until the feed behind this stream hears run events from NATS (its subscription is
    /// in place at the server): publishes a probe on the run-event subjects until a snapshot
    /// follows. Only for feeds whose timer is too slow to matter ([`event_driven`]).
    async fn until_hearing_nats(
        &mut self,
        nats: &async_nats::Client,
        names: &OpRunNames,
        what: &str,
    ) {
        let subject = names.subject("BKK", "PROBE", "probe");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            nats.publish(subject.clone(), "{}".into()).await.unwrap();
            nats.flush().await.unwrap();
            let heard = tokio::time::timeout(Duration::from_millis(200), self.read_snapshot());
            if let Ok(snapshot) = heard.await {
                assert!(snapshot.is_some(), "{what}: stream ended");
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: the board feed did not hear a run event on NATS within 10 s"
            );
        }
    }

    /// Snapshots until `accept` holds for one; returns it and how many were read.
    pub async fn until(
        &mut self,
        within: Duration,
        what: &str,
        accept: impl Fn(&Value) -> bool,
    ) -> (Value, usize) {
        let deadline = Instant::now() + within;
        let mut n = 0;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let snapshot = tokio::time::timeout(left, self.read_snapshot())
                .await
                .unwrap_or_else(|_| panic!("{what}: not seen within {within:?}"))
                .unwrap_or_else(|| panic!("{what}: stream ended"));
            n += 1;
            if accept(&snapshot) {
                return (snapshot, n);
            }
        }
    }
}

/// The resource `id` of a snapshot.
pub fn resource<'a>(snapshot: &'a Value, id: &str) -> &'a Value {
    snapshot["resources"]
        .as_array()
        .and_then(|rs| rs.iter().find(|r| r["resource_id"] == id))
        .unwrap_or_else(|| panic!("resource {id} not on the board: {snapshot}"))
}

/// (good, scrap) of the active run of `id`, if it is on the board with one.
fn run_counts(snapshot: &Value, id: &str) -> Option<(i64, i64)> {
    let r = snapshot["resources"]
        .as_array()?
        .iter()
        .find(|r| r["resource_id"] == id)?;
    Some((
        r["run"]["good_units"].as_i64()?,
        r["run"]["scrap_units"].as_i64()?,
    ))
}

async fn insert_reading(
    pool: &PgPool,
    resource: &str,
    sensor: &str,
    value: f64,
    unit: &str,
    ts: DateTime<Utc>,
) {
    sqlx::query(
        "INSERT INTO readings (ts, site, resource_id, sensor, value, unit) VALUES ($1, 'BKK', $2, $3, $4, $5)",
    )
    .bind(ts)
    .bind(resource)
    .bind(sensor)
    .bind(value)
    .bind(unit)
    .execute(pool)
    .await
    .unwrap();
}

fn ago(seconds: i64) -> DateTime<Utc> {
    Utc::now() - chrono::Duration::seconds(seconds)
}

#[tokio::test]
async fn board_state_shows_active_runs_with_exact_counts_shift_oee_and_last_readings() {
    let t = db().await;
    let app = app(&t.pool);
    let running = start_run(
        &app,
        json!({"work_order_id":"WO-B1","operation_id":"OP10","resource_id":"SMT01",
               "ideal_cycle_time_s":1.0,"started_at":ago(600)}),
    )
    .await;
    for (good, scrap) in [(7, 2), (5, 1)] {
        let a = post(
            &app,
            "/op_run/report",
            json!({"op_run_id":running,"good_delta":good,"scrap_delta":scrap}),
        )
        .await;
        assert_eq!(a.status, 200, "{}", a.body);
    }
    let paused = start_run(
        &app,
        json!({"work_order_id":"WO-B2","operation_id":"OP20","resource_id":"AOI01",
               "ideal_cycle_time_s":2.0,"started_at":ago(300)}),
    )
    .await;
    let a = post(
        &app,
        "/op_run/pause",
        json!({"op_run_id":paused,"reason_code":"breakdown","note":"feeder jam"}),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.body);
    let done = start_run(
        &app,
        json!({"work_order_id":"WO-B3","operation_id":"OP30","resource_id":"REF01","started_at":ago(200)}),
    )
    .await;
    let a = post(&app, "/op_run/complete", json!({"op_run_id":done})).await;
    assert_eq!(a.status, 200, "{}", a.body);
    sqlx::query("UPDATE resources SET line_id = 'L1' WHERE resource_id IN ('SMT01', 'AOI01')")
        .execute(&t.pool)
        .await
        .unwrap();
    insert_reading(&t.pool, "SMT01", "temp", 36.0, "C", ago(30)).await;
    insert_reading(&t.pool, "SMT01", "temp", 37.5, "C", ago(5)).await;
    insert_reading(&t.pool, "SMT01", "speed", 120.0, "rpm", ago(2)).await;
    // Older than the lookback window: not on the board.
    insert_reading(&t.pool, "SMT01", "humidity", 40.0, "%", ago(3 * 86_400)).await;

    let a = get(&app, "/board/state").await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(
        a.headers.get("cache-control").and_then(|v| v.to_str().ok()),
        Some("no-store")
    );
    let s = &a.body;
    let generated_at: DateTime<Utc> = s["generated_at"].as_str().unwrap().parse().unwrap();
    let order: Vec<&str> = s["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["resource_id"].as_str().unwrap())
        .collect();
    assert_eq!(order, ["AOI01", "SMT01", "REF01"], "by line, then id");
    assert_eq!(s["truncated"], false);

    let site = &s["sites"][0];
    assert_eq!(site["site_id"], "BKK");
    assert_eq!(site["time_zone"], "Asia/Bangkok");
    let shift_name = site["shift"]["shift_name"].as_str().unwrap();
    assert!(["Night", "Day", "Evening"].contains(&shift_name), "{site}");
    let starts: DateTime<Utc> = site["shift"]["starts_at"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let ends: DateTime<Utc> = site["shift"]["ends_at"].as_str().unwrap().parse().unwrap();
    assert!(starts <= generated_at && generated_at < ends, "{site}");

    let smt = resource(s, "SMT01");
    assert_eq!(smt["state"], "running");
    assert_eq!(smt["line_id"], "L1");
    assert_eq!(smt["site_id"], "BKK");
    let run = &smt["run"];
    assert_eq!(run["op_run_id"], running.as_str());
    assert_eq!(
        (run["work_order_id"].as_str(), run["operation_id"].as_str()),
        (Some("WO-B1"), Some("OP10"))
    );
    assert_eq!(run["status"], "running");
    assert_eq!(
        (run["good_units"].as_i64(), run["scrap_units"].as_i64()),
        (Some(12), Some(3))
    );
    let elapsed = run["elapsed_seconds"].as_f64().unwrap();
    assert!((600.0..700.0).contains(&elapsed), "elapsed {elapsed}");
    // The counts were reported now, so they are the current shift's, whenever the run started.
    let oee = &smt["oee"];
    assert_eq!(oee["shift_name"], shift_name);
    assert_eq!(
        (oee["pq"].as_i64(), oee["gq"].as_i64()),
        (Some(15), Some(12))
    );
    assert_eq!(oee["quality"].as_f64(), Some(0.8));
    for k in ["availability", "performance", "oee"] {
        assert!(oee[k].as_f64().is_some_and(|v| v > 0.0), "{k}: {oee}");
    }
    let readings: Vec<(&str, f64, &str)> = smt["readings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["sensor"].as_str().unwrap(),
                r["value"].as_f64().unwrap(),
                r["unit"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(readings, [("speed", 120.0, "rpm"), ("temp", 37.5, "C")]);
    let age = smt["readings"][1]["age_seconds"].as_f64().unwrap();
    assert!((4.0..60.0).contains(&age), "age {age}");

    let aoi = resource(s, "AOI01");
    assert_eq!(aoi["state"], "paused");
    assert_eq!(aoi["run"]["pause_reason"], "breakdown");
    assert!(aoi["run"]["paused_since"].is_string());
    assert_eq!(aoi["readings"], json!([]));
    let reflow = resource(s, "REF01");
    assert_eq!(reflow["state"], "idle");
    assert!(reflow["run"].is_null());
    assert_eq!(reflow["line_id"], Value::Null);
    assert_eq!(smt["machine_stop"], Value::Null, "no stop detected");

    // The machine's readings say SMT01 stands: an open detected stop shows on its card.
    sqlx::query(
        "INSERT INTO machine_stops (id, resource_id, started_at) VALUES (5, 'SMT01', now() - interval '90 seconds')",
    )
    .execute(&t.pool)
    .await
    .unwrap();
    let stopped = get(&app, "/board/state").await;
    let stop = &resource(&stopped.body, "SMT01")["machine_stop"];
    assert_eq!(
        (stop["stop_id"].as_i64(), stop["reason_code"].as_str()),
        (Some(5), Some("unassigned")),
        "{stop}"
    );
    assert!(stop["since"].is_string());
    assert_eq!(
        resource(&stopped.body, "SMT01")["state"],
        "running",
        "the run is not paused"
    );

    // The same OEE as GET /kpi/oee reports for that shift (same SQL); the run is still going, so
    // only the count-based parts are compared exactly.
    let kpi = get(
        &app,
        &format!(
            "/kpi/oee?resource_id=SMT01&from={}&to={}",
            urlencode(&starts.to_rfc3339()),
            urlencode(&ends.to_rfc3339())
        ),
    )
    .await;
    assert_eq!(kpi.status, 200, "{}", kpi.body);
    let shift = &kpi.body["shifts"][0];
    assert_eq!(
        (shift["pq"].as_i64(), shift["gq"].as_i64()),
        (Some(15), Some(12))
    );
    assert_eq!(shift["quality"], oee["quality"]);
    assert_eq!(shift["shift_name"], oee["shift_name"]);

    // Site filter.
    let a = get(&app, "/board/state?site=BKK").await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.body["site"], "BKK");
    assert_eq!(a.body["resources"].as_array().map(Vec::len), Some(3));
    get(&app, "/board/state?site=NOPE")
        .await
        .assert_problem(422, Some("site"), "unknown site");
    get(&app, "/board/events?site=NOPE").await.assert_problem(
        422,
        Some("site"),
        "unknown site on the stream",
    );
    get(&app, "/board/state?sitee=BKK").await.assert_problem(
        400,
        Some("sitee"),
        "misspelt parameter",
    );
}

fn urlencode(s: &str) -> String {
    s.replace('+', "%2B").replace(':', "%3A")
}

#[tokio::test]
async fn board_page_is_one_self_contained_html_document() {
    let t = db().await;
    let app = app(&t.pool);
    let a = get(&app, "/board").await;
    assert_eq!(a.status, 200);
    let header = |name: &str| {
        a.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    assert_eq!(
        header("content-type").as_deref(),
        Some("text/html; charset=utf-8")
    );
    assert!(header("content-security-policy").is_some_and(|c| c.contains("default-src 'none'")));
    let html = a.body.as_str().unwrap();
    assert!(html.starts_with("<!doctype html>"));
    assert!(html.contains("new EventSource('/board/events'"));
    assert!(html.contains("fetch('/board/state'"));
    assert!(!html.contains("https://") && !html.contains("http://"));

    // Documented with its media types; the stream's events are described, the snapshot has a
    // schema.
    let doc = get(&app, "/openapi.json").await.body;
    let ok = |path: &str| doc["paths"][path]["get"]["responses"]["200"]["content"].clone();
    assert!(ok("/board")["text/html"].is_object(), "{}", ok("/board"));
    assert!(ok("/board/events")["text/event-stream"].is_object());
    assert_eq!(
        ok("/board/state")["application/json"]["schema"]["$ref"],
        "#/components/schemas/BoardSnapshot"
    );
}

#[tokio::test]
async fn board_events_push_a_report_to_the_clients_of_every_replica_within_a_second() {
    let t = db().await;
    let nats = testkit::nats_for_test().await.unwrap();
    let names = OpRunNames::isolated(&t.name);
    // Replica A takes the writes and relays the events; replica B only serves boards. Neither
    // refreshes on a timer within the test, so B's clients can only learn of A's writes from
    // the run events on NATS.
    let a = Replica::start(&t.pool, &nats.url(), &names, event_driven(), true).await;
    let b = Replica::start(&t.pool, &nats.url(), &names, event_driven(), false).await;
    let mut on_a = SseClient::connect(&a.app, "/board/events").await;
    let mut on_b = SseClient::connect(&b.app, "/board/events?site=BKK").await;
    let probe = async_nats::connect(nats.url()).await.unwrap();
    for (name, client) in [("A", &mut on_a), ("B", &mut on_b)] {
        let first = client.next_snapshot(Duration::from_secs(10)).await.unwrap();
        assert_eq!(first["resources"], json!([]), "a snapshot on connect");
        client
            .until_hearing_nats(&probe, &names, &format!("replica {name}"))
            .await;
    }

    let id = start_run(
        &a.app,
        json!({"work_order_id":"WO-E1","operation_id":"OP10","resource_id":"SMT01","ideal_cycle_time_s":1.0}),
    )
    .await;
    for client in [&mut on_a, &mut on_b] {
        client
            .until(Duration::from_secs(5), "started run", |s| {
                run_counts(s, "SMT01") == Some((0, 0))
            })
            .await;
    }

    let reported = Instant::now();
    let r = post(
        &a.app,
        "/op_run/report",
        json!({"op_run_id":id,"good_delta":4,"scrap_delta":1}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    for (name, client) in [("A", &mut on_a), ("B", &mut on_b)] {
        let (s, _) = client
            .until(Duration::from_secs(5), "report", |s| {
                run_counts(s, "SMT01") == Some((4, 1))
            })
            .await;
        let took = reported.elapsed();
        assert!(took < Duration::from_secs(1), "replica {name}: {took:?}");
        assert_eq!(resource(&s, "SMT01")["state"], "running");
    }

    // A burst of 40 reports is coalesced: far fewer snapshots than events, the last one exact.
    let burst = Instant::now();
    for _ in 0..40 {
        let r = post(
            &a.app,
            "/op_run/report",
            json!({"op_run_id":id,"good_delta":1,"scrap_delta":0}),
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.body);
    }
    let (_, snapshots) = on_b
        .until(Duration::from_secs(10), "burst", |s| {
            run_counts(s, "SMT01") == Some((44, 1))
        })
        .await;
    let window = burst.elapsed().as_secs_f64();
    // At most one snapshot per 250 ms, plus the one in progress when the burst began.
    let bound = (window / 0.25).ceil() as usize + 2;
    assert!(
        snapshots <= bound.min(40),
        "{snapshots} snapshots for 40 events in {window:.2} s"
    );

    // Connected clients are counted.
    let metrics = get(&a.app, "/metrics").await.body;
    let clients = metrics
        .as_str()
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("mes_api_board_clients "))
        .and_then(|v| v.trim().parse::<f64>().ok());
    assert!(clients.is_some_and(|n| n >= 2.0), "{metrics}");

    // Shutdown ends the streams (so a graceful HTTP shutdown is not held up by them).
    a.stop().await;
    b.stop().await;
    for client in [&mut on_a, &mut on_b] {
        let end = tokio::time::timeout(Duration::from_secs(5), client.read_snapshot()).await;
        assert!(matches!(end, Ok(None)), "stream ended at shutdown");
    }
}

#[tokio::test]
async fn board_keeps_updating_from_the_periodic_snapshot_while_nats_is_down() {
    let t = db().await;
    let mut nats = testkit::NatsServer::start().await.unwrap();
    let names = OpRunNames::isolated(&t.name);
    let settings = BoardSettings {
        refresh_interval: Duration::from_millis(300),
        ..BoardSettings::default()
    };
    let api = Replica::start(&t.pool, &nats.url(), &names, settings, true).await;
    let mut client = SseClient::connect(&api.app, "/board/events").await;
    client.next_snapshot(Duration::from_secs(10)).await.unwrap();
    let id = start_run(
        &api.app,
        json!({"work_order_id":"WO-P1","operation_id":"OP10","resource_id":"SMT01"}),
    )
    .await;
    client
        .until(Duration::from_secs(5), "started run", |s| {
            run_counts(s, "SMT01") == Some((0, 0))
        })
        .await;

    nats.stop().await.unwrap();
    let r = post(
        &api.app,
        "/op_run/report",
        json!({"op_run_id":id,"good_delta":3,"scrap_delta":2}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    client
        .until(Duration::from_secs(5), "report while NATS is down", |s| {
            run_counts(s, "SMT01") == Some((3, 2))
        })
        .await;
    // /board/state does not need NATS either.
    let state = get(&api.app, "/board/state").await;
    assert_eq!(run_counts(&state.body, "SMT01"), Some((3, 2)));

    nats.restart().await.unwrap();
    let r = post(
        &api.app,
        "/op_run/report",
        json!({"op_run_id":id,"good_delta":1,"scrap_delta":0}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    client
        .until(Duration::from_secs(5), "report after NATS returned", |s| {
            run_counts(s, "SMT01") == Some((4, 2))
        })
        .await;
    api.stop().await;
}
