//! CPU cost of the worker's per-message work (framing check + decode + binary COPY encoding), on
//! the benchmark's realistic lines, without NATS or PostgreSQL. For profiles, not for figures:
//!
//! ```text
//! cargo build --release -p ingest-worker --example decode_profile
//! valgrind --tool=callgrind target/release/examples/decode_profile 20000 1   # instructions
//! target/release/examples/decode_profile 200000 20                          # ns per line
//! ```

use std::time::Instant;

use chrono::{TimeZone, Utc};
use ingest_worker::decode::decode_message;
use protocol::framing::count_lines;
use protocol::{BatchKind, BatchMeta, ByteRange, Fingerprint, Limits, SourceKey};
use testkit::data::ReadingGen;

fn main() {
    let mut args = std::env::args().skip(1);
    let lines: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let rounds: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(10);
    let start = Utc
        .with_ymd_and_hms(2026, 1, 1, 0, 0, 0)
        .single()
        .expect("valid date");
    let mut gen = ReadingGen::new(7, start, 50, 5)
        .with_box("box01")
        .with_site("BKK");
    // Messages of about 256 KiB, as the shipper packs them.
    let mut messages: Vec<Vec<u8>> = vec![Vec::new()];
    for _ in 0..lines {
        let last = messages.last_mut().expect("one message");
        last.extend_from_slice(gen.next_line().as_bytes());
        last.push(b'\n');
        if last.len() >= 256 * 1024 {
            messages.push(Vec::new());
        }
    }
    let limits = Limits::default();
    let mut rows = 0usize;
    let started = Instant::now();
    for _ in 0..rounds {
        let mut offset = 0u64;
        for payload in &messages {
            if payload.is_empty() {
                continue;
            }
            let end = offset + payload.len() as u64;
            let meta = BatchMeta {
                site: "BKK".into(),
                box_id: "box01".into(),
                source: SourceKey::new("box01", Fingerprint { crc: 1, len: 1 }),
                path: "/data/readings-001.jsonl".into(),
                range: ByteRange::new(offset, end).expect("non-empty range"),
                lines: count_lines(payload),
                kind: BatchKind::Lines,
            };
            offset = end;
            meta.check_payload(payload).expect("well-framed payload");
            let decoded = decode_message(meta, payload, &limits);
            rows += decoded.row_count();
        }
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{rows} rows in {secs:.3} s: {:.0} ns per line",
        secs * 1e9 / rows.max(1) as f64
    );
}
