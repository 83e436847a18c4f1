//! The outbox relay against a private nats-server: delivery, order, NATS outage, republish.

use std::time::Duration;

use async_nats::jetstream::{self, consumer::pull};
use futures::StreamExt;
use mes_api::relay::{self, RelaySettings};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusRecorder};
use protocol::{OpRunNames, RunEvent};
use serde_json::json;
use sqlx::PgPool;
use testkit::NatsServer;
use tokio_util::sync::CancellationToken;

use crate::support::*;

fn settings(names: &OpRunNames) -> RelaySettings {
    RelaySettings {
        names: names.clone(),
        poll: Duration::from_millis(50),
        linger: Duration::from_millis(5),
        batch: 4,
        ack_timeout: Duration::from_millis(500),
        stream_replicas: 1,
        idempotency_ttl_hours: 24,
        outbox_retention_days: 7,
    }
}

async fn unsent(pool: &PgPool) -> i64 {
    scalar_i64(pool, "SELECT count(*) FROM outbox WHERE sent_at IS NULL").await
}

async fn wait_until_sent(pool: &PgPool, what: &str) {
    wait_until(
        &format!("every outbox event marked sent ({what})"),
        Duration::from_secs(30),
        || async { unsent(pool).await == 0 },
    )
    .await;
}

/// The relay's metrics, recorded by this test alone: a recorder local to the test's thread (the
/// runtime of `#[tokio::test]` is single-threaded, so the relay task records there too).
struct RelayMetrics(PrometheusRecorder);

impl RelayMetrics {
    fn new() -> Self {
        Self(PrometheusBuilder::new().build_recorder())
    }

    /// Records this thread's metrics here while the guard lives.
    fn recording(&self) -> metrics::LocalRecorderGuard<'_> {
        metrics::set_default_local_recorder(&self.0)
    }

    /// Relay rounds whose publish failed (`mes_api_relay_errors_total{kind="publish"}`).
    fn publish_errors(&self) -> u64 {
        let line = format!("{}{{kind=\"publish\"}} ", mes_api::metrics::RELAY_ERRORS);
        self.0
            .handle()
            .render()
            .lines()
            .find_map(|l| l.strip_prefix(line.as_str()))
            .map_or(0, |v| v.trim().parse().unwrap())
    }

    /// Waits until the relay has failed `rounds` more rounds after this call.
    async fn wait_for_failed_rounds(&self, rounds: u64, what: &str) {
        let target = self.publish_errors() + rounds;
        wait_until(
            &format!("{rounds} failed relay rounds ({what})"),
            Duration::from_secs(30),
            || async { self.publish_errors() >= target },
        )
        .await;
    }
}

/// Every message in the stream, in stream order, through a durable pull consumer as an MES would.
async fn consume_all(url: &str, names: &OpRunNames) -> Vec<(String, String, RunEvent)> {
    let client = async_nats::connect(url).await.unwrap();
    let js = jetstream::new(client);
    let stream = js.get_stream(&names.stream).await.unwrap();
    let consumer = stream
        .get_or_create_consumer(
            "mes",
            pull::Config {
                durable_name: Some("mes".into()),
                filter_subject: names.filter(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let mut out = Vec::new();
    loop {
        let mut batch = consumer
            .fetch()
            .max_messages(100)
            .expires(Duration::from_millis(500))
            .messages()
            .await
            .unwrap();
        let before = out.len();
        while let Some(m) = batch.next().await {
            let m = m.unwrap();
            let id = m
                .headers
                .as_ref()
                .and_then(|h| h.get("Nats-Msg-Id"))
                .map(|v| v.to_string())
                .unwrap_or_default();
            let event: RunEvent = serde_json::from_slice(&m.payload).unwrap();
            out.push((m.subject.to_string(), id, event));
            m.ack().await.unwrap();
        }
        if out.len() == before {
            return out;
        }
    }
}

/// One relay on a client that keeps reconnecting (as mes-api's), and the token that stops it.
async fn spawn_relay(
    pool: &PgPool,
    nats: &NatsServer,
    names: &OpRunNames,
) -> (CancellationToken, tokio::task::JoinHandle<()>) {
    let client = async_nats::ConnectOptions::new()
        .retry_on_initial_connect()
        .max_reconnects(None)
        .connect(nats.url())
        .await
        .unwrap();
    let stop = CancellationToken::new();
    let task = tokio::spawn(relay::run(
        pool.clone(),
        client,
        settings(names),
        Default::default(),
        stop.clone(),
    ));
    (stop, task)
}

#[tokio::test]
async fn events_wait_in_the_outbox_while_nats_is_down_and_arrive_once_in_order() {
    let t = db().await;
    let app = app(&t.pool);
    let mut nats = NatsServer::start().await.unwrap();
    let names = OpRunNames::isolated(&t.name);
    let relay_metrics = RelayMetrics::new();
    let _recording = relay_metrics.recording();
    let (stop, relay_task) = spawn_relay(&t.pool, &nats, &names).await;

    let id = start_run(&app, json!({"work_order_id":"WO1","operation_id":"OP10","resource_id":"SMT 01.a","ideal_cycle_time_s":1.0})).await;
    for _ in 0..3 {
        post(
            &app,
            "/op_run/report",
            json!({"op_run_id":id,"good_delta":2,"scrap_delta":1}),
        )
        .await;
    }
    wait_until_sent(&t.pool, "before the outage").await;

    nats.stop().await.unwrap();
    assert_eq!(
        post(
            &app,
            "/op_run/pause",
            json!({"op_run_id":id,"reason_code":"breakdown"})
        )
        .await
        .status,
        200
    );
    for _ in 0..3 {
        assert_eq!(
            post(
                &app,
                "/op_run/report",
                json!({"op_run_id":id,"good_delta":1,"scrap_delta":0})
            )
            .await
            .status,
            200
        );
    }
    assert_eq!(
        post(&app, "/op_run/resume", json!({"op_run_id":id}))
            .await
            .status,
        200
    );
    assert_eq!(
        post(
            &app,
            "/op_run/complete",
            json!({"op_run_id":id,"good_units":10})
        )
        .await
        .status,
        200
    );
    // Two failed rounds after the last commit: the second began after it, so it read all six.
    relay_metrics
        .wait_for_failed_rounds(2, "publishing while NATS is down")
        .await;
    assert_eq!(unsent(&t.pool).await, 6, "events wait while NATS is down");

    nats.restart().await.unwrap();
    wait_until_sent(&t.pool, "after the restart").await;

    // A crash between PubAck and marking sent: the relay republishes; JetStream drops the copies.
    sqlx::query("UPDATE outbox SET sent_at = NULL WHERE id > (SELECT max(id) - 3 FROM outbox)")
        .execute(&t.pool)
        .await
        .unwrap();
    wait_until_sent(&t.pool, "republish").await;

    let got = consume_all(&nats.url(), &names).await;
    let types: Vec<&str> = got.iter().map(|(_, _, e)| e.event_type.as_str()).collect();
    assert_eq!(
        types,
        [
            "started",
            "reported",
            "reported",
            "reported",
            "paused",
            "reported",
            "reported",
            "reported",
            "resumed",
            "completed"
        ]
    );
    let ids: Vec<String> = got.iter().map(|(_, id, _)| id.clone()).collect();
    let expected: Vec<String> = sqlx::query_scalar("SELECT id::text FROM outbox ORDER BY id::int8")
        .fetch_all(&t.pool)
        .await
        .unwrap();
    assert_eq!(ids, expected, "Nats-Msg-Id is the outbox id, in order");
    let prefix = format!("{}.BKK.SMT_2001_2Ea.", names.prefix);
    for (subject, _, event) in &got {
        assert_eq!(subject, &format!("{prefix}{}", event.event_type.as_str()));
        assert_eq!(event.op_run_id, id);
    }
    assert_eq!(got.last().unwrap().2.good_units, 10);
    assert_eq!(got.last().unwrap().2.status, "completed");

    stop.cancel();
    tokio::time::timeout(Duration::from_secs(10), relay_task)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn only_one_relay_publishes_at_a_time() {
    let t = db().await;
    let app = app(&t.pool);
    let nats = NatsServer::start().await.unwrap();
    let names = OpRunNames::isolated(&t.name);
    let stop = CancellationToken::new();
    let mut tasks = Vec::new();
    for _ in 0..3 {
        let client = async_nats::connect(nats.url()).await.unwrap();
        tasks.push(tokio::spawn(relay::run(
            t.pool.clone(),
            client,
            settings(&names),
            Default::default(),
            stop.clone(),
        )));
    }
    let mut runs = Vec::new();
    for r in 0..5 {
        runs.push(
            start_run(
                &app,
                json!({"work_order_id":"WO","operation_id":"OP","resource_id":format!("R{r}")}),
            )
            .await,
        );
    }
    for i in 0..40 {
        let id = &runs[i % 5];
        post(
            &app,
            "/op_run/report",
            json!({"op_run_id":id,"good_delta":1,"scrap_delta":0}),
        )
        .await;
    }
    wait_until_sent(&t.pool, "three relays").await;
    let got = consume_all(&nats.url(), &names).await;
    assert_eq!(got.len(), 45, "each event exactly once");
    // Per run, the running totals arrive in increasing order.
    for id in &runs {
        let totals: Vec<i64> = got
            .iter()
            .filter(|(_, _, e)| &e.op_run_id == id)
            .map(|(_, _, e)| e.good_units)
            .collect();
        assert_eq!(totals, (0..=8).collect::<Vec<i64>>());
    }
    stop.cancel();
    for task in tasks {
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .unwrap()
            .unwrap();
    }
}

/// The server's JetStream store is full (its `max_file_store`, or the account's limit): every
/// publish is refused. Events wait in the outbox, none is marked sent, and once the store has
/// room again every event reaches the MES once, in order.
#[tokio::test]
async fn events_wait_in_the_outbox_while_the_servers_store_is_full() {
    let t = db().await;
    let app = app(&t.pool);
    let small = "jetstream { max_file_store: 32768 }\n";
    let mut nats = NatsServer::start_with_config(std::path::Path::new("nats-server"), small)
        .await
        .unwrap();
    let names = OpRunNames::isolated(&t.name);
    let relay_metrics = RelayMetrics::new();
    let _recording = relay_metrics.recording();
    let (stop, relay_task) = spawn_relay(&t.pool, &nats, &names).await;
    let id = start_run(
        &app,
        json!({"work_order_id":"WO1","operation_id":"OP10","resource_id":"R1"}),
    )
    .await;
    for _ in 0..200 {
        let answer = post(
            &app,
            "/op_run/report",
            json!({"op_run_id":id,"good_delta":1,"scrap_delta":0}),
        )
        .await;
        assert_eq!(
            answer.status, 200,
            "the API takes reports whatever NATS does"
        );
    }
    // The store takes what fits; the rest waits: the server refuses the relay's publishes.
    relay_metrics
        .wait_for_failed_rounds(2, "publishing into the full store")
        .await;
    assert!(
        unsent(&t.pool).await > 0,
        "events wait in the outbox while the store is full"
    );

    // The operator gives the store room: every waiting event goes out.
    std::fs::write(
        nats.dir().join("server.conf"),
        "jetstream { max_file_store: 67108864 }\n",
    )
    .unwrap();
    nats.restart().await.unwrap();
    wait_until_sent(&t.pool, "after the store grew").await;
    let got = consume_all(&nats.url(), &names).await;
    assert_eq!(got.len(), 201, "started + 200 reports, each once");
    let totals: Vec<i64> = got.iter().map(|(_, _, e)| e.good_units).collect();
    assert_eq!(totals, (0..=200).collect::<Vec<i64>>(), "in order");
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(10), relay_task)
        .await
        .unwrap()
        .unwrap();
}
