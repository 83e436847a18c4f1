//! The benchmark's context (configuration, binaries, servers, work dir) and one isolated
//! deployment of the pipeline per measurement: a fresh database and its own NATS names.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::Context;
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;
use tracing::info;

use crate::binaries::Binaries;
use crate::config::Config;
use crate::monitored::Monitored;
use crate::procstat;
use crate::report::CpuSplit;
use crate::servers::{ServerCpu, Servers};

/// `--site` of every shipper.
pub const SITE: &str = "BKK";

/// Environment variable prefixes of the binaries' tuning knobs, not passed on to them.
const FOREIGN_ENV_PREFIXES: [&str; 3] = ["EDGE_", "INGEST_", "READINGS_"];
/// Further variables not passed on (`NATS_URL`, `DATABASE_URL` and `RUST_LOG` are set).
const FOREIGN_ENV: [&str; 2] = ["NATS_STREAM_REPLICAS", "LOG_FORMAT"];

pub struct Bench {
    pub config: Config,
    pub bins: Binaries,
    pub servers: Servers,
    /// Generated files, shipper state, process logs, copy files.
    pub work: PathBuf,
}

/// One pipeline under test: its database (migrated by the worker) and NATS namespace.
pub struct Deployment {
    pub label: String,
    pub db_name: String,
    pub db_url: String,
    pub namespace: String,
    pub pool: PgPool,
}

impl Bench {
    /// A directory under the work dir, created if missing.
    pub fn dir(&self, name: &str) -> anyhow::Result<PathBuf> {
        let d = self.work.join(name);
        std::fs::create_dir_all(&d).with_context(|| format!("create {}", d.display()))?;
        Ok(d)
    }

    /// A fresh database and namespace; one `ingest-worker --until-idle 1` run applies the
    /// migrations, creates the partitions, the streams and the consumer (not measured).
    pub async fn deploy(&self, label: &str) -> anyhow::Result<Deployment> {
        let name = testkit::unique_name(&format!("bench_{label}"));
        let db_url = self.servers.create_database(&name).await?;
        let pool = PgPoolOptions::new()
            .max_connections(4)
            .connect(&db_url)
            .await
            .context("connect to the benchmark database")?;
        let dep = Deployment {
            label: label.to_owned(),
            db_name: name.clone(),
            db_url,
            namespace: name,
            pool,
        };
        let mut prepare = self.worker(&dep);
        prepare.args(["--until-idle", "1"]);
        self.spawn(&format!("{label}-prepare"), prepare)?
            .wait_for(Duration::from_secs(120))
            .await?
            .ensure_success()
            .context("prepare the deployment (schema, streams, consumer)")?;
        info!(label, database = %dep.db_name, "deployment ready");
        Ok(dep)
    }

    /// Deletes the deployment's streams (READINGS_<ns>, READINGS_DLQ_<ns>) and drops its
    /// database, so nothing is left behind on a shared server.
    pub async fn retire(&self, dep: Deployment) -> anyhow::Result<()> {
        dep.pool.close().await;
        if let Err(e) = self.delete_streams(&dep.namespace).await {
            tracing::warn!(error = %format!("{e:#}"), "cannot delete the benchmark's streams");
        }
        self.servers.drop_database(&dep.db_name).await
    }

    /// A JetStream client of the benchmark's NATS (with `NATS_CREDS` when set).
    pub async fn jetstream(&self) -> anyhow::Result<async_nats::jetstream::Context> {
        let options = match std::env::var_os("NATS_CREDS") {
            Some(creds) => async_nats::ConnectOptions::with_credentials_file(creds).await?,
            None => async_nats::ConnectOptions::new(),
        };
        let client = options
            .connect(self.servers.nats_url())
            .await
            .context("connect to NATS")?;
        Ok(async_nats::jetstream::new(client))
    }

    async fn delete_streams(&self, namespace: &str) -> anyhow::Result<()> {
        let names = protocol::Names::isolated(namespace);
        let js = self.jetstream().await?;
        for stream in [&names.readings_stream, &names.dlq_stream] {
            js.delete_stream(stream)
                .await
                .with_context(|| format!("delete stream {stream}"))?;
        }
        Ok(())
    }

    fn command(&self, program: &Path, dep: &Deployment) -> Command {
        let mut cmd = Command::new(program);
        for (key, _) in std::env::vars_os() {
            if let Some(k) = key.to_str() {
                if FOREIGN_ENV_PREFIXES.iter().any(|p| k.starts_with(p)) || FOREIGN_ENV.contains(&k)
                {
                    cmd.env_remove(k);
                }
            }
        }
        cmd.env("NATS_URL", self.servers.nats_url())
            .env("DATABASE_URL", &dep.db_url)
            .env("EDGE_NAMESPACE", &dep.namespace)
            .env("RUST_LOG", "warn")
            // The generated readings start in 2025: the default 90-day retention would drop them
            // while the benchmark counts them.
            .env("READINGS_RETENTION_DAYS", "0")
            .env("NO_COLOR", "1");
        cmd
    }

    /// `edge-shipper` for `box_id` tailing `<box_dir>/*.jsonl`; live unless `until_caught_up`.
    pub fn shipper(
        &self,
        dep: &Deployment,
        box_id: &str,
        box_dir: &Path,
        until_caught_up: bool,
    ) -> anyhow::Result<Command> {
        let state = self.dir(&format!("state/{}/{box_id}", dep.label))?;
        let mut cmd = self.command(&self.bins.shipper, dep);
        cmd.arg("--watch")
            .arg(format!("{}/*.jsonl", box_dir.display()))
            .arg("--state-dir")
            .arg(state)
            .args(["--site", SITE, "--box-id", box_id]);
        if until_caught_up {
            cmd.arg("--until-caught-up");
        }
        cmd.args(self.config.shipper_args());
        Ok(cmd)
    }

    /// `ingest-worker` with the configured extra arguments (live unless `--until-idle` is added).
    pub fn worker(&self, dep: &Deployment) -> Command {
        let mut cmd = self.command(&self.bins.worker, dep);
        cmd.args(self.config.worker_args());
        cmd
    }

    /// Spawns a measured process with its log in `<work>/logs/<name>.log`.
    pub fn spawn(&self, name: &str, cmd: Command) -> anyhow::Result<Monitored> {
        self.spawn_sampled(name, cmd, crate::monitored::SAMPLE_EVERY)
    }

    /// [`spawn`](Self::spawn), sampled every `every`.
    pub fn spawn_sampled(
        &self,
        name: &str,
        cmd: Command,
        every: Duration,
    ) -> anyhow::Result<Monitored> {
        let logs = self.dir("logs")?;
        Monitored::spawn_sampled(name, cmd, &logs.join(format!("{name}.log")), every)
    }
}

impl Deployment {
    /// Rows committed so far, from the ledger (cheap: about one row per source and batch).
    pub async fn rows_loaded(&self) -> anyhow::Result<u64> {
        let n: i64 =
            sqlx::query_scalar("SELECT coalesce(sum(rows_loaded), 0)::bigint FROM ingest_ledger")
                .fetch_one(&self.pool)
                .await
                .context("sum rows_loaded")?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// `count(*)` of readings (a full scan: only for the final check).
    pub async fn readings(&self) -> anyhow::Result<u64> {
        count(&self.pool, "SELECT count(*) FROM readings").await
    }

    pub async fn rejected(&self) -> anyhow::Result<u64> {
        count(&self.pool, "SELECT count(*) FROM rejected_readings").await
    }

    /// Bytes on disk of `table` with its indexes and TOAST, over all its partitions.
    pub async fn table_bytes(&self, table: &str) -> anyhow::Result<u64> {
        let n: i64 = sqlx::query_scalar(
            "SELECT coalesce((SELECT sum(pg_total_relation_size(relid)) \
                              FROM pg_partition_tree($1::regclass))::bigint, \
                             pg_total_relation_size($1::regclass))",
        )
        .bind(table)
        .fetch_one(&self.pool)
        .await
        .with_context(|| format!("size of {table}"))?;
        Ok(u64::try_from(n).unwrap_or(0))
    }
}

pub async fn count(pool: &PgPool, sql: &str) -> anyhow::Result<u64> {
    let n: i64 = sqlx::query_scalar(sql)
        .fetch_one(pool)
        .await
        .with_context(|| sql.to_owned())?;
    Ok(u64::try_from(n).unwrap_or(0))
}

/// CPU ticks of every process group at one moment.
#[derive(Debug, Clone, Copy)]
pub struct CpuSnapshot {
    at: std::time::Instant,
    shippers: u64,
    workers: u64,
    servers: ServerCpu,
    bench: u64,
}

impl CpuSnapshot {
    pub fn take(servers: &Servers, shippers: &[Monitored], workers: &[Monitored]) -> Self {
        Self {
            at: std::time::Instant::now(),
            shippers: shippers.iter().map(Monitored::cpu_ticks).sum(),
            workers: workers.iter().map(Monitored::cpu_ticks).sum(),
            servers: servers.cpu(),
            bench: procstat::self_ticks(),
        }
    }

    /// CPU seconds of each group between `earlier` and this snapshot.
    pub fn since(&self, earlier: &CpuSnapshot) -> CpuSplit {
        let (nats_secs, postgres_secs) = self.servers.since(&earlier.servers);
        CpuSplit {
            wall_secs: (self.at - earlier.at).as_secs_f64(),
            shippers_secs: procstat::secs(self.shippers.saturating_sub(earlier.shippers)),
            workers_secs: procstat::secs(self.workers.saturating_sub(earlier.workers)),
            nats_secs,
            postgres_secs,
            bench_secs: procstat::secs(self.bench.saturating_sub(earlier.bench)),
        }
    }
}

/// Polls `done` every 50 ms until it holds or `limit` passes; fails early when a process of
/// `watched` exited.
pub async fn wait_until<F, Fut>(
    what: &str,
    limit: Duration,
    watched: &[&Monitored],
    mut done: F,
) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<bool>>,
{
    let deadline = std::time::Instant::now() + limit;
    loop {
        if done().await? {
            return Ok(());
        }
        if let Some(p) = watched.iter().find(|p| p.has_exited()) {
            anyhow::bail!("{} exited while waiting for {what}", p.name());
        }
        if std::time::Instant::now() >= deadline {
            anyhow::bail!("timed out after {limit:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
