//! The nats-server and PostgreSQL the benchmark runs against: private ones from testkit by
//! default, or the ones `NATS_URL` and `DATABASE_URL` name.

use anyhow::{bail, Context};
use sqlx::Connection;
use testkit::{NatsHandle, NatsServer, PgHandle, PgOptions, PgServer};
use tracing::info;

use crate::config::{Config, PgProfile};
use crate::procstat;

/// Settings shown with every report, in this order.
const SHOWN_SETTINGS: &[&str] = &[
    "fsync",
    "synchronous_commit",
    "full_page_writes",
    "wal_level",
    "shared_buffers",
    "max_wal_size",
    "checkpoint_timeout",
];

pub struct Servers {
    pub nats: NatsHandle,
    pub pg: PgHandle,
    /// URL used for CREATE / DROP DATABASE.
    admin_url: String,
}

impl Servers {
    pub async fn start(config: &Config) -> anyhow::Result<Self> {
        if config.use_env_servers {
            let (Some(nats), Some(db)) = (&config.nats_url, &config.database_url) else {
                bail!("--use-env-servers needs NATS_URL and DATABASE_URL (or --nats-url and --database-url)");
            };
            info!(nats = %nats, "using the servers named by NATS_URL and DATABASE_URL");
            return Ok(Self {
                nats: NatsHandle::External(nats.clone()),
                pg: PgHandle::External(db.clone()),
                admin_url: db.clone(),
            });
        }
        let pg_options = PgOptions {
            // The test profile keeps testkit's fast temp dir (`/dev/shm`).
            base_dir: (config.pg_profile == PgProfile::Durable).then(|| config.pg_dir.clone()),
            settings: config.pg_settings(),
        };
        let (nats, pg) = tokio::try_join!(NatsServer::start(), PgServer::start_with(pg_options))
            .context("start the private nats-server and PostgreSQL (testkit)")?;
        info!(nats = %nats.url(), postgres = %pg.url(""), data = %pg.dir().display(),
            profile = ?config.pg_profile, "private servers started");
        let admin_url = pg.url("postgres");
        Ok(Self {
            nats: NatsHandle::Private(nats),
            pg: PgHandle::Private(pg),
            admin_url,
        })
    }

    pub fn nats_url(&self) -> String {
        self.nats.url()
    }

    pub fn private_nats(&mut self) -> Option<&mut NatsServer> {
        match &mut self.nats {
            NatsHandle::Private(server) => Some(server),
            NatsHandle::External(_) => None,
        }
    }

    /// True when PostgreSQL is ours (its processes can be measured).
    pub fn owns_postgres(&self) -> bool {
        matches!(self.pg, PgHandle::Private(_))
    }

    /// Process id of nats-server, when it is ours.
    pub fn nats_pid(&self) -> Option<u32> {
        match &self.nats {
            NatsHandle::Private(s) => s.pid(),
            NatsHandle::External(_) => None,
        }
    }

    /// CPU ticks of nats-server and of the PostgreSQL tree, when they are ours.
    pub fn cpu(&self) -> ServerCpu {
        let nats = match &self.nats {
            NatsHandle::Private(s) => s
                .pid()
                .and_then(procstat::read_stat)
                .map(|s| s.total_ticks()),
            NatsHandle::External(_) => None,
        };
        let postgres = match &self.pg {
            PgHandle::Private(s) => s.pid().and_then(procstat::tree_ticks),
            PgHandle::External(_) => None,
        };
        ServerCpu { nats, postgres }
    }

    /// Creates an empty database; returns its URL.
    pub async fn create_database(&self, name: &str) -> anyhow::Result<String> {
        self.pg.create_database(name).await
    }

    pub async fn drop_database(&self, name: &str) -> anyhow::Result<()> {
        let mut conn = sqlx::PgConnection::connect(&self.admin_url)
            .await
            .context("connect to drop a database")?;
        sqlx::query(&format!(
            "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
            name.replace('"', "\"\"")
        ))
        .execute(&mut conn)
        .await
        .with_context(|| format!("drop database {name}"))?;
        conn.close().await.ok();
        Ok(())
    }

    /// `CHECKPOINT`, so that no checkpoint of a previous phase's writes lands in the next one.
    pub async fn checkpoint(&self) -> anyhow::Result<()> {
        let mut conn = sqlx::PgConnection::connect(&self.admin_url).await?;
        sqlx::query("CHECKPOINT").execute(&mut conn).await?;
        conn.close().await.ok();
        Ok(())
    }

    /// The settings that decide what a commit and a COPY cost, as the server reports them, and
    /// (private server) the file system of its data dir.
    pub async fn postgres_config(&self) -> anyhow::Result<String> {
        let mut conn = sqlx::PgConnection::connect(&self.admin_url).await?;
        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT name, current_setting(name) FROM pg_settings \
             WHERE name = ANY($1) ORDER BY array_position($1, name)",
        )
        .bind(SHOWN_SETTINGS)
        .fetch_all(&mut conn)
        .await?;
        conn.close().await.ok();
        let mut text = rows
            .iter()
            .map(|(n, v)| format!("{n}={v}"))
            .collect::<Vec<_>>()
            .join(" ");
        if let PgHandle::Private(pg) = &self.pg {
            text.push_str(&format!(
                " · data dir on {} ({})",
                crate::machine::file_system(pg.dir()),
                pg.dir().display()
            ));
        }
        Ok(text)
    }

    /// `SELECT version()` of the PostgreSQL server.
    pub async fn postgres_version(&self) -> anyhow::Result<String> {
        let mut conn = sqlx::PgConnection::connect(&self.admin_url).await?;
        let v: String = sqlx::query_scalar("SELECT version()")
            .fetch_one(&mut conn)
            .await?;
        conn.close().await.ok();
        Ok(v)
    }
}

/// CPU ticks of the servers at one moment (`None` where not measurable).
#[derive(Debug, Clone, Copy, Default)]
pub struct ServerCpu {
    pub nats: Option<u64>,
    pub postgres: Option<u64>,
}

impl ServerCpu {
    /// Seconds of CPU since `earlier`, per server.
    pub fn since(&self, earlier: &ServerCpu) -> (Option<f64>, Option<f64>) {
        let delta =
            |now: Option<u64>, then: Option<u64>| Some(procstat::secs(now?.saturating_sub(then?)));
        (
            delta(self.nats, earlier.nats),
            delta(self.postgres, earlier.postgres),
        )
    }
}
