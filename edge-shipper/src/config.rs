//! Command line and environment configuration. Every flag has an environment fallback.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use protocol::reading::DEFAULT_MAX_LINE_BYTES;
use protocol::streams::DEFAULT_MAX_MESSAGE_BYTES;
use protocol::Names;
use service::nats::NatsArgs;

use crate::tailer::{CutLimits, TailerConfig};

pub use service::telemetry::LogFormat;

/// Tails JSONL files and ships their complete lines to NATS JetStream, at least once: a file's
/// offset is checkpointed only after JetStream acknowledged every message below it.
#[derive(Debug, Clone, Parser)]
#[command(name = "edge-shipper", version, about, long_about = None)]
pub struct Config {
    /// Glob of the files to ship; rotated files should not match it (copytruncate copies may).
    #[arg(long, env = "EDGE_WATCH", default_value = "./hotdata/*.jsonl")]
    pub watch: String,

    /// Directory for checkpoints.json; deleting it re-ships everything (deduplicated downstream).
    #[arg(long, env = "EDGE_STATE_DIR", default_value = "./.state/edge-shipper")]
    pub state_dir: PathBuf,

    /// Site id, the third token of the readings subject.
    #[arg(long, env = "EDGE_SITE", default_value = "default")]
    pub site: String,

    /// Edge box id, the last subject token and the scope of every source name; default: hostname.
    #[arg(long, env = "EDGE_BOX_ID", default_value_t = hostname())]
    pub box_id: String,

    #[command(flatten)]
    pub nats: NatsArgs,

    #[command(flatten)]
    pub shutdown: service::shutdown::ShutdownArgs,

    /// Isolated stream and subject names (`READINGS_<tag>`, `edge.readings_<tag>.>`), for tests
    /// and benchmarks on a shared server.
    #[arg(long, env = "EDGE_NAMESPACE")]
    pub namespace: Option<String>,

    /// Largest message payload in bytes (complete lines only).
    #[arg(long, env = "EDGE_MAX_MESSAGE_BYTES", default_value_t = DEFAULT_MAX_MESSAGE_BYTES)]
    pub max_message_bytes: usize,

    /// Longest line in bytes, without its line ending; longer lines travel as `oversize` messages
    /// carrying only their first bytes.
    #[arg(long, env = "EDGE_MAX_LINE_BYTES", default_value_t = DEFAULT_MAX_LINE_BYTES)]
    pub max_line_bytes: usize,

    /// Batching window, in milliseconds: it opens with the first change noticed (or line read)
    /// and when it closes the new lines of every file are sent together, so no line waits
    /// longer than this for more.
    #[arg(long, env = "EDGE_LINGER_MS", default_value_t = 50)]
    pub linger_ms: u64,

    /// Most messages published and not yet acknowledged.
    #[arg(long, env = "EDGE_MAX_IN_FLIGHT", default_value_t = 256,
        value_parser = clap::value_parser!(u64).range(1..=65_536))]
    pub max_in_flight: u64,

    /// Most payload bytes published and not yet acknowledged (bounds memory in backfill).
    #[arg(long, env = "EDGE_MAX_IN_FLIGHT_BYTES", default_value_t = 8 * 1024 * 1024)]
    pub max_in_flight_bytes: usize,

    /// Interval of the glob rescan that finds new, rotated and truncated files, in milliseconds.
    #[arg(long, env = "EDGE_RESCAN_INTERVAL_MS", default_value_t = 500,
        value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub rescan_interval_ms: u64,

    /// How long a file that no longer matches the glob is kept open after its last growth, in
    /// milliseconds.
    #[arg(long, env = "EDGE_ROTATE_WAIT_MS", default_value_t = 5000)]
    pub rotate_wait_ms: u64,

    /// Least time between two checkpoint writes, in milliseconds.
    #[arg(long, env = "EDGE_CHECKPOINT_INTERVAL_MS", default_value_t = 1000,
        value_parser = clap::value_parser!(u64).range(1..))]
    pub checkpoint_interval_ms: u64,

    /// How long the checkpoint keeps a source whose file is gone, in seconds.
    #[arg(long, env = "EDGE_CHECKPOINT_TTL_SECS", default_value_t = 7 * 24 * 3600)]
    pub checkpoint_ttl_secs: u64,

    /// Address for the Prometheus `/metrics` endpoint, e.g. 127.0.0.1:9101; none when unset.
    #[arg(long, env = "EDGE_METRICS_ADDR")]
    pub metrics_addr: Option<SocketAddr>,

    /// Log format.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Human)]
    pub log_format: LogFormat,

    /// Exit 0 once every matching file is read to its last complete line, published,
    /// acknowledged and checkpointed.
    #[arg(long, env = "EDGE_UNTIL_CAUGHT_UP", action = clap::ArgAction::SetTrue,
        value_parser = clap::builder::BoolishValueParser::new())]
    pub until_caught_up: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("--max-message-bytes ({message}) must be at least --max-line-bytes + 2 ({needed})")]
    MessageSmallerThanLine { message: usize, needed: usize },
    #[error("--max-line-bytes must be at least 1")]
    ZeroLineBytes,
    #[error("--watch {pattern:?} is not a valid glob: {reason}")]
    BadGlob { pattern: String, reason: String },
    #[error("--box-id must not be empty")]
    EmptyBoxId,
}

impl Config {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.max_line_bytes == 0 {
            return Err(ConfigError::ZeroLineBytes);
        }
        let needed = self.max_line_bytes.saturating_add(2);
        if self.max_message_bytes < needed {
            return Err(ConfigError::MessageSmallerThanLine {
                message: self.max_message_bytes,
                needed,
            });
        }
        glob::Pattern::new(&self.watch).map_err(|e| ConfigError::BadGlob {
            pattern: self.watch.clone(),
            reason: e.to_string(),
        })?;
        if self.box_id.is_empty() {
            return Err(ConfigError::EmptyBoxId);
        }
        Ok(())
    }

    pub fn names(&self) -> Names {
        self.namespace
            .as_deref()
            .map_or_else(Names::default, Names::isolated)
    }

    pub fn tailer(&self) -> TailerConfig {
        TailerConfig {
            pattern: self.watch.clone(),
            box_id: self.box_id.clone(),
            limits: CutLimits {
                max_message_bytes: self.max_message_bytes,
                max_line_bytes: self.max_line_bytes,
            },
            linger: Duration::from_millis(self.linger_ms),
            rescan_interval: Duration::from_millis(self.rescan_interval_ms),
            rotate_wait: Duration::from_millis(self.rotate_wait_ms),
            forget_after: Duration::from_secs(self.checkpoint_ttl_secs),
            until_caught_up: self.until_caught_up,
        }
    }
}

/// This machine's host name, the default box id.
fn hostname() -> String {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .find_map(|p| {
            std::fs::read_to_string(p)
                .ok()
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
        })
        .or_else(|| std::env::var("HOSTNAME").ok().filter(|s| !s.is_empty()))
        .unwrap_or_else(|| "edge".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_cli_is_consistent_and_has_the_documented_defaults() {
        Config::command().debug_assert();
        let c = Config::try_parse_from(["edge-shipper"]).unwrap();
        assert_eq!(c.watch, "./hotdata/*.jsonl");
        assert_eq!(c.state_dir, PathBuf::from("./.state/edge-shipper"));
        assert_eq!(c.site, "default");
        assert!(!c.box_id.is_empty());
        assert_eq!(c.max_message_bytes, 256 * 1024);
        assert_eq!(c.max_line_bytes, 64 * 1024);
        assert_eq!(c.linger_ms, 50);
        assert_eq!(c.max_in_flight, 256);
        assert_eq!(c.rescan_interval_ms, 500);
        assert_eq!(c.rotate_wait_ms, 5000);
        assert_eq!(c.checkpoint_interval_ms, 1000);
        assert_eq!(c.checkpoint_ttl_secs, 604_800);
        assert_eq!(c.log_format, LogFormat::Human);
        assert_eq!(c.names(), Names::default());
        c.validate().unwrap();
    }

    #[test]
    fn inconsistent_limits_and_bad_globs_are_refused() {
        let c = Config::try_parse_from(["edge-shipper", "--max-message-bytes", "1000"]).unwrap();
        assert!(matches!(
            c.validate(),
            Err(ConfigError::MessageSmallerThanLine { .. })
        ));
        let c = Config::try_parse_from(["edge-shipper", "--watch", "a/[*.jsonl"]).unwrap();
        assert!(matches!(c.validate(), Err(ConfigError::BadGlob { .. })));
        assert!(Config::try_parse_from(["edge-shipper", "--rescan-interval-ms", "1001"]).is_err());
    }

    #[test]
    fn passwords_are_redacted_from_the_url() {
        let c = Config::try_parse_from([
            "edge-shipper",
            "--nats-url",
            "nats://u:secret@h1:4222,nats://h2:4222",
        ])
        .unwrap();
        assert_eq!(c.nats.url_redacted(), "nats://***@h1:4222,nats://h2:4222");
    }
}
