use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use protocol::RejectReason;
use sqlx::PgPool;
use testkit::data::Expected;
use testkit::{NatsHandle, PgHandle};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};

pub const SITE: &str = "BKK";

/// One test's pipeline: servers, a database, isolated NATS names, and a scratch directory.
pub struct Stack {
    pub pg: PgHandle,
    pub nats: NatsHandle,
    pub db_url: String,
    pub tag: String,
    pub dir: tempfile::TempDir,
}

impl Stack {
    pub async fn new() -> Self {
        Self::with(
            testkit::pg_for_test().await.unwrap(),
            testkit::nats_for_test().await.unwrap(),
        )
        .await
    }

    pub async fn with(pg: PgHandle, nats: NatsHandle) -> Self {
        let tag = testkit::unique_name("e2e");
        let db_url = pg.create_database(&tag).await.unwrap();
        Self {
            pg,
            nats,
            db_url,
            tag,
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn command(&self, bin: &str) -> Command {
        let mut c = Command::new(testkit::bins::bin_path(bin).unwrap());
        c.env("NATS_URL", self.nats.url())
            .env("DATABASE_URL", &self.db_url)
            .env("EDGE_NAMESPACE", &self.tag)
            .env("RUST_LOG", "warn")
            // The test data is from 2025 (the seed's sample day): the default 90-day retention
            // would remove it while a test counts it. Retention has its own tests.
            .env("READINGS_RETENTION_DAYS", "0")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        c
    }

    /// edge-shipper for `box_id` watching `<dir>/<box_id>/*.jsonl`, state in `<dir>/state/<box_id>`.
    pub fn shipper(&self, box_id: &str, extra: &[&str]) -> Command {
        let dir = self.box_dir(box_id);
        let watch = format!("{}/*.jsonl", dir.display());
        let mut c = self.command("edge-shipper");
        c.arg("--watch")
            .arg(watch)
            .arg("--state-dir")
            .arg(self.state_dir(box_id))
            .args(["--site", SITE, "--box-id", box_id])
            .args(["--rescan-interval-ms", "200", "--linger-ms", "20"])
            .args(extra);
        c
    }

    /// `<dir>/<box_id>`, created if missing: where that box's JSONL files go.
    pub fn box_dir(&self, box_id: &str) -> PathBuf {
        let d = self.dir.path().join(box_id);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    pub fn state_dir(&self, box_id: &str) -> PathBuf {
        self.dir.path().join("state").join(box_id)
    }

    /// `mes-api` listening on `127.0.0.1:<port>`, requiring tokens as it does by default
    /// (said explicitly so the tests do not depend on the default).
    pub fn api(&self, port: u16, extra: &[&str]) -> Command {
        let mut c = self.command("mes-api");
        c.env("API_LISTEN", format!("127.0.0.1:{port}"))
            .env("API_AUTH", "tokens")
            .env("API_METRICS_LISTEN", "off")
            .args(extra);
        c
    }

    /// A new API token with `role`, made the way an operator makes one (`mes-api token create`,
    /// the token being the last line of its output).
    pub async fn api_token(&self, role: &str) -> String {
        let name = testkit::unique_name(role);
        let output = tokio::time::timeout(
            Duration::from_secs(120),
            self.command("mes-api")
                .args(["token", "create", "--role", role, "--name", &name])
                .stdout(Stdio::piped())
                .output(),
        )
        .await
        .expect("mes-api token create did not finish within 120 s")
        .unwrap();
        assert!(output.status.success(), "mes-api token create: {output:?}");
        String::from_utf8(output.stdout)
            .unwrap()
            .lines()
            .last()
            .expect("a token on the last line")
            .trim()
            .to_owned()
    }

    /// The line simulator writing into `<dir>/<box_id>/` and driving runs through mes-api on
    /// `api_port` with `token`, ten times faster than its defaults.
    pub fn simulator(&self, box_id: &str, api_port: u16, token: &str, extra: &[&str]) -> Command {
        let mut c = self.command("edge-mes-sim");
        c.env("SIM_API_TOKEN", token)
            .arg("--hot-dir")
            .arg(self.box_dir(box_id))
            .args(["--api-addr", &format!("127.0.0.1:{api_port}")])
            .args(["--tick-ms", "100", "--report-every-secs", "1"])
            .args(extra);
        c
    }

    pub fn worker(&self, extra: &[&str]) -> Command {
        let mut c = self.command("ingest-worker");
        c.args(["--ack-wait-secs", "5", "--batch-linger-ms", "5"])
            .args(extra);
        c
    }

    /// Runs the worker once so the schema, streams and consumer exist.
    pub async fn prepare(&self) {
        self.worker_until_idle(1).await;
    }

    pub async fn worker_until_idle(&self, idle_secs: u32) {
        let status = tokio::time::timeout(
            Duration::from_secs(180),
            self.worker(&["--until-idle", &idle_secs.to_string()])
                .status(),
        )
        .await
        .expect("worker did not go idle within 180 s")
        .unwrap();
        assert!(status.success(), "worker exited with {status}");
    }

    pub async fn ship_until_caught_up(&self, box_id: &str) {
        self.ship_until_caught_up_with(box_id, &[]).await;
    }

    pub async fn ship_until_caught_up_with(&self, box_id: &str, extra: &[&str]) {
        let mut args = vec!["--until-caught-up"];
        args.extend_from_slice(extra);
        let status = tokio::time::timeout(
            Duration::from_secs(180),
            self.shipper(box_id, &args).status(),
        )
        .await
        .expect("shipper did not catch up within 180 s")
        .unwrap();
        assert!(status.success(), "shipper exited with {status}");
    }

    /// Messages in the READINGS stream, which holds (work-queue retention) what the worker has
    /// not yet loaded and acknowledged.
    pub async fn readings_in_stream(&self) -> u64 {
        let js = async_nats::jetstream::new(async_nats::connect(self.nats.url()).await.unwrap());
        let stream = protocol::Names::isolated(&self.tag).readings_stream;
        js.get_stream(&stream)
            .await
            .unwrap()
            .get_info()
            .await
            .unwrap()
            .state
            .messages
    }

    pub async fn pool(&self) -> PgPool {
        PgPool::connect(&self.db_url).await.unwrap()
    }

    pub async fn readings(&self) -> u64 {
        let pool = self.pool().await;
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM readings")
            .fetch_one(&pool)
            .await
            .unwrap_or(-1);
        pool.close().await;
        u64::try_from(n).unwrap_or(0)
    }

    /// What landed, in the shape of [`Expected`] (blank lines leave no trace, so `blank` is 0).
    pub async fn landed(&self) -> Expected {
        let pool = self.pool().await;
        let series: Vec<(String, String, i64)> =
            sqlx::query_as("SELECT resource_id, sensor, count(*) FROM readings GROUP BY 1, 2")
                .fetch_all(&pool)
                .await
                .unwrap();
        let reasons: Vec<(String, i64)> =
            sqlx::query_as("SELECT reason, count(*) FROM rejected_readings GROUP BY 1")
                .fetch_all(&pool)
                .await
                .unwrap();
        pool.close().await;
        let per_series: BTreeMap<(String, String), u64> = series
            .into_iter()
            .map(|(r, s, n)| ((r, s), n as u64))
            .collect();
        Expected {
            valid: per_series.values().sum(),
            per_series,
            rejected: reasons
                .into_iter()
                .map(|(r, n)| (RejectReason::parse(&r).unwrap(), n as u64))
                .collect(),
            blank: 0,
        }
    }
}

/// `expected` without its blank count, to compare with [`Stack::landed`].
pub fn without_blanks(expected: &Expected) -> Expected {
    Expected {
        blank: 0,
        ..expected.clone()
    }
}

pub fn sigterm(child: &Child) {
    if let Some(pid) = child.id() {
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }
}

/// SIGTERM, then the process must exit 0.
pub async fn stop_cleanly(child: &mut Child) {
    sigterm(child);
    let status = child.wait().await.unwrap();
    assert!(status.success(), "exits 0 on SIGTERM, got {status}");
}

/// Stops a shipper and a worker once nothing more can land, so that a count taken after misses
/// nothing: the shipper (metrics on `shipper_metrics`) has every byte of its files read and
/// acknowledged, then stops; the worker has loaded all of it (the READINGS stream is empty), then
/// stops. Each must exit 0.
pub async fn stop_once_everything_landed(
    stack: &Stack,
    shipper: &mut Child,
    shipper_metrics: u16,
    worker: &mut Child,
) {
    // A gauge refreshed once per checkpoint interval.
    assert!(
        eventually(Duration::from_secs(60), || async {
            metric(shipper_metrics, "edge_shipper_bytes_behind").await == Some(0.0)
        })
        .await,
        "the shipper read and shipped all of its files"
    );
    stop_cleanly(shipper).await;
    assert!(
        eventually(Duration::from_secs(60), || async {
            stack.readings_in_stream().await == 0
        })
        .await,
        "the worker loaded everything in the stream"
    );
    stop_cleanly(worker).await;
}

/// Polls `check` until it holds or `timeout` passes; returns whether it held.
pub async fn eventually<F, Fut>(timeout: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    false
}

pub fn copy_into(src: &Path, dst: &Path) {
    std::fs::copy(src, dst).unwrap();
}

/// A JSON POST over a plain HTTP/1.0 connection; the status and body.
pub async fn post(port: u16, token: &str, path: &str, body: &str) -> (u16, String) {
    let head = format!(
        "POST {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    http(port, &format!("{head}{body}")).await.unwrap()
}

/// One HTTP/1.0 request; the status and body, `None` when nothing listens.
async fn http(port: u16, request: &str) -> Option<(u16, String)> {
    let mut conn = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    conn.write_all(request.as_bytes()).await.ok()?;
    let mut answer = String::new();
    conn.read_to_string(&mut answer).await.ok()?;
    let status = answer
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Some((status, body))
}

/// An address on a free port for a binary's `--metrics-addr`, and that port.
pub fn metrics_addr() -> (String, u16) {
    let port = testkit::nats::free_port().unwrap();
    (format!("127.0.0.1:{port}"), port)
}

/// The value of one series of a binary's `/metrics` on `port`, named as rendered (with its
/// labels, e.g. `ingest_retries_total{kind="unavailable"}`); `None` while the endpoint does not
/// answer or lacks the series.
pub async fn metric(port: u16, series: &str) -> Option<f64> {
    let (_, text) = http(port, "GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").await?;
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

pub async fn api_ready(port: u16) -> bool {
    eventually(Duration::from_secs(60), || async {
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
    })
    .await
}
