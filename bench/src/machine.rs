//! The machine a run was measured on: CPU, memory, kernel, versions, commit and load.

use std::process::Command;

use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub cpu_model: String,
    /// Logical CPUs this process may use.
    pub cores: usize,
    pub memory_mib: u64,
    pub kernel: String,
    pub os: String,
    pub rustc: String,
    pub nats_server: String,
    /// `SELECT version()`.
    pub postgres: String,
    /// e.g. `PostgreSQL 15.14`.
    pub postgres_short: String,
    /// The durability and memory settings in force (read back from the server) and the file
    /// system of a private server's data dir, e.g. `fsync=on ... data dir on ext2/ext3`.
    pub postgres_config: String,
    pub git_commit: String,
    /// Uncommitted changes in the work tree (other people's work in progress included).
    pub git_dirty: bool,
    /// 1, 5 and 15 minute load averages at the start and the end of the run.
    pub load_start: String,
    pub load_end: String,
}

impl Machine {
    /// Everything but the PostgreSQL version and the final load.
    pub fn describe() -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find_map(|l| {
                l.strip_prefix("model name")?
                    .split_once(':')
                    .map(|(_, v)| v.trim().to_owned())
            })
            .unwrap_or_else(|| "unknown CPU".to_owned());
        let memory_mib = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| crate::procstat::parse_status_kib(&m, "MemTotal"))
            .unwrap_or(0)
            / 1024;
        let os = std::fs::read_to_string("/etc/os-release")
            .ok()
            .and_then(|t| {
                t.lines().find_map(|l| {
                    l.strip_prefix("PRETTY_NAME=")
                        .map(|v| v.trim_matches('"').to_owned())
                })
            })
            .unwrap_or_default();
        let root = testkit::bins::workspace_root();
        let git = |args: &[&str]| {
            Command::new("git")
                .arg("-C")
                .arg(&root)
                .args(args)
                .output()
                .ok()
                .filter(|o| o.status.success())
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        };
        Self {
            cpu_model,
            cores: std::thread::available_parallelism().map_or(1, usize::from),
            memory_mib,
            kernel: read_trimmed("/proc/sys/kernel/osrelease"),
            os,
            rustc: env!("BENCH_RUSTC_VERSION").to_owned(),
            nats_server: output("nats-server", &["--version"])
                .map(|v| v.trim_start_matches("nats-server: ").to_owned())
                .unwrap_or_else(|| "unknown".to_owned()),
            postgres: String::new(),
            postgres_short: String::new(),
            postgres_config: String::new(),
            git_commit: git(&["rev-parse", "--short=12", "HEAD"])
                .unwrap_or_else(|| "unknown".to_owned()),
            git_dirty: git(&["status", "--porcelain"]).is_some_and(|s| !s.is_empty()),
            load_start: load_average(),
            load_end: String::new(),
        }
    }

    pub fn set_postgres(&mut self, version: String) {
        self.postgres_short = version
            .split_whitespace()
            .take(2)
            .collect::<Vec<_>>()
            .join(" ");
        self.postgres = version;
    }
}

/// The file system type holding `path` (`stat -f`), e.g. `tmpfs` or `ext2/ext3`.
pub fn file_system(path: &std::path::Path) -> String {
    let path = path.to_string_lossy();
    output("stat", &["-f", "-c", "%T", &path]).unwrap_or_else(|| "unknown".to_owned())
}

/// `/proc/loadavg`'s first three fields.
pub fn load_average() -> String {
    read_trimmed("/proc/loadavg")
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// The 1-minute load average.
pub fn load_1m() -> f64 {
    load_average()
        .split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

fn read_trimmed(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

fn output(program: &str, args: &[&str]) -> Option<String> {
    Command::new(program)
        .args(args)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
}
