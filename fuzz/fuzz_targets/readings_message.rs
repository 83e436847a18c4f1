//! A readings message as the worker receives it from JetStream: its subject, its headers and its
//! payload, through what `ingest_worker::pipeline` does before loading it (its private `frame`:
//! `BatchMeta::from_headers`, `check_payload`, `identity::check`), then
//! `ingest_worker::decode::decode_message`.
//!
//! Input, so that seeds are readable text:
//!
//! ```text
//! <subject>\n
//! <Header-Name>: <value>\n        (any number; the first of a repeated name wins, as in the worker)
//! \n
//! <payload bytes, to the end>
//! ```
//!
//! Besides "does not panic": a message that frames must decode into lines whose byte ranges tile
//! its range, with row spans inside the rows buffer, and its headers must round-trip.

#![no_main]

use std::collections::HashMap;

use ingest_worker::decode::{decode_message, LineOutcome};
use libfuzzer_sys::fuzz_target;
use protocol::{BatchKind, BatchMeta, Limits};

const PREFIX: &str = protocol::subject::READINGS_PREFIX;

fuzz_target!(|data: &[u8]| {
    let Some((subject, headers, payload)) = split_message(data) else {
        return;
    };
    // The worker's `frame`, step by step.
    let Ok(meta) = BatchMeta::from_headers(|name| headers.get(name).copied()) else {
        return;
    };
    if meta.check_payload(payload).is_err() {
        return;
    }
    // Refused messages are dead-lettered; the identity check must only answer, never panic.
    let identity = ingest_worker::identity::check(&meta, subject, PREFIX);

    // What the shipper would send for these headers reads back as the same headers.
    let sent: HashMap<&str, String> = meta.headers().into_iter().collect();
    let back = BatchMeta::from_headers(|name| sent.get(name).map(String::as_str));
    assert_eq!(back.as_ref(), Ok(&meta), "headers do not round-trip");

    if identity.is_err() {
        return;
    }
    let limits = Limits::default();
    let decoded = decode_message(meta.clone(), payload, &limits);
    match meta.kind {
        BatchKind::Oversize => assert_eq!(decoded.lines.len(), 1),
        BatchKind::Lines => assert_eq!(decoded.lines.len() as u64, meta.lines),
    }
    let mut next = meta.range.start;
    for line in &decoded.lines {
        assert_eq!(line.range.start, next, "line ranges leave a gap");
        next = line.range.end;
        if let LineOutcome::Row(span) = &line.outcome {
            assert!(span.start < span.end && span.end <= decoded.rows.len());
        }
    }
    if !decoded.lines.is_empty() {
        assert_eq!(
            next, meta.range.end,
            "line ranges do not end at the range's end"
        );
    }
});

/// Subject, headers (name → first value) and payload; `None` if the header part is not UTF-8 or
/// has no blank line ending it.
fn split_message(data: &[u8]) -> Option<(&str, HashMap<&str, &str>, &[u8])> {
    let end = data.windows(2).position(|w| w == b"\n\n")?;
    let head = std::str::from_utf8(&data[..end]).ok()?;
    let payload = &data[end + 2..];
    let mut lines = head.split('\n');
    let subject = lines.next()?;
    let mut headers = HashMap::new();
    for line in lines {
        let (name, value) = line.split_once(": ")?;
        headers.entry(name).or_insert(value);
    }
    Some((subject, headers, payload))
}
