//! A database loaded the way production fills it: the sample file and generated edge files
//! through the real edge-shipper and ingest-worker binaries (with rejected lines and a dead
//! letter), the demo run through `mes-api seed-demo`, and more runs through mes-api's REST API
//! (pauses with several reasons, an active run at a second site).

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use chrono::{DateTime, SecondsFormat, Utc};
use protocol::streams::Names;
use serde_json::{json, Value};
use testkit::data::GenSpec;
use testkit::{NatsHandle, PgHandle};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};

/// Site of the sample file and of mes-api's default; the second site ships box02 and runs SMT03.
pub const SITE: &str = "BKK";
pub const SECOND_SITE: &str = "CNX";

pub struct LoadedStack {
    /// Kept alive: dropping it stops a private server.
    _pg: PgHandle,
    pub nats: NatsHandle,
    pub db_url: String,
    pub tag: String,
    pub dir: tempfile::TempDir,
    /// When the loading started (generated readings and runs are relative to it).
    pub now: DateTime<Utc>,
}

impl LoadedStack {
    pub async fn load() -> anyhow::Result<LoadedStack> {
        let pg = testkit::pg_for_test().await?;
        let nats = testkit::nats_for_test().await?;
        let tag = testkit::unique_name("ops");
        let db_url = pg.create_database(&tag).await?;
        let stack = LoadedStack {
            _pg: pg,
            nats,
            db_url,
            tag,
            dir: tempfile::tempdir()?,
            now: Utc::now(),
        };
        stack.load_readings().await?;
        stack.load_runs().await?;
        Ok(stack)
    }

    fn command(&self, bin: &str) -> anyhow::Result<Command> {
        let mut c = Command::new(testkit::bins::bin_path(bin)?);
        c.env("NATS_URL", self.nats.url())
            .env("DATABASE_URL", &self.db_url)
            .env("EDGE_NAMESPACE", &self.tag)
            .env("RUST_LOG", "warn")
            // The seed's sample day (2025-08-22) is older than the default 90-day retention.
            .env("READINGS_RETENTION_DAYS", "0")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        Ok(c)
    }

    async fn run_to_end(&self, mut c: Command, what: &str) -> anyhow::Result<()> {
        let status = tokio::time::timeout(Duration::from_secs(180), c.status())
            .await
            .with_context(|| format!("{what} did not finish within 180 s"))??;
        if !status.success() {
            bail!("{what} exited with {status}");
        }
        Ok(())
    }

    async fn worker_until_idle(&self, idle_secs: u32) -> anyhow::Result<()> {
        let mut c = self.command("ingest-worker")?;
        c.args([
            "--until-idle",
            &idle_secs.to_string(),
            "--batch-linger-ms",
            "5",
        ]);
        self.run_to_end(c, "ingest-worker").await
    }

    async fn ship(&self, box_dir: &Path, site: &str, box_id: &str) -> anyhow::Result<()> {
        let mut c = self.command("edge-shipper")?;
        c.arg("--watch")
            .arg(format!("{}/*.jsonl", box_dir.display()))
            .arg("--state-dir")
            .arg(self.dir.path().join("state").join(box_id))
            .args(["--site", site, "--box-id", box_id, "--until-caught-up"]);
        self.run_to_end(c, &format!("edge-shipper {box_id}")).await
    }

    /// hotdata/sample_readings.jsonl from box edge-01, 20,000 generated lines (1 % malformed) of
    /// the last quarter hour from box01 (BKK) and box02 (CNX) with one temp excursion, and one
    /// message without edge headers (a dead letter).
    async fn load_readings(&self) -> anyhow::Result<()> {
        // Schema, streams and consumer.
        self.worker_until_idle(1).await?;

        let sample_dir = self.dir.path().join("edge-01");
        std::fs::create_dir_all(&sample_dir)?;
        std::fs::copy(
            testkit::bins::workspace_root().join("hotdata/sample_readings.jsonl"),
            sample_dir.join("sample_readings.jsonl"),
        )
        .context("copy the sample file")?;

        let spec = GenSpec {
            boxes: 2,
            files_per_box: 1,
            lines: 20_000,
            malformed_ratio: 0.01,
            resources: 3,
            sensors: 4,
            seed: 4,
            start_ts: self.now - chrono::Duration::minutes(15),
        };
        let (boxes, _) = testkit::data::generate(&self.dir.path().join("generated"), &spec)?;
        let excursion = json!({
            "ts": rfc3339(self.now - chrono::Duration::minutes(3)),
            "resource_id": "SMT01", "sensor": "temp", "value": 95.0, "unit": "C",
            "work_order_id": "WO123", "operation_id": "OP10", "meta": {"site": SITE}
        });
        append_line(&boxes[0].files[0], &excursion.to_string())?;

        self.ship(&sample_dir, SITE, "edge-01").await?;
        self.ship(&boxes[0].dir, SITE, &boxes[0].box_id).await?;
        self.ship(&boxes[1].dir, SECOND_SITE, &boxes[1].box_id)
            .await?;

        let client = async_nats::connect(self.nats.url()).await?;
        let js = async_nats::jetstream::new(client);
        js.publish(
            Names::isolated(&self.tag).readings_subject(SITE, "edge-99"),
            "no edge headers".into(),
        )
        .await?
        .await?;

        self.worker_until_idle(2).await
    }

    /// The demo run (SMT01, 4 h ending now) and, through the REST API, a completed run on SMT02
    /// with changeover, minor stop and material shortage, and a paused run on SMT03 at CNX.
    async fn load_runs(&self) -> anyhow::Result<()> {
        let mut seed = self.command("mes-api")?;
        seed.arg("seed-demo");
        self.run_to_end(seed, "mes-api seed-demo").await?;

        let pool = sqlx::PgPool::connect(&self.db_url).await?;
        sqlx::query("SELECT edge_mes_ensure_site($1, 'Asia/Bangkok')")
            .bind(SECOND_SITE)
            .execute(&pool)
            .await?;
        pool.close().await;

        let mut create = self.command("mes-api")?;
        create.args([
            "token",
            "create",
            "--role",
            "operator",
            "--name",
            "loaded-stack",
        ]);
        let token = create_token(create).await?;
        let addr = free_addr()?;
        let mut api = self.command("mes-api")?;
        api.args(["--listen", &addr.to_string()])
            .env("API_AUTH", "tokens")
            .env("API_METRICS_LISTEN", "off");
        let mut child = api.spawn().context("start mes-api")?;
        let result = self.rest_runs(addr, &token).await;
        stop(&mut child).await;
        result
    }

    async fn rest_runs(&self, addr: SocketAddr, token: &str) -> anyhow::Result<()> {
        wait_healthy(addr).await?;
        let at = |minutes_ago: i64| rfc3339(self.now - chrono::Duration::minutes(minutes_ago));
        let run = post(
            addr,
            token,
            "/op_run/start",
            json!({"work_order_id": "WO200", "operation_id": "OP20", "resource_id": "SMT02",
                   "planned_seconds": 10800, "ideal_cycle_time_s": 2.0, "started_at": at(180)}),
        )
        .await?;
        let id = run["op_run_id"].clone();
        let steps = [
            (
                "/op_run/report",
                json!({"op_run_id": id, "good_delta": 100, "scrap_delta": 4, "at": at(170)}),
            ),
            (
                "/op_run/pause",
                json!({"op_run_id": id, "reason_code": "changeover", "at": at(150)}),
            ),
            ("/op_run/resume", json!({"op_run_id": id, "at": at(135)})),
            (
                "/op_run/report",
                json!({"op_run_id": id, "good_delta": 200, "scrap_delta": 5, "at": at(120)}),
            ),
            (
                "/op_run/pause",
                json!({"op_run_id": id, "reason_code": "minor_stop", "at": at(90)}),
            ),
            ("/op_run/resume", json!({"op_run_id": id, "at": at(85)})),
            (
                "/op_run/pause",
                json!({"op_run_id": id, "reason_code": "material_shortage", "at": at(60)}),
            ),
            ("/op_run/resume", json!({"op_run_id": id, "at": at(50)})),
            (
                "/op_run/report",
                json!({"op_run_id": id, "good_delta": 250, "scrap_delta": 6, "at": at(30)}),
            ),
            (
                "/op_run/complete",
                json!({"op_run_id": id, "ended_at": at(10)}),
            ),
        ];
        for (path, body) in steps {
            post(addr, token, path, body).await?;
        }
        let active = post(
            addr,
            token,
            "/op_run/start",
            json!({"work_order_id": "WO300", "operation_id": "OP10", "resource_id": "SMT03",
                   "site_id": SECOND_SITE, "planned_seconds": 3600, "ideal_cycle_time_s": 1.0,
                   "started_at": at(40)}),
        )
        .await?;
        let id = active["op_run_id"].clone();
        post(
            addr,
            token,
            "/op_run/report",
            json!({"op_run_id": id, "good_delta": 50, "scrap_delta": 1, "at": at(20)}),
        )
        .await?;
        post(
            addr,
            token,
            "/op_run/pause",
            json!({"op_run_id": id, "reason_code": "quality_hold", "at": at(15)}),
        )
        .await?;
        Ok(())
    }
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn append_line(path: &PathBuf, line: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new().append(true).open(path)?;
    writeln!(f, "{line}")?;
    Ok(())
}

pub fn free_addr() -> anyhow::Result<SocketAddr> {
    let l = TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?)
}

pub async fn stop(child: &mut Child) {
    if let Some(pid) = child.id() {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status();
    }
    if tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .is_err()
    {
        let _ = child.kill().await;
    }
}

/// Runs `mes-api token create ...` (`command`) and returns the token, the last line it prints.
pub async fn create_token(mut command: Command) -> anyhow::Result<String> {
    command.stdout(Stdio::piped());
    let output = tokio::time::timeout(Duration::from_secs(120), command.output())
        .await
        .context("mes-api token create did not finish within 120 s")??;
    if !output.status.success() {
        bail!("mes-api token create exited with {}", output.status);
    }
    let stdout = String::from_utf8(output.stdout)?;
    Ok(stdout
        .lines()
        .last()
        .context("mes-api token create printed no token")?
        .trim()
        .to_owned())
}

pub async fn wait_healthy(addr: SocketAddr) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok((200, _)) = http(addr, "GET", "/health", None, None).await {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("mes-api on {addr} did not become healthy within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub async fn post(addr: SocketAddr, token: &str, path: &str, body: Value) -> anyhow::Result<Value> {
    let (status, text) = http(addr, "POST", path, Some(token), Some(&body)).await?;
    if !(200..300).contains(&status) {
        bail!("POST {path} {body} -> {status} {text}");
    }
    Ok(serde_json::from_str(&text)?)
}

/// A minimal HTTP/1.1 exchange (one request per connection).
async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> anyhow::Result<(u16, String)> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let body = body.map(Value::to_string).unwrap_or_default();
    let auth = token
        .map(|t| format!("authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n{auth}content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut response)).await??;
    let text = String::from_utf8_lossy(&response);
    let (head, rest) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status: u16 = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("bad response {head}"))?;
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    let body = if chunked {
        dechunk(rest)
    } else {
        rest.to_owned()
    };
    Ok((status, body))
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}
