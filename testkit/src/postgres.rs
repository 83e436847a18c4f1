//! A private PostgreSQL per test binary (or per test): initdb'd data dir, free port, 127.0.0.1 only.
//!
//! `initdb` runs once per machine and PostgreSQL version into a template
//! (`<base>/edge-mes-testkit/pg<version>-<user>-template-<n>`, built in a scratch dir and renamed
//! into place, so concurrent test binaries are safe); each server starts from a `cp -a` of it in
//! `<base>/edge-mes-pg-XXXXXX`. `<base>` is `/dev/shm` when it is writable with 2 GiB free (copying
//! ~1,000 files is ten times faster there on a loaded machine), else the temp dir;
//! `EDGE_MES_TESTKIT_PG_DIR` overrides it. `initdb` and `postgres` refuse to run as root, so as
//! root they run as the `postgres` OS user.

use std::fs::OpenOptions;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use sqlx::Connection;
use tokio::sync::OnceCell;

use crate::process;

/// How long a start or restart may take before it fails with the server's log.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a fast shutdown may take before the server is killed.
const STOP_GRACE: Duration = Duration::from_secs(30);
/// Attempts with a new port when the chosen one was taken in the meantime.
const PORT_ATTEMPTS: usize = 3;
/// Bump when the template's settings change, so stale templates are not reused.
const TEMPLATE_VERSION: &str = "v3";

/// Settings appended to the template's `postgresql.conf`. Durability against an OS crash is traded
/// for speed (`fsync = off`), never durability against a server crash: `synchronous_commit` stays
/// on, so a commit has reached the OS before it returns and survives `kill` + `restart` (crash
/// recovery replays it), which is what fault tests rely on.
const TEST_SETTINGS: &str = "
# edge-mes testkit
listen_addresses = '127.0.0.1'
fsync = off
full_page_writes = off
max_connections = 200
shared_buffers = 64MB
max_locks_per_transaction = 256
min_wal_size = 32MB
max_wal_size = 128MB
timezone = 'UTC'
log_timezone = 'UTC'
log_min_messages = warning
log_line_prefix = '%m [%p] '
";

/// A PostgreSQL server on `127.0.0.1:<port>`, trust auth for user `postgres`, its unix socket in
/// its own temp dir.
///
/// Dropping it stops the server (immediate shutdown) and removes the dir. The server also gets
/// an immediate shutdown when the test process exits (parent-death signal), so a server kept in a
/// `static` is not orphaned either.
pub struct PgServer {
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
    settings: Vec<(String, String)>,
}

/// How a private server differs from the tests' default one.
#[derive(Debug, Clone, Default)]
pub struct PgOptions {
    /// Directory that holds the server's own dir (data, socket, log) instead of the fast temp
    /// dir (`/dev/shm` where possible). It must be reachable by the `postgres` OS user when
    /// running as root.
    pub base_dir: Option<PathBuf>,
    /// Settings passed as `-c name=value` on every start, over the template's
    /// `postgresql.conf` (e.g. `fsync = on` for a durable server).
    pub settings: Vec<(String, String)>,
}

impl PgServer {
    /// Private PostgreSQL: a copy of the initdb'd template in a temp dir, free port, listening on
    /// 127.0.0.1 only; returns when it accepts connections.
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_with(PgOptions::default()).await
    }

    /// [`start`](Self::start) with another place for the data dir and extra settings.
    pub async fn start_with(options: PgOptions) -> anyhow::Result<Self> {
        let pg = PgInstall::get().await?;
        let template = pg.template().await?;
        let base = options.base_dir.as_deref().unwrap_or(&pg.base_dir);
        let dir = process::server_dir("edge-mes-pg-", base)?;
        let data = dir.path().join("data");
        run(Command::new("cp").arg("-a").arg(template).arg(&data))
            .await
            .context("copy the initdb template")?;
        pg.chown(dir.path()).await?;
        let settings = options.settings;
        let mut last_err = None;
        for _ in 0..PORT_ATTEMPTS {
            let port = process::free_port()?;
            match launch(pg, port, dir.path(), &settings).await {
                Ok(child) => {
                    return Ok(Self {
                        port,
                        dir,
                        child: Some(child),
                        settings,
                    })
                }
                Err(e) if is_port_in_use(&e) => last_err = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last_err.unwrap_or_else(|| anyhow!("postgres did not start")))
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `postgres://postgres@127.0.0.1:<port>/<db>`.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// The temp dir holding `data/`, the unix socket and `postgres.log`.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The server's log (stderr of every start, appended).
    pub fn log_path(&self) -> PathBuf {
        log_path(self.dir.path())
    }

    /// Creates database `name` and returns its URL.
    pub async fn create_database(&self, name: &str) -> anyhow::Result<String> {
        create_database_at(&self.url("postgres"), name).await?;
        Ok(self.url(name))
    }

    /// Fast shutdown (SIGINT: disconnect clients, checkpoint) and wait for the exit.
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            process::terminate(&mut child, libc::SIGINT, STOP_GRACE).await?;
        }
        Ok(())
    }

    /// Crash: SIGKILL the postmaster and all its backends at once, as if the server process tree
    /// died (what the OS already had of its writes stays). [`restart`](Self::restart) then runs
    /// crash recovery; every commit that returned survives.
    pub async fn kill(&mut self) -> anyhow::Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        // Freeze the postmaster so that it forks no backend between the listing and the kill.
        process::signal(child.id(), libc::SIGSTOP)?;
        let backends = process::children_of(child.id());
        process::terminate(&mut child, libc::SIGKILL, STOP_GRACE).await?;
        for pid in &backends {
            process::signal(*pid, libc::SIGKILL)?;
        }
        // Backends still attached to the shared memory block would make the next start refuse.
        let deadline = Instant::now() + Duration::from_secs(10);
        while backends.iter().any(|&pid| process::is_alive(pid)) {
            if Instant::now() >= deadline {
                bail!("postgres backends {backends:?} survived SIGKILL");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(())
    }

    /// Starts the server again (stopping it first if it runs) on the same port and data dir and
    /// waits until it accepts connections. Works after [`stop`](Self::stop) or [`kill`](Self::kill).
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.stop().await?;
        let pg = PgInstall::get().await?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match launch(pg, self.port, self.dir.path(), &self.settings).await {
                Ok(child) => {
                    self.child = Some(child);
                    return Ok(());
                }
                Err(e) if is_transient_start_error(&e) && Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Process id of the running postmaster (e.g. to `SIGSTOP` it and simulate a hang).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// True while the postmaster runs.
    pub fn is_running(&self) -> bool {
        self.child
            .as_ref()
            .is_some_and(|c| process::is_alive(c.id()))
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SIGQUIT: immediate shutdown; the postmaster takes its backends down with it.
            process::terminate_blocking(&mut child, libc::SIGQUIT, Duration::from_secs(10));
        }
    }
}

impl std::fmt::Debug for PgServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgServer")
            .field("url", &self.url("postgres"))
            .field("dir", &self.dir.path())
            .field("running", &self.is_running())
            .finish()
    }
}

/// Creates database `name` on the server `admin_url` points at (any database of it).
pub(crate) async fn create_database_at(admin_url: &str, name: &str) -> anyhow::Result<()> {
    let mut conn = sqlx::PgConnection::connect(admin_url)
        .await
        .with_context(|| format!("connect to {}", redact(admin_url)))?;
    let sql = format!("CREATE DATABASE {}", quote_ident(name));
    sqlx::query(&sql)
        .execute(&mut conn)
        .await
        .with_context(|| format!("create database {name:?}"))?;
    conn.close().await.ok();
    Ok(())
}

/// `"name"` with embedded quotes doubled.
fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The URL without its password, for error messages.
pub(crate) fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let Some((userinfo, host)) = rest.split_once('@') else {
        return url.to_owned();
    };
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_owned(),
    }
}

fn log_path(dir: &Path) -> PathBuf {
    dir.join("postgres.log")
}

fn is_port_in_use(e: &anyhow::Error) -> bool {
    format!("{e:#}").contains("Address already in use")
}

/// Errors a restart right after a crash may meet while the old server's leftovers go away.
fn is_transient_start_error(e: &anyhow::Error) -> bool {
    let text = format!("{e:#}");
    text.contains("Address already in use")
        || text.contains("is still in use")
        || text.contains("lock file")
}

/// Spawns the postmaster on `port` with data and socket in `dir` and waits until it is ready.
async fn launch(
    pg: &PgInstall,
    port: u16,
    dir: &Path,
    settings: &[(String, String)],
) -> anyhow::Result<Child> {
    let log_path = log_path(dir);
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("open {}", log_path.display()))?;
    let mut cmd = pg.command("postgres");
    cmd.arg("-D")
        .arg(dir.join("data"))
        .args(["-p", &port.to_string()])
        .arg("-k")
        .arg(dir);
    for (name, value) in settings {
        cmd.arg("-c").arg(format!("{name}={value}"));
    }
    cmd.stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    let mut child = process::spawn_owned(cmd, libc::SIGQUIT).context("spawn postgres")?;
    match wait_ready(pg, port, &mut child).await {
        Ok(()) => Ok(child),
        Err(e) => {
            process::terminate(&mut child, libc::SIGQUIT, Duration::from_secs(5))
                .await
                .ok();
            Err(e.context(format!(
                "postgres on port {port} did not become ready; last log lines:\n{}",
                process::log_tail(&log_path, 20)
            )))
        }
    }
}

/// Polls `pg_isready` until the server accepts connections.
async fn wait_ready(pg: &PgInstall, port: u16, child: &mut Child) -> anyhow::Result<()> {
    let deadline = Instant::now() + READY_TIMEOUT;
    let mut delay = Duration::from_millis(10);
    loop {
        if let Some(status) = child.try_wait()? {
            bail!("postgres exited during startup ({status})");
        }
        let status = tokio::process::Command::new(pg.bin("pg_isready"))
            .args(["-q", "-h", "127.0.0.1", "-U", "postgres", "-d", "postgres"])
            .args(["-t", "2", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await
            .context("run pg_isready")?;
        if status.success() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("timed out waiting for postgres to accept connections");
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_millis(100));
    }
}

/// The PostgreSQL installation: its binaries and the OS user that runs them.
#[derive(Debug)]
struct PgInstall {
    bindir: PathBuf,
    /// `(uid, gid)` of the `postgres` user when running as root.
    run_as: Option<(u32, u32)>,
    /// e.g. `15.19`, from `postgres --version`.
    version: String,
    /// Where the template and the servers' dirs go (`/dev/shm` where possible).
    base_dir: PathBuf,
    template: OnceCell<PathBuf>,
}

impl PgInstall {
    async fn get() -> anyhow::Result<&'static PgInstall> {
        static INSTALL: OnceCell<PgInstall> = OnceCell::const_new();
        INSTALL.get_or_try_init(Self::discover).await
    }

    async fn discover() -> anyhow::Result<Self> {
        let bindir = find_bindir().await?;
        let run_as = if process::is_root() {
            Some(lookup_user("postgres").context(
                "running as root, so postgres must run as the `postgres` OS user, which is missing",
            )?)
        } else {
            None
        };
        let out = run(Command::new(bindir.join("postgres")).arg("--version")).await?;
        // "postgres (PostgreSQL) 15.19 (Debian 15.19-0+deb12u1)" -> "15.19"
        let version = out
            .split_whitespace()
            .find(|w| w.starts_with(|c: char| c.is_ascii_digit()))
            .unwrap_or("unknown")
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '.')
            .collect();
        let base_dir = match std::env::var_os("EDGE_MES_TESTKIT_PG_DIR") {
            Some(dir) => PathBuf::from(dir),
            None => process::fast_temp_dir(),
        };
        Ok(Self {
            bindir,
            run_as,
            version,
            base_dir,
            template: OnceCell::new(),
        })
    }

    fn bin(&self, name: &str) -> PathBuf {
        self.bindir.join(name)
    }

    /// A command for a server binary, run as the `postgres` user when we are root.
    fn command(&self, name: &str) -> Command {
        let mut cmd = Command::new(self.bin(name));
        if let Some((uid, gid)) = self.run_as {
            cmd.uid(uid).gid(gid);
            cmd.env("HOME", "/tmp").env("USER", "postgres");
        }
        cmd.current_dir("/");
        cmd
    }

    /// Hands `path` (not its contents) to the `postgres` user when we are root.
    async fn chown(&self, path: &Path) -> anyhow::Result<()> {
        if let Some((uid, gid)) = self.run_as {
            run(Command::new("chown").arg(format!("{uid}:{gid}")).arg(path)).await?;
        }
        Ok(())
    }

    /// The initdb'd template data dir, made once per machine and version.
    async fn template(&self) -> anyhow::Result<&Path> {
        self.template
            .get_or_try_init(|| self.make_template())
            .await
            .map(PathBuf::as_path)
    }

    async fn make_template(&self) -> anyhow::Result<PathBuf> {
        let root = self.base_dir.join("edge-mes-testkit");
        std::fs::create_dir_all(&root).with_context(|| format!("create {}", root.display()))?;
        let user = match self.run_as {
            Some((uid, _)) => format!("u{uid}"),
            None => "self".to_owned(),
        };
        let name = format!("pg{}-{user}-template-{TEMPLATE_VERSION}", self.version);
        let ready = root.join(&name);
        if ready.join("PG_VERSION").is_file() && ready.join("postgresql.conf").is_file() {
            return Ok(ready);
        }
        let scratch = tempfile::Builder::new()
            .prefix(&format!("{name}-building-"))
            .tempdir_in(&root)?;
        self.chown(scratch.path()).await?;
        let data = scratch.path().join("data");
        let mut initdb = self.command("initdb");
        initdb
            .arg("-D")
            .arg(&data)
            .args(["-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C"])
            .args(["--no-sync", "--no-instructions"]);
        run(&mut initdb).await.context("initdb")?;
        let conf = data.join("postgresql.conf");
        let mut text = std::fs::read_to_string(&conf)?;
        text.push_str(TEST_SETTINGS);
        std::fs::write(&conf, text)?;
        match std::fs::rename(&data, &ready) {
            Ok(()) => Ok(ready),
            // Another test binary won the race; its template is as good as ours.
            Err(_) if ready.join("PG_VERSION").is_file() => Ok(ready),
            Err(e) => Err(e).with_context(|| format!("rename the template to {}", ready.display())),
        }
    }
}

/// `pg_config --bindir`, else the newest `/usr/lib/postgresql/<n>/bin`; `EDGE_MES_PG_BINDIR`
/// overrides both.
async fn find_bindir() -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os("EDGE_MES_PG_BINDIR") {
        return Ok(PathBuf::from(dir));
    }
    if let Ok(out) = run(Command::new("pg_config").arg("--bindir")).await {
        let dir = PathBuf::from(out.trim());
        if dir.join("postgres").is_file() {
            return Ok(dir);
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let major = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("postgres").is_file().then_some((major, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin).ok_or_else(|| {
        anyhow!(
            "no PostgreSQL server binaries found (pg_config --bindir, /usr/lib/postgresql/*/bin); \
             install postgresql or set EDGE_MES_PG_BINDIR"
        )
    })
}

/// `(uid, gid)` of an OS user, from `/etc/passwd`.
fn lookup_user(name: &str) -> anyhow::Result<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").context("read /etc/passwd")?;
    passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.len() > 3 && f[0] == name)
        .and_then(|f| Some((f[2].parse().ok()?, f[3].parse().ok()?)))
        .ok_or_else(|| anyhow!("no user {name:?} in /etc/passwd"))
}

/// Runs a short command to completion; its stdout on success, its output in the error otherwise.
async fn run(cmd: &mut Command) -> anyhow::Result<String> {
    let mut cmd = tokio::process::Command::from(std::mem::replace(cmd, Command::new("true")));
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .await
        .with_context(|| format!("run {:?}", cmd.as_std()))?;
    if !out.status.success() {
        bail!(
            "{:?} failed ({}): {}{}",
            cmd.as_std(),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
