//! Child processes that never outlive the test binary.
//!
//! Servers are spawned by one long-lived thread with `PR_SET_PDEATHSIG`, so the kernel signals them
//! when the test process exits in any way: normally, by a panic that skips a `Drop` (a server kept
//! in a `static`), or by `SIGKILL`. The death signal fires when the *spawning thread* exits, which
//! is why spawning goes through one thread that lives as long as the process, not the test thread.

use std::io::{self, Read, Seek, SeekFrom};
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};
use std::sync::mpsc;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};

type SpawnRequest = (Command, libc::c_int, mpsc::Sender<io::Result<Child>>);

/// Spawns `cmd` so that it receives `death_signal` when this process exits.
pub(crate) fn spawn_owned(cmd: Command, death_signal: libc::c_int) -> io::Result<Child> {
    static SPAWNER: OnceLock<mpsc::Sender<SpawnRequest>> = OnceLock::new();
    let sender = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        std::thread::Builder::new()
            .name("testkit-spawner".to_owned())
            .spawn(move || {
                for (mut cmd, sig, reply) in rx {
                    let _ = reply.send(spawn_with_death_signal(&mut cmd, sig));
                }
            })
            .expect("spawn the testkit-spawner thread");
        tx
    });
    let (reply_tx, reply_rx) = mpsc::channel();
    sender
        .send((cmd, death_signal, reply_tx))
        .map_err(|_| io::Error::other("testkit spawner thread is gone"))?;
    reply_rx
        .recv()
        .map_err(|_| io::Error::other("testkit spawner thread is gone"))?
}

#[allow(unsafe_code)]
fn spawn_with_death_signal(cmd: &mut Command, sig: libc::c_int) -> io::Result<Child> {
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: the closure runs in the forked child before exec and only calls the
    // async-signal-safe functions prctl(2) and getppid(2).
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, sig as libc::c_ulong, 0, 0, 0) != 0 {
                return Err(io::Error::last_os_error());
            }
            // The parent may have died between fork and prctl.
            if libc::getppid() != parent {
                return Err(io::Error::other("parent exited before the server started"));
            }
            Ok(())
        });
    }
    cmd.spawn()
}

/// Sends `sig` to `pid`; a process that is already gone is not an error.
#[allow(unsafe_code)]
pub(crate) fn signal(pid: u32, sig: libc::c_int) -> io::Result<()> {
    let pid = libc::pid_t::try_from(pid).map_err(io::Error::other)?;
    // SAFETY: kill(2) has no memory-safety preconditions.
    if unsafe { libc::kill(pid, sig) } == 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::ESRCH) {
        Ok(())
    } else {
        Err(e)
    }
}

#[allow(unsafe_code)]
pub(crate) fn is_root() -> bool {
    // SAFETY: geteuid(2) cannot fail and has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Waits for `child` to exit, polling without blocking the async runtime.
pub(crate) async fn wait_exit(
    child: &mut Child,
    timeout: Duration,
) -> io::Result<Option<ExitStatus>> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Blocking variant of [`wait_exit`], for `Drop`.
pub(crate) fn wait_exit_blocking(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            _ => return None,
        }
    }
}

/// Sends `sig`, waits up to `grace`, then SIGKILLs and reaps.
pub(crate) async fn terminate(
    child: &mut Child,
    sig: libc::c_int,
    grace: Duration,
) -> anyhow::Result<()> {
    if child.try_wait()?.is_some() {
        return Ok(());
    }
    signal(child.id(), sig)?;
    // A process a test froze with SIGSTOP handles nothing but SIGKILL until it continues.
    signal(child.id(), libc::SIGCONT)?;
    if wait_exit(child, grace).await?.is_some() {
        return Ok(());
    }
    child.kill()?;
    wait_exit(child, Duration::from_secs(10))
        .await?
        .ok_or_else(|| anyhow!("process {} survived SIGKILL", child.id()))?;
    Ok(())
}

/// Blocking variant of [`terminate`], for `Drop`.
pub(crate) fn terminate_blocking(child: &mut Child, sig: libc::c_int, grace: Duration) {
    if matches!(child.try_wait(), Ok(Some(_))) {
        return;
    }
    let _ = signal(child.id(), sig);
    let _ = signal(child.id(), libc::SIGCONT);
    if wait_exit_blocking(child, grace).is_none() {
        let _ = child.kill();
        let _ = wait_exit_blocking(child, Duration::from_secs(10));
    }
}

/// A port that was free a moment ago on 127.0.0.1 (the caller accepts the small race).
pub(crate) fn free_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("bind 127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// The last `lines` lines of a log file, for error messages.
pub(crate) fn log_tail(path: &Path, lines: usize) -> String {
    let Ok(mut file) = std::fs::File::open(path) else {
        return format!("(no log at {})", path.display());
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = file.seek(SeekFrom::Start(len.saturating_sub(16 * 1024)));
    let mut buf = Vec::new();
    let _ = file.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Child processes of `pid`, found by scanning `/proc` (parent pid is field 4 of `stat`).
pub(crate) fn children_of(pid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&child| stat_field(child, 1).and_then(|p| p.parse::<u32>().ok()) == Some(pid))
        .collect()
}

/// True while `pid` exists and is not a zombie.
pub(crate) fn is_alive(pid: u32) -> bool {
    matches!(stat_field(pid, 0).as_deref(), Some(state) if state != "Z" && state != "X")
}

/// Field `n` (0 = state, 1 = ppid) after the `comm` field of `/proc/<pid>/stat`.
fn stat_field(pid: u32, n: usize) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_comm = &stat[stat.rfind(')')? + 1..];
    after_comm.split_whitespace().nth(n).map(str::to_owned)
}

/// File in every server dir naming the process that owns it.
const OWNER_FILE: &str = "testkit.owner";

/// A fresh temp dir `<base>/<prefix>XXXXXX` owned by this process.
///
/// Dirs of servers that were never dropped (kept in a `static`) outlive their process; the first
/// call in each process removes such dirs whose owner process is gone.
pub(crate) fn server_dir(prefix: &str, base: &Path) -> anyhow::Result<tempfile::TempDir> {
    static SWEEP: std::sync::Once = std::sync::Once::new();
    let prefixes = ["edge-mes-nats-", "edge-mes-pg-"];
    let defaults = [std::env::temp_dir(), PathBuf::from(SHM_DIR)];
    SWEEP.call_once(|| {
        for base in &defaults {
            sweep_stale_dirs(base, &prefixes);
        }
    });
    // A caller's own base (e.g. a benchmark's data dir on disk) is swept on each use: a killed
    // run must not leave gigabytes behind there either.
    if !defaults.iter().any(|d| d == base) {
        sweep_stale_dirs(base, &prefixes);
    }
    let dir = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(base)
        .with_context(|| format!("create a temp dir {}/{prefix}*", base.display()))?;
    std::fs::write(dir.path().join(OWNER_FILE), std::process::id().to_string())?;
    Ok(dir)
}

const SHM_DIR: &str = "/dev/shm";

/// Bytes available to unprivileged users on the file system holding `path`.
#[allow(unsafe_code)]
fn free_bytes(path: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    let mut stat = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `c_path` is a valid NUL-terminated string and `stat` points to writable memory of
    // the right type; statvfs(3) initialises it when it returns 0.
    let stat = unsafe {
        if libc::statvfs(c_path.as_ptr(), stat.as_mut_ptr()) != 0 {
            return None;
        }
        stat.assume_init()
    };
    // The field types differ between targets (u32 on some 32-bit ones).
    #[allow(clippy::useless_conversion)]
    Some(u64::from(stat.f_bavail).saturating_mul(u64::from(stat.f_frsize)))
}

/// Where to put data that is copied and rewritten a lot: `/dev/shm` (tmpfs) when it is a
/// writable directory with at least 2 GiB free (a container's 64 MiB `/dev/shm` is not), else the
/// temp dir. Creating a data dir of ~1,000 files there takes a tenth of the time it takes on a
/// disk file system of a loaded machine.
pub(crate) fn fast_temp_dir() -> PathBuf {
    let shm = Path::new(SHM_DIR);
    let writable = shm.is_dir()
        && free_bytes(shm).is_some_and(|free| free >= 2 << 30)
        && tempfile::Builder::new()
            .prefix("edge-mes-probe-")
            .tempfile_in(shm)
            .is_ok();
    if writable {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    }
}

fn sweep_stale_dirs(base: &Path, prefixes: &[&str]) {
    let Ok(entries) = std::fs::read_dir(base) else {
        return;
    };
    for entry in entries.filter_map(|e| e.ok()) {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if !prefixes.iter().any(|p| name.starts_with(p)) {
            continue;
        }
        let owner = std::fs::read_to_string(entry.path().join(OWNER_FILE))
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok());
        if let Some(pid) = owner {
            if pid != std::process::id() && !is_alive(pid) {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
}
