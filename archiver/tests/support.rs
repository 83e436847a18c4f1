use std::path::{Path, PathBuf};
use std::time::Duration;

use archiver::config::TargetArgs;
use archiver::store::Store;
use chrono::{Duration as ChronoDuration, NaiveDate, TimeZone, Utc};
use ingest_worker::decode::{decode_message, DecodedMessage};
use protocol::framing::count_lines;
use protocol::{BatchKind, BatchMeta, ByteRange, Fingerprint, Limits, SourceKey};
use sqlx::PgPool;
use testkit::PgHandle;
use tokio_util::sync::CancellationToken;

pub struct Env {
    pub pg: PgHandle,
    pub db_url: String,
    pub pool: PgPool,
    pub dir: tempfile::TempDir,
    /// Spill files, outside the archive.
    pub spill: tempfile::TempDir,
    pub store: Store,
}

impl Env {
    pub async fn new() -> Self {
        Self::with(testkit::pg_for_test().await.expect("postgres for test")).await
    }

    pub async fn with(pg: PgHandle) -> Self {
        let name = testkit::unique_name("archiver");
        let db_url = pg.create_database(&name).await.expect("create database");
        let pool = migrated_pool(&db_url).await;
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&TargetArgs::local(dir.path().to_path_buf())).expect("store");
        Self {
            pg,
            db_url,
            pool,
            dir,
            spill: tempfile::tempdir().expect("tempdir"),
            store,
        }
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// One archiving pass with no grace: every day before today is closed.
    pub async fn pass(&self) -> archiver::PassReport {
        archiver::archive_pass(
            &self.pool,
            &self.store,
            Duration::ZERO,
            true,
            self.spill.path(),
            &CancellationToken::new(),
        )
        .await
        .expect("archive pass")
    }

    /// Loads `n` readings per series of `day` (a source of its own, named by `source`).
    pub async fn load(&self, source: u64, day: NaiveDate, series: &[(&str, &str)], n: usize) {
        load(&self.pool, source, day, series, n).await
    }

    /// Row count, sum of ts (µs) and sum of values of `day` in the database.
    pub async fn day_sums(&self, day: NaiveDate) -> Sums {
        day_sums(&self.pool, day).await
    }

    /// The `archiver` binary with this environment's database and target.
    pub fn command(&self, args: &[&str]) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(
            testkit::bins::bin_path("edge-mes-archiver").expect("archiver binary"),
        );
        cmd.args(args)
            .env("DATABASE_URL", &self.db_url)
            .env("ARCHIVER_TARGET", self.root())
            .env("ARCHIVER_SPILL_DIR", self.spill.path())
            .env("RUST_LOG", "warn")
            .kill_on_drop(true);
        cmd
    }
}

pub async fn migrated_pool(db_url: &str) -> PgPool {
    let pool = archiver::db::connect(db_url).await.expect("connect");
    service::db::migrate(&pool).await.expect("migrate");
    pool
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sums {
    pub rows: i64,
    pub ts_micros: i128,
    /// Values are multiples of 1/4, so their sum is exact in any order.
    pub value: f64,
}

pub async fn day_sums(pool: &PgPool, day: NaiveDate) -> Sums {
    let (start, end) = archiver::db::day_bounds(day);
    window_sums(pool, start, end).await
}

pub async fn window_sums(
    pool: &PgPool,
    start: chrono::DateTime<Utc>,
    end: chrono::DateTime<Utc>,
) -> Sums {
    let (rows, ts, value): (i64, Option<String>, Option<f64>) = sqlx::query_as(
        "SELECT count(*), sum((extract(epoch FROM ts) * 1000000)::numeric)::text, sum(value)
         FROM readings WHERE ts >= $1 AND ts < $2",
    )
    .bind(start)
    .bind(end)
    .fetch_one(pool)
    .await
    .unwrap();
    Sums {
        rows,
        ts_micros: ts.map_or(0, |t| t.split('.').next().unwrap().parse().unwrap()),
        value: value.unwrap_or(0.0),
    }
}

pub fn day(d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(2025, 8, d).unwrap()
}

pub const SERIES: [(&str, &str); 3] = [("SMT01", "temp"), ("SMT01", "speed"), ("Line 2/A", "temp")];

/// JSONL readings of `day`: `n` per series, spread over the day, values multiples of 1/4.
pub fn lines(day: NaiveDate, series: &[(&str, &str)], n: usize, salt: u64) -> Vec<String> {
    let start = Utc.from_utc_datetime(&day.and_hms_opt(0, 0, 0).unwrap());
    let step = 86_400_000_000i64 / n.max(1) as i64;
    let mut out = Vec::with_capacity(series.len() * n);
    for i in 0..n {
        for (k, (resource, sensor)) in series.iter().enumerate() {
            let ts = start + ChronoDuration::microseconds(step * i as i64 + k as i64 + salt as i64);
            let value = ((i as u64 * 7 + k as u64 + salt) % 4000) as f64 / 4.0;
            let wo = if i % 3 == 0 {
                r#","work_order_id":"WO1""#
            } else {
                ""
            };
            let meta = if i % 5 == 0 {
                format!(r#","meta":{{"i":{i}}}"#)
            } else {
                String::new()
            };
            out.push(format!(
                r#"{{"ts":"{}","resource_id":"{resource}","sensor":"{sensor}","value":{value},"unit":"C"{wo}{meta}}}"#,
                ts.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
            ));
        }
    }
    out
}

/// Loads readings through the ingest worker's loader, 2000 lines per message, as source
/// `source` of box `b1` at site `S1`.
pub async fn load(pool: &PgPool, source: u64, day: NaiveDate, series: &[(&str, &str)], n: usize) {
    let all = lines(day, series, n, source);
    let mut offset = 0u64;
    let mut messages: Vec<DecodedMessage> = Vec::new();
    for chunk in all.chunks(2000) {
        let payload: String = chunk.iter().map(|l| format!("{l}\n")).collect();
        let len = payload.len() as u64;
        let meta = BatchMeta {
            site: "S1".into(),
            box_id: "b1".into(),
            source: SourceKey::new(
                "b1",
                Fingerprint {
                    crc: source,
                    len: 1,
                },
            ),
            path: "/data/readings.jsonl".into(),
            range: ByteRange::new(offset, offset + len).unwrap(),
            lines: count_lines(payload.as_bytes()),
            kind: BatchKind::Lines,
        };
        offset += len;
        messages.push(decode_message(meta, payload.as_bytes(), &Limits::default()));
        if messages.len() == 16 {
            ingest_worker::loader::load(pool, &messages).await.unwrap();
            messages.clear();
        }
    }
    if !messages.is_empty() {
        ingest_worker::loader::load(pool, &messages).await.unwrap();
    }
}

/// The Parquet files under `root` (not the manifests), relative paths, sorted.
pub fn parquet_files(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p: PathBuf = e.path();
            if p.is_dir() {
                dirs.push(p);
            } else {
                out.push(p.strip_prefix(root).unwrap().display().to_string());
            }
        }
    }
    out.retain(|p| !p.starts_with("_manifests"));
    out.sort();
    out
}

/// Polls `check` until it holds or `timeout` passes.
pub async fn eventually<F, Fut>(timeout: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
