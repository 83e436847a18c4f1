//! Test support for edge-mes (a dev-only library).
//!
//! - [`nats`]: a private `nats-server -js` on a free port with its own store, for fault tests
//!   that stop, kill and restart it.
//! - [`postgres`]: a private PostgreSQL from an initdb'd template, same lifecycle.
//! - [`data`]: JSONL generators whose exact expected results (rows, rejections by reason) are
//!   computed with the protocol crate's own validator.
//! - [`bins`]: locating the workspace's binaries for end-to-end tests.
//! - [`cluster`]: a private three-node JetStream cluster (kill, restart, stream leaders).
//! - [`gateway`]: a private site gateway (leaf node, own JetStream domain) behind a relay that
//!   cuts and restores its WAN link.
//!
//! Ordinary (non-fault) tests may use servers named by environment variables instead, through
//! [`nats_for_test`] and [`pg_for_test`]; tests give every database and stream a
//! [`unique_name`], so they run in parallel without touching each other.
//!
//! # Lifecycle
//! Servers never outlive the test process: `Drop` stops them (also when a test panics), and a
//! parent-death signal takes them down when the process exits without dropping them (a server
//! kept in a `static`); the dirs of such servers are removed by the next test process that starts
//! a server. `restart` works after `stop` and `kill` and keeps the port, so clients reconnect to
//! the same URL.
//!
//! # Timings (2 loaded cores)
//! `NatsServer::start` ≈ 30 ms, `restart` ≈ 40 ms. `PgServer::start` ≈ 0.3-0.5 s (the first
//! ever on a machine adds ≈ 1-4 s of `initdb`, cached across processes), `kill` + `restart`
//! ≈ 0.2 s, `create_database` ≈ 0.1-0.2 s. Prefer one `PgServer` per test binary with a database
//! per test over a server per test.
//!
//! # Durability
//! JetStream writes an acked message to its store file before the ack, so it survives
//! `NatsServer::kill`. PostgreSQL runs with `fsync = off` but `synchronous_commit = on`: a commit
//! that returned survives `PgServer::kill` + `restart` (crash recovery), not an OS crash, which
//! tests never see.

pub mod bins;
pub mod cluster;
pub mod data;
pub mod gateway;
pub mod nats;
pub mod postgres;
mod process;

use std::sync::atomic::{AtomicU64, Ordering};

pub use cluster::NatsCluster;
pub use gateway::{GatewayOptions, SiteGateway};
pub use nats::NatsServer;
pub use postgres::{PgOptions, PgServer};

/// Names an existing NATS server (with JetStream) that ordinary tests may use.
pub const NATS_URL_ENV: &str = "EDGE_MES_TEST_NATS_URL";
/// Names an existing PostgreSQL server that ordinary tests may use; tests create their own
/// databases in it.
pub const DATABASE_URL_ENV: &str = "EDGE_MES_TEST_DATABASE_URL";

/// A NATS server for a test: a private one, or the one [`NATS_URL_ENV`] names.
#[derive(Debug)]
pub enum NatsHandle {
    Private(NatsServer),
    External(String),
}

impl NatsHandle {
    pub fn url(&self) -> String {
        match self {
            NatsHandle::Private(server) => server.url(),
            NatsHandle::External(url) => url.clone(),
        }
    }
}

/// The server [`NATS_URL_ENV`] names if set (and not empty), else a private one.
pub async fn nats_for_test() -> anyhow::Result<NatsHandle> {
    match env_url(NATS_URL_ENV) {
        Some(url) => Ok(NatsHandle::External(url)),
        None => Ok(NatsHandle::Private(NatsServer::start().await?)),
    }
}

/// A PostgreSQL server for a test: a private one, or the one [`DATABASE_URL_ENV`] names.
#[derive(Debug)]
pub enum PgHandle {
    Private(PgServer),
    /// A server URL; its database part (if any) is only used to connect for `CREATE DATABASE`.
    External(String),
}

impl PgHandle {
    /// URL of database `db` on this server.
    pub fn url(&self, db: &str) -> String {
        match self {
            PgHandle::Private(server) => server.url(db),
            PgHandle::External(url) => with_database(url, db),
        }
    }

    /// Creates database `name` and returns its URL.
    pub async fn create_database(&self, name: &str) -> anyhow::Result<String> {
        match self {
            PgHandle::Private(server) => server.create_database(name).await,
            PgHandle::External(url) => {
                let admin = if has_database(url) {
                    url.clone()
                } else {
                    with_database(url, "postgres")
                };
                postgres::create_database_at(&admin, name).await?;
                Ok(with_database(url, name))
            }
        }
    }
}

/// The server [`DATABASE_URL_ENV`] names if set (and not empty), else a private one.
pub async fn pg_for_test() -> anyhow::Result<PgHandle> {
    match env_url(DATABASE_URL_ENV) {
        Some(url) => Ok(PgHandle::External(url)),
        None => Ok(PgHandle::Private(PgServer::start().await?)),
    }
}

fn env_url(var: &str) -> Option<String> {
    std::env::var(var)
        .ok()
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
}

/// Splits `scheme://authority/path?query` into `(scheme://authority, path, ?query)`.
fn split_url(url: &str) -> (&str, &str, &str) {
    let (base, query) = match url.find('?') {
        Some(q) => url.split_at(q),
        None => (url, ""),
    };
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    match base[authority_start..].find('/') {
        Some(slash) => {
            let (head, path) = base.split_at(authority_start + slash);
            (head, &path[1..], query)
        }
        None => (base, "", query),
    }
}

fn has_database(url: &str) -> bool {
    !split_url(url).1.is_empty()
}

/// `url` with its database (path) replaced by `db`, query parameters kept.
fn with_database(url: &str, db: &str) -> String {
    let (head, _, query) = split_url(url);
    format!("{head}/{db}{query}")
}

/// `url` logging in as `user` with `password` (both URL-safe: tests use generated names), host,
/// database and query kept: a least-privilege login of a test database.
pub fn with_login(url: &str, user: &str, password: &str) -> String {
    let (head, db, query) = split_url(url);
    let scheme_end = head.find("://").map_or(0, |i| i + 3);
    let host = head[scheme_end..]
        .rsplit_once('@')
        .map_or(&head[scheme_end..], |(_, host)| host);
    format!(
        "{}{user}:{password}@{host}/{db}{query}",
        &head[..scheme_end]
    )
}

/// A name unique in this process and very likely across processes:
/// `t_<prefix>_<pid>_<counter>_<random>`, lowercase `[a-z0-9_]`, at most 63 bytes, so it is safe
/// as a PostgreSQL database name and as a NATS subject token or stream name.
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let suffix = format!(
        "_{}_{n}_{:06x}",
        std::process::id(),
        rand::random::<u32>() & 0xff_ffff
    );
    let mut clean: String = prefix
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    clean.truncate(63 - 2 - suffix.len());
    format!("t_{clean}{suffix}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logins_replace_only_the_user() {
        assert_eq!(
            with_login("postgres://postgres@127.0.0.1:5432/db", "w1", "pw"),
            "postgres://w1:pw@127.0.0.1:5432/db"
        );
        assert_eq!(
            with_login("postgres://a:b@h:1/db?sslmode=disable", "w1", "pw"),
            "postgres://w1:pw@h:1/db?sslmode=disable"
        );
        assert_eq!(
            with_login("postgres://h/db", "u", "p"),
            "postgres://u:p@h/db"
        );
    }

    #[test]
    fn unique_names_are_safe_and_distinct() {
        let a = unique_name("Shipper Restart.Test-1");
        let b = unique_name("Shipper Restart.Test-1");
        assert_ne!(a, b);
        assert!(a.starts_with("t_shipper_restart_test_1_"), "{a}");
        for name in [a, b, unique_name(&"x".repeat(200)), unique_name("")] {
            assert!(name.len() <= 63, "{name}");
            assert!(
                name.bytes()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_'),
                "{name}"
            );
        }
    }

    #[test]
    fn external_urls_get_the_database_replaced() {
        assert_eq!(
            with_database("postgres://u:p@h:5432/postgres?sslmode=disable", "t_1"),
            "postgres://u:p@h:5432/t_1?sslmode=disable"
        );
        assert_eq!(
            with_database("postgres://h:5432", "t_1"),
            "postgres://h:5432/t_1"
        );
        assert_eq!(with_database("postgres://h/", "t_1"), "postgres://h/t_1");
        assert!(!has_database("postgres://h:5432"));
        assert!(!has_database("postgres://h:5432/?sslmode=disable"));
        assert!(has_database("postgres://h:5432/db"));
    }
}
