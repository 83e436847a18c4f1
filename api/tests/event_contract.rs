//! The run events on the bus validate against the published JSON Schema
//! (`nats/run-event.schema.json`, generated from `protocol::RunEvent`): every event type, taken
//! from the stream as an MES takes it, and every payload in the outbox.

use std::time::Duration;

use async_nats::jetstream::{self, consumer::pull};
use futures::StreamExt;
use mes_api::relay;
use protocol::OpRunNames;
use serde_json::{json, Value};
use testkit::NatsServer;
use tokio_util::sync::CancellationToken;

use crate::support::*;

fn schema() -> jsonschema::Validator {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(protocol::run_event::RUN_EVENT_SCHEMA_PATH);
    let text = std::fs::read_to_string(&path).unwrap();
    let schema: Value = serde_json::from_str(&text).unwrap();
    jsonschema::draft202012::options()
        .should_validate_formats(true)
        .build(&schema)
        .unwrap()
}

fn assert_valid(validator: &jsonschema::Validator, event: &Value, context: &str) {
    let errors: Vec<String> = validator
        .iter_errors(event)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "{context}: {errors:?}\n{event}");
}

#[tokio::test]
async fn every_event_on_the_bus_matches_the_published_schema() {
    let validator = schema();
    // The schema can refuse: a payload missing a field, or with a status no run has, fails.
    let mut broken = json!({"schema_version": 1});
    assert!(!validator.is_valid(&broken));
    broken = serde_json::to_value(protocol::run_event::run_event_schema()).unwrap();
    assert!(!validator.is_valid(&broken));

    let t = db().await;
    let app = app(&t.pool);
    let nats = NatsServer::start().await.unwrap();
    let names = OpRunNames::isolated(&t.name);
    let client = async_nats::connect(nats.url()).await.unwrap();
    let stop = CancellationToken::new();
    let relay_task = tokio::spawn(relay::run(
        t.pool.clone(),
        client.clone(),
        relay_settings(names.clone()),
        Default::default(),
        stop.clone(),
    ));

    // Every event type, with and without optional values: two runs.
    let a = start_run(
        &app,
        json!({"work_order_id":"WO-c","operation_id":"OP10","resource_id":"R-contract-1",
               "planned_seconds":3600,"ideal_cycle_time_s":1.5}),
    )
    .await;
    let b = start_run(
        &app,
        json!({"work_order_id":"WO-c","operation_id":"OP20","resource_id":"R-contract-2"}),
    )
    .await;
    for (uri, body) in [
        (
            "/op_run/report",
            json!({"op_run_id":a,"good_delta":10,"scrap_delta":1}),
        ),
        (
            "/op_run/pause",
            json!({"op_run_id":a,"reason_code":"breakdown","note":"jam"}),
        ),
        (
            "/op_run/report",
            json!({"op_run_id":a,"good_delta":0,"scrap_delta":2}),
        ),
        ("/op_run/resume", json!({"op_run_id":a})),
        (
            "/op_run/pause",
            json!({"op_run_id":a,"reason_code":"changeover"}),
        ),
        ("/op_run/complete", json!({"op_run_id":a,"good_units":20})),
        ("/op_run/abort", json!({"op_run_id":b})),
    ] {
        let answer = post(&app, uri, body).await;
        assert!(answer.status.is_success(), "{uri}: {}", answer.body);
    }
    // A stop the machine's readings showed during run a, explained by an operator.
    sqlx::query(
        "INSERT INTO machine_stops (id, resource_id, started_at, ended_at)
         SELECT 1, 'R-contract-1', started_at, started_at + interval '1 microsecond'
         FROM op_run WHERE op_run_id = $1::uuid",
    )
    .bind(&a)
    .execute(&t.pool)
    .await
    .unwrap();
    let answer = post(
        &app,
        "/machine_stops/1/reason",
        json!({"reason_code":"minor_stop"}),
    )
    .await;
    assert!(answer.status.is_success(), "{}", answer.body);
    let written = scalar_i64(&t.pool, "SELECT count(*) FROM outbox").await;
    assert_eq!(written, 10);

    // As an MES reads them: a durable pull consumer on the stream.
    let js = jetstream::new(client);
    let stream = wait_for(
        "the relay to create the OP_RUN stream",
        Duration::from_secs(30),
        || {
            let js = js.clone();
            let name = names.stream.clone();
            async move { js.get_stream(&name).await.ok() }
        },
    )
    .await;
    let consumer = stream
        .get_or_create_consumer(
            "contract",
            pull::Config {
                durable_name: Some("contract".into()),
                filter_subject: names.filter(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<(String, Value)>::new()));
    wait_until("the 10 events on the bus", Duration::from_secs(30), || {
        let (consumer, seen) = (consumer.clone(), seen.clone());
        async move {
            let mut batch = consumer
                .fetch()
                .max_messages(100)
                .expires(Duration::from_millis(200))
                .messages()
                .await
                .unwrap();
            while let Some(m) = batch.next().await {
                let m = m.unwrap();
                let event = serde_json::from_slice(&m.payload).unwrap();
                seen.lock().unwrap().push((m.subject.to_string(), event));
                m.ack().await.unwrap();
            }
            seen.lock().unwrap().len() >= 10
        }
    })
    .await;
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 10);
    let mut types: Vec<&str> = Vec::new();
    for (subject, event) in &seen {
        assert_valid(&validator, event, subject);
        let t = event["event_type"].as_str().unwrap();
        assert!(subject.ends_with(&format!(".{t}")), "{subject}: {t}");
        types.push(t);
    }
    types.sort_unstable();
    types.dedup();
    assert_eq!(
        types,
        [
            "aborted",
            "classified",
            "completed",
            "paused",
            "reported",
            "resumed",
            "started"
        ]
    );
    // The completion closed the open changeover: its event carries the downtime, ended.
    let completed = &seen
        .iter()
        .find(|(_, e)| e["event_type"] == "completed")
        .unwrap()
        .1;
    assert_eq!(completed["downtime"]["reason_code"], "changeover");
    assert!(completed["downtime"]["ended_at"].is_string());
    assert_eq!(completed["delta"]["good_delta"], 10);

    // Who made each change travels with it (the support's admin token is named "tests"), and is
    // recorded on the rows.
    assert!(seen.iter().all(|(_, e)| e["actor"] == "tests"), "{seen:?}");
    let unattributed = scalar_i64(
        &t.pool,
        "SELECT (SELECT count(*) FROM op_run WHERE started_by IS DISTINCT FROM 'tests')
              + (SELECT count(*) FROM op_run WHERE ended_by IS DISTINCT FROM 'tests')
              + (SELECT count(*) FROM op_run_count WHERE actor IS DISTINCT FROM 'tests')
              + (SELECT count(*) FROM op_run_downtime
                 WHERE opened_by IS DISTINCT FROM 'tests' OR closed_by IS DISTINCT FROM 'tests')",
    )
    .await;
    assert_eq!(unattributed, 0);

    // And every payload the outbox holds.
    let payloads: Vec<Value> = sqlx::query_scalar("SELECT payload FROM outbox ORDER BY id")
        .fetch_all(&t.pool)
        .await
        .unwrap();
    for p in &payloads {
        assert_valid(&validator, p, "outbox");
    }

    stop.cancel();
    relay_task.await.unwrap();
}
