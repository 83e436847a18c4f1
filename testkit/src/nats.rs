//! A private `nats-server -js` per test binary (or per test), on a free port with its own store.

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use tokio::io::AsyncBufReadExt;

use crate::process;

/// How long a start or restart may take before it fails with the server's log.
const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a graceful stop may take before the server is killed.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// Attempts with a new port when the chosen one was taken in the meantime.
const PORT_ATTEMPTS: usize = 3;

/// A `nats-server -js` listening on `127.0.0.1:<port>`, its JetStream store in a temp dir.
///
/// Dropping it kills the server and removes the store. The server also dies with the test process
/// (parent-death signal), so a server kept in a `static` is not orphaned either.
pub struct NatsServer {
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
    /// Extra command-line arguments (authentication), kept for restarts.
    args: Vec<String>,
}

impl NatsServer {
    /// Private `nats-server -js` on a free 127.0.0.1 port, store in its own temp dir; returns when
    /// it accepts TCP and JetStream is ready.
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_with_args(&[]).await
    }

    /// Like [`start`](Self::start), with extra `nats-server` arguments, e.g. `--user u --pass p`
    /// or `--auth <token>` for a server that requires authentication.
    pub async fn start_with_args(args: &[&str]) -> anyhow::Result<Self> {
        let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        let dir = process::server_dir("edge-mes-nats-", &std::env::temp_dir())?;
        let mut last_err = None;
        for _ in 0..PORT_ATTEMPTS {
            let port = process::free_port()?;
            match launch(port, dir.path(), &args).await {
                Ok(child) => {
                    return Ok(Self {
                        port,
                        dir,
                        child: Some(child),
                        args,
                    })
                }
                Err(e) if is_port_in_use(&e) => last_err = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last_err.unwrap_or_else(|| anyhow::anyhow!("nats-server did not start")))
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The temp dir holding the store (`jetstream/`) and the server log (`nats-server.log`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The server's log (stdout and stderr of every start, appended).
    pub fn log_path(&self) -> PathBuf {
        log_path(self.dir.path())
    }

    /// Graceful stop: SIGTERM, then wait for the exit (SIGKILL after 10 s).
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            process::terminate(&mut child, libc::SIGTERM, STOP_GRACE).await?;
        }
        Ok(())
    }

    /// Crash: SIGKILL, then wait for the exit.
    pub async fn kill(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            process::terminate(&mut child, libc::SIGKILL, STOP_GRACE).await?;
        }
        Ok(())
    }

    /// Starts the server again on the same port and store dir (stopping it first if it runs) and
    /// waits until it is ready. Works after [`stop`](Self::stop) or [`kill`](Self::kill).
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.stop().await?;
        // The old socket may linger a moment; retry the same port briefly.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match launch(self.port, self.dir.path(), &self.args).await {
                Ok(child) => {
                    self.child = Some(child);
                    return Ok(());
                }
                Err(e) if is_port_in_use(&e) && Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Process id of the running server (e.g. to `SIGSTOP` it and simulate a hang).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// True while the server process runs.
    pub fn is_running(&self) -> bool {
        self.child
            .as_ref()
            .is_some_and(|c| process::is_alive(c.id()))
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            process::terminate_blocking(&mut child, libc::SIGKILL, STOP_GRACE);
        }
    }
}

impl std::fmt::Debug for NatsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsServer")
            .field("url", &self.url())
            .field("dir", &self.dir.path())
            .field("running", &self.is_running())
            .finish()
    }
}

fn is_port_in_use(e: &anyhow::Error) -> bool {
    format!("{e:#}").contains("address already in use")
}

/// Polls until the server accepts TCP and its `INFO` says JetStream is enabled.
async fn wait_ready(port: u16, child: &mut Child) -> anyhow::Result<()> {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if let Some(status) = child.try_wait()? {
            bail!("nats-server exited during startup ({status})");
        }
        match read_info(port).await {
            Ok(info) if info.contains("\"jetstream\":true") => return Ok(()),
            Ok(info) => bail!("nats-server runs without JetStream: {info}"),
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => return Err(e.context("timed out waiting for nats-server")),
        }
    }
}

async fn read_info(port: u16) -> anyhow::Result<String> {
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    let mut reader = tokio::io::BufReader::new(stream);
    let mut line = String::new();
    tokio::time::timeout(Duration::from_secs(2), reader.read_line(&mut line))
        .await
        .context("no INFO line")??;
    if !line.starts_with("INFO ") {
        bail!("unexpected greeting: {line}");
    }
    Ok(line)
}

fn log_path(dir: &Path) -> PathBuf {
    dir.join("nats-server.log")
}

/// Spawns the server on `port` with its store in `dir` and waits until it is ready.
async fn launch(port: u16, dir: &Path, args: &[String]) -> anyhow::Result<Child> {
    let log_path = log_path(dir);
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("open {}", log_path.display()))?;
    let mut cmd = Command::new("nats-server");
    cmd.arg("-js")
        .args(["-a", "127.0.0.1"])
        .args(["-p", &port.to_string()])
        .arg("-sd")
        .arg(dir)
        .args(["-n", &format!("testkit_{port}")])
        .args(args)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    let mut child = process::spawn_owned(cmd, libc::SIGKILL)
        .context("spawn nats-server (is it installed and on PATH?)")?;
    match wait_ready(port, &mut child).await {
        Ok(()) => Ok(child),
        Err(e) => {
            let _ = child.kill();
            let _ = process::wait_exit(&mut child, STOP_GRACE).await;
            Err(e.context(format!(
                "nats-server on port {port} did not become ready; last log lines:\n{}",
                process::log_tail(&log_path, 20)
            )))
        }
    }
}
