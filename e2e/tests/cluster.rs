//! A three-node JetStream cluster (testkit's `NatsCluster`) with every stream at three replicas:
//! the READINGS leader SIGKILLed while shippers publish and the worker loads, a rolling restart
//! of all three nodes under load, mes-api's outbox relay across a leader change of OP_RUN, and a
//! site gateway feeding the cluster through a WAN cut during which the central leader dies.
//! Exact counts every time; run events in order for an MES consumer.

use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer};
use protocol::{Names, OpRunNames};
use testkit::{GatewayOptions, NatsCluster, NatsHandle, SiteGateway};
use tokio::process::Child;

use crate::site_gateway::{all_acked, expected_of, ledger_lines, BoxFile};
use crate::support::{
    api_ready, eventually, metrics_addr, post, stop_cleanly, without_blanks, Stack,
};

const REPLICAS: [&str; 2] = ["--stream-replicas", "3"];
const BOXES: [&str; 2] = ["line-1", "line-2"];
/// How long a stream may take to elect a leader and bring its replicas up to date.
const ELECTION: Duration = Duration::from_secs(60);

async fn cluster_stack() -> (NatsCluster, Stack) {
    let cluster = NatsCluster::start().await.unwrap();
    let stack = Stack::with(
        testkit::pg_for_test().await.unwrap(),
        NatsHandle::External(cluster.url()),
    )
    .await;
    (cluster, stack)
}

/// Shippers of [`BOXES`] on every node's URL, with their metrics ports, and the boxes' files.
fn shippers(stack: &Stack, seed: u64) -> (Vec<Child>, Vec<u16>, Vec<BoxFile>) {
    let mut children = Vec::new();
    let mut ports = Vec::new();
    let mut files = Vec::new();
    for (i, b) in BOXES.iter().enumerate() {
        let (addr, port) = metrics_addr();
        children.push(
            stack
                .shipper(b, &["--metrics-addr", &addr])
                .spawn()
                .unwrap(),
        );
        ports.push(port);
        files.push(BoxFile::new(stack, b, seed + i as u64));
    }
    (children, ports, files)
}

fn write(files: &mut [BoxFile], lines: usize) {
    for f in files {
        f.append(lines);
    }
}

/// The worker up with R3 streams; the READINGS leader.
async fn worker_on_r3(cluster: &NatsCluster, stack: &Stack) -> (Child, usize) {
    let worker = stack.worker(&REPLICAS).spawn().unwrap();
    let names = Names::isolated(&stack.tag);
    let leader = cluster
        .wait_stream_ready(&names.readings_stream, ELECTION)
        .await
        .unwrap();
    let js = jetstream::new(async_nats::connect(cluster.urls()).await.unwrap());
    let info = js
        .get_stream(&names.readings_stream)
        .await
        .unwrap()
        .info()
        .await
        .unwrap()
        .clone();
    assert_eq!(info.config.num_replicas, 3);
    assert_eq!(info.cluster.unwrap().replicas.len(), 2, "two followers");
    (worker, leader)
}

/// Waits until every line written so far is acknowledged and loaded, and the stream is empty.
async fn all_landed(
    cluster: &NatsCluster,
    stack: &Stack,
    ports: &[u16],
    files: &[BoxFile],
    what: &str,
) {
    let expected = expected_of(files);
    let in_stream = || async {
        let js = jetstream::new(async_nats::connect(cluster.urls()).await.unwrap());
        match js
            .get_stream(&Names::isolated(&stack.tag).readings_stream)
            .await
        {
            Ok(mut s) => s.info().await.map_or(u64::MAX, |i| i.state.messages),
            Err(_) => u64::MAX,
        }
    };
    assert!(
        eventually(Duration::from_secs(120), || async {
            all_acked(ports).await
                && stack.readings().await == expected.valid
                && in_stream().await == 0
        })
        .await,
        "{what}: every line landed ({} valid, {} loaded, {} in the stream)",
        expected.valid,
        stack.readings().await,
        in_stream().await
    );
}

async fn finish(stack: &Stack, mut shippers: Vec<Child>, mut worker: Child, files: &[BoxFile]) {
    for s in &mut shippers {
        stop_cleanly(s).await;
    }
    stop_cleanly(&mut worker).await;
    let expected = expected_of(files);
    assert_eq!(stack.landed().await, without_blanks(&expected));
    assert_eq!(ledger_lines(stack).await as u64, expected.lines());
}

#[tokio::test]
async fn readings_leader_sigkilled_while_shippers_publish_and_the_worker_loads() {
    if testkit::gateway::skip_without_modern_nats() {
        return;
    }
    let (mut cluster, stack) = cluster_stack().await;
    let names = Names::isolated(&stack.tag);
    let (worker, leader) = worker_on_r3(&cluster, &stack).await;
    let (shippers, ports, mut files) = shippers(&stack, 300);
    for _ in 0..4 {
        write(&mut files, 1_500);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        eventually(Duration::from_secs(60), || async {
            stack.readings().await > 0
        })
        .await,
        "loading before the kill"
    );

    // SIGKILL the leader mid-stream; lines keep coming until another node leads.
    cluster.kill(leader).await.unwrap();
    let killed_at = Instant::now();
    let mut new_leader = None;
    while new_leader.is_none() || killed_at.elapsed() < Duration::from_secs(5) {
        write(&mut files, 500);
        tokio::time::sleep(Duration::from_millis(250)).await;
        new_leader = cluster
            .leader_of(&names.readings_stream)
            .await
            .filter(|&l| l != leader);
        assert!(
            killed_at.elapsed() < ELECTION,
            "a new leader within {ELECTION:?}"
        );
    }
    let failover = killed_at.elapsed();
    // Two nodes carry on: everything written so far lands while the third is down.
    all_landed(&cluster, &stack, &ports, &files, "two nodes").await;

    // The killed node returns and catches up; more lines land.
    cluster.restart(leader).await.unwrap();
    cluster
        .wait_stream_ready(&names.readings_stream, ELECTION)
        .await
        .unwrap();
    write(&mut files, 2_000);
    all_landed(&cluster, &stack, &ports, &files, "three nodes again").await;
    finish(&stack, shippers, worker, &files).await;
    let expected = expected_of(&files);
    eprintln!(
        "cluster: leader {} SIGKILLed under load, node {} led after {:.1} s; {} lines ({} valid) from {} shippers landed exactly once",
        cluster.server_name(leader),
        new_leader.map(|l| cluster.server_name(l)).unwrap_or_default(),
        failover.as_secs_f64(),
        expected.lines(),
        expected.valid,
        BOXES.len()
    );
}

#[tokio::test]
async fn rolling_restart_of_all_three_nodes_under_load_loses_and_doubles_nothing() {
    if testkit::gateway::skip_without_modern_nats() {
        return;
    }
    let (mut cluster, stack) = cluster_stack().await;
    let names = Names::isolated(&stack.tag);
    let (worker, _) = worker_on_r3(&cluster, &stack).await;
    let (shippers, ports, mut files) = shippers(&stack, 400);
    let mut leaders = Vec::new();
    for node in 0..3 {
        write(&mut files, 1_500);
        leaders.push(cluster.leader_of(&names.readings_stream).await);
        cluster.restart(node).await.unwrap();
        write(&mut files, 1_500);
        cluster
            .wait_stream_ready(&names.readings_stream, ELECTION)
            .await
            .unwrap();
    }
    write(&mut files, 1_000);
    all_landed(
        &cluster,
        &stack,
        &ports,
        &files,
        "after the rolling restart",
    )
    .await;
    finish(&stack, shippers, worker, &files).await;
    let expected = expected_of(&files);
    eprintln!(
        "cluster: rolling restart of 3 nodes under load (leaders before each restart: {leaders:?}); {} lines ({} valid) landed exactly once",
        expected.lines(),
        expected.valid
    );
}

#[tokio::test]
async fn outbox_relay_delivers_run_events_in_order_across_an_op_run_leader_change() {
    if testkit::gateway::skip_without_modern_nats() {
        return;
    }
    let (mut cluster, stack) = cluster_stack().await;
    let names = OpRunNames::isolated(&stack.tag);
    let token = stack.api_token("operator").await;
    let port = testkit::nats::free_port().unwrap();
    let mut api = stack.api(port, &REPLICAS).spawn().unwrap();
    assert!(api_ready(port).await, "mes-api listens");
    let leader = cluster
        .wait_stream_ready(&names.stream, ELECTION)
        .await
        .unwrap();
    // The MES's durable consumer, there before the first event.
    let js = jetstream::new(async_nats::connect(cluster.urls()).await.unwrap());
    let mes = js
        .get_stream(&names.stream)
        .await
        .unwrap()
        .create_consumer(consumer::pull::Config {
            durable_name: Some("mes".into()),
            ack_policy: consumer::AckPolicy::Explicit,
            ..Default::default()
        })
        .await
        .unwrap();

    const RUNS: usize = 2;
    const REPORTS: usize = 30;
    let mut runs = Vec::new();
    for r in 0..RUNS {
        let (status, body) = post(
            port,
            &token,
            "/op_run/start",
            &format!(r#"{{"work_order_id":"WO-{r}","operation_id":"OP10","resource_id":"R-{r}"}}"#),
        )
        .await;
        assert_eq!(status, 201, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        runs.push(v["op_run_id"].as_str().unwrap().to_owned());
    }
    let mut killed_at = None;
    for i in 0..REPORTS {
        if i == REPORTS / 2 {
            // SIGKILL OP_RUN's leader with events in flight.
            cluster.kill(leader).await.unwrap();
            killed_at = Some(Instant::now());
        }
        for id in &runs {
            let (status, body) = post(
                port,
                &token,
                "/op_run/report",
                &format!(r#"{{"op_run_id":"{id}","good_delta":1,"scrap_delta":0}}"#),
            )
            .await;
            assert_eq!(status, 200, "{body}");
        }
    }
    for id in &runs {
        let (status, body) = post(
            port,
            &token,
            "/op_run/complete",
            &format!(r#"{{"op_run_id":"{id}"}}"#),
        )
        .await;
        assert_eq!(status, 200, "{body}");
    }
    let pool = stack.pool().await;
    let count = |sql: &'static str| {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>(sql)
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    };
    assert!(
        eventually(Duration::from_secs(90), || async {
            count("SELECT count(*) FROM outbox WHERE sent_at IS NULL").await == 0
        })
        .await,
        "the relay published every event across the leader change"
    );
    let relayed_after = killed_at.unwrap().elapsed();
    let events = count("SELECT count(*) FROM outbox").await as usize;
    assert_eq!(events, RUNS * (REPORTS + 2), "started, reports, completed");
    cluster.restart(leader).await.unwrap();

    // The MES's consumer has every event waiting, and reads them in stream order: outbox ids
    // increasing, each run started → reported with good units 1, 2, ... → completed, nothing
    // twice.
    assert!(
        eventually(ELECTION, || async {
            let mut mes = mes.clone();
            mes.info()
                .await
                .is_ok_and(|i| i.num_pending as usize == events)
        })
        .await,
        "the MES's durable consumer has all {events} events pending"
    );
    let stream = js.get_stream(&names.stream).await.unwrap();
    let state = stream.cached_info().state.clone();
    let mut ids = Vec::new();
    let mut per_run: std::collections::BTreeMap<String, Vec<(String, i64)>> = Default::default();
    for seq in state.first_sequence..=state.last_sequence {
        let m = stream.get_raw_message(seq).await.unwrap();
        let id: i64 = m
            .headers
            .get("Nats-Msg-Id")
            .unwrap()
            .as_str()
            .parse()
            .unwrap();
        let e: serde_json::Value = serde_json::from_slice(&m.payload).unwrap();
        per_run
            .entry(e["op_run_id"].as_str().unwrap().to_owned())
            .or_default()
            .push((
                e["event_type"].as_str().unwrap().to_owned(),
                e["good_units"].as_i64().unwrap(),
            ));
        ids.push(id);
    }
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "events in outbox order: {ids:?}"
    );
    let stream_messages = js
        .get_stream(&names.stream)
        .await
        .unwrap()
        .info()
        .await
        .unwrap()
        .state
        .messages;
    assert_eq!(
        stream_messages as usize, events,
        "nothing doubled in OP_RUN"
    );
    for id in &runs {
        let seen = &per_run[id];
        let mut want = vec![("started".to_owned(), 0)];
        want.extend((1..=REPORTS as i64).map(|g| ("reported".to_owned(), g)));
        want.push(("completed".to_owned(), REPORTS as i64));
        assert_eq!(seen, &want, "run {id}'s events in order");
    }
    stop_cleanly(&mut api).await;
    pool.close().await;
    eprintln!(
        "cluster: OP_RUN leader SIGKILLed after {} of {REPORTS} report rounds; {events} run events relayed ({:.1} s after the kill), in order, once each",
        REPORTS / 2,
        relayed_after.as_secs_f64()
    );
}

#[tokio::test]
async fn site_gateway_feeds_the_r3_stream_through_a_wan_cut_and_a_central_leader_kill() {
    if testkit::gateway::skip_without_modern_nats() {
        return;
    }
    let (mut cluster, stack) = cluster_stack().await;
    let names = Names::isolated(&stack.tag);
    let gateway = SiteGateway::start(GatewayOptions {
        domain: "bkk".into(),
        hub_leaf_ports: cluster.leaf_ports(),
        remote: format!(
            "    deny_exports: [\"{f}\"]\n    deny_imports: [\"{f}\"]",
            f = names.readings_filter()
        ),
        ..Default::default()
    })
    .await
    .unwrap();
    let any_node = |cluster: &NatsCluster| {
        (0..3)
            .find(|&i| cluster.node(i).is_running())
            .map(|i| cluster.node(i).url())
            .unwrap()
    };
    gateway
        .wait_linked(&any_node(&cluster), ELECTION)
        .await
        .unwrap();
    let gw_js = jetstream::new(async_nats::connect(gateway.url()).await.unwrap());
    let mut cfg: jetstream::stream::Config = serde_json::from_str(
        &std::fs::read_to_string(
            testkit::bins::workspace_root().join("nats/streams/site-gateway/READINGS.json"),
        )
        .unwrap(),
    )
    .unwrap();
    cfg.name = names.readings_stream.clone();
    cfg.subjects = vec![names.readings_filter()];
    cfg.max_bytes = 256 * 1024 * 1024;
    gw_js.create_stream(cfg).await.unwrap();
    let gw_messages = || async {
        gw_js
            .get_stream(&names.readings_stream)
            .await
            .unwrap()
            .info()
            .await
            .unwrap()
            .state
            .messages
    };

    let worker = stack
        .worker(&[&REPLICAS[..], &["--site-gateway", "BKK"]].concat())
        .spawn()
        .unwrap();
    let leader = cluster
        .wait_stream_ready(&names.readings_stream, ELECTION)
        .await
        .unwrap();
    let (addr, port) = metrics_addr();
    let mut shipper = stack.shipper("gw-1", &["--metrics-addr", &addr]);
    shipper.env("NATS_URL", gateway.url());
    let shipper = shipper.spawn().unwrap();
    let ports = [port];
    let mut files = vec![BoxFile::new(&stack, "gw-1", 600)];
    for _ in 0..3 {
        write(&mut files, 2_000);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    all_landed(&cluster, &stack, &ports, &files, "through the gateway").await;

    // The WAN is cut; during the outage the central stream's leader dies; the site keeps
    // writing and the gateway keeps acknowledging.
    gateway.cut();
    let cut_at = Instant::now();
    cluster.kill(leader).await.unwrap();
    let outage = Duration::from_secs(10);
    while cut_at.elapsed() < outage {
        write(&mut files, 1_000);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(
        eventually(Duration::from_secs(60), || all_acked(&ports)).await,
        "the gateway acknowledged the site's lines during the outage"
    );
    let held = gw_messages().await;
    assert!(held > 0, "the gateway holds the outage's lines");
    let loaded = stack.readings().await;
    assert!(
        loaded < expected_of(&files).valid,
        "the center has not seen the outage's lines"
    );

    // The WAN returns (to the surviving nodes): everything lands once, the gateway empties.
    gateway.restore();
    let restored_at = Instant::now();
    all_landed(&cluster, &stack, &ports, &files, "after the outage").await;
    let caught_up = restored_at.elapsed();
    assert!(
        eventually(Duration::from_secs(30), || async {
            gw_messages().await == 0
        })
        .await,
        "the gateway freed what the center stored"
    );
    cluster.restart(leader).await.unwrap();
    cluster
        .wait_stream_ready(&names.readings_stream, ELECTION)
        .await
        .unwrap();
    finish(&stack, vec![shipper], worker, &files).await;
    let expected = expected_of(&files);
    eprintln!(
        "cluster + gateway: {} lines ({} valid) exactly once through a {:.1} s WAN cut during which the central READINGS leader was SIGKILLed; the gateway held {held} messages, all loaded {:.1} s after the WAN returned",
        expected.lines(),
        expected.valid,
        outage.as_secs_f64(),
        caught_up.as_secs_f64()
    );
}
