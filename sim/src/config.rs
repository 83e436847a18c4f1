//! Command-line and environment configuration.

use std::path::PathBuf;

use clap::Parser;
use service::shutdown::ShutdownArgs;
use service::telemetry::LogFormat;

/// Simulates a small line for demos and first runs: writes realistic JSONL sensor readings at
/// wall-clock time into a hot folder (for edge-shipper to tail) and drives production runs
/// through mes-api: start, counts every few seconds, a breakdown now and then, complete and start
/// the next work order at each shift change.
#[derive(Debug, Clone, Parser)]
#[command(name = "edge-mes-sim", version, about, long_about = None)]
pub struct Config {
    /// Folder the JSONL files go to, one file per resource (`<resource>.jsonl`).
    #[arg(long, env = "SIM_HOT_DIR", default_value = "./.state/sim/hotdata")]
    pub hot_dir: PathBuf,

    /// Resources of the line, comma separated.
    #[arg(
        long,
        env = "SIM_RESOURCES",
        value_delimiter = ',',
        default_value = "SMT01,SMT02,AOI01"
    )]
    pub resources: Vec<String>,

    /// Site id (readings' `meta.site`, the runs' site is mes-api's default site).
    #[arg(long, env = "SIM_SITE", default_value = "BKK")]
    pub site: String,

    /// Site time zone, for the shift changes (the seed's calendar: 00, 08, 16 local).
    #[arg(long, env = "SIM_TIME_ZONE", default_value = "Asia/Bangkok")]
    pub time_zone: chrono_tz::Tz,

    /// One reading of every sensor of every resource this often, in milliseconds.
    #[arg(long, env = "SIM_TICK_MS", default_value_t = 1000,
        value_parser = clap::value_parser!(u64).range(10..=60_000))]
    pub tick_ms: u64,

    /// Every this many lines, one line the worker must reject (0: none).
    #[arg(long, env = "SIM_BAD_LINE_EVERY", default_value_t = 500)]
    pub bad_line_every: u64,

    /// mes-api address (host:port, a name is resolved at every request) the production runs are
    /// driven through.
    #[arg(long, env = "SIM_API_ADDR", default_value = "127.0.0.1:8000")]
    pub api_addr: String,

    /// Only write readings; drive no production runs.
    #[arg(long, env = "SIM_NO_RUNS")]
    pub no_runs: bool,

    /// Bearer token for mes-api, when it requires one. Never logged.
    #[arg(long, env = "SIM_API_TOKEN", hide_env_values = true)]
    pub api_token: Option<String>,

    /// Seconds between count reports of a running resource.
    #[arg(long, env = "SIM_REPORT_EVERY_SECS", default_value_t = 5)]
    pub report_every_secs: u64,

    /// Mean minutes between breakdowns of a running resource (0: never).
    #[arg(long, env = "SIM_BREAKDOWN_EVERY_MIN", default_value_t = 20)]
    pub breakdown_every_min: u64,

    /// Seed of the random source (same seed, same line).
    #[arg(long, env = "SIM_SEED", default_value_t = 7)]
    pub seed: u64,

    #[command(flatten)]
    pub shutdown: ShutdownArgs,

    /// Log format.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value = "human")]
    pub log_format: LogFormat,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent_and_defaults_fit_the_local_run() {
        Config::command().debug_assert();
        let c = Config::parse_from(["edge-mes-sim"]);
        assert_eq!(c.resources, ["SMT01", "SMT02", "AOI01"]);
        assert_eq!(c.api_addr, "127.0.0.1:8000");
        assert!(!c.no_runs);
        assert_eq!(c.time_zone, chrono_tz::Asia::Bangkok);
    }
}
