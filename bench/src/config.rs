//! Command line and environment. Every flag has an environment fallback; figures that `--quick`
//! shrinks are `Option`s resolved by the accessor methods below.

use std::path::PathBuf;

use clap::{Parser, ValueEnum};

/// A part of the benchmark (issue 5 numbers them 1 to 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Part {
    /// Part 1: backfill throughput of shipper + worker, with the `\copy` (1 and 2 streams) and
    /// naive per-line INSERT baselines on the same server and schema.
    Backfill,
    /// Part 2: write-to-row latency under a steady load, then the catch-up after a NATS outage.
    Live,
    /// Part 3: mes-api under an open-loop load of `POST /op_run/report` and `GET /op_run/active`
    /// (latency from each request's scheduled time), then a closed-loop maximum.
    Api,
    /// Part 4: edge-shipper memory and CPU while tailing many slow files.
    Footprint,
    /// Part 5: the READINGS stream carries `--buffer-carry` times its size limit at the live
    /// rate (or runs for `--soak`); stream size and memory sampled every second.
    Buffer,
    /// edge-mes-archiver on one closed day of `--readings` rows: rows/s, MiB/s of Parquet, its
    /// share of a core (issue 16). Not in the default set; ask for it with `--only archive`.
    Archive,
    /// A 30-day panel query on raw readings against the rollups readings_1h and readings_1m,
    /// and the cost of refreshing them (issue 16). Not in the default set: `--only rollups`.
    Rollups,
    /// Many boxes (issue 15): the same total rate from 4 boxes, then from `--fleet-boxes`
    /// boxes, one edge-shipper process each; throughput, write-to-row latency, CPU and memory
    /// of every process group, the worker's consumer backlog.
    Fleet,
}

/// How the private PostgreSQL is configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PgProfile {
    /// A durable server as a plant runs it: data dir on disk (--pg-dir), `fsync`,
    /// `full_page_writes` and `synchronous_commit` on, with an ingest server's usual memory and
    /// WAL settings (`shared_buffers = 1GB`, `max_wal_size = 4GB`, `checkpoint_timeout = 15min`).
    Durable,
    /// The tests' throwaway server: `/dev/shm`, `fsync = off`, `full_page_writes = off`,
    /// `shared_buffers = 64MB`, `max_wal_size = 128MB`. Commits cost almost nothing, which
    /// favours the naive per-line INSERT most.
    Test,
}

impl PgProfile {
    /// `-c` settings of the profile, over the testkit template's `postgresql.conf`.
    pub fn settings(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Self::Durable => &[
                ("fsync", "on"),
                ("full_page_writes", "on"),
                ("synchronous_commit", "on"),
                ("shared_buffers", "1GB"),
                ("max_wal_size", "4GB"),
                ("checkpoint_timeout", "15min"),
            ],
            Self::Test => &[],
        }
    }
}

/// End-to-end benchmark of edge-mes: edge-shipper and ingest-worker against real nats-server and
/// PostgreSQL, measured against the database's own COPY rate and a naive per-line INSERT; and
/// mes-api under an open-loop request load.
///
/// By default it starts its own private nats-server and PostgreSQL (testkit); with
/// --use-env-servers it uses NATS_URL and DATABASE_URL instead, creating (and dropping) its own
/// databases and isolated stream names there. It needs release builds of edge-shipper and
/// ingest-worker (and of mes-api for the API part) next to itself and builds them when missing
/// (unless --no-build). Environment variables of the binaries (EDGE_*, INGEST_*, READINGS_*,
/// API_*) are not passed on, so runs are reproducible; tune them with --shipper-arg /
/// --worker-arg / --api-arg. Exit status: 0 when every row
/// arrived exactly once and every process behaved (missed performance targets do not fail the
/// run, the table shows them), 1 when a count or process check failed, 2 on an error.
#[derive(Debug, Clone, Parser)]
#[command(name = "edge-mes-bench", version, about, long_about)]
pub struct Config {
    /// Smoke run of about a minute (CI): small figures everywhere; checks that the benchmark
    /// works and every row arrives exactly once, not that it is fast.
    #[arg(long, env = "BENCH_QUICK")]
    pub quick: bool,

    /// Parts to run, comma separated: backfill, live, api, footprint, buffer, fleet, archive,
    /// rollups.
    #[arg(long, env = "BENCH_ONLY", value_enum, value_delimiter = ',',
        default_values_t = [Part::Backfill, Part::Live, Part::Api, Part::Footprint, Part::Buffer,
            Part::Fleet])]
    pub only: Vec<Part>,

    /// Buffer: READINGS size limit the workers run with, in MiB [default: 64; --quick: 1].
    #[arg(long, env = "BENCH_BUFFER_STREAM_MIB", value_parser = clap::value_parser!(u64).range(1..))]
    pub buffer_stream_mib: Option<u64>,

    /// Buffer: how many times its size limit the stream carries at the live rate.
    #[arg(long, env = "BENCH_BUFFER_CARRY", default_value_t = 5,
        value_parser = clap::value_parser!(u32).range(1..))]
    pub buffer_carry: u32,

    /// Buffer part as a soak: run for this long (e.g. 1h, 30m, 90s) instead of until it carried
    /// --buffer-carry limits; stream size and memory are sampled every second. Usually with
    /// --only buffer.
    #[arg(long, env = "BENCH_SOAK", value_parser = parse_duration)]
    pub soak: Option<std::time::Duration>,

    /// Write every figure, the checks and the machine description to this JSON file.
    #[arg(long, env = "BENCH_JSON")]
    pub json: Option<PathBuf>,

    /// Use the servers named by NATS_URL and DATABASE_URL instead of private ones. CPU of
    /// nats-server and PostgreSQL is then not measured, and the NATS outage is skipped.
    #[arg(long, env = "BENCH_USE_ENV_SERVERS")]
    pub use_env_servers: bool,

    /// NATS server (with JetStream) for --use-env-servers.
    #[arg(long, env = "NATS_URL")]
    pub nats_url: Option<String>,

    /// PostgreSQL server for --use-env-servers: a URL of any database the user may connect to
    /// and create databases from.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,

    /// Configuration of the private PostgreSQL (not used with --use-env-servers).
    #[arg(long, env = "BENCH_PG_PROFILE", value_enum, default_value_t = PgProfile::Durable)]
    pub pg_profile: PgProfile,

    /// Directory on the disk under test for the private PostgreSQL's data dir with
    /// `--pg-profile durable` (it must be reachable by the `postgres` OS user when run as root).
    #[arg(long, env = "BENCH_PG_DIR", default_value = "/var/tmp")]
    pub pg_dir: PathBuf,

    /// Extra setting of the private PostgreSQL, `name=value` (repeatable), after the profile's,
    /// e.g. --pg-setting shared_buffers=4GB.
    #[arg(long, env = "BENCH_PG_SETTINGS", value_delimiter = ' ', value_parser = parse_setting)]
    pub pg_setting: Vec<(String, String)>,

    /// Never build edge-shipper, ingest-worker (and mes-api); fail when their release builds are
    /// missing.
    #[arg(long, env = "BENCH_NO_BUILD")]
    pub no_build: bool,

    /// Always run `cargo build --release -p edge-mes-bench -p edge-shipper -p ingest-worker`
    /// (plus `-p mes-api` when the API part runs) first, so the measured binaries match the
    /// sources (otherwise only when they are missing).
    #[arg(long, env = "BENCH_REBUILD", conflicts_with = "no_build")]
    pub rebuild: bool,

    /// Directory for generated files, state and process logs; default: a new temp dir.
    #[arg(long, env = "BENCH_WORK_DIR")]
    pub work_dir: Option<PathBuf>,

    /// Keep the work dir (generated data, copy files, logs of every process) afterwards.
    #[arg(long, env = "BENCH_KEEP_WORK_DIR")]
    pub keep_work_dir: bool,

    /// Seed of the generated data.
    #[arg(long, env = "BENCH_SEED", default_value_t = 42)]
    pub seed: u64,

    /// Backfill: readings to generate and load [default: 2000000; 100000 with --quick].
    #[arg(long, env = "BENCH_READINGS")]
    pub readings: Option<u64>,

    /// Backfill: edge boxes, one edge-shipper process each.
    #[arg(long, env = "BENCH_BOXES", default_value_t = 4,
        value_parser = clap::value_parser!(u32).range(1..=99))]
    pub boxes: u32,

    /// Backfill: JSONL files per box.
    #[arg(long, env = "BENCH_FILES_PER_BOX", default_value_t = 4,
        value_parser = clap::value_parser!(u32).range(1..=999))]
    pub files_per_box: u32,

    /// Resources (SMT01, SMT02, ...) of the generated readings.
    #[arg(long, env = "BENCH_RESOURCES", default_value_t = 50,
        value_parser = clap::value_parser!(u32).range(1..=99))]
    pub resources: u32,

    /// Sensors per resource of the generated readings.
    #[arg(long, env = "BENCH_SENSORS", default_value_t = 5,
        value_parser = clap::value_parser!(u32).range(1..=8))]
    pub sensors: u32,

    /// Backfill: ingest-worker processes.
    #[arg(long, env = "BENCH_WORKERS", default_value_t = 1,
        value_parser = clap::value_parser!(u32).range(1..=16))]
    pub workers: u32,

    /// --concurrency of each ingest-worker [default: the worker's own default].
    #[arg(long, env = "BENCH_WORKER_CONCURRENCY")]
    pub worker_concurrency: Option<u32>,

    /// Backfill: --until-idle of the workers, in seconds (does not count in the measured time,
    /// which ends when the last row is committed).
    #[arg(long, env = "BENCH_UNTIL_IDLE_SECS", default_value_t = 3)]
    pub until_idle_secs: u64,

    /// Backfill: give up when not every row is committed after this many seconds.
    #[arg(long, env = "BENCH_BACKFILL_TIMEOUT_SECS", default_value_t = 1800)]
    pub backfill_timeout_secs: u64,

    /// Backfill: rounds of pipeline, `\copy` 1 stream and `\copy` 2 streams, run in turn, so
    /// that the ratios compare figures taken within a minute of each other on a machine whose
    /// speed drifts; the targets are judged on the median of the rounds' ratios
    /// [default: 3; 1 with --quick].
    #[arg(long, env = "BENCH_ROUNDS", value_parser = clap::value_parser!(u32).range(1..=20))]
    pub rounds: Option<u32>,

    /// Backfill: skip the `\copy` and naive-INSERT baselines.
    #[arg(long, env = "BENCH_NO_BASELINES")]
    pub no_baselines: bool,

    /// Naive baseline: lines inserted one INSERT each [default: 20000; 2000 with --quick].
    #[arg(long, env = "BENCH_NAIVE_SAMPLE")]
    pub naive_sample: Option<u64>,

    /// Live: files appended to at a steady rate.
    #[arg(long, env = "BENCH_LIVE_FILES", default_value_t = 40,
        value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub live_files: u32,

    /// Live: edge boxes (edge-shipper processes) the files are spread over.
    #[arg(long, env = "BENCH_LIVE_BOXES", default_value_t = 4,
        value_parser = clap::value_parser!(u32).range(1..=99))]
    pub live_boxes: u32,

    /// Live: readings per second over all files [default: 20000; 5000 with --quick].
    #[arg(long, env = "BENCH_LIVE_RATE")]
    pub live_rate: Option<u32>,

    /// Live: length of the measured window, in seconds [default: 60; 10 with --quick].
    #[arg(long, env = "BENCH_LIVE_SECS")]
    pub live_secs: Option<u64>,

    /// Live and fleet: seconds of load before the measured window, counted from when a line of
    /// every file was loaded (every shipper is publishing) [default: 5; 2 with --quick].
    #[arg(long, env = "BENCH_LIVE_WARMUP_SECS")]
    pub live_warmup_secs: Option<u64>,

    /// Live: seconds NATS is stopped under load for the catch-up figure; 0 skips it
    /// [default: 60; 5 with --quick].
    #[arg(long, env = "BENCH_OUTAGE_SECS")]
    pub outage_secs: Option<u64>,

    /// Live: interval of the ledger poll that detects committed lines, in milliseconds.
    #[arg(long, env = "BENCH_POLL_MS", default_value_t = 50,
        value_parser = clap::value_parser!(u64).range(5..=1000))]
    pub poll_ms: u64,

    /// Live and footprint: give up waiting for the last lines after this many seconds.
    #[arg(long, env = "BENCH_DRAIN_TIMEOUT_SECS", default_value_t = 600)]
    pub drain_timeout_secs: u64,

    /// Fleet: boxes of the many-boxes run, one edge-shipper process each; the first run has 4
    /// boxes [default: 300; 50 with --quick].
    #[arg(long, env = "BENCH_FLEET_BOXES", value_parser = clap::value_parser!(u32).range(5..=5000))]
    pub fleet_boxes: Option<u32>,

    /// Fleet: JSONL files per box of the many-boxes run; the 4-box run tails the same files.
    #[arg(long, env = "BENCH_FLEET_FILES_PER_BOX", default_value_t = 1,
        value_parser = clap::value_parser!(u32).range(1..=20))]
    pub fleet_files_per_box: u32,

    /// Fleet: readings per second over all boxes, the same in both runs
    /// [default: 1500, 5 per box; 250 with --quick].
    #[arg(long, env = "BENCH_FLEET_RATE", value_parser = clap::value_parser!(u32).range(1..))]
    pub fleet_rate: Option<u32>,

    /// Fleet: seconds of an unmeasured 4-box load at the fleet rate before the two runs, so
    /// that neither pays for a cold server (new WAL segments, empty caches); 0 skips it
    /// [default: 30; 0 with --quick].
    #[arg(long, env = "BENCH_FLEET_WARMUP_LOAD_SECS")]
    pub fleet_warmup_load_secs: Option<u64>,

    /// Fleet: length of each run's measured window, in seconds [default: 60; 10 with --quick].
    #[arg(long, env = "BENCH_FLEET_SECS", value_parser = clap::value_parser!(u64).range(1..))]
    pub fleet_secs: Option<u64>,

    /// Footprint: files tailed by one edge-shipper.
    #[arg(long, env = "BENCH_FOOTPRINT_FILES", default_value_t = 200,
        value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub footprint_files: u32,

    /// Footprint: lines per second over all files.
    #[arg(long, env = "BENCH_FOOTPRINT_RATE", default_value_t = 1000,
        value_parser = clap::value_parser!(u32).range(1..))]
    pub footprint_rate: u32,

    /// Footprint: seconds of tailing [default: 60; 10 with --quick].
    #[arg(long, env = "BENCH_FOOTPRINT_SECS")]
    pub footprint_secs: Option<u64>,

    /// API: `POST /op_run/report` requests per second of the open-loop load (latency is counted
    /// from each request's scheduled send time, so a stalled server is not hidden).
    #[arg(long, env = "BENCH_API_RATE", default_value_t = 1000,
        value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub api_rate: u32,

    /// API: `GET /op_run/active` requests per second, concurrently with the reports.
    #[arg(long, env = "BENCH_API_ACTIVE_RATE", default_value_t = 50,
        value_parser = clap::value_parser!(u32).range(0..=100_000))]
    pub api_active_rate: u32,

    /// API: length of the measured open-loop window, in seconds [default: 30; 3 with --quick].
    #[arg(long, env = "BENCH_API_SECS")]
    pub api_secs: Option<u64>,

    /// API: seconds of the same load before the window (connections and the server's database
    /// pool fill up; not measured) [default: 3; 1 with --quick].
    #[arg(long, env = "BENCH_API_WARMUP_SECS")]
    pub api_warmup_secs: Option<u64>,

    /// API: seconds of the closed-loop phase (every connection sends its next report as soon as
    /// the previous answer arrived) that finds the most reports/s held; 0 skips it
    /// [default: 10; 2 with --quick].
    #[arg(long, env = "BENCH_API_MAX_SECS")]
    pub api_max_secs: Option<u64>,

    /// Rollups: whole UTC days of readings up to yesterday, one reading per 10 s and series
    /// [default: 30; 2 with --quick].
    #[arg(long, env = "BENCH_ROLLUP_DAYS", value_parser = clap::value_parser!(u32).range(1..=366))]
    pub rollup_days: Option<u32>,

    /// Rollups: series (resource × sensor) loaded [default: 8; 2 with --quick].
    #[arg(long, env = "BENCH_ROLLUP_SERIES", value_parser = clap::value_parser!(u32).range(1..))]
    pub rollup_series: Option<u32>,

    /// API: keep-alive HTTP/1.1 connections the reports are spread over (a request waits for a
    /// free connection when all are busy; its latency still counts from its scheduled time).
    #[arg(long, env = "BENCH_API_CONNECTIONS", default_value_t = 32,
        value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub api_connections: u32,

    /// API: concurrent production runs started through the API before the load; reports go to
    /// them round robin.
    #[arg(long, env = "BENCH_API_RUNS", default_value_t = 50,
        value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub api_runs: u32,

    /// API: send an `Idempotency-Key` with every report (the retry-safe path: two more
    /// statements in a transaction); by default reports take the single-statement path.
    #[arg(long, env = "BENCH_API_IDEMPOTENCY_KEYS")]
    pub api_idempotency_keys: bool,

    /// Extra argument(s) for mes-api, e.g. --api-arg='--db-max-connections 8' (split at spaces;
    /// repeatable).
    #[arg(
        long,
        env = "BENCH_API_ARGS",
        value_delimiter = ' ',
        allow_hyphen_values = true
    )]
    pub api_arg: Vec<String>,

    /// Extra argument(s) for every edge-shipper, e.g. --shipper-arg='--linger-ms 20' (split at
    /// spaces; repeatable).
    #[arg(
        long,
        env = "BENCH_SHIPPER_ARGS",
        value_delimiter = ' ',
        allow_hyphen_values = true
    )]
    pub shipper_arg: Vec<String>,

    /// Extra argument(s) for every ingest-worker, e.g. --worker-arg='--batch-max-messages 128'
    /// (split at spaces; repeatable).
    #[arg(
        long,
        env = "BENCH_WORKER_ARGS",
        value_delimiter = ' ',
        allow_hyphen_values = true
    )]
    pub worker_arg: Vec<String>,
}

/// `90s`, `30m`, `1h` (or plain seconds).
fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let (number, unit) = s
        .find(|c: char| !c.is_ascii_digit())
        .map_or((s, ""), |i| s.split_at(i));
    let n: u64 = number
        .parse()
        .map_err(|_| format!("expected a duration like 90s, 30m or 1h, got {s:?}"))?;
    let secs = match unit {
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        _ => return Err(format!("unknown unit {unit:?} in {s:?} (s, m or h)")),
    };
    if secs == 0 {
        return Err("a soak of zero seconds measures nothing".to_owned());
    }
    Ok(std::time::Duration::from_secs(secs))
}

/// `name=value` of a PostgreSQL setting.
fn parse_setting(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((name, value))
            if !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') =>
        {
            Ok((name.to_owned(), value.to_owned()))
        }
        _ => Err(format!("expected name=value, got {s:?}")),
    }
}

impl Config {
    /// The private PostgreSQL's settings: the profile's, then --pg-setting.
    pub fn pg_settings(&self) -> Vec<(String, String)> {
        self.pg_profile
            .settings()
            .iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
            .chain(self.pg_setting.iter().cloned())
            .collect()
    }

    pub fn runs(&self, part: Part) -> bool {
        self.only.contains(&part)
    }

    fn pick<T>(&self, value: Option<T>, full: T, quick: T) -> T {
        value.unwrap_or(if self.quick { quick } else { full })
    }

    pub fn readings(&self) -> u64 {
        self.pick(self.readings, 2_000_000, 100_000)
    }

    pub fn rounds(&self) -> u32 {
        self.pick(self.rounds, 3, 1)
    }

    pub fn naive_sample(&self) -> u64 {
        self.pick(self.naive_sample, 20_000, 2_000)
    }

    /// READINGS size limit of the buffer part, in bytes.
    pub fn buffer_stream_bytes(&self) -> u64 {
        self.pick(self.buffer_stream_mib, 64, 1) * 1024 * 1024
    }

    pub fn live_rate(&self) -> u32 {
        self.pick(self.live_rate, 20_000, 5_000)
    }

    pub fn live_secs(&self) -> u64 {
        self.pick(self.live_secs, 60, 10)
    }

    pub fn live_warmup_secs(&self) -> u64 {
        self.pick(self.live_warmup_secs, 5, 2)
    }

    pub fn outage_secs(&self) -> u64 {
        self.pick(self.outage_secs, 60, 5)
    }

    pub fn fleet_boxes(&self) -> u32 {
        self.pick(self.fleet_boxes, 300, 50)
    }

    pub fn fleet_rate(&self) -> u32 {
        self.pick(self.fleet_rate, 1_500, 250)
    }

    pub fn fleet_secs(&self) -> u64 {
        self.pick(self.fleet_secs, 60, 10)
    }

    pub fn fleet_warmup_load_secs(&self) -> u64 {
        self.pick(self.fleet_warmup_load_secs, 30, 0)
    }

    pub fn footprint_secs(&self) -> u64 {
        self.pick(self.footprint_secs, 60, 10)
    }

    pub fn api_secs(&self) -> u64 {
        self.pick(self.api_secs, 30, 3)
    }

    pub fn api_warmup_secs(&self) -> u64 {
        self.pick(self.api_warmup_secs, 3, 1)
    }

    pub fn api_max_secs(&self) -> u64 {
        self.pick(self.api_max_secs, 10, 2)
    }

    pub fn rollup_days(&self) -> u32 {
        self.pick(self.rollup_days, 30, 2)
    }

    pub fn rollup_series(&self) -> u32 {
        self.pick(self.rollup_series, 8, 2)
    }

    /// Extra mes-api arguments, blanks dropped.
    pub fn api_args(&self) -> Vec<String> {
        self.api_arg
            .iter()
            .filter(|a| !a.is_empty())
            .cloned()
            .collect()
    }

    /// Extra shipper arguments, blanks dropped.
    pub fn shipper_args(&self) -> Vec<String> {
        self.shipper_arg
            .iter()
            .filter(|a| !a.is_empty())
            .cloned()
            .collect()
    }

    /// Extra worker arguments (with --worker-concurrency first), blanks dropped.
    pub fn worker_args(&self) -> Vec<String> {
        let mut args = Vec::new();
        if let Some(c) = self.worker_concurrency {
            args.extend(["--concurrency".to_owned(), c.to_string()]);
        }
        args.extend(self.worker_arg.iter().filter(|a| !a.is_empty()).cloned());
        args
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_cli_is_consistent_and_quick_shrinks_the_defaults() {
        Config::command().debug_assert();
        let full = Config::try_parse_from(["edge-mes-bench"]).unwrap();
        assert_eq!(full.readings(), 2_000_000);
        assert_eq!(full.live_rate(), 20_000);
        assert_eq!(
            (full.live_secs(), full.outage_secs(), full.footprint_secs()),
            (60, 60, 60)
        );
        assert_eq!(
            full.only,
            vec![
                Part::Backfill,
                Part::Live,
                Part::Api,
                Part::Footprint,
                Part::Buffer,
                Part::Fleet
            ]
        );
        assert_eq!(
            (full.fleet_boxes(), full.fleet_rate(), full.fleet_secs()),
            (300, 1_500, 60)
        );
        assert_eq!(full.fleet_files_per_box, 1);
        assert_eq!(full.fleet_warmup_load_secs(), 30);
        assert_eq!(full.buffer_stream_bytes(), 64 << 20);
        assert_eq!(full.buffer_carry, 5);
        assert_eq!((full.api_rate, full.api_active_rate), (1000, 50));
        assert_eq!(
            (full.api_secs(), full.api_warmup_secs(), full.api_max_secs()),
            (30, 3, 10)
        );
        assert_eq!((full.api_connections, full.api_runs), (32, 50));
        assert!(!full.api_idempotency_keys);
        let quick =
            Config::try_parse_from(["edge-mes-bench", "--quick", "--readings", "5000"]).unwrap();
        assert_eq!(quick.readings(), 5000);
        assert_eq!(quick.naive_sample(), 2_000);
        assert_eq!((full.rounds(), quick.rounds()), (3, 1));
        assert_eq!(quick.live_secs(), 10);
        // The quick fleet: 50 boxes at the same 5 readings/s a box, 10 s windows.
        assert_eq!(
            (quick.fleet_boxes(), quick.fleet_rate(), quick.fleet_secs()),
            (50, 250, 10)
        );
        assert_eq!(quick.fleet_warmup_load_secs(), 0);
        // The quick API part stays short: warm-up, window and closed loop ≤ 10 s in all.
        assert_eq!(quick.api_rate, 1000);
        assert!(quick.api_warmup_secs() + quick.api_secs() + quick.api_max_secs() <= 10);
    }

    #[test]
    fn api_flags_parse_and_the_api_part_runs_alone() {
        let c = Config::try_parse_from([
            "edge-mes-bench",
            "--only",
            "api",
            "--api-rate",
            "2000",
            "--api-secs",
            "5",
            "--api-max-secs",
            "0",
            "--api-connections",
            "8",
            "--api-idempotency-keys",
            "--api-arg=--db-max-connections 8",
        ])
        .unwrap();
        assert!(c.runs(Part::Api) && !c.runs(Part::Backfill) && !c.runs(Part::Live));
        assert_eq!((c.api_rate, c.api_secs(), c.api_max_secs()), (2000, 5, 0));
        assert_eq!(c.api_connections, 8);
        assert!(c.api_idempotency_keys);
        assert_eq!(c.api_args(), ["--db-max-connections", "8"]);
        assert!(Config::try_parse_from(["edge-mes-bench", "--api-rate", "0"]).is_err());
    }

    #[test]
    fn fleet_flags_parse_and_the_fleet_part_runs_alone() {
        let c = Config::try_parse_from([
            "edge-mes-bench",
            "--only",
            "fleet",
            "--fleet-boxes",
            "500",
            "--fleet-rate",
            "10000",
            "--fleet-secs",
            "30",
            "--fleet-files-per-box",
            "2",
        ])
        .unwrap();
        assert!(c.runs(Part::Fleet) && !c.runs(Part::Live));
        assert_eq!(
            (c.fleet_boxes(), c.fleet_rate(), c.fleet_secs()),
            (500, 10_000, 30)
        );
        assert_eq!(c.fleet_files_per_box, 2);
        // The many-boxes run must have more boxes than the four-box run.
        assert!(Config::try_parse_from(["edge-mes-bench", "--fleet-boxes", "4"]).is_err());
        assert!(Config::try_parse_from(["edge-mes-bench", "--fleet-rate", "0"]).is_err());
    }

    #[test]
    fn parts_and_passthrough_arguments_parse() {
        let c = Config::try_parse_from([
            "edge-mes-bench",
            "--only",
            "backfill,footprint",
            "--worker-concurrency",
            "4",
            "--worker-arg=--batch-max-messages 128",
            "--shipper-arg",
            "--linger-ms 20",
        ])
        .unwrap();
        assert!(c.runs(Part::Backfill) && c.runs(Part::Footprint) && !c.runs(Part::Live));
        assert_eq!(
            c.worker_args(),
            ["--concurrency", "4", "--batch-max-messages", "128"]
        );
        assert_eq!(c.shipper_args(), ["--linger-ms", "20"]);
    }

    #[test]
    fn the_durable_profile_is_the_default_and_settings_come_after_it() {
        let c = Config::try_parse_from(["edge-mes-bench", "--pg-setting", "shared_buffers=4GB"])
            .unwrap();
        assert_eq!(c.pg_profile, PgProfile::Durable);
        let settings = c.pg_settings();
        assert!(settings.contains(&("fsync".to_owned(), "on".to_owned())));
        assert_eq!(
            settings.last(),
            Some(&("shared_buffers".to_owned(), "4GB".to_owned()))
        );
        let test = Config::try_parse_from(["edge-mes-bench", "--pg-profile", "test"]).unwrap();
        assert!(test.pg_settings().is_empty());
        assert!(Config::try_parse_from(["edge-mes-bench", "--pg-setting", "fsync"]).is_err());
        assert!(Config::try_parse_from(["edge-mes-bench", "--pg-setting", "a;b=1"]).is_err());
    }
}
