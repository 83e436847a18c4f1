//! The production NATS config (nats/production/nats-server.conf with boxes.inc, and
//! leafnode-site.conf) and the Kubernetes Helm values (deploy/k8s/helm/nats-values.yaml) let
//! every component do its job with its own identity, and no more.
//!
//! Each identity makes the calls its component makes, through the same client options
//! (`service::nats::NatsArgs`, so the reply inboxes are the binaries' own): the worker runs its
//! own stream setup (READINGS, READINGS_DLQ, the durable consumer `ingest`, and the upgrade of a
//! READINGS of an earlier version), pulls, acks and dead-letters; each edge box publishes its own
//! readings with its own nkey (issued by edge-mes-nats-admin's code); mes-api creates OP_RUN and
//! publishes run events; the MES reads them with its own durable consumer. Then every denial:
//!
//! - box A cannot publish as box B (nor B as A, nor as another site, nor run events or dead
//!   letters), and cannot subscribe to readings, run events or any other inbox: it reads nothing;
//! - the MES cannot publish run events and cannot read the readings the worker pulls;
//! - mes-api cannot publish readings, the worker cannot publish run events, the shared
//!   (deprecated) shipper password cannot create streams or read anything of the pipeline;
//! - a wrong password, an unknown key and a revoked box are refused;
//! - with the TLS blocks on: plaintext is refused, a client without the CA or (mutual TLS) without
//!   a client certificate is refused, and a site gateway without its client certificate gets no
//!   leaf-node link.
//!
//! (The binaries log in the same way: e2e/tests/auth.rs runs the shipper and the worker against
//! a server that requires a password.)

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::{pull, Consumer};
use async_nats::jetstream::{self, Context, Message};
use futures::StreamExt;
use nats_admin::box_identity::{self, BoxId};
use protocol::streams;
use service::nats::NatsArgs;
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

use crate::loaded_stack::free_addr;
use crate::static_checks::{nats_config_env, stream_file, tool};

const USERS: [&str; 6] = ["shipper", "worker", "api", "mes", "leaf", "sys"];
/// The plant workers of `plant_workers_each_read_their_own_site_only` (lower case, as the
/// password variables name them).
const PLANT_WORKERS: [&str; 2] = ["worker_bkk", "worker_ber"];
/// How long a JetStream call may take before it counts as refused.
const JS_TIMEOUT: Duration = Duration::from_secs(2);

/// An edge box's identity: its ids, its seed in a file, the line of boxes.inc.
struct EdgeBox {
    site: &'static str,
    box_id: &'static str,
    public_key: String,
    seed_file: PathBuf,
    entry: String,
}

impl EdgeBox {
    /// A new key for `site`/`box_id`, as `edge-mes-nats-admin add-box` issues it.
    fn issue(dir: &Path, site: &'static str, box_id: &'static str) -> EdgeBox {
        let id = BoxId::new(site, box_id).unwrap();
        let issued = box_identity::issue().unwrap();
        let seed_file = dir.join(format!("{site}-{box_id}.nk"));
        std::fs::write(&seed_file, &issued.seed).unwrap();
        EdgeBox {
            site,
            box_id,
            entry: box_identity::entry(&id, &issued.public_key, chrono::Utc::now()),
            public_key: issued.public_key,
            seed_file,
        }
    }

    fn subject(&self) -> String {
        protocol::subject::readings_subject(self.site, self.box_id)
    }

    fn args(&self, url: &str) -> NatsArgs {
        let mut args = NatsArgs::for_url(url);
        args.nkey_file = Some(self.seed_file.clone());
        args
    }
}

/// nats/production/boxes.inc with `boxes` added, as `edge-mes-nats-admin add-box --boxes-file`
/// adds them.
fn boxes_file(boxes: &[&EdgeBox]) -> String {
    let mut text = std::fs::read_to_string(repo("nats/production/boxes.inc"))
        .expect("nats/production/boxes.inc");
    for b in boxes {
        let id = BoxId::new(b.site, b.box_id).unwrap();
        text = nats_admin::boxes_file::add(&text, &id, &b.entry, false).unwrap();
    }
    text
}

fn repo(path: &str) -> PathBuf {
    testkit::bins::workspace_root().join(path)
}

/// A nats-server started by a test from one of the repository's configs, its addresses and
/// store moved to this machine; killed on drop.
struct ProductionNats {
    child: Child,
    port: u16,
    http_port: u16,
    leaf_port: u16,
    dir: tempfile::TempDir,
    tls: Option<ClientTls>,
}

/// What a client needs to reach a server whose TLS blocks are on.
struct ClientTls {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

impl ProductionNats {
    /// nats/production/nats-server.conf with `boxes` in its boxes.inc; with `tls`, its TLS
    /// blocks uncommented, the client port's optional `verify: true` too (mutual TLS).
    async fn start(nats: &Path, boxes: &[&EdgeBox], tls: Option<&TlsFiles>) -> ProductionNats {
        let conf = std::fs::read_to_string(repo("nats/production/nats-server.conf")).unwrap();
        Self::start_conf(nats, boxes, tls, conf).await
    }

    /// [`Self::start`] with the production config as edited by the caller (`conf`).
    async fn start_conf(
        nats: &Path,
        boxes: &[&EdgeBox],
        tls: Option<&TlsFiles>,
        conf: String,
    ) -> ProductionNats {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("boxes.inc"), boxes_file(boxes)).unwrap();
        let env = server_env(&conf);
        let js = dir.path().join("js");
        let (child, [port, http_port, leaf_port]) = spawn(nats, dir.path(), |[port, http, leaf]| {
            let mut local = conf
                .replace("listen: 0.0.0.0:4222", &format!("listen: 127.0.0.1:{port}"))
                .replace("http: 0.0.0.0:8222", &format!("http: 127.0.0.1:{http}"))
                .replace("listen: 0.0.0.0:7422", &format!("listen: 127.0.0.1:{leaf}"))
                .replace(
                    "store_dir: \"/data/jetstream\"",
                    &format!("store_dir: \"{}\"", js.display()),
                );
            assert_ne!(
                local, conf,
                "the production config's addresses changed: update this test"
            );
            if let Some(tls) = tls {
                local = tls.apply(&uncomment_tls(&local).replace("# verify: true", "verify: true"));
            }
            (local, env.clone())
        })
        .await;
        ProductionNats {
            child,
            port,
            http_port,
            leaf_port,
            dir,
            tls: tls.map(TlsFiles::client),
        }
    }

    /// The accounts and users of the Helm values (config.merge), with the passwords filled in
    /// and `boxes` added to account BOXES as an operator pastes them (the printed line, a YAML
    /// list item).
    async fn start_helm(nats: &Path, boxes: &[&EdgeBox]) -> ProductionNats {
        let values = std::fs::read_to_string(repo("deploy/k8s/helm/nats-values.yaml")).unwrap();
        let values: serde_json::Value = serde_yaml::from_str(&values).unwrap();
        let mut accounts = values["config"]["merge"]["accounts"].clone();
        fill_passwords(&mut accounts);
        let users = accounts["BOXES"]["users"]
            .as_array_mut()
            .expect("the Helm values have a users list for account BOXES");
        for b in boxes {
            let item: serde_json::Value = serde_yaml::from_str(&format!("- {}", b.entry)).unwrap();
            users.push(item[0].clone());
        }
        let dir = tempfile::tempdir().unwrap();
        let js = dir.path().join("js");
        let (child, [port, ..]) = spawn(nats, dir.path(), |[port, ..]| {
            let conf = serde_json::json!({
                "listen": format!("127.0.0.1:{port}"),
                "max_payload": values["config"]["merge"]["max_payload"],
                "jetstream": {
                    "store_dir": js.display().to_string(),
                    "domain": values["config"]["jetstream"]["merge"]["domain"],
                },
                "accounts": accounts,
                "system_account": values["config"]["merge"]["system_account"],
            });
            (serde_json::to_string_pretty(&conf).unwrap(), Vec::new())
        })
        .await;
        ProductionNats {
            child,
            port,
            http_port: 0,
            leaf_port: 0,
            dir,
            tls: None,
        }
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// `args` with this server's CA and client certificate, when its TLS is on.
    fn with_tls(&self, mut args: NatsArgs) -> NatsArgs {
        if let Some(tls) = &self.tls {
            args.tls_ca = Some(tls.ca.clone());
            args.tls_cert = Some(tls.cert.clone());
            args.tls_key = Some(tls.key.clone());
        }
        args
    }

    /// The password user `user` connected as its edge-mes binary connects (NatsArgs, the
    /// binary's client name and so its reply inbox).
    async fn connect(&self, user: &str) -> Context {
        let mut args = NatsArgs::for_url(&self.url());
        args.nats_user = Some(user.to_owned());
        args.nats_password = Some(password(user));
        let name = match user {
            "worker" => "ingest-worker",
            "api" => "mes-api",
            "shipper" => "edge-shipper",
            other => panic!("no edge-mes binary logs in as {other}"),
        };
        connect_with(&self.with_tls(args), name).await
    }

    /// Box `b` connected as edge-shipper connects with `--nats-nkey-file`.
    async fn connect_box(&self, b: &EdgeBox) -> Context {
        connect_with(&self.with_tls(b.args(&self.url())), "edge-shipper").await
    }

    /// The MES: a third-party client with the standard options (reply inbox `_INBOX.<random>`).
    async fn connect_mes(&self) -> Context {
        let client =
            async_nats::ConnectOptions::with_user_and_password("mes".into(), password("mes"))
                .connect(self.url())
                .await
                .unwrap_or_else(|e| panic!("mes cannot connect: {e}"));
        js(client)
    }

    /// Asks the server to reload its configuration (what operators do after add-box).
    fn reload(&self, nats: &Path) {
        let pid = self.child.id().expect("nats-server is running");
        let out = std::process::Command::new(nats)
            .arg("--signal")
            .arg(format!("reload={pid}"))
            .output()
            .unwrap();
        assert!(out.status.success(), "reload: {out:?}");
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("nats.log")).unwrap_or_default()
    }

    /// `GET /<endpoint>` of the monitoring port, as JSON.
    fn monitor(&self, endpoint: &str) -> serde_json::Value {
        http_json(self.http_port, endpoint)
    }
}

async fn connect_with(args: &NatsArgs, name: &str) -> Context {
    let options = args
        .connect_options(name)
        .await
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    let client = options
        .connect(args.servers().unwrap())
        .await
        .unwrap_or_else(|e| panic!("{name} cannot connect: {e}"));
    js(client)
}

fn js(client: async_nats::Client) -> Context {
    let mut js = jetstream::new(client);
    js.set_timeout(JS_TIMEOUT);
    js
}

fn free_port() -> u16 {
    free_addr().unwrap().port()
}

/// The variables a repository config refers to, as the test sets them: each `NATS_<USER>_PASSWORD`
/// the test's password of that user, any other `NATS_...` a placeholder.
fn server_env(conf: &str) -> Vec<(String, String)> {
    nats_config_env(conf)
        .into_iter()
        .map(|var| {
            let value = match var
                .strip_prefix("NATS_")
                .and_then(|v| v.strip_suffix("_PASSWORD"))
            {
                Some(user) => password(&user.to_ascii_lowercase()),
                None => "ops-test".to_owned(),
            };
            (var, value)
        })
        .collect()
}

/// Starts `nats` on the config `build` makes for three free ports (the first is the client port),
/// written to `<dir>/server.conf`, with its environment; logs go to `<dir>/nats.log`. Returns once
/// the server listens. A port taken by another test in the meantime makes the server exit: then
/// it is tried again with new ports.
async fn spawn<F>(nats: &Path, dir: &Path, mut build: F) -> (Child, [u16; 3])
where
    F: FnMut([u16; 3]) -> (String, Vec<(String, String)>),
{
    let log_path = dir.join("nats.log");
    for _ in 0..3 {
        let ports = [free_port(), free_port(), free_port()];
        let (conf, env) = build(ports);
        let file = dir.join("server.conf");
        std::fs::write(&file, conf).unwrap();
        let log = std::fs::File::create(&log_path).unwrap();
        let mut child = Command::new(nats)
            .arg("-c")
            .arg(&file)
            .envs(env)
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if TcpStream::connect(("127.0.0.1", ports[0])).is_ok() {
                return (child, ports);
            }
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            if child.try_wait().unwrap().is_some() {
                assert!(
                    log.contains("address already in use"),
                    "nats-server exited: {log}"
                );
                break;
            }
            assert!(
                Instant::now() < deadline,
                "nats-server did not listen on {}: {log}",
                ports[0]
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    panic!("nats-server found no free ports in three attempts");
}

/// Polls `check` every 100 ms until it holds; panics naming `what` after `timeout`.
async fn wait_until<F, Fut>(timeout: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `<< $NATS_API_PASSWORD >>` (the chart's environment reference) → the test's password of `api`.
fn fill_passwords(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::String(s) => {
            if let Some(user) = s
                .trim_start_matches("<<")
                .trim_end_matches(">>")
                .trim()
                .strip_prefix("$NATS_")
                .and_then(|u| u.strip_suffix("_PASSWORD"))
            {
                *s = password(&user.to_ascii_lowercase());
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(fill_passwords),
        serde_json::Value::Object(map) => map.values_mut().for_each(fill_passwords),
        _ => {}
    }
}

fn password(user: &str) -> String {
    assert!(
        USERS.contains(&user) || PLANT_WORKERS.contains(&user),
        "unknown user {user}"
    );
    format!("pw-{user}-test")
}

/// A JetStream publish that must be refused (no PubAck).
async fn publish_is_refused(js: &Context, who: &str, subject: &str) {
    let acked = match js.publish(subject.to_owned(), "x".into()).await {
        Ok(ack) => ack.await.is_ok(),
        Err(_) => false,
    };
    assert!(!acked, "{who} could publish to {subject}");
}

async fn publish_is_acked(js: &Context, who: &str, subject: &str) {
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(
        "Nats-Msg-Id",
        format!("{who}-{subject}-{}", testkit::unique_name("m")).as_str(),
    );
    js.publish_with_headers(subject.to_owned(), headers, "x".into())
        .await
        .unwrap_or_else(|e| panic!("{who} cannot publish to {subject}: {e}"))
        .await
        .unwrap_or_else(|e| panic!("{who}: no PubAck for {subject}: {e}"));
}

#[tokio::test]
async fn production_permissions_let_each_component_do_its_job_and_no_more() {
    let Some(nats_server) = tool("nats-server") else {
        return;
    };
    let keys = tempfile::tempdir().unwrap();
    let a = EdgeBox::issue(keys.path(), "BKK", "edge-01");
    let b = EdgeBox::issue(keys.path(), "BKK", "edge-02");
    let nats = ProductionNats::start(&nats_server, &[&a, &b], None).await;
    each_component_does_its_job_and_no_more(&nats, &a, &b).await;
    refused_logins(&nats, &a).await;
}

#[tokio::test]
async fn helm_values_permissions_let_each_component_do_its_job_and_no_more() {
    let Some(nats_server) = tool("nats-server") else {
        return;
    };
    let keys = tempfile::tempdir().unwrap();
    let a = EdgeBox::issue(keys.path(), "BKK", "edge-01");
    let b = EdgeBox::issue(keys.path(), "BKK", "edge-02");
    let nats = ProductionNats::start_helm(&nats_server, &[&a, &b]).await;
    each_component_does_its_job_and_no_more(&nats, &a, &b).await;
    refused_logins(&nats, &a).await;
}

/// ingest-worker's own stream setup, as the worker user: first the upgrade of a READINGS made by
/// an earlier version (limits retention), then the setup of every later start.
async fn worker_setup(worker: &Context) -> Consumer<pull::Config> {
    let names = protocol::Names::default();
    let config = ingest_worker::Config::for_urls("nats://unused", "postgres://unused");
    let mut old = stream_file("READINGS.json");
    old.retention = async_nats::jetstream::stream::RetentionPolicy::Limits;
    worker
        .create_stream(old)
        .await
        .unwrap_or_else(|e| panic!("worker cannot create READINGS: {e}"));
    let found = ingest_worker::jetstream::ensure(worker, &names, &config)
        .await
        .unwrap_or_else(|e| panic!("worker cannot set up (seal) its streams: {e}"));
    assert!(
        matches!(found, ingest_worker::jetstream::Readings::Sealed(_)),
        "the limits stream is sealed for the upgrade"
    );
    ingest_worker::jetstream::replace_drained(worker, &names, &config)
        .await
        .unwrap_or_else(|e| panic!("worker cannot replace the drained stream: {e}"));
    match ingest_worker::jetstream::ensure(worker, &names, &config)
        .await
        .unwrap_or_else(|e| panic!("worker cannot set up its streams: {e}"))
    {
        ingest_worker::jetstream::Readings::Ready(consumer) => consumer,
        ingest_worker::jetstream::Readings::Sealed(_) => panic!("still sealed after the upgrade"),
    }
}

/// A client that records what the server tells it (permission violations) and subscribes where
/// told; [`Listener::nothing_received`] then proves it read nothing.
struct Listener {
    client: async_nats::Client,
    errors: mpsc::UnboundedReceiver<String>,
    subscriptions: Vec<(String, async_nats::Subscriber)>,
}

impl Listener {
    async fn connect(options: async_nats::ConnectOptions, url: &str) -> Listener {
        let (tx, errors) = mpsc::unbounded_channel();
        let client = options
            .event_callback(move |event| {
                let tx = tx.clone();
                async move {
                    if let async_nats::Event::ServerError(e) = event {
                        let _ = tx.send(e.to_string());
                    }
                }
            })
            .connect(url)
            .await
            .unwrap();
        Listener {
            client,
            errors,
            subscriptions: Vec::new(),
        }
    }

    async fn subscribe(&mut self, subject: &str) {
        let sub = self.client.subscribe(subject.to_owned()).await.unwrap();
        self.client.flush().await.unwrap();
        self.subscriptions.push((subject.to_owned(), sub));
    }

    /// The server refused the subscription to `subject` (its permissions violation arrives).
    async fn refused(&mut self, subject: &str) {
        let wanted = format!("subscription to \"{subject}\"").to_lowercase();
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.errors.recv()).await {
                Ok(Some(e)) if e.to_lowercase().contains(&wanted) => return,
                Ok(Some(_)) => continue,
                _ => panic!("no permissions violation for the subscription to {subject}"),
            }
        }
    }

    /// After a round trip to the server (everything routed to this client before it is in),
    /// no subscription holds a message.
    async fn nothing_received(&mut self, who: &str) {
        self.client.flush().await.unwrap();
        for (subject, sub) in &mut self.subscriptions {
            if let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(200), sub.next()).await
            {
                panic!(
                    "{who} read {} through its subscription to {subject}",
                    m.subject
                );
            }
        }
    }
}

async fn each_component_does_its_job_and_no_more(nats: &ProductionNats, a: &EdgeBox, b: &EdgeBox) {
    // ingest-worker's setup (ingest-worker/src/jetstream.rs).
    let worker = nats.connect("worker").await;
    let consumer = worker_setup(&worker).await;

    // Each box publishes its own readings (and reads its PubAck); the worker pulls, acks and
    // dead-letters.
    let box_a = nats.connect_box(a).await;
    let box_b = nats.connect_box(b).await;
    publish_is_acked(&box_a, "box A", &a.subject()).await;
    publish_is_acked(&box_b, "box B", &b.subject()).await;
    for _ in 0..2 {
        next_message(&consumer).await.ack().await.unwrap();
    }
    publish_is_acked(&worker, "worker", "edge.dlq.BKK.edge-01").await;

    // mes-api's relay (api/src/relay.rs), and its board feed (api/src/board/feed.rs), which
    // subscribes to the run events to push every replica's boards.
    let api = nats.connect("api").await;
    api.create_or_update_stream(stream_file("OP_RUN.json"))
        .await
        .unwrap_or_else(|e| panic!("api cannot create OP_RUN: {e}"));
    let mut board_feed = api.client().subscribe("mes.op_run.>").await.unwrap();
    api.client().flush().await.unwrap();
    publish_is_acked(&api, "api", "mes.op_run.BKK.SMT01.started").await;
    let seen = tokio::time::timeout(Duration::from_secs(5), board_feed.next())
        .await
        .expect("the api user's subscription to run events got nothing (permission?)")
        .expect("subscription ended");
    assert_eq!(seen.subject.as_str(), "mes.op_run.BKK.SMT01.started");

    // The MES reads run events with its own durable consumer.
    let mes = nats.connect_mes().await;
    let mes_consumer = mes
        .get_stream(streams::OP_RUN_STREAM)
        .await
        .unwrap()
        .get_or_create_consumer(
            "mes-bkk",
            pull::Config {
                durable_name: Some("mes-bkk".into()),
                filter_subject: "mes.op_run.BKK.>".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap_or_else(|e| panic!("mes cannot create its consumer: {e}"));
    let event = next_message(&mes_consumer).await;
    assert_eq!(event.subject.as_str(), "mes.op_run.BKK.SMT01.started");
    event.ack().await.unwrap();

    // The shared password of earlier versions still ships (old and new shippers alike).
    let shipper = nats.connect("shipper").await;
    publish_is_acked(&shipper, "shipper", "edge.readings.BKK.edge-77").await;
    next_message(&consumer).await.ack().await.unwrap();

    // Box A cannot publish as box B, nor box B as box A, nor either anything but readings.
    publish_is_refused(&box_a, "box A", &b.subject()).await;
    publish_is_refused(&box_b, "box B", &a.subject()).await;
    for subject in [
        "edge.readings.HAM.edge-01",
        "edge.readings.BKK.edge-01.x",
        "edge.dlq.BKK.edge-01",
        "mes.op_run.BKK.SMT01.started",
    ] {
        publish_is_refused(&box_a, "box A", subject).await;
    }
    assert!(
        box_a
            .create_stream(stream_file("OP_RUN.json"))
            .await
            .is_err(),
        "a box could create a stream"
    );

    // Box A cannot subscribe to readings, run events, another box's or anyone's inbox; with
    // traffic of every kind flowing, it reads nothing.
    let mut spy = Listener::connect(
        async_nats::ConnectOptions::with_nkey(std::fs::read_to_string(&a.seed_file).unwrap())
            .custom_inbox_prefix(protocol::subject::nkey_inbox_prefix(&a.public_key)),
        &nats.url(),
    )
    .await;
    let b_inbox = format!("{}.>", protocol::subject::nkey_inbox_prefix(&b.public_key));
    for subject in [
        "edge.readings.>",
        "mes.op_run.>",
        "_INBOX.>",
        b_inbox.as_str(),
        ">",
    ] {
        spy.subscribe(subject).await;
        spy.refused(subject).await;
    }
    // The MES, with the standard inbox, listens to every inbox it may.
    let mut mes_spy = Listener::connect(
        async_nats::ConnectOptions::with_user_and_password("mes".into(), password("mes")),
        &nats.url(),
    )
    .await;
    mes_spy.subscribe("_INBOX.>").await;
    // The shared shipper password listens too.
    let mut shipper_spy = Listener::connect(
        async_nats::ConnectOptions::with_user_and_password("shipper".into(), password("shipper")),
        &nats.url(),
    )
    .await;
    shipper_spy.subscribe("_INBOX.>").await;

    publish_is_acked(&box_b, "box B", &b.subject()).await;
    publish_is_acked(&api, "api", "mes.op_run.BKK.SMT01.reported").await;
    let pulled = next_message(&consumer).await;
    assert_eq!(pulled.subject.as_str(), b.subject());
    pulled.ack().await.unwrap();
    api.get_stream(streams::OP_RUN_STREAM).await.unwrap();
    spy.nothing_received("box A").await;
    mes_spy.nothing_received("the MES").await;
    shipper_spy
        .nothing_received("the shared shipper password")
        .await;

    // And no more, for the services.
    publish_is_refused(&shipper, "shipper", "mes.op_run.BKK.SMT01.started").await;
    publish_is_refused(&mes, "mes", "mes.op_run.BKK.SMT01.started").await;
    publish_is_refused(&api, "api", "edge.readings.BKK.edge-01").await;
    publish_is_refused(&worker, "worker", "mes.op_run.BKK.SMT01.started").await;
    assert!(
        shipper
            .create_stream(stream_file("OP_RUN.json"))
            .await
            .is_err(),
        "the shipper could create a stream"
    );
}

/// A wrong password, an unknown key, no credentials: refused at login.
async fn refused_logins(nats: &ProductionNats, a: &EdgeBox) {
    let url = nats.url();
    let wrong = async_nats::ConnectOptions::with_user_and_password("worker".into(), "wrong".into())
        .connect(&url)
        .await;
    assert!(wrong.is_err(), "a wrong password was accepted");
    let stranger = box_identity::issue().unwrap();
    let unknown = async_nats::ConnectOptions::with_nkey(stranger.seed)
        .connect(&url)
        .await;
    assert!(unknown.is_err(), "an unknown nkey was accepted");
    let anonymous = async_nats::ConnectOptions::new().connect(&url).await;
    assert!(
        anonymous.is_err(),
        "a client without credentials was accepted"
    );
    // The right key still works (the refusals are about the credentials).
    let known =
        async_nats::ConnectOptions::with_nkey(std::fs::read_to_string(&a.seed_file).unwrap())
            .connect(&url)
            .await;
    assert!(known.is_ok(), "box A's own key was refused: {known:?}");
}

/// Operators add and revoke boxes with edge-mes-nats-admin and a reload, no restart.
#[tokio::test]
async fn a_box_added_or_revoked_takes_effect_at_reload() {
    let Some(nats_server) = tool("nats-server") else {
        return;
    };
    let keys = tempfile::tempdir().unwrap();
    let a = EdgeBox::issue(keys.path(), "BKK", "edge-01");
    let c = EdgeBox::issue(keys.path(), "CNX", "line 3");
    let nats = ProductionNats::start(&nats_server, &[&a], None).await;
    let worker = nats.connect("worker").await;
    ingest_worker::jetstream::ensure(
        &worker,
        &protocol::Names::default(),
        &ingest_worker::Config::for_urls("nats://unused", "postgres://unused"),
    )
    .await
    .unwrap();
    let login = |b: &EdgeBox| {
        let seed = std::fs::read_to_string(&b.seed_file).unwrap();
        let url = nats.url();
        async move {
            async_nats::ConnectOptions::with_nkey(seed)
                .connect(url)
                .await
                .is_ok()
        }
    };
    assert!(!login(&c).await, "box C logged in before it was added");

    let boxes = nats.dir.path().join("boxes.inc");
    let id = |b: &EdgeBox| BoxId::new(b.site, b.box_id).unwrap();
    let text = std::fs::read_to_string(&boxes).unwrap();
    nats_admin::boxes_file::write_atomically(
        &boxes,
        &nats_admin::boxes_file::add(&text, &id(&c), &c.entry, false).unwrap(),
    )
    .unwrap();
    nats.reload(&nats_server);
    wait_until(
        Duration::from_secs(10),
        "box C accepted after the reload",
        || login(&c),
    )
    .await;
    let box_c = nats.connect_box(&c).await;
    publish_is_acked(&box_c, "box C", &c.subject()).await;
    assert_eq!(c.subject(), "edge.readings.CNX.line_203");
    let box_a = nats.connect_box(&a).await;
    publish_is_acked(&box_a, "box A", &a.subject()).await;

    let text = std::fs::read_to_string(&boxes).unwrap();
    nats_admin::boxes_file::write_atomically(
        &boxes,
        &nats_admin::boxes_file::remove(&text, &id(&a)).unwrap(),
    )
    .unwrap();
    nats.reload(&nats_server);
    wait_until(
        Duration::from_secs(10),
        "box A refused a login after its revocation",
        || {
            let a_login = login(&a);
            async move { !a_login.await }
        },
    )
    .await;
    // Nor can it publish on the connection it had before.
    publish_is_refused(&box_a, "box A after its revocation", &a.subject()).await;
    publish_is_acked(&box_c, "box C", &c.subject()).await;
}

/// Throwaway TLS material for one test: a CA, a server certificate for 127.0.0.1, a client
/// certificate (also usable by a gateway as its server certificate), and a CA nobody trusts.
/// Made here with rcgen; no key ever leaves the temp dir.
struct TlsFiles {
    dir: tempfile::TempDir,
}

impl TlsFiles {
    fn new() -> TlsFiles {
        use rcgen::{
            BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
            KeyUsagePurpose,
        };
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: String| std::fs::write(dir.path().join(name), text).unwrap();
        let ca = |name: &str| {
            let key = KeyPair::generate().unwrap();
            let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
            params.distinguished_name.push(DnType::CommonName, name);
            let cert = params.self_signed(&key).unwrap();
            (cert, key)
        };
        let (ca_cert, ca_key) = ca("edge-mes ops-test CA");
        let leaf = |name: &str, usages: Vec<ExtendedKeyUsagePurpose>| {
            let key = KeyPair::generate().unwrap();
            let mut params =
                CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
                    .unwrap();
            params.distinguished_name.push(DnType::CommonName, name);
            params.extended_key_usages = usages;
            let cert = params.signed_by(&key, &ca_cert, &ca_key).unwrap();
            (cert.pem(), key.serialize_pem())
        };
        let (server, server_key) = leaf("nats", vec![ExtendedKeyUsagePurpose::ServerAuth]);
        let (client, client_key) = leaf(
            "edge-mes client",
            vec![
                ExtendedKeyUsagePurpose::ClientAuth,
                ExtendedKeyUsagePurpose::ServerAuth,
            ],
        );
        write("ca.pem", ca_cert.pem());
        write("server.pem", server);
        write("server-key.pem", server_key);
        write("client.pem", client);
        write("client-key.pem", client_key);
        write("other-ca.pem", ca("not trusted").0.pem());
        TlsFiles { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The production paths (/etc/nats/tls/...) replaced by these files.
    fn apply(&self, conf: &str) -> String {
        let mut out = conf.to_owned();
        for (production, here) in [
            ("/etc/nats/tls/server-key.pem", "server-key.pem"),
            ("/etc/nats/tls/server.pem", "server.pem"),
            ("/etc/nats/tls/gateway-key.pem", "client-key.pem"),
            ("/etc/nats/tls/gateway.pem", "client.pem"),
            ("/etc/nats/tls/ca.pem", "ca.pem"),
        ] {
            out = out.replace(production, &self.path(here).display().to_string());
        }
        let uncovered: Vec<&str> = out
            .lines()
            .filter(|l| !l.trim_start().starts_with('#') && l.contains("/etc/nats/tls/"))
            .collect();
        assert!(uncovered.is_empty(), "TLS paths not covered: {uncovered:?}");
        out
    }

    fn client(&self) -> ClientTls {
        ClientTls {
            ca: self.path("ca.pem"),
            cert: self.path("client.pem"),
            key: self.path("client-key.pem"),
        }
    }
}

/// The lines between `--- TLS begin` and `--- TLS end` uncommented (one leading `# ` removed),
/// as an operator turns TLS on.
fn uncomment_tls(conf: &str) -> String {
    let mut inside = false;
    let mut found = false;
    let out: Vec<String> = conf
        .lines()
        .map(|line| {
            let t = line.trim_start();
            if t.starts_with("# --- TLS begin") {
                inside = true;
                found = true;
                return line.to_owned();
            }
            if t.starts_with("# --- TLS end") {
                inside = false;
                return line.to_owned();
            }
            if inside {
                let indent = &line[..line.len() - t.len()];
                return format!("{indent}{}", t.strip_prefix("# ").unwrap_or(t));
            }
            line.to_owned()
        })
        .collect();
    assert!(found, "no TLS blocks in the config");
    out.join("\n") + "\n"
}

/// A plaintext client gets no further than the server's INFO (which says TLS is required).
fn plaintext_is_refused(port: u16) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut info = [0u8; 4096];
    let n = stream.read(&mut info).unwrap();
    let info = String::from_utf8_lossy(&info[..n]).to_string();
    assert!(info.contains("\"tls_required\":true"), "{info}");
    let _ = stream.write_all(
        format!(
            "CONNECT {{\"verbose\":false,\"user\":\"worker\",\"pass\":\"{}\"}}\r\nPING\r\n",
            password("worker")
        )
        .as_bytes(),
    );
    let mut rest = Vec::new();
    let _ = stream.read_to_end(&mut rest);
    let rest = String::from_utf8_lossy(&rest);
    assert!(
        !rest.contains("PONG"),
        "a plaintext client got through: {rest}"
    );
}

/// Client TLS with mutual TLS on: the services and the boxes connect with --nats-tls-ca,
/// --nats-tls-cert and --nats-tls-key; plaintext, a client without a certificate and a client
/// that trusts another CA are refused.
#[tokio::test]
async fn production_tls_is_required_and_verified_on_the_client_port() {
    let Some(nats_server) = tool("nats-server") else {
        return;
    };
    let tls = TlsFiles::new();
    let keys = tempfile::tempdir().unwrap();
    let a = EdgeBox::issue(keys.path(), "BKK", "edge-01");
    let nats = ProductionNats::start(&nats_server, &[&a], Some(&tls)).await;

    plaintext_is_refused(nats.port);

    let worker = nats.connect("worker").await;
    worker_setup(&worker).await;
    let box_a = nats.connect_box(&a).await;
    publish_is_acked(&box_a, "box A over TLS", &a.subject()).await;

    // Refused: without a client certificate, and trusting another CA. (connect_options retries
    // forever, so the refusal is read from the first attempt of a plain client.)
    let client_tls = tls.client();
    let attempt = |ca: PathBuf, cert: Option<(PathBuf, PathBuf)>| {
        let url = nats.url();
        async move {
            let mut options = async_nats::ConnectOptions::with_user_and_password(
                "worker".into(),
                password("worker"),
            )
            .add_root_certificates(ca)
            .require_tls(true);
            if let Some((cert, key)) = cert {
                options = options.add_client_certificate(cert, key);
            }
            options.connect(url).await
        }
    };
    let both = Some((client_tls.cert.clone(), client_tls.key.clone()));
    assert!(
        attempt(client_tls.ca.clone(), both.clone()).await.is_ok(),
        "the control attempt failed"
    );
    assert!(
        attempt(client_tls.ca.clone(), None).await.is_err(),
        "a client without a certificate got through"
    );
    assert!(
        attempt(tls.path("other-ca.pem"), both).await.is_err(),
        "a client trusting another CA accepted the server"
    );
}

/// The leaf-node link between a site gateway (leafnode-site.conf) and the central servers
/// (nats-server.conf), both with their TLS blocks on: it comes up with the gateway's client
/// certificate, and not without it. nats-server >= 2.14 (the gateway's config needs it).
#[tokio::test]
async fn gateway_leaf_link_requires_tls_and_the_gateways_certificate() {
    let modern = match testkit::nats::modern_binary() {
        Ok(m) => m,
        Err(e) if std::env::var_os("EDGE_MES_SKIP_MISSING_TOOLS").is_some_and(|v| v == "1") => {
            eprintln!("SKIPPED (EDGE_MES_SKIP_MISSING_TOOLS=1): {e:#}");
            return;
        }
        Err(e) => panic!("{e:#}"),
    };
    let tls = TlsFiles::new();
    let central = ProductionNats::start(&modern, &[], Some(&tls)).await;
    plaintext_is_refused(central.leaf_port);
    let leafnodes = |c: &ProductionNats| c.monitor("leafz")["leafnodes"].as_u64().unwrap_or(0);

    // Without its certificate the gateway is refused at the TLS handshake, again and again.
    let without_cert = start_gateway(&modern, &tls, central.leaf_port, false).await;
    wait_until(
        Duration::from_secs(20),
        "the central server refusing the gateway's TLS handshake",
        || {
            let refused = central
                .log()
                .lines()
                .any(|l| l.contains("leafnode handshake error") && l.contains("certificate"));
            async move { refused }
        },
    )
    .await;
    assert_eq!(
        leafnodes(&central),
        0,
        "a gateway without a certificate got a link"
    );
    drop(without_cert);

    let _with_cert = start_gateway(&modern, &tls, central.leaf_port, true).await;
    wait_until(
        Duration::from_secs(20),
        "the gateway's leaf-node link",
        || {
            let n = leafnodes(&central);
            async move { n == 1 }
        },
    )
    .await;
}

/// nats/production/leafnode-site.conf with its TLS blocks on, linking to `leaf_port`; without
/// `client_cert`, the link's certificate lines are dropped.
async fn start_gateway(
    nats: &Path,
    tls: &TlsFiles,
    leaf_port: u16,
    client_cert: bool,
) -> ProductionNats {
    let conf = std::fs::read_to_string(repo("nats/production/leafnode-site.conf")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("boxes.inc"), boxes_file(&[])).unwrap();
    let js = dir.path().join("js");
    let env = vec![
        ("NATS_SERVER_NAME".to_owned(), "gateway-test".to_owned()),
        ("NATS_SITE".to_owned(), "bkk".to_owned()),
        (
            "NATS_HUB_URL".to_owned(),
            format!("tls://leaf:{}@127.0.0.1:{leaf_port}", password("leaf")),
        ),
        ("NATS_SHIPPER_PASSWORD".to_owned(), password("shipper")),
    ];
    let (child, [port, http_port, _]) = spawn(nats, dir.path(), |[port, http, _]| {
        let mut local = tls.apply(
            &uncomment_tls(&conf)
                .replace("listen: 0.0.0.0:4222", &format!("listen: 127.0.0.1:{port}"))
                .replace("http: 127.0.0.1:8222", &format!("http: 127.0.0.1:{http}"))
                .replace(
                    "store_dir: \"/var/lib/nats-gateway\"",
                    &format!("store_dir: \"{}\"", js.display()),
                ),
        );
        if !client_cert {
            let cert = tls.path("client.pem").display().to_string();
            let key = tls.path("client-key.pem").display().to_string();
            // Only the link's lines: they are the ones indented inside `remotes`.
            let before = local.lines().count();
            local = local
                .lines()
                .filter(|l| {
                    !(l.starts_with("        ")
                        && (l.contains(cert.as_str()) || l.contains(key.as_str())))
                })
                .collect::<Vec<_>>()
                .join("\n");
            assert_eq!(
                local.lines().count(),
                before - 2,
                "the gateway's link certificate lines moved: update this test"
            );
        }
        (local, env.clone())
    })
    .await;
    ProductionNats {
        child,
        port,
        http_port,
        leaf_port: 0,
        dir,
        tls: None,
    }
}

/// `GET /<endpoint>` of a monitoring port, parsed (plain HTTP/1.0 over a TCP stream).
fn http_json(port: u16, endpoint: &str) -> serde_json::Value {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return serde_json::Value::Null;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let _ =
        stream.write_all(format!("GET /{endpoint} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes());
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response
        .split_once("\r\n\r\n")
        .and_then(|(_, body)| serde_json::from_str(body).ok())
        .unwrap_or(serde_json::Value::Null)
}

/// The next message of a pull consumer (one fetch, 10 s at most).
async fn next_message(consumer: &Consumer<pull::Config>) -> Message {
    let mut batch = consumer
        .fetch()
        .max_messages(1)
        .expires(Duration::from_secs(10))
        .messages()
        .await
        .unwrap();
    batch.next().await.expect("no message within 10 s").unwrap()
}

/// The config's "plant worker" template as an operator applies it for each of `sites`: the block
/// copied per site, the site put in place of BKK, one leading `# ` removed.
fn with_plant_workers(conf: &str, sites: &[&str]) -> String {
    let begin = conf
        .find("# --- plant worker begin")
        .expect("no plant worker template in the config");
    let end = conf[begin..]
        .find("# --- plant worker end")
        .map(|i| begin + i)
        .expect("the plant worker template has no end");
    let template: String = conf[begin..end]
        .lines()
        .skip(1)
        .map(|line| {
            let t = line.trim_start();
            let indent = &line[..line.len() - t.len()];
            format!("{indent}{}\n", t.strip_prefix("# ").unwrap_or(t))
        })
        .collect();
    let blocks: String = sites
        .iter()
        .map(|site| template.replace("BKK", site))
        .collect();
    // After the marker line: the copies go where the template is, inside the users list.
    let after = begin + conf[begin..].find('\n').unwrap() + 1;
    format!("{}{blocks}{}", &conf[..after], &conf[after..])
}

/// An ingest-worker of `site` (`--sites <site>`) as the binary connects (its client name and
/// scoped inbox), logging in as the plant's own identity.
async fn plant_worker(nats: &ProductionNats, site: &str) -> (ingest_worker::Config, Context) {
    let mut config = ingest_worker::Config::for_urls(&nats.url(), "postgres://unused");
    config.sites = vec![ingest_worker::site_filter::Site::parse(site).unwrap()];
    config.nats.nats_user = Some(format!("worker_{site}"));
    config.nats.nats_password = Some(password(&format!("worker_{}", site.to_lowercase())));
    let client = ingest_worker::jetstream::connect(&config)
        .await
        .unwrap_or_else(|e| panic!("the {site} worker cannot connect: {e}"));
    (config, js(client))
}

async fn plant_setup(worker: &Context, config: &ingest_worker::Config) -> Consumer<pull::Config> {
    match ingest_worker::jetstream::ensure(worker, &config.names(), config)
        .await
        .unwrap_or_else(|e| panic!("a plant worker cannot set up its streams: {e}"))
    {
        ingest_worker::jetstream::Readings::Ready(consumer) => consumer,
        ingest_worker::jetstream::Readings::Sealed(_) => panic!("a new stream is never sealed"),
    }
}

/// One database per plant from one NATS: each plant's worker identity (the config's template,
/// applied for BKK and BER) sets up and loads its own site and nothing else.
#[tokio::test]
async fn plant_workers_each_read_their_own_site_only() {
    let Some(nats_server) = tool("nats-server") else {
        return;
    };
    let keys = tempfile::tempdir().unwrap();
    let bkk_box = EdgeBox::issue(keys.path(), "BKK", "edge-01");
    let ber_box = EdgeBox::issue(keys.path(), "BER", "edge-01");
    let conf = std::fs::read_to_string(repo("nats/production/nats-server.conf")).unwrap();
    let nats = ProductionNats::start_conf(
        &nats_server,
        &[&bkk_box, &ber_box],
        None,
        with_plant_workers(&conf, &["BKK", "BER"]),
    )
    .await;

    let (bkk_config, bkk) = plant_worker(&nats, "BKK").await;
    let (ber_config, ber) = plant_worker(&nats, "BER").await;
    let bkk_consumer = plant_setup(&bkk, &bkk_config).await;
    let ber_consumer = plant_setup(&ber, &ber_config).await;
    assert_eq!(bkk_consumer.cached_info().name, "ingest_BKK");
    assert_eq!(ber_consumer.cached_info().name, "ingest_BER");
    // A second start of each (what every restart does) passes through the same permissions.
    plant_setup(&bkk, &bkk_config).await;

    let bkk_pub = nats.connect_box(&bkk_box).await;
    let ber_pub = nats.connect_box(&ber_box).await;
    publish_is_acked(&bkk_pub, "BKK box", &bkk_box.subject()).await;
    publish_is_acked(&ber_pub, "BER box", &ber_box.subject()).await;

    // The BKK worker cannot reach BER's readings: not through a consumer of BER's, nor one of
    // its own name without its filter, nor an unfiltered one, nor BER's pull or the stream's
    // messages.
    let readings = bkk.get_stream(streams::READINGS_STREAM).await.unwrap();
    for (name, filter) in [
        ("ingest_BER", "edge.readings.BER.>"),
        ("ingest_BKK", "edge.readings.>"),
        ("ingest_BKK", ""),
        ("mine", ""),
    ] {
        let created = readings
            .create_consumer(pull::Config {
                durable_name: Some(name.into()),
                filter_subject: filter.into(),
                ..Default::default()
            })
            .await;
        assert!(
            created.is_err(),
            "the BKK worker created consumer {name} with filter {filter:?}"
        );
    }
    assert!(
        readings.get_raw_message(2).await.is_err(),
        "the BKK worker read a message of the stream directly"
    );
    let pull = tokio::time::timeout(
        JS_TIMEOUT,
        bkk.client().request(
            "$JS.API.CONSUMER.MSG.NEXT.READINGS.ingest_BER",
            r#"{"batch":1,"expires":500000000}"#.into(),
        ),
    )
    .await;
    assert!(
        !matches!(pull, Ok(Ok(_))),
        "the BKK worker pulled from BER's consumer"
    );
    let mut listener = Listener::connect(
        async_nats::ConnectOptions::with_user_and_password(
            "worker_BKK".into(),
            password("worker_bkk"),
        ),
        &nats.url(),
    )
    .await;
    for subject in [
        "_INBOX.ingest-worker.BER.>",
        "_INBOX.ingest-worker.>",
        "edge.>",
    ] {
        listener.subscribe(subject).await;
        listener.refused(subject).await;
    }
    publish_is_refused(&bkk, "the BKK worker", "edge.readings.BKK.edge-01").await;
    publish_is_acked(&bkk, "the BKK worker", "edge.dlq.BKK.edge-01").await;
    publish_is_refused(&bkk, "the BKK worker", "edge.dlq.BER.edge-01").await;

    // Each loads its own site's reading, the BER one still there for BER after all of the above.
    let m = next_message(&bkk_consumer).await;
    assert_eq!(m.subject.as_str(), bkk_box.subject());
    m.ack().await.unwrap();
    let m = next_message(&ber_consumer).await;
    assert_eq!(m.subject.as_str(), ber_box.subject());
    m.ack().await.unwrap();
    // Each refusal above was the server's (a permissions violation), not a JetStream error such
    // as overlapping filters on the work queue.
    let log = nats.log();
    for subject in [
        "$JS.API.CONSUMER.CREATE.READINGS.ingest_BER.edge.readings.BER.>",
        "$JS.API.CONSUMER.CREATE.READINGS.ingest_BKK.edge.readings.>",
        "$JS.API.CONSUMER.CREATE.READINGS.ingest_BKK",
        "$JS.API.CONSUMER.CREATE.READINGS.mine",
        "$JS.API.STREAM.MSG.GET.READINGS",
        "$JS.API.CONSUMER.MSG.NEXT.READINGS.ingest_BER",
    ] {
        assert!(
            log.contains(&format!(
                "\"EDGE/user:worker_BKK\" - Publish Violation - Subject \"{subject}\""
            )),
            "no permissions violation of worker_BKK for {subject} in the server's log:\n{log}"
        );
    }
    let readings = &readings;
    wait_until(
        Duration::from_secs(10),
        "READINGS to be empty (both readings acknowledged by their plants)",
        || async move { readings.clone().info().await.unwrap().state.messages == 0 },
    )
    .await;
}
