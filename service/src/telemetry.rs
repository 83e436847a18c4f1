//! Logging set-up shared by the binaries.

use clap::ValueEnum;
use tracing_subscriber::EnvFilter;

/// `--log-format` / `LOG_FORMAT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Readable lines for a terminal or journald.
    Human,
    /// One JSON object per line, fields flattened, for log collectors.
    Json,
}

/// Installs the global subscriber: level from `RUST_LOG` (default `info`), output on stderr so
/// that stdout stays free for a command's own output.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}
