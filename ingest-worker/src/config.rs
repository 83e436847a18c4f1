//! Command-line and environment configuration.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use protocol::reading::{DEFAULT_MAX_FIELD_BYTES, DEFAULT_MAX_LINE_BYTES};
use protocol::{Limits, Names};
use service::db::MigrateMode;
use service::nats::NatsArgs;

pub use service::telemetry::LogFormat;

/// Pulls readings from NATS JetStream, validates them and COPY-loads them into PostgreSQL /
/// TimescaleDB exactly once. Run as many replicas as you like: they share one durable consumer.
#[derive(Debug, Clone, Parser)]
#[command(name = "ingest-worker", version, about, long_about = None)]
pub struct Config {
    #[command(flatten)]
    pub nats: NatsArgs,

    #[command(flatten)]
    pub shutdown: service::shutdown::ShutdownArgs,

    /// PostgreSQL URL. The database is created if it does not exist; migrations are applied at
    /// start (safe with several workers starting at once).
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/edge_mes",
        hide_env_values = true
    )]
    pub database_url: service::secrets::SecretUrl,

    /// Whether to apply the schema migrations at start: `auto` when the login may change the
    /// schema (its owner, a superuser; a least-privilege login only checks they were applied),
    /// `always`, or `never` (only check).
    #[arg(long, env = "DB_MIGRATE", value_enum, default_value_t = MigrateMode::Auto)]
    pub migrate: MigrateMode,

    /// Use stream, subject and consumer names suffixed with this tag (tests, benchmarks, several
    /// deployments on one NATS account). Empty: the standard names (READINGS, edge.readings.>).
    #[arg(long, env = "EDGE_NAMESPACE", default_value = "")]
    pub namespace: String,

    /// Batches loaded concurrently, each in its own transaction on its own connection.
    #[arg(long, env = "INGEST_CONCURRENCY", default_value_t = 2)]
    pub concurrency: usize,

    /// Most messages in one batch (one transaction).
    #[arg(long, env = "INGEST_BATCH_MAX_MESSAGES", default_value_t = 64)]
    pub batch_max_messages: usize,

    /// Most payload bytes in one batch. 8 MiB measured best on the benchmark's backfill (faster
    /// than 4 and 16 MiB, half the memory of 16).
    #[arg(long, env = "INGEST_BATCH_MAX_BYTES", default_value_t = 8 * 1024 * 1024)]
    pub batch_max_bytes: usize,

    /// How long to wait for more messages to fill a batch once one has arrived.
    #[arg(long, env = "INGEST_BATCH_LINGER_MS", default_value_t = 20)]
    pub batch_linger_ms: u64,

    /// Longest accepted line in bytes; longer lines are rejected as line_too_long.
    #[arg(long, env = "INGEST_MAX_LINE_BYTES", default_value_t = DEFAULT_MAX_LINE_BYTES)]
    pub max_line_bytes: usize,

    /// Longest accepted resource_id, sensor, work_order_id, operation_id or unit in bytes.
    #[arg(long, env = "INGEST_MAX_FIELD_BYTES", default_value_t = DEFAULT_MAX_FIELD_BYTES)]
    pub max_field_bytes: usize,

    /// Messages delivered but not yet acknowledged, across all workers of the consumer. Applied
    /// when the consumer is created.
    #[arg(long, env = "INGEST_MAX_ACK_PENDING", default_value_t = 4096)]
    pub max_ack_pending: i64,

    /// Seconds before JetStream redelivers a message that was not acknowledged.
    #[arg(long, env = "INGEST_ACK_WAIT_SECS", default_value_t = 60)]
    pub ack_wait_secs: u64,

    /// Replicas of the streams (1 on a single server, 3 in a cluster).
    #[arg(long, env = "NATS_STREAM_REPLICAS", default_value_t = 1)]
    pub stream_replicas: usize,

    /// Size limit of the READINGS stream. It holds only what is not yet loaded (work-queue
    /// retention), so this bounds the backlog: when it is reached, shippers are refused and wait
    /// (discard new) until the workers catch up.
    #[arg(long, env = "READINGS_STREAM_MAX_BYTES", default_value_t = protocol::streams::READINGS_MAX_BYTES)]
    pub stream_max_bytes: i64,

    /// Age limit of the READINGS stream, in hours. A message still not loaded at this age is
    /// deleted by JetStream although the shipper was told it is stored: the longest outage of
    /// the workers or the database that loses nothing. A warning is logged at half of it.
    #[arg(long, env = "READINGS_STREAM_MAX_AGE_HOURS", default_value_t = 7 * 24)]
    pub stream_max_age_hours: u64,

    /// Size limit of the READINGS_DLQ stream; when full, its oldest dead letters are dropped
    /// (each is also a row of ingest_dead_letters).
    #[arg(long, env = "DLQ_STREAM_MAX_BYTES", default_value_t = protocol::streams::DLQ_MAX_BYTES)]
    pub dlq_max_bytes: i64,

    /// How often the READINGS backlog (bytes, oldest message) is read for metrics and warnings.
    #[arg(long, env = "INGEST_BACKLOG_CHECK_SECS", default_value_t = 15)]
    pub backlog_check_secs: u64,

    /// Daily partitions to create ahead of today (plain PostgreSQL).
    #[arg(long, env = "INGEST_PARTITION_DAYS_AHEAD", default_value_t = 3)]
    pub partition_days_ahead: u32,

    /// Daily partitions to create behind today, for late data (plain PostgreSQL).
    #[arg(long, env = "INGEST_PARTITION_DAYS_BACK", default_value_t = 2)]
    pub partition_days_back: u32,

    /// Remove readings older than this many days (whole UTC days: partitions or TimescaleDB
    /// chunks, and their rows in readings_default); 0 keeps all.
    #[arg(long, env = "READINGS_RETENTION_DAYS", default_value_t = 90)]
    pub retention_days: u32,

    /// Whether retention waits until a day is archived and verified (edge-mes-archiver):
    /// `auto` once an archiver has written to this database, `always`, or `never`.
    #[arg(
        long,
        env = "READINGS_RETENTION_WAIT_FOR_ARCHIVE",
        value_enum,
        default_value_t = ArchiveGate::Auto
    )]
    pub retention_wait_for_archive: ArchiveGate,

    /// TimescaleDB: compress chunks older than this many days (segmented by resource and
    /// sensor); 0 never compresses. No effect on plain PostgreSQL.
    #[arg(long, env = "READINGS_COMPRESS_AFTER_DAYS", default_value_t = 7)]
    pub compress_after_days: u32,

    /// Exit 0 once nothing was pending for this many seconds (backfill, tests, benchmarks).
    #[arg(long, env = "INGEST_UNTIL_IDLE_SECS")]
    pub until_idle: Option<u64>,

    /// Serve Prometheus metrics on this address (e.g. 0.0.0.0:9102).
    #[arg(long, env = "INGEST_METRICS_ADDR")]
    pub metrics_addr: Option<SocketAddr>,

    /// Log format.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value = "human")]
    pub log_format: LogFormat,

    /// Site gateways whose streams READINGS sources, comma-separated: `BKK` (the site as its
    /// shippers send it; JetStream domain `bkk`) or `BKK=<domain>`. Added at start if missing,
    /// never removed; other sources are kept (docs/scaling.md).
    #[arg(
        long = "site-gateway",
        env = "INGEST_SITE_GATEWAYS",
        value_delimiter = ','
    )]
    pub site_gateways: Vec<crate::site_gateway::SiteGateway>,

    /// Load only these sites, comma-separated (one database per plant): the consumer takes only
    /// their subjects and has a durable name of its own (`ingest_BER_BKK`). Empty: all sites,
    /// durable `ingest`. Filters of deployments on one stream must not overlap.
    #[arg(long, env = "INGEST_SITES", value_delimiter = ',')]
    pub sites: Vec<crate::site_filter::Site>,
}

impl Config {
    pub fn names(&self) -> Names {
        let names = if self.namespace.is_empty() {
            Names::default()
        } else {
            Names::isolated(&self.namespace)
        };
        crate::site_filter::limit_names(names, &self.sites)
    }

    pub fn limits(&self) -> Limits {
        Limits {
            max_line_bytes: self.max_line_bytes,
            max_field_bytes: self.max_field_bytes,
        }
    }

    pub fn batch_linger(&self) -> Duration {
        Duration::from_millis(self.batch_linger_ms)
    }

    /// A configuration with every default, for tests.
    pub fn for_urls(nats_url: &str, database_url: &str) -> Self {
        let mut c = Self::parse_from(["ingest-worker"]);
        c.nats = NatsArgs::for_url(nats_url);
        c.database_url = service::secrets::SecretUrl::new(database_url);
        c
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
    fn defaults_target_local_services() {
        let c = Config::parse_from(["ingest-worker"]);
        assert_eq!(c.names(), Names::default());
        assert!(c.until_idle.is_none());
        let c = Config::parse_from(["ingest-worker", "--until-idle", "5", "--namespace", "t1"]);
        assert_eq!(c.until_idle, Some(5));
        assert_eq!(c.names().readings_stream, "READINGS_t1");
    }
}

/// Whether retention waits for the archive (`--retention-wait-for-archive`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum ArchiveGate {
    /// Wait once an archiver has written to this database.
    #[default]
    Auto,
    Always,
    Never,
}
