//! The production NATS config (nats/production/nats-server.conf) and the Kubernetes Helm values
//! (deploy/k8s/helm/nats-values.yaml) let every component do its job with its own user and
//! permissions, and no more. Each user makes the JetStream calls its component makes (same client
//! library, same calls, the stream definitions of nats/streams/): the worker runs its own stream
//! setup (READINGS, READINGS_DLQ, the durable consumer `ingest`, and the upgrade of a READINGS of
//! an earlier version: seal, consumer state, delete, create), pulls, acks and dead-letters; the shipper publishes readings; mes-api creates OP_RUN and publishes run events;
//! the MES reads them with its own durable consumer. The shipper and the MES cannot publish run
//! events, mes-api cannot publish readings, the shipper cannot create streams.
//!
//! (The binaries log in the same way, with NATS_USER/NATS_PASSWORD: e2e/tests/auth.rs runs the
//! shipper and the worker against a server that requires a password.)

use std::net::TcpStream;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::{pull, Consumer};
use async_nats::jetstream::{self, Context, Message};
use futures::StreamExt;
use protocol::streams;
use tokio::process::{Child, Command};

use crate::loaded_stack::free_addr;
use crate::static_checks::{nats_config_env, stream_file, tool};

const USERS: [&str; 6] = ["shipper", "worker", "api", "mes", "leaf", "sys"];

/// nats-server with the production config on free loopback ports and a private store.
struct ProductionNats {
    /// Killed on drop.
    _child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl ProductionNats {
    /// nats/production/nats-server.conf, its addresses and store moved to this machine.
    async fn start(nats: &Path) -> ProductionNats {
        let conf = std::fs::read_to_string(
            testkit::bins::workspace_root().join("nats/production/nats-server.conf"),
        )
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let port = free_addr().unwrap().port();
        let local = conf
            .replace("listen: 0.0.0.0:4222", &format!("listen: 127.0.0.1:{port}"))
            .replace(
                "http: 0.0.0.0:8222",
                &format!("http: 127.0.0.1:{}", free_addr().unwrap().port()),
            )
            .replace(
                "listen: 0.0.0.0:7422",
                &format!("listen: 127.0.0.1:{}", free_addr().unwrap().port()),
            )
            .replace(
                "store_dir: \"/data/jetstream\"",
                &format!("store_dir: \"{}\"", dir.path().join("js").display()),
            );
        assert_ne!(
            local, conf,
            "the production config's addresses changed: update this test"
        );
        Self::launch(nats, &local, &conf, dir, port).await
    }

    /// The accounts and users of the Helm values (config.merge), with the passwords filled in.
    async fn start_helm(nats: &Path) -> ProductionNats {
        let values = std::fs::read_to_string(
            testkit::bins::workspace_root().join("deploy/k8s/helm/nats-values.yaml"),
        )
        .unwrap();
        let values: serde_json::Value = serde_yaml::from_str(&values).unwrap();
        let mut accounts = values["config"]["merge"]["accounts"].clone();
        fill_passwords(&mut accounts);
        let dir = tempfile::tempdir().unwrap();
        let port = free_addr().unwrap().port();
        let conf = serde_json::json!({
            "listen": format!("127.0.0.1:{port}"),
            "max_payload": values["config"]["merge"]["max_payload"],
            "jetstream": {
                "store_dir": dir.path().join("js").display().to_string(),
                "domain": values["config"]["jetstream"]["merge"]["domain"],
            },
            "accounts": accounts,
            "system_account": values["config"]["merge"]["system_account"],
        });
        let text = serde_json::to_string_pretty(&conf).unwrap();
        Self::launch(nats, &text, "", dir, port).await
    }

    async fn launch(
        nats: &Path,
        local: &str,
        original: &str,
        dir: tempfile::TempDir,
        port: u16,
    ) -> ProductionNats {
        let conf = original;
        let file = dir.path().join("nats-server.conf");
        std::fs::write(&file, local).unwrap();
        let mut cmd = Command::new(nats);
        cmd.arg("-c").arg(&file);
        for var in nats_config_env(conf) {
            let value = match var
                .strip_prefix("NATS_")
                .and_then(|v| v.strip_suffix("_PASSWORD"))
            {
                Some(user) => password(&user.to_ascii_lowercase()),
                None => "ops-test".to_owned(),
            };
            cmd.env(var, value);
        }
        cmd.stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        let child = cmd.spawn().unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "nats-server did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        ProductionNats {
            _child: child,
            port,
            _dir: dir,
        }
    }

    async fn connect(&self, user: &str) -> Context {
        let client =
            async_nats::ConnectOptions::with_user_and_password(user.into(), password(user))
                .connect(format!("127.0.0.1:{}", self.port))
                .await
                .unwrap_or_else(|e| panic!("user {user} cannot connect: {e}"));
        let mut js = jetstream::new(client);
        js.set_timeout(Duration::from_secs(3));
        js
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
    assert!(USERS.contains(&user), "unknown user {user}");
    format!("pw-{user}-test")
}

/// A JetStream publish that must be refused (no PubAck).
async fn publish_is_refused(js: &Context, user: &str, subject: &str) {
    let acked = match js.publish(subject.to_owned(), "x".into()).await {
        Ok(ack) => ack.await.is_ok(),
        Err(_) => false,
    };
    assert!(!acked, "user {user} could publish to {subject}");
}

async fn publish_is_acked(js: &Context, user: &str, subject: &str) {
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Nats-Msg-Id", format!("{user}-{subject}").as_str());
    js.publish_with_headers(subject.to_owned(), headers, "x".into())
        .await
        .unwrap_or_else(|e| panic!("user {user} cannot publish to {subject}: {e}"))
        .await
        .unwrap_or_else(|e| panic!("user {user}: no PubAck for {subject}: {e}"));
}

#[tokio::test]
async fn production_permissions_let_each_component_do_its_job_and_no_more() {
    let Some(nats_server) = tool("nats-server") else {
        return;
    };
    each_component_does_its_job_and_no_more(ProductionNats::start(&nats_server).await).await;
}

#[tokio::test]
async fn helm_values_permissions_let_each_component_do_its_job_and_no_more() {
    let Some(nats_server) = tool("nats-server") else {
        return;
    };
    each_component_does_its_job_and_no_more(ProductionNats::start_helm(&nats_server).await).await;
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

async fn each_component_does_its_job_and_no_more(nats: ProductionNats) {
    // ingest-worker's setup (ingest-worker/src/jetstream.rs).
    let worker = nats.connect("worker").await;
    let consumer = worker_setup(&worker).await;

    // edge-shipper publishes; the worker pulls, acks and dead-letters.
    let shipper = nats.connect("shipper").await;
    publish_is_acked(&shipper, "shipper", "edge.readings.BKK.edge-01").await;
    let message = next_message(&consumer).await;
    message.ack().await.unwrap();
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
    let mes = nats.connect("mes").await;
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

    // And no more.
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
    drop(nats);
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
    batch
        .next()
        .await
        .expect("no run event for the MES")
        .unwrap()
}
