//! The READINGS stream as a buffer, not an archive: it frees what was loaded, so it carries many
//! times its size limit; when the workers stop it fills, shippers wait, and nothing is lost; a
//! limits-retention stream of an earlier version is upgraded in place without loss or doubles.

use std::cell::Cell;
use std::io::Write;
use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream};
use chrono::{TimeZone, Utc};
use protocol::Names;
use testkit::data::{Expected, ReadingGen};

use crate::support::{eventually, metric, metrics_addr, stop_cleanly, without_blanks, Stack};

/// Small enough that a test carries several times the limit in seconds.
const LIMIT: i64 = 2 * 1024 * 1024;
const LIMIT_ARG: &str = "2097152";

fn write_lines(path: &std::path::Path, seed: u64, n: usize) -> Expected {
    // A start of its own per seed: files whose first lines are equal share a fingerprint, and the
    // shipper rightly takes the second for a copy of the first.
    let start = Utc.with_ymd_and_hms(2026, 11, 3, 0, 0, 0).unwrap()
        + chrono::Duration::minutes(i64::try_from(seed).unwrap());
    let lines = ReadingGen::new(seed, start, 4, 4).with_box("buf").lines(n);
    let mut e = Expected::default();
    let mut f = std::fs::File::create(path).unwrap();
    for l in &lines {
        writeln!(f, "{l}").unwrap();
        e.record(l.as_bytes());
    }
    e
}

/// Files of `box_id` holding at least `bytes`, each ≈ 1 MiB; their expected outcome.
fn fill_box(stack: &Stack, box_id: &str, bytes: u64, seed: u64) -> Expected {
    let dir = stack.box_dir(box_id);
    let mut expected = Expected::default();
    let mut written = 0u64;
    let mut i = 0;
    while written < bytes {
        let path = dir.join(format!("part-{i}.jsonl"));
        expected.merge(&write_lines(&path, seed + i, 6_000));
        written += std::fs::metadata(&path).unwrap().len();
        i += 1;
    }
    expected
}

async fn js(stack: &Stack) -> jetstream::Context {
    jetstream::new(async_nats::connect(stack.nats.url()).await.unwrap())
}

async fn stream_state(js: &jetstream::Context, name: &str) -> stream::Info {
    js.get_stream(name)
        .await
        .unwrap()
        .info()
        .await
        .unwrap()
        .clone()
}

#[tokio::test]
async fn carries_three_times_its_size_limit_through_a_running_worker() {
    let stack = Stack::new().await;
    let names = Names::isolated(&stack.tag);
    let expected = fill_box(&stack, "buf", 3 * LIMIT as u64 + LIMIT as u64 / 2, 10);
    let mut worker = stack
        .worker(&["--stream-max-bytes", LIMIT_ARG])
        .spawn()
        .unwrap();
    let js = js(&stack).await;
    assert!(
        eventually(Duration::from_secs(60), || async {
            js.get_stream(&names.readings_stream).await.is_ok()
        })
        .await,
        "the worker created the stream"
    );
    let mut shipper = stack.shipper("buf", &[]).spawn().unwrap();
    let largest = Cell::new(0u64);
    let arrived = eventually(Duration::from_secs(180), || async {
        let info = stream_state(&js, &names.readings_stream).await;
        largest.set(largest.get().max(info.state.bytes));
        stack.readings().await >= expected.valid
    })
    .await;
    let largest = largest.get();
    assert!(arrived, "every valid line arrived while the shipper ran");
    let info = stream_state(&js, &names.readings_stream).await;
    assert!(
        info.state.last_sequence > 0 && largest <= LIMIT as u64,
        "the stream never held more than its limit ({largest} bytes seen)"
    );
    assert!(
        eventually(Duration::from_secs(30), || async {
            stream_state(&js, &names.readings_stream)
                .await
                .state
                .messages
                == 0
        })
        .await,
        "the stream is empty once everything is loaded"
    );
    stop_cleanly(&mut shipper).await;
    stop_cleanly(&mut worker).await;
    assert_eq!(stack.landed().await, without_blanks(&expected));
    let carried: u64 = stream_state(&js, &names.readings_stream)
        .await
        .state
        .last_sequence;
    eprintln!(
        "carried {} lines in {carried} messages through a {LIMIT}-byte stream; largest backlog {largest} bytes",
        expected.lines()
    );
}

#[tokio::test]
async fn worker_stopped_until_the_stream_is_full_then_restarted_loads_everything_once() {
    let stack = Stack::new().await;
    let names = Names::isolated(&stack.tag);
    // The worker creates the stream and its consumer, then stops.
    let status = stack
        .worker(&["--stream-max-bytes", LIMIT_ARG, "--until-idle", "1"])
        .status()
        .await
        .unwrap();
    assert!(status.success());
    let expected = fill_box(&stack, "buf", 3 * LIMIT as u64, 20);
    let (addr, metrics) = metrics_addr();
    let mut shipper = stack
        .shipper("buf", &["--metrics-addr", &addr])
        .spawn()
        .unwrap();
    let js = js(&stack).await;
    // Full: what is left is less than one message of the shipper (256 KiB by default).
    assert!(
        eventually(Duration::from_secs(60), || async {
            let info = stream_state(&js, &names.readings_stream).await;
            info.state.bytes + 256 * 1024 > LIMIT as u64
        })
        .await,
        "the stream filled up to its limit"
    );
    let held = stream_state(&js, &names.readings_stream).await.state;
    assert!(held.bytes <= LIMIT as u64);
    assert_eq!(
        stack.readings().await,
        0,
        "nothing loaded while no worker runs"
    );
    // The shipper waits, it does not give up. First it is seen refused by the full stream...
    let retries = "edge_shipper_publish_retries_total";
    let refused = metric(metrics, retries).await.unwrap_or(0.0);
    assert!(
        eventually(Duration::from_secs(60), || async {
            metric(metrics, retries).await.is_some_and(|n| n > refused)
        })
        .await,
        "the full stream refuses the shipper's publishes"
    );
    // ...then a window, kept on purpose: no event marks a shipper that does not give up.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        shipper.try_wait().unwrap().is_none(),
        "the shipper keeps waiting"
    );
    assert_eq!(
        stream_state(&js, &names.readings_stream)
            .await
            .state
            .last_sequence,
        held.last_sequence,
        "a full stream takes nothing more"
    );

    let mut worker = stack
        .worker(&["--stream-max-bytes", LIMIT_ARG])
        .spawn()
        .unwrap();
    assert!(
        eventually(Duration::from_secs(180), || async {
            stack.readings().await >= expected.valid
        })
        .await,
        "everything lands once the worker is back"
    );
    stop_cleanly(&mut shipper).await;
    stop_cleanly(&mut worker).await;
    assert_eq!(stack.landed().await, without_blanks(&expected));
    eprintln!(
        "full stream, worker restarted: {} lines ({} valid) landed exactly once; the stream held {} bytes of a {LIMIT}-byte limit while full",
        expected.lines(),
        expected.valid,
        held.bytes
    );
    assert_eq!(
        stream_state(&js, &names.readings_stream)
            .await
            .state
            .messages,
        0
    );
}

#[tokio::test]
async fn limits_stream_of_an_earlier_version_is_upgraded_without_loss_or_doubles() {
    let stack = Stack::new().await;
    let names = Names::isolated(&stack.tag);
    let js = js(&stack).await;
    // The shape an earlier version created: limits retention, a filtered durable consumer.
    js.create_stream(stream::Config {
        name: names.readings_stream.clone(),
        subjects: vec![names.readings_filter()],
        retention: stream::RetentionPolicy::Limits,
        discard: stream::DiscardPolicy::New,
        max_bytes: 64 * 1024 * 1024,
        ..Default::default()
    })
    .await
    .unwrap();
    js.get_stream(&names.readings_stream)
        .await
        .unwrap()
        .create_consumer(consumer::pull::Config {
            durable_name: Some(names.consumer.clone()),
            ack_policy: consumer::AckPolicy::Explicit,
            filter_subject: names.readings_filter(),
            ..Default::default()
        })
        .await
        .unwrap();
    // Lines shipped into it before the upgrade, never loaded.
    let mut expected = fill_box(&stack, "old", 1024 * 1024, 30);
    stack.ship_until_caught_up("old").await;
    let before = stream_state(&js, &names.readings_stream).await.state;
    assert!(before.messages > 0);
    // A shipper keeps going through the upgrade: its lines written while the stream is sealed.
    let mut shipper = stack.shipper("live", &[]).spawn().unwrap();
    let live_dir = stack.box_dir("live");
    expected.merge(&write_lines(&live_dir.join("a.jsonl"), 31, 4_000));

    let mut worker = stack.worker(&[]).spawn().unwrap();
    assert!(
        eventually(Duration::from_secs(120), || async {
            stream_state(&js, &names.readings_stream)
                .await
                .config
                .retention
                == stream::RetentionPolicy::WorkQueue
        })
        .await,
        "the worker replaced the stream by an work-queue one"
    );
    expected.merge(&write_lines(&live_dir.join("b.jsonl"), 32, 4_000));
    assert!(
        eventually(Duration::from_secs(120), || async {
            stack.readings().await >= expected.valid
        })
        .await,
        "every line arrived"
    );
    stop_cleanly(&mut shipper).await;
    stop_cleanly(&mut worker).await;
    let after = stream_state(&js, &names.readings_stream).await;
    assert_eq!(
        after.config.max_bytes,
        protocol::streams::READINGS_MAX_BYTES
    );
    assert!(!after.config.sealed);
    assert_eq!(
        after.state.messages, 0,
        "the new stream frees what was loaded"
    );
    assert_eq!(stack.landed().await, without_blanks(&expected));
    eprintln!(
        "upgrade: {} lines ({} valid) landed exactly once; {} messages were in the old stream",
        expected.lines(),
        expected.valid,
        before.messages
    );
}

/// A site gateway (its own JetStream domain, a work-queue buffer stream) behind a leaf-node
/// connection; the central READINGS sources it. Both on a nats-server that sources work queues
/// reliably (>= 2.14), both started by the test.
struct Site {
    gateway: testkit::NatsServer,
    stream: String,
}

const SITE_LIMIT: i64 = 2 * 1024 * 1024;
const CENTRAL_LIMIT_ARG: &str = "1048576";
const CENTRAL_LIMIT: u64 = 1024 * 1024;

async fn hub_and_site() -> (Stack, Site) {
    let binary = testkit::nats::modern_binary().unwrap();
    let leaf_port = testkit::nats::free_port().unwrap();
    let hub = testkit::NatsServer::start_with_config(
        &binary,
        &format!(
            "jetstream {{ domain: hub }}\nleafnodes {{ listen: \"127.0.0.1:{leaf_port}\" }}\n"
        ),
    )
    .await
    .unwrap();
    let stack = Stack::with(
        testkit::pg_for_test().await.unwrap(),
        testkit::NatsHandle::Private(hub),
    )
    .await;
    let names = Names::isolated(&stack.tag);
    // As nats/production/leafnode-site.conf: raw readings stay on their side of the link in both
    // directions; the central stream takes them only by sourcing the site stream.
    let gateway = testkit::NatsServer::start_with_config(
        &binary,
        &format!(
            "jetstream {{ domain: bkk }}\nleafnodes {{ remotes: [ {{ urls: [\"nats-leaf://127.0.0.1:{leaf_port}\"], \
             deny_exports: [\"{f}\"], deny_imports: [\"{f}\"] }} ] }}\n",
            f = names.readings_filter()
        ),
    )
    .await
    .unwrap();
    let mut cfg: stream::Config = serde_json::from_str(
        &std::fs::read_to_string(
            testkit::bins::workspace_root().join("nats/streams/site-gateway/READINGS.json"),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(cfg.retention, stream::RetentionPolicy::WorkQueue);
    cfg.name = format!("GW_{}", names.readings_stream);
    cfg.subjects = vec![names.readings_filter()];
    cfg.max_bytes = SITE_LIMIT;
    let site_js = jetstream::new(async_nats::connect(gateway.url()).await.unwrap());
    site_js.create_stream(cfg.clone()).await.unwrap();
    // The worker creates the central stream and its consumer; the operator adds the source.
    let status = stack
        .worker(&["--stream-max-bytes", CENTRAL_LIMIT_ARG, "--until-idle", "1"])
        .status()
        .await
        .unwrap();
    assert!(status.success());
    let hub_js = js(&stack).await;
    let mut central = stream_state(&hub_js, &names.readings_stream).await.config;
    central.sources = Some(vec![stream::Source {
        name: cfg.name.clone(),
        external: Some(stream::External {
            api_prefix: "$JS.bkk.API".to_owned(),
            delivery_prefix: None,
        }),
        ..Default::default()
    }]);
    hub_js.update_stream(central).await.unwrap();
    (
        stack,
        Site {
            gateway,
            stream: cfg.name,
        },
    )
}

impl Site {
    async fn state(&self) -> stream::State {
        let js = jetstream::new(async_nats::connect(self.gateway.url()).await.unwrap());
        stream_state(&js, &self.stream).await.state
    }

    /// Rows, both streams and the source's state: what a failed wait prints.
    async fn picture(&self, stack: &Stack) -> String {
        let names = Names::isolated(&stack.tag);
        let central = match js(stack).await.get_stream(&names.readings_stream).await {
            Ok(mut s) => {
                let consumer = s
                    .consumer_info(&names.consumer)
                    .await
                    .map(|c| {
                        format!(
                            "delivered {:?} ack floor {:?} pending {} unacked {}",
                            c.delivered, c.ack_floor, c.num_pending, c.num_ack_pending
                        )
                    })
                    .unwrap_or_else(|e| format!("consumer info failed: {e}"));
                match s.info().await {
                    Ok(i) => format!("{:?} sources {:?}; consumer {consumer}", i.state, i.sources),
                    Err(e) => format!("info failed: {e}"),
                }
            }
            Err(e) => format!("lookup failed: {e}"),
        };
        let pool = stack.pool().await;
        let ledger: Vec<(String, i64, i64)> = sqlx::query_as(
            "SELECT source, sum(lines)::int8, max(upper(byte_range)) FROM ingest_ledger GROUP BY 1 ORDER BY 1",
        )
        .fetch_all(&pool)
        .await
        .unwrap_or_default();
        pool.close().await;
        let mut checkpoints = String::new();
        for entry in walk(&stack.dir.path().join("state")) {
            checkpoints.push_str(&format!(
                "\n{}: {}",
                entry.display(),
                std::fs::read_to_string(&entry).unwrap_or_default()
            ));
        }
        format!(
            "readings {}; gateway {:?}; central {central}; ledger {ledger:?}; shipper state {checkpoints}",
            stack.readings().await,
            self.state().await
        )
    }

    /// edge-shipper of `box_id` publishing to the gateway, not to the central servers.
    fn shipper(&self, stack: &Stack, box_id: &str) -> tokio::process::Command {
        let mut c = stack.shipper(box_id, &[]);
        c.env("NATS_URL", self.gateway.url());
        c
    }
}

#[tokio::test]
async fn site_gateway_frees_what_was_sourced_and_holds_through_a_full_center_and_a_wan_outage() {
    let (mut stack, site) = hub_and_site().await;
    let names = Names::isolated(&stack.tag);
    let hub_js = js(&stack).await;
    let worker_args = ["--stream-max-bytes", CENTRAL_LIMIT_ARG];

    // 1. Three times the gateway's limit through a running worker.
    let mut expected = fill_box(&stack, "g1", 3 * SITE_LIMIT as u64 + 512 * 1024, 40);
    let mut worker = stack.worker(&worker_args).spawn().unwrap();
    let mut shipper = site.shipper(&stack, "g1").spawn().unwrap();
    let largest = Cell::new(0u64);
    assert!(
        eventually(Duration::from_secs(60), || async {
            largest.set(largest.get().max(site.state().await.bytes));
            stack.readings().await >= expected.valid
        })
        .await,
        "phase 1: every line ({}) arrived through the gateway: {}",
        expected.valid,
        site.picture(&stack).await
    );
    assert!(largest.get() <= SITE_LIMIT as u64);
    assert!(
        eventually(Duration::from_secs(30), || async {
            site.state().await.messages == 0
        })
        .await,
        "phase 1: the gateway freed what the central stream sourced"
    );
    stop_cleanly(&mut shipper).await;

    // 2. The worker stops: the central stream fills to its limit, the gateway holds the rest.
    stop_cleanly(&mut worker).await;
    let loaded = stack.readings().await;
    expected.merge(&fill_box(&stack, "g2", 2 * CENTRAL_LIMIT, 50));
    let mut shipper = site.shipper(&stack, "g2").spawn().unwrap();
    assert!(
        eventually(Duration::from_secs(60), || async {
            let central = stream_state(&hub_js, &names.readings_stream).await.state;
            central.bytes + 256 * 1024 > CENTRAL_LIMIT && site.state().await.messages > 0
        })
        .await,
        "phase 2: the central stream is full and the gateway holds what it could not take: {}",
        site.picture(&stack).await
    );
    let central = stream_state(&hub_js, &names.readings_stream).await.state;
    assert!(central.bytes <= CENTRAL_LIMIT);
    assert_eq!(stack.readings().await, loaded);
    let mut worker = stack.worker(&worker_args).spawn().unwrap();
    assert!(
        eventually(Duration::from_secs(120), || async {
            stack.readings().await >= expected.valid
        })
        .await,
        "phase 2: everything the gateway held arrived once the worker was back: {}",
        site.picture(&stack).await
    );
    stop_cleanly(&mut shipper).await;

    // 3. WAN outage: the central servers are gone; the gateway fills to its limit, the shipper
    // waits; when the link returns everything lands.
    let testkit::NatsHandle::Private(hub) = &mut stack.nats else {
        unreachable!()
    };
    hub.stop().await.unwrap();
    expected.merge(&fill_box(&stack, "g3", SITE_LIMIT as u64 + 1024 * 1024, 60));
    let mut shipper = site.shipper(&stack, "g3").spawn().unwrap();
    assert!(
        eventually(Duration::from_secs(60), || async {
            site.state().await.bytes + 256 * 1024 > SITE_LIMIT as u64
        })
        .await,
        "phase 3: the gateway filled up during the outage: {}",
        site.picture(&stack).await
    );
    assert!(site.state().await.bytes <= SITE_LIMIT as u64);
    let testkit::NatsHandle::Private(hub) = &mut stack.nats else {
        unreachable!()
    };
    hub.restart().await.unwrap();
    assert!(
        eventually(Duration::from_secs(180), || async {
            stack.readings().await >= expected.valid
        })
        .await,
        "phase 3: everything arrived after the outage: {}",
        site.picture(&stack).await
    );
    stop_cleanly(&mut shipper).await;
    stop_cleanly(&mut worker).await;
    assert_eq!(stack.landed().await, without_blanks(&expected));
    eprintln!(
        "gateway: {} lines ({} valid) landed exactly once through a {SITE_LIMIT}-byte gateway and a {CENTRAL_LIMIT}-byte central stream",
        expected.lines(),
        expected.valid
    );
    // The gateway learns that the central stream stored a message from the sourcing consumer's
    // flow-control acknowledgements, which follow within a heartbeat or so.
    assert!(
        eventually(Duration::from_secs(30), || async {
            site.state().await.messages == 0
        })
        .await,
        "the gateway is empty: {}",
        site.picture(&stack).await
    );
    let hub_js = js(&stack).await;
    assert_eq!(
        stream_state(&hub_js, &names.readings_stream)
            .await
            .state
            .messages,
        0,
        "the central stream is empty"
    );
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}
