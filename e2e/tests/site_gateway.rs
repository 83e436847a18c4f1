//! A plant's site gateway (a leaf node with its own JetStream domain) behind a WAN the test cuts
//! and restores (testkit's relay): shippers publish to the gateway, the worker's
//! `--site-gateway BKK` makes the central READINGS source it. Through a WAN outage, a gateway
//! restart during it and a gateway whose disk budget fills, every acknowledged line lands exactly
//! once, each source's messages in order.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, stream};
use chrono::{TimeZone, Utc};
use protocol::framing::{HDR_END, HDR_SOURCE, HDR_START};
use protocol::Names;
use testkit::data::{Expected, ReadingGen};
use testkit::{GatewayOptions, SiteGateway};
use tokio::process::Child;

use crate::support::{eventually, metric, metrics_addr, stop_cleanly, without_blanks, Stack, SITE};

/// What the central side holds: the READINGS stream (by name) on the hub.
async fn central(hub_url: &str, stream: &str) -> stream::State {
    let js = jetstream::new(async_nats::connect(hub_url).await.unwrap());
    js.get_stream(stream)
        .await
        .unwrap()
        .info()
        .await
        .unwrap()
        .state
        .clone()
}

/// The gateway's stream, asked through the hub in the gateway's JetStream domain (how an
/// operator reaches a gateway from the center); `None` while the WAN is down.
async fn at_gateway(hub_url: &str, domain: &str, stream: &str) -> Option<stream::Info> {
    let client = async_nats::connect(hub_url).await.ok()?;
    let js = jetstream::with_domain(client, domain);
    let mut s = tokio::time::timeout(Duration::from_secs(2), js.get_stream(stream))
        .await
        .ok()?
        .ok()?;
    Some(s.info().await.ok()?.clone())
}

/// The sources of stream `name`.
async fn sources(js: &jetstream::Context, name: &str) -> Vec<stream::Source> {
    js.get_stream(name)
        .await
        .unwrap()
        .info()
        .await
        .unwrap()
        .config
        .sources
        .clone()
        .unwrap_or_default()
}

/// nats/streams/site-gateway/READINGS.json named and bounded for the test.
fn gateway_stream(names: &Names, max_bytes: i64) -> stream::Config {
    let text = std::fs::read_to_string(
        testkit::bins::workspace_root().join("nats/streams/site-gateway/READINGS.json"),
    )
    .unwrap();
    let mut cfg: stream::Config = serde_json::from_str(&text).unwrap();
    cfg.name = names.readings_stream.clone();
    cfg.subjects = vec![names.readings_filter()];
    cfg.max_bytes = max_bytes;
    cfg
}

/// One box's growing file: lines appended in chunks, their expected outcome kept.
pub(crate) struct BoxFile {
    pub path: PathBuf,
    gen: ReadingGen,
    pub expected: Expected,
}

impl BoxFile {
    pub fn new(stack: &Stack, box_id: &str, seed: u64) -> Self {
        let start = Utc.with_ymd_and_hms(2026, 11, 3, 0, 0, 0).unwrap()
            + chrono::Duration::minutes(i64::try_from(seed).unwrap());
        Self {
            path: stack.box_dir(box_id).join("line.jsonl"),
            gen: ReadingGen::new(seed, start, 3, 4).with_box(box_id),
            expected: Expected::default(),
        }
    }

    pub fn append(&mut self, n: usize) {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .unwrap();
        let mut text = String::new();
        for l in self.gen.lines(n) {
            self.expected.record(l.as_bytes());
            text.push_str(&l);
            text.push('\n');
        }
        f.write_all(text.as_bytes()).unwrap();
    }
}

pub(crate) fn expected_of(files: &[BoxFile]) -> Expected {
    let mut e = Expected::default();
    for f in files {
        e.merge(&f.expected);
    }
    e
}

/// True once every shipper (metrics ports) read its files to the end and has every message
/// acknowledged: what it shipped is in a stream.
pub(crate) async fn all_acked(ports: &[u16]) -> bool {
    for &p in ports {
        if metric(p, "edge_shipper_bytes_behind").await != Some(0.0) {
            return false;
        }
    }
    true
}

/// Per source, the byte ranges of the messages the central stream holds: together they cover
/// each source from where the ledger ends (`loaded`) without gap or overlap (every line once).
/// Returns the number of messages and how many of them arrived after a message of the same
/// source that follows them (out of order).
async fn assert_each_range_once(
    hub_url: &str,
    stream: &str,
    loaded: &BTreeMap<String, i64>,
) -> (u64, u64) {
    let js = jetstream::new(async_nats::connect(hub_url).await.unwrap());
    let s = js.get_stream(stream).await.unwrap();
    let state = s.cached_info().state.clone();
    let mut ranges: BTreeMap<String, Vec<(i64, i64)>> = BTreeMap::new();
    for seq in state.first_sequence..=state.last_sequence {
        let m = s.get_raw_message(seq).await.unwrap();
        let get = |h: &str| {
            m.headers
                .get(h)
                .map(|v| v.as_str().to_owned())
                .unwrap_or_default()
        };
        let source = protocol::framing::unescape_header(&get(HDR_SOURCE));
        let range = (
            get(HDR_START).parse().unwrap(),
            get(HDR_END).parse().unwrap(),
        );
        ranges.entry(source).or_default().push(range);
    }
    let mut out_of_order = 0;
    for (source, mut list) in ranges {
        out_of_order += list.windows(2).filter(|w| w[1].0 < w[0].0).count() as u64;
        list.sort_unstable();
        let mut end = loaded.get(&source).copied().unwrap_or(0);
        for (start, next) in list {
            assert_eq!(
                start, end,
                "source {source}: a message starts at {start} where {end} was expected: a gap or a double"
            );
            end = next;
        }
    }
    (state.messages, out_of_order)
}

/// `max(upper(byte_range))` per source in the ledger.
async fn ledger_ends(stack: &Stack) -> BTreeMap<String, i64> {
    let pool = stack.pool().await;
    let rows: Vec<(String, i64)> =
        sqlx::query_as("SELECT source, max(upper(byte_range)) FROM ingest_ledger GROUP BY 1")
            .fetch_all(&pool)
            .await
            .unwrap();
    pool.close().await;
    rows.into_iter().collect()
}

pub(crate) async fn ledger_lines(stack: &Stack) -> i64 {
    let pool = stack.pool().await;
    let n: i64 = sqlx::query_scalar("SELECT coalesce(sum(lines), 0)::int8 FROM ingest_ledger")
        .fetch_one(&pool)
        .await
        .unwrap();
    pool.close().await;
    n
}

/// nats/production/leafnode-site.conf for site BKK (domain bkk), its `boxes.inc` inlined with
/// the boxes' lines as `edge-mes-nats-admin add-box` wrote them, monitoring off, the store in
/// the test's dir.
fn production_gateway_config(boxes_inc: &Path) -> String {
    let root = testkit::bins::workspace_root();
    let conf = std::fs::read_to_string(root.join("nats/production/leafnode-site.conf")).unwrap();
    let boxes = std::fs::read_to_string(boxes_inc).unwrap();
    let out = conf
        .replace("http: 127.0.0.1:8222", "")
        // The store dir comes from testkit's command line.
        .replace("store_dir: \"/var/lib/nats-gateway\"", "")
        .replace("$NATS_SERVER_NAME", "gateway-bkk")
        .replace("$NATS_SITE", "bkk")
        .replace("$NATS_SHIPPER_PASSWORD", "\"unused-shared-password\"")
        .replace("include \"boxes.inc\"", &boxes);
    assert!(
        conf.contains("include \"boxes.inc\"") && out.contains("$NATS_HUB_URL"),
        "leafnode-site.conf changed: update this test"
    );
    out
}

/// Issues `box_id`'s key with the operator's tool; its seed file.
async fn add_box(dir: &Path, boxes_inc: &Path, box_id: &str) -> PathBuf {
    let seed = dir.join(format!("{box_id}.nk"));
    let out = tokio::process::Command::new(testkit::bins::bin_path("edge-mes-nats-admin").unwrap())
        .args(["add-box", "--site", SITE, "--box-id", box_id])
        .arg("--seed-file")
        .arg(&seed)
        .arg("--boxes-file")
        .arg(boxes_inc)
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "edge-mes-nats-admin add-box: {out:?}");
    seed
}

/// The standard names (no namespace): a box key may publish only `edge.readings.BKK.<box>`.
/// The servers are the test's own, so nothing else uses these names.
fn standard(mut c: tokio::process::Command) -> tokio::process::Command {
    c.env_remove("EDGE_NAMESPACE");
    c
}

#[tokio::test]
async fn site_gateway_with_box_keys_rides_out_a_wan_cut_and_a_gateway_restart() {
    if testkit::gateway::skip_without_modern_nats() {
        return;
    }
    let (hub, leaf_port) = testkit::gateway::start_hub("").await.unwrap();
    let hub_url = hub.url();
    let stack = Stack::with(
        testkit::pg_for_test().await.unwrap(),
        testkit::NatsHandle::Private(hub),
    )
    .await;
    let names = Names::default();
    let keys = tempfile::tempdir().unwrap();
    let boxes_inc = keys.path().join("boxes.inc");
    std::fs::copy(
        testkit::bins::workspace_root().join("nats/production/boxes.inc"),
        &boxes_inc,
    )
    .unwrap();
    let box_ids = ["edge-01", "edge-02"];
    let mut seeds = Vec::new();
    for b in box_ids {
        seeds.push(add_box(keys.path(), &boxes_inc, b).await);
    }
    let mut gateway = SiteGateway::start(GatewayOptions {
        domain: "bkk".into(),
        hub_leaf_ports: vec![leaf_port],
        config: Some(production_gateway_config(&boxes_inc)),
        ..Default::default()
    })
    .await
    .unwrap();
    gateway
        .wait_linked(&hub_url, Duration::from_secs(30))
        .await
        .unwrap();
    // The operator creates the gateway's stream from the center, through its domain.
    let gw_js = jetstream::with_domain(async_nats::connect(&hub_url).await.unwrap(), "bkk");
    gw_js
        .create_stream(gateway_stream(&names, 256 * 1024 * 1024))
        .await
        .unwrap();

    // The worker adds the source. An operator adds one of their own; the worker's later starts
    // keep both and add nothing (checked at the end, after three starts).
    let worker_args = ["--site-gateway", SITE, "--concurrency", "1"];
    let status = standard(stack.worker(&[&worker_args[..], &["--until-idle", "1"]].concat()))
        .status()
        .await
        .unwrap();
    assert!(status.success());
    let hub_js = jetstream::new(async_nats::connect(&hub_url).await.unwrap());
    let gateway_source = sources(&hub_js, &names.readings_stream).await;
    assert_eq!(gateway_source.len(), 1, "{gateway_source:?}");
    let gateway_source = gateway_source[0].clone();
    assert_eq!(gateway_source.name, "READINGS");
    assert_eq!(
        gateway_source.filter_subject.as_deref(),
        Some("edge.readings.BKK.>")
    );
    assert_eq!(
        gateway_source.external.as_ref().unwrap().api_prefix,
        "$JS.bkk.API"
    );
    hub_js
        .create_stream(stream::Config {
            name: "OPERATOR_FEED".into(),
            subjects: vec!["operator.feed".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    let operator_source = stream::Source {
        name: "OPERATOR_FEED".into(),
        ..Default::default()
    };
    let mut central_cfg = hub_js
        .get_stream(&names.readings_stream)
        .await
        .unwrap()
        .info()
        .await
        .unwrap()
        .config
        .clone();
    central_cfg
        .sources
        .get_or_insert_with(Vec::new)
        .push(operator_source.clone());
    hub_js.update_stream(central_cfg).await.unwrap();
    let mut worker = standard(stack.worker(&worker_args)).spawn().unwrap();

    // Shippers of the site publish to the gateway, each with its own key.
    let mut files: Vec<BoxFile> = box_ids
        .iter()
        .enumerate()
        .map(|(i, b)| BoxFile::new(&stack, b, 100 + i as u64))
        .collect();
    let mut shippers: Vec<(Child, u16)> = Vec::new();
    for (b, seed) in box_ids.iter().zip(&seeds) {
        let (addr, port) = metrics_addr();
        let mut c = standard(stack.shipper(b, &["--metrics-addr", &addr]));
        c.env("NATS_URL", gateway.url()).env("NATS_NKEY_FILE", seed);
        shippers.push((c.spawn().unwrap(), port));
    }
    let ports: Vec<u16> = shippers.iter().map(|(_, p)| *p).collect();

    // 1. Linked: lines written while everything runs land.
    for _ in 0..5 {
        for f in &mut files {
            f.append(2_000);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let before_cut = expected_of(&files);
    assert!(
        eventually(Duration::from_secs(90), || async {
            stack.readings().await == before_cut.valid
        })
        .await,
        "linked: every line landed ({} valid, {} loaded)",
        before_cut.valid,
        stack.readings().await
    );

    // 2. The WAN is cut under load: shippers keep being acknowledged by the gateway; nothing
    // new reaches the center. The gateway restarts during the outage.
    gateway.cut();
    let cut_at = Instant::now();
    assert!(
        eventually(Duration::from_secs(30), || async {
            !gateway.is_linked(&hub_url).await
        })
        .await,
        "the hub lost the gateway"
    );
    let held_central = central(&hub_url, &names.readings_stream).await;
    let loaded = stack.readings().await;
    let mut checkpoints = Vec::new();
    for &p in &ports {
        checkpoints.push(
            metric(p, "edge_shipper_checkpoint_writes_total")
                .await
                .unwrap_or(0.0),
        );
    }
    let mut restarted = false;
    // 12 s in the suite; EDGE_MES_TEST_WAN_OUTAGE_SECS tries longer ones (docs/scaling.md).
    let outage = Duration::from_secs(
        std::env::var("EDGE_MES_TEST_WAN_OUTAGE_SECS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(12),
    );
    while cut_at.elapsed() < outage {
        for f in &mut files {
            f.append(500);
        }
        if !restarted && cut_at.elapsed() > outage / 2 {
            gateway.restart().await.unwrap();
            restarted = true;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(
        eventually(Duration::from_secs(60), || all_acked(&ports)).await,
        "the shippers' lines were acknowledged by the gateway during the outage"
    );
    let outage_lines = expected_of(&files).lines() - before_cut.lines();
    let after_outage = central(&hub_url, &names.readings_stream).await;
    assert_eq!(
        after_outage.last_sequence, held_central.last_sequence,
        "nothing new reached the center during the outage"
    );
    assert_eq!(stack.readings().await, loaded);
    for (&p, before) in ports.iter().zip(&checkpoints) {
        let now = metric(p, "edge_shipper_checkpoint_writes_total")
            .await
            .unwrap_or(0.0);
        assert!(
            now > *before,
            "every shipper moved its checkpoint during the outage"
        );
    }
    // The worker stops, so that what the gateway held can be read in the central stream.
    stop_cleanly(&mut worker).await;
    let ledger = ledger_ends(&stack).await;

    // 3. The WAN returns: the gateway's backlog is sourced, in order per source.
    gateway.restore();
    let outage_len = cut_at.elapsed();
    let restored_at = Instant::now();
    gateway
        .wait_linked(&hub_url, Duration::from_secs(30))
        .await
        .unwrap();
    assert!(
        eventually(Duration::from_secs(90), || async {
            at_gateway(&hub_url, "bkk", &names.readings_stream)
                .await
                .is_some_and(|i| i.state.messages == 0)
        })
        .await,
        "the gateway handed everything to the center: {:?}",
        at_gateway(&hub_url, "bkk", &names.readings_stream)
            .await
            .map(|i| i.state)
    );
    let handed_over = restored_at.elapsed();
    let (sourced, out_of_order) =
        assert_each_range_once(&hub_url, &names.readings_stream, &ledger).await;
    assert!(sourced > 0);

    let mut worker = standard(stack.worker(&worker_args)).spawn().unwrap();
    let expected = expected_of(&files);
    assert!(
        eventually(Duration::from_secs(90), || async {
            stack.readings().await >= expected.valid
                && central(&hub_url, &names.readings_stream).await.messages == 0
        })
        .await,
        "everything landed after the outage"
    );
    for (mut s, _) in shippers {
        stop_cleanly(&mut s).await;
    }
    stop_cleanly(&mut worker).await;
    assert_eq!(stack.landed().await, without_blanks(&expected));
    assert_eq!(ledger_lines(&stack).await as u64, expected.lines());
    let kept = sources(&hub_js, &names.readings_stream).await;
    assert_eq!(
        kept,
        vec![gateway_source, operator_source],
        "the gateway's source once, the operator's kept"
    );
    eprintln!(
        "site gateway (box keys): {} lines ({} valid) from {} boxes landed exactly once; WAN cut {:.1} s with a gateway restart, {outage_lines} lines written meanwhile, {sourced} messages sourced within {:.1} s of the WAN's return, each byte once ({out_of_order} re-sent by a shipper after the gateway restart, behind later ones)",
        expected.lines(),
        expected.valid,
        box_ids.len(),
        outage_len.as_secs_f64(),
        handed_over.as_secs_f64()
    );
}

#[tokio::test]
async fn a_gateway_whose_disk_budget_fills_makes_shippers_wait_and_loses_nothing() {
    if testkit::gateway::skip_without_modern_nats() {
        return;
    }
    const BUDGET: u64 = 3 * 1024 * 1024;
    let (hub, leaf_port) = testkit::gateway::start_hub("").await.unwrap();
    let hub_url = hub.url();
    let stack = Stack::with(
        testkit::pg_for_test().await.unwrap(),
        testkit::NatsHandle::Private(hub),
    )
    .await;
    let names = Names::isolated(&stack.tag);
    let gateway = SiteGateway::start(GatewayOptions {
        domain: "bkk".into(),
        hub_leaf_ports: vec![leaf_port],
        remote: format!(
            "    deny_exports: [\"{f}\"]\n    deny_imports: [\"{f}\"]",
            f = names.readings_filter()
        ),
        store_budget_bytes: Some(BUDGET),
        ..Default::default()
    })
    .await
    .unwrap();
    gateway
        .wait_linked(&hub_url, Duration::from_secs(30))
        .await
        .unwrap();
    // No stream limit: the gateway's disk budget is what fills.
    let gw_js = jetstream::new(async_nats::connect(gateway.url()).await.unwrap());
    gw_js
        .create_stream(gateway_stream(&names, -1))
        .await
        .unwrap();
    let gw_state = || async {
        gw_js
            .get_stream(&names.readings_stream)
            .await
            .unwrap()
            .info()
            .await
            .unwrap()
            .state
            .clone()
    };
    let worker_args = ["--site-gateway", SITE];
    let mut worker = stack.worker(&worker_args).spawn().unwrap();
    let hub_js = jetstream::new(async_nats::connect(&hub_url).await.unwrap());
    assert!(
        eventually(Duration::from_secs(60), || async {
            match hub_js.get_stream(&names.readings_stream).await {
                Ok(mut s) => s
                    .info()
                    .await
                    .is_ok_and(|i| i.config.sources.as_ref().is_some_and(|v| v.len() == 1)),
                Err(_) => false,
            }
        })
        .await,
        "the worker made READINGS source the gateway"
    );

    // The WAN is down; the site writes three times the gateway's budget.
    gateway.cut();
    assert!(
        eventually(Duration::from_secs(30), || async {
            !gateway.is_linked(&hub_url).await
        })
        .await,
        "the hub lost the gateway"
    );
    let cut_at = Instant::now();
    let mut file = BoxFile::new(&stack, "fill", 200);
    while std::fs::metadata(&file.path).map_or(0, |m| m.len()) < 3 * BUDGET {
        file.append(5_000);
    }
    let (addr, port) = metrics_addr();
    let mut shipper = stack.shipper("fill", &["--metrics-addr", &addr]);
    shipper.env("NATS_URL", gateway.url());
    let mut shipper = shipper.spawn().unwrap();
    // What the shippers see: publishes refused, retried; they wait with bytes still to ship.
    let retries = "edge_shipper_publish_retries_total";
    assert!(
        eventually(Duration::from_secs(60), || async {
            metric(port, retries).await.is_some_and(|n| n >= 3.0)
                && metric(port, "edge_shipper_bytes_behind")
                    .await
                    .is_some_and(|b| b > 0.0)
        })
        .await,
        "the full gateway refuses the shipper's publishes, the shipper has bytes to ship: {:?}",
        gw_state().await
    );
    let full = gw_state().await;
    let behind = metric(port, "edge_shipper_bytes_behind")
        .await
        .unwrap_or(0.0);
    assert!(
        behind > 0.0,
        "the shipper knows it has {behind} bytes to ship"
    );
    assert!(
        shipper.try_wait().unwrap().is_none(),
        "the shipper keeps waiting"
    );
    // The store is checked before each write: the last message stored may cross the budget.
    let message = 300 * 1024;
    assert!(
        full.bytes < BUDGET + message && full.bytes + message > BUDGET,
        "the gateway holds what fits its budget: {full:?}"
    );
    // What the operator sees: the gateway's log names the exhausted store (and the shippers'
    // retries counter grows, their bytes_behind gauge stays up).
    let log = std::fs::read_to_string(gateway.server().log_path()).unwrap();
    assert!(
        log.contains("JetStream file resource limits exceeded"),
        "the gateway logs its full store: {log}"
    );
    // The outage goes on: the shipper keeps retrying, the full gateway takes nothing more.
    let refused = metric(port, retries).await.unwrap_or(0.0);
    let outage = Duration::from_secs(15);
    assert!(
        eventually(Duration::from_secs(60), || async {
            cut_at.elapsed() >= outage && metric(port, retries).await.is_some_and(|n| n > refused)
        })
        .await,
        "the shipper keeps retrying through the outage"
    );
    assert!(
        shipper.try_wait().unwrap().is_none(),
        "the shipper still waits"
    );
    assert_eq!(gw_state().await.last_sequence, full.last_sequence);
    assert_eq!(stack.readings().await, 0, "nothing reached the center");

    // The WAN returns: the gateway drains into the center, frees its store, the shipper
    // resumes; every line lands once.
    gateway.restore();
    let outage = cut_at.elapsed();
    assert!(
        eventually(Duration::from_secs(120), || async {
            stack.readings().await >= file.expected.valid
        })
        .await,
        "everything landed after the gateway's store had room again: {:?}",
        gw_state().await
    );
    assert!(
        eventually(Duration::from_secs(30), || async {
            gw_state().await.messages == 0
        })
        .await,
        "the gateway's store emptied once everything was sourced"
    );
    stop_cleanly(&mut shipper).await;
    stop_cleanly(&mut worker).await;
    assert_eq!(stack.landed().await, without_blanks(&file.expected));
    assert_eq!(ledger_lines(&stack).await as u64, file.expected.lines());
    eprintln!(
        "gateway disk budget {BUDGET} bytes: full at {} bytes / {} messages; {} lines ({} valid) landed exactly once after a {:.1} s outage",
        full.bytes,
        full.messages,
        file.expected.lines(),
        file.expected.valid,
        outage.as_secs_f64()
    );
}

/// edge-shipper of `box_id` at site `site`, until it caught up.
fn shipper_at(stack: &Stack, site: &str, box_id: &str) -> tokio::process::Command {
    let mut c = tokio::process::Command::new(testkit::bins::bin_path("edge-shipper").unwrap());
    c.env("NATS_URL", stack.nats.url())
        .env("EDGE_NAMESPACE", &stack.tag)
        .env("RUST_LOG", "warn")
        .arg("--watch")
        .arg(format!("{}/*.jsonl", stack.box_dir(box_id).display()))
        .arg("--state-dir")
        .arg(stack.state_dir(box_id))
        .args(["--site", site, "--box-id", box_id, "--until-caught-up"])
        .args(["--rescan-interval-ms", "200", "--linger-ms", "20"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true);
    c
}

/// Rows per (resource, sensor) and per site of the database at `url`.
async fn rows_of(url: &str) -> (BTreeMap<(String, String), u64>, BTreeMap<String, u64>) {
    let pool = sqlx::PgPool::connect(url).await.unwrap();
    let series: Vec<(String, String, i64)> =
        sqlx::query_as("SELECT resource_id, sensor, count(*) FROM readings GROUP BY 1, 2")
            .fetch_all(&pool)
            .await
            .unwrap();
    let sites: Vec<(String, i64)> =
        sqlx::query_as("SELECT site, count(*) FROM readings GROUP BY 1")
            .fetch_all(&pool)
            .await
            .unwrap();
    pool.close().await;
    (
        series
            .into_iter()
            .map(|(r, s, n)| ((r, s), n as u64))
            .collect(),
        sites.into_iter().map(|(s, n)| (s, n as u64)).collect(),
    )
}

#[tokio::test]
async fn plant_workers_each_load_only_their_site_into_their_own_database() {
    let stack = Stack::new().await;
    let names = Names::isolated(&stack.tag);
    let ber_db = stack
        .pg
        .create_database(&testkit::unique_name("ber"))
        .await
        .unwrap();
    let plant = |site: &str, db: &str| {
        let mut c = stack.worker(&["--sites", site]);
        c.env("DATABASE_URL", db);
        c
    };
    // Each plant's worker sets up its database and its own consumer.
    for (site, db) in [("BKK", &stack.db_url), ("BER", &ber_db)] {
        let status = plant(site, db)
            .args(["--until-idle", "1"])
            .status()
            .await
            .unwrap();
        assert!(status.success());
    }
    let mut bkk = BoxFile::new(&stack, "bkk-1", 500);
    bkk.append(3_000);
    let mut ber = BoxFile::new(&stack, "ber-1", 501);
    ber.append(2_000);
    for (site, box_id) in [("BKK", "bkk-1"), ("BER", "ber-1")] {
        let status = shipper_at(&stack, site, box_id).status().await.unwrap();
        assert!(status.success());
    }
    for (site, db) in [("BKK", &stack.db_url), ("BER", &ber_db)] {
        let status = plant(site, db)
            .args(["--until-idle", "2"])
            .status()
            .await
            .unwrap();
        assert!(status.success());
    }
    for (site, db, file) in [("BKK", &stack.db_url, &bkk), ("BER", &ber_db, &ber)] {
        let (series, sites) = rows_of(db).await;
        assert_eq!(series, file.expected.per_series, "{site}'s database");
        assert_eq!(
            sites,
            BTreeMap::from([(site.to_owned(), file.expected.valid)]),
            "only {site}'s readings in its database"
        );
    }
    let js = jetstream::new(async_nats::connect(stack.nats.url()).await.unwrap());
    let mut stream = js.get_stream(&names.readings_stream).await.unwrap();
    assert_eq!(
        stream.info().await.unwrap().state.messages,
        0,
        "both plants took their part"
    );
    for site in ["BKK", "BER"] {
        let consumer = format!("{}_{site}", names.consumer);
        let info = stream.consumer_info(&consumer).await.unwrap();
        assert_eq!(
            info.config.filter_subject,
            format!("{}.{site}.>", names.readings_prefix)
        );
    }
    eprintln!(
        "plants: BKK's worker loaded {} readings into its database, BER's {} into its own, from one stream",
        bkk.expected.valid, ber.expected.valid
    );
}
