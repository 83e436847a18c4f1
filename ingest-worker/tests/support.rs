use std::future::Future;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, Context};
use async_nats::HeaderMap;
use ingest_worker::Config;
use protocol::framing::count_lines;
use protocol::{BatchKind, BatchMeta, ByteRange, Fingerprint, Names, SourceKey};
use sqlx::PgPool;
use testkit::{NatsHandle, PgHandle};
use tokio_util::sync::CancellationToken;

pub struct Env {
    pub pg: PgHandle,
    pub nats: NatsHandle,
    pub db_url: String,
    pub tag: String,
    pub names: Names,
}

impl Env {
    pub async fn new() -> Self {
        Self::with(
            testkit::pg_for_test().await.expect("postgres for test"),
            testkit::nats_for_test().await.expect("nats for test"),
        )
        .await
    }

    pub async fn with(pg: PgHandle, nats: NatsHandle) -> Self {
        let tag = testkit::unique_name("worker");
        let db_url = pg.create_database(&tag).await.expect("create database");
        Self {
            pg,
            nats,
            db_url,
            names: Names::isolated(&tag),
            tag,
        }
    }

    pub fn config(&self) -> Config {
        let mut c = Config::for_urls(&self.nats.url(), &self.db_url);
        c.namespace = self.tag.clone();
        c.until_idle = Some(1);
        c.batch_linger_ms = 5;
        // A killed worker's messages come back after ack_wait; keep tests short.
        c.ack_wait_secs = 5;
        // The test data is from 2025: the default 90-day retention, whose first pass runs as the
        // worker starts, could remove rows a test is about to count (schema.rs tests retention).
        c.retention_days = 0;
        c
    }

    pub async fn js(&self) -> Context {
        let client = async_nats::connect(self.nats.url())
            .await
            .expect("connect nats");
        jetstream::new(client)
    }

    /// Creates the schema, the streams and the consumer as the worker does at start.
    pub async fn setup_streams(&self) {
        let pool = ingest_worker::db::connect(&self.db_url, 1)
            .await
            .expect("connect db");
        ingest_worker::db::migrate(&pool).await.expect("migrate");
        pool.close().await;
        let js = self.js().await;
        ingest_worker::jetstream::ensure(&js, &self.names, &self.config())
            .await
            .expect("streams");
    }

    pub async fn pool(&self) -> PgPool {
        PgPool::connect(&self.db_url).await.expect("connect db")
    }

    /// Runs one in-process worker until it has been idle for a second.
    pub async fn run_until_idle(&self) {
        tokio::time::timeout(
            Duration::from_secs(120),
            ingest_worker::run(self.config(), CancellationToken::new()),
        )
        .await
        .expect("worker did not go idle within 120 s")
        .expect("worker failed");
    }

    pub async fn scalar(&self, sql: &str) -> i64 {
        let pool = self.pool().await;
        let v: i64 = sqlx::query_scalar(sql).fetch_one(&pool).await.expect(sql);
        pool.close().await;
        v
    }

    pub async fn readings(&self) -> i64 {
        self.scalar("SELECT count(*) FROM readings").await
    }

    pub async fn rejected(&self) -> i64 {
        self.scalar("SELECT count(*) FROM rejected_readings").await
    }
}

/// A file's content framed into messages of at most `max_bytes` (complete lines), as the shipper
/// does. Lines longer than `max_line` travel as oversize messages.
pub fn frame(
    box_id: &str,
    content: &[u8],
    max_bytes: usize,
    max_line: usize,
) -> Vec<(BatchMeta, Vec<u8>)> {
    let fp = Fingerprint::of_head(content, max_line).expect("content has a first line");
    let source = SourceKey::new(box_id, fp);
    let meta = |start: usize, end: usize, lines: u64, kind| BatchMeta {
        site: "BKK".into(),
        box_id: box_id.into(),
        source: source.clone(),
        path: format!("/data/{box_id}.jsonl"),
        range: ByteRange::new(start as u64, end as u64).expect("range"),
        lines,
        kind,
    };
    let mut out = Vec::new();
    let mut msg_start = 0;
    let mut pos = 0;
    while pos < content.len() {
        let Some(nl) = content[pos..].iter().position(|&b| b == b'\n') else {
            break;
        };
        let line_end = pos + nl + 1;
        if nl > max_line {
            if msg_start < pos {
                let p = &content[msg_start..pos];
                out.push((
                    meta(msg_start, pos, count_lines(p), BatchKind::Lines),
                    p.to_vec(),
                ));
            }
            out.push((
                meta(pos, line_end, 1, BatchKind::Oversize),
                content[pos..pos + protocol::framing::OVERSIZE_PREFIX_BYTES].to_vec(),
            ));
            msg_start = line_end;
        } else if line_end - msg_start > max_bytes && msg_start < pos {
            let p = &content[msg_start..pos];
            out.push((
                meta(msg_start, pos, count_lines(p), BatchKind::Lines),
                p.to_vec(),
            ));
            msg_start = pos;
        }
        pos = line_end;
    }
    if msg_start < pos {
        let p = &content[msg_start..pos];
        out.push((
            meta(msg_start, pos, count_lines(p), BatchKind::Lines),
            p.to_vec(),
        ));
    }
    out
}

pub async fn publish(js: &Context, names: &Names, messages: &[(BatchMeta, Vec<u8>)]) {
    let mut acks = Vec::new();
    for (meta, payload) in messages {
        let mut headers = HeaderMap::new();
        for (k, v) in meta.headers() {
            headers.insert(k, v.as_str());
        }
        headers.insert("Nats-Msg-Id", meta.msg_id().as_str());
        let ack = js
            .publish_with_headers(
                names.readings_subject(&meta.site, &meta.box_id),
                headers,
                payload.clone().into(),
            )
            .await
            .expect("publish");
        acks.push(ack);
    }
    for ack in acks {
        ack.await.expect("puback");
    }
}

/// Polls `check` until it returns true or `timeout` passes.
pub async fn wait_for<F, Fut>(timeout: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("timed out after {timeout:?} waiting for {what}");
}
