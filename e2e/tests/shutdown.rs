//! Every binary stops within `--shutdown-timeout-secs` of SIGTERM, whatever server is down, and
//! nothing acknowledged is lost by giving up: once the servers and the service are back, every
//! line lands once and every run event reaches the stream once.

use std::io::Write;
use std::time::{Duration, Instant};

use chrono::{TimeZone, Utc};
use testkit::data::{Expected, ReadingGen};
use testkit::{NatsHandle, NatsServer, PgHandle, PgServer};
use tokio::process::Child;

use crate::support::{
    api_ready, eventually, metric, metrics_addr, post, sigterm, without_blanks, Stack,
};

/// The bound the tests give the binaries, and the slack allowed on top (process start-up of a
/// debug build, the test's own polling).
const GRACE_SECS: u64 = 3;
const SLACK: Duration = Duration::from_secs(2);

async fn private_stack() -> Stack {
    Stack::with(
        PgHandle::Private(PgServer::start().await.unwrap()),
        NatsHandle::Private(NatsServer::start().await.unwrap()),
    )
    .await
}

fn nats(stack: &mut Stack) -> &mut NatsServer {
    match &mut stack.nats {
        NatsHandle::Private(s) => s,
        NatsHandle::External(_) => unreachable!("private servers"),
    }
}

fn pg(stack: &mut Stack) -> &mut PgServer {
    match &mut stack.pg {
        PgHandle::Private(s) => s,
        PgHandle::External(_) => unreachable!("private servers"),
    }
}

fn append(path: &std::path::Path, seed: u64, n: usize) -> Expected {
    let start = Utc.with_ymd_and_hms(2026, 11, 4, 0, 0, 0).unwrap()
        + chrono::Duration::minutes(i64::try_from(seed).unwrap());
    let mut e = Expected::default();
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    for l in ReadingGen::new(seed, start, 2, 2).with_box("stop").lines(n) {
        writeln!(f, "{l}").unwrap();
        e.record(l.as_bytes());
    }
    e
}

/// SIGTERM, then the time to exit; fails past the bound.
async fn stop_within_bound(name: &str, child: &mut Child) -> Duration {
    let sent = Instant::now();
    sigterm(child);
    let status = tokio::time::timeout(Duration::from_secs(GRACE_SECS) + SLACK, child.wait())
        .await
        .unwrap_or_else(|_| panic!("{name} still running {GRACE_SECS} s after SIGTERM"))
        .unwrap();
    let took = sent.elapsed();
    assert!(status.success(), "{name} exits 0 on SIGTERM, got {status}");
    eprintln!("{name}: stopped {} ms after SIGTERM", took.as_millis());
    took
}

fn grace() -> [&'static str; 2] {
    ["--shutdown-timeout-secs", "3"]
}

#[tokio::test]
async fn worker_stops_in_time_with_nats_or_postgres_down_and_loses_nothing() {
    let mut stack = private_stack().await;
    stack.prepare().await;
    let file = stack.box_dir("stop").join("a.jsonl");
    let mut expected = append(&file, 1, 3000);
    stack.ship_until_caught_up("stop").await;

    // NATS down under a running worker.
    let mut worker = stack.worker(&grace()).spawn().unwrap();
    assert!(
        eventually(Duration::from_secs(60), || async {
            stack.readings().await >= expected.valid
        })
        .await,
        "the worker loaded the first lines"
    );
    nats(&mut stack).stop().await.unwrap();
    stop_within_bound("ingest-worker (NATS down)", &mut worker).await;
    nats(&mut stack).restart().await.unwrap();

    // PostgreSQL down under a running worker, with lines waiting in the stream.
    expected.merge(&append(&file, 2, 3000));
    stack.ship_until_caught_up("stop").await;
    pg(&mut stack).stop().await.unwrap();
    // Its metrics listener answers once the worker runs (and handles SIGTERM): it then waits for
    // the database.
    let (addr, metrics) = metrics_addr();
    let mut args = grace().to_vec();
    args.extend(["--metrics-addr", addr.as_str()]);
    let mut worker = stack.worker(&args).spawn().unwrap();
    assert!(
        eventually(Duration::from_secs(30), || async {
            tokio::net::TcpStream::connect(("127.0.0.1", metrics))
                .await
                .is_ok()
        })
        .await,
        "the worker's metrics listener came up"
    );
    stop_within_bound("ingest-worker (PostgreSQL down)", &mut worker).await;
    pg(&mut stack).restart().await.unwrap();

    stack.worker_until_idle(2).await;
    assert_eq!(stack.landed().await, without_blanks(&expected));
}

#[tokio::test]
async fn shipper_with_unsent_lines_stops_in_time_with_nats_down_and_loses_nothing() {
    let mut stack = private_stack().await;
    stack.prepare().await;
    let file = stack.box_dir("stop").join("a.jsonl");
    let mut expected = append(&file, 3, 2000);
    let (addr, metrics) = metrics_addr();
    let mut args = grace().to_vec();
    args.extend(["--metrics-addr", addr.as_str()]);
    let mut shipper = stack.shipper("stop", &args).spawn().unwrap();
    assert!(
        eventually(Duration::from_secs(60), || async {
            stack.readings_in_stream().await > 0
        })
        .await,
        "the shipper published the first lines"
    );
    let retries = "edge_shipper_publish_retries_total";
    let before = metric(metrics, retries).await.unwrap_or(0.0);
    nats(&mut stack).stop().await.unwrap();
    // Lines the shipper reads but cannot get acknowledged: it retries a publish (after the
    // 5 s JetStream ack timeout).
    expected.merge(&append(&file, 4, 2000));
    assert!(
        eventually(Duration::from_secs(30), || async {
            metric(metrics, retries).await.is_some_and(|n| n > before)
        })
        .await,
        "the shipper retries a publish while NATS is down"
    );
    stop_within_bound("edge-shipper (NATS down, unsent lines)", &mut shipper).await;
    nats(&mut stack).restart().await.unwrap();
    stack.ship_until_caught_up("stop").await;
    stack.worker_until_idle(2).await;
    assert_eq!(stack.landed().await, without_blanks(&expected));
}

#[tokio::test]
async fn api_stops_in_time_with_nats_or_postgres_down_and_every_event_arrives_once() {
    let mut stack = private_stack().await;
    let port = testkit::nats::free_port().unwrap();
    let token = stack.api_token("operator").await;
    let mut server = stack.api(port, &grace()).spawn().unwrap();
    assert!(api_ready(port).await, "mes-api listens");
    let (status, body) = post(
        port,
        &token,
        "/op_run/start",
        r#"{"work_order_id":"WO1","operation_id":"OP10","resource_id":"R1"}"#,
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let id = body
        .split("\"op_run_id\":\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap()
        .to_owned();

    // NATS down: reports commit, their events wait in the outbox; SIGTERM must not wait for NATS.
    nats(&mut stack).stop().await.unwrap();
    for _ in 0..5 {
        let report = format!(r#"{{"op_run_id":"{id}","good_delta":1,"scrap_delta":0}}"#);
        assert_eq!(post(port, &token, "/op_run/report", &report).await.0, 200);
    }
    stop_within_bound("mes-api (NATS down)", &mut server).await;
    nats(&mut stack).restart().await.unwrap();

    // PostgreSQL down.
    let mut server = stack.api(port, &grace()).spawn().unwrap();
    assert!(api_ready(port).await, "mes-api listens again");
    pg(&mut stack).stop().await.unwrap();
    stop_within_bound("mes-api (PostgreSQL down)", &mut server).await;
    pg(&mut stack).restart().await.unwrap();

    // Back: every event (start + 5 reports) reaches OP_RUN once.
    let mut server = stack.api(port, &grace()).spawn().unwrap();
    assert!(api_ready(port).await);
    let pool = stack.pool().await;
    assert!(
        eventually(Duration::from_secs(60), || async {
            let unsent: i64 =
                sqlx::query_scalar("SELECT count(*) FROM outbox WHERE sent_at IS NULL")
                    .fetch_one(&pool)
                    .await
                    .unwrap_or(-1);
            unsent == 0
        })
        .await,
        "the outbox drained after the restart"
    );
    let js = async_nats::jetstream::new(async_nats::connect(stack.nats.url()).await.unwrap());
    let names = protocol::OpRunNames::isolated(&stack.tag);
    let messages = js
        .get_stream(&names.stream)
        .await
        .unwrap()
        .info()
        .await
        .unwrap()
        .state
        .messages;
    let events: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(events, 6, "start and five reports");
    assert_eq!(messages, 6, "each event once on the stream");
    pool.close().await;
    stop_within_bound("mes-api (all up)", &mut server).await;
}
