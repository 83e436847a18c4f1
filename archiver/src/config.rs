//! Command-line and environment configuration.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use chrono::NaiveDate;
use clap::{Args, Parser, Subcommand};
use service::db::MigrateMode;

pub use service::telemetry::LogFormat;

/// The variables of the archiver that carry secrets; each may come from `<name>_FILE` (besides
/// `DATABASE_URL`, which [`service::secrets::load`] handles).
pub const SECRET_VARS: [&str; 2] = ["ARCHIVER_S3_ACCESS_KEY_ID", "ARCHIVER_S3_SECRET_ACCESS_KEY"];

/// edge-mes-archiver: archives closed days of readings from PostgreSQL/TimescaleDB as Parquet
/// files with manifests (SHA-256 per file, schema fingerprint, Merkle root over the row groups,
/// the ingest positions covered), verifies the archive, and replays it into a database exactly
/// once. See docs/archive.md.
#[derive(Debug, Clone, Parser)]
#[command(name = "edge-mes-archiver", version, about, long_about = None)]
pub struct Config {
    #[command(subcommand)]
    pub command: Command,

    /// PostgreSQL URL (the operational database: rows are read from it, the archive's state is
    /// kept in it).
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/edge_mes",
        hide_env_values = true,
        global = true
    )]
    pub database_url: service::secrets::SecretUrl,

    /// Whether to apply the schema migrations at start: `auto` when the login may change the
    /// schema (its owner, a superuser; a least-privilege login only checks they were applied),
    /// `always`, or `never` (only check).
    #[arg(long, env = "DB_MIGRATE", value_enum, default_value_t = MigrateMode::Auto, global = true)]
    pub migrate: MigrateMode,

    #[command(flatten)]
    pub target: TargetArgs,

    #[command(flatten)]
    pub shutdown: service::shutdown::ShutdownArgs,

    /// Log format.
    #[arg(
        long,
        env = "LOG_FORMAT",
        value_enum,
        default_value = "human",
        global = true
    )]
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Archive closed days, and days touched by late rows, until SIGTERM.
    Run(RunArgs),
    /// Re-read manifests and their files: row counts, SHA-256, schema, Merkle root.
    Verify(VerifyArgs),
    /// Load archived days back into the database, each part exactly once.
    Replay(ReplayArgs),
}

#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// A UTC day is closed, and archived, once it ended this many minutes ago; later rows for it
    /// are archived again (the day's part is rewritten while its rows are in the database).
    #[arg(long, env = "ARCHIVER_GRACE_MINUTES", default_value_t = 60)]
    pub grace_minutes: u64,

    /// Seconds between looks for days to archive.
    #[arg(long, env = "ARCHIVER_POLL_SECS", default_value_t = 60)]
    pub poll_secs: u64,

    /// Archive what is pending once and exit (backfills, tests, benchmarks).
    #[arg(long, env = "ARCHIVER_ONCE")]
    pub once: bool,

    /// Directory for the spill files that group a day's rows by series (about the size of the
    /// day's rows; removed when the day is done). Default: the system's temporary directory.
    #[arg(long, env = "ARCHIVER_SPILL_DIR")]
    pub spill_dir: Option<PathBuf>,

    /// Serve Prometheus metrics on this address (e.g. 0.0.0.0:9104).
    #[arg(long, env = "ARCHIVER_METRICS_ADDR")]
    pub metrics_addr: Option<std::net::SocketAddr>,
}

impl RunArgs {
    pub fn grace(&self) -> Duration {
        Duration::from_secs(self.grace_minutes.saturating_mul(60))
    }

    pub fn poll(&self) -> Duration {
        Duration::from_secs(self.poll_secs.max(1))
    }

    pub fn spill_dir(&self) -> PathBuf {
        self.spill_dir.clone().unwrap_or_else(std::env::temp_dir)
    }
}

#[derive(Debug, Clone, Args)]
pub struct VerifyArgs {
    /// First UTC day to verify (YYYY-MM-DD); all when omitted.
    #[arg(long)]
    pub from: Option<NaiveDate>,
    /// Last UTC day to verify, inclusive.
    #[arg(long)]
    pub to: Option<NaiveDate>,
    /// Check only the archive, without the database: verified_at is not recorded, and a
    /// manifest is not compared with the one the database recorded.
    #[arg(long)]
    pub offline: bool,
}

#[derive(Debug, Clone, Args)]
pub struct ReplayArgs {
    /// First UTC day to load back (YYYY-MM-DD).
    #[arg(long)]
    pub from: NaiveDate,
    /// Last UTC day to load back, inclusive.
    #[arg(long)]
    pub to: NaiveDate,
}

/// Where the archive is written.
#[derive(Debug, Clone, Args)]
pub struct TargetArgs {
    /// The archive: a local directory (a path or `file:///path`) or `s3://bucket/prefix` for
    /// S3-compatible storage (MinIO, Ceph, AWS).
    #[arg(
        long,
        env = "ARCHIVER_TARGET",
        default_value = "/var/lib/edge-mes/archive",
        global = true
    )]
    pub target: String,

    /// S3 endpoint, e.g. `http://127.0.0.1:9000` for MinIO; AWS's when omitted.
    #[arg(long, env = "ARCHIVER_S3_ENDPOINT", global = true)]
    pub s3_endpoint: Option<String>,

    /// S3 region (MinIO accepts any).
    #[arg(
        long,
        env = "ARCHIVER_S3_REGION",
        default_value = "us-east-1",
        global = true
    )]
    pub s3_region: String,

    /// S3 access key id (or ARCHIVER_S3_ACCESS_KEY_ID_FILE).
    #[arg(
        long,
        env = "ARCHIVER_S3_ACCESS_KEY_ID",
        hide_env_values = true,
        global = true
    )]
    pub s3_access_key_id: Option<Secret>,

    /// S3 secret access key (or ARCHIVER_S3_SECRET_ACCESS_KEY_FILE).
    #[arg(
        long,
        env = "ARCHIVER_S3_SECRET_ACCESS_KEY",
        hide_env_values = true,
        global = true
    )]
    pub s3_secret_access_key: Option<Secret>,

    /// Address buckets as `endpoint/bucket/key` (path style, what MinIO expects) rather than
    /// `bucket.endpoint/key` (virtual-hosted style).
    #[arg(
        long,
        env = "ARCHIVER_S3_PATH_STYLE",
        default_value_t = true,
        action = clap::ArgAction::Set,
        global = true
    )]
    pub s3_path_style: bool,

    /// Allow a plain-HTTP endpoint (a MinIO on the same host or network).
    #[arg(long, env = "ARCHIVER_S3_ALLOW_HTTP", global = true)]
    pub s3_allow_http: bool,
}

/// A secret value: its `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(s.to_owned()))
    }
}

impl TargetArgs {
    /// A local directory target, for tests and benchmarks.
    pub fn local(dir: PathBuf) -> Self {
        let mut t = Config::parse_from(["edge-mes-archiver", "run"]).target;
        t.target = dir.display().to_string();
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Config::command().debug_assert();
    }

    #[test]
    fn subcommands_parse_with_their_flags() {
        let c = Config::parse_from([
            "edge-mes-archiver",
            "replay",
            "--from",
            "2025-08-22",
            "--to",
            "2025-08-23",
            "--target",
            "s3://b/p",
            "--s3-path-style",
            "false",
        ]);
        let Command::Replay(r) = c.command else {
            panic!("not replay")
        };
        assert_eq!(r.from, NaiveDate::from_ymd_opt(2025, 8, 22).unwrap());
        assert_eq!(c.target.target, "s3://b/p");
        assert!(!c.target.s3_path_style);
        let c = Config::parse_from(["edge-mes-archiver", "run", "--once"]);
        let Command::Run(r) = c.command else {
            panic!("not run")
        };
        assert!(r.once);
        assert_eq!(r.grace(), Duration::from_secs(3600));
    }

    #[test]
    fn secrets_are_not_shown() {
        let s: Secret = "hunter2".parse().unwrap();
        assert!(!format!("{s:?}").contains("hunter2"));
    }
}
