//! One JSONL line, as an edge app wrote it, through the worker's validation
//! (`protocol::decode_line`) and, when it is accepted, the binary COPY encoding of its row
//! (`ingest_worker::copy_format::encode_row`).
//!
//! Input: the line's bytes without its line ending. Besides "does not panic", an accepted reading
//! must keep the promises of `protocol::reading`'s docs, which the worker and PostgreSQL rely on.

#![no_main]

use libfuzzer_sys::fuzz_target;
use protocol::{decode_line, Limits, Reading};

/// Small caps, so that the length rules are reached by short inputs too.
const TIGHT: Limits = Limits {
    max_line_bytes: 96,
    max_field_bytes: 8,
};

fuzz_target!(|line: &[u8]| {
    for limits in [Limits::default(), TIGHT] {
        match decode_line(line, &limits) {
            Ok(reading) => {
                check_reading(line, &reading, &limits);
                let mut row = Vec::new();
                ingest_worker::copy_format::encode_row(&mut row, "SITE", &reading);
                assert!(!row.is_empty());
            }
            Err(rejection) => {
                // The reason's string form is stored; it must read back as the same reason.
                let reason = rejection.reason;
                assert_eq!(protocol::RejectReason::parse(reason.as_str()), Some(reason));
            }
        }
    }
});

fn check_reading(line: &[u8], r: &Reading<'_>, limits: &Limits) {
    assert!(line.len() <= limits.max_line_bytes);
    assert!(r.value.is_finite(), "value {}", r.value);
    for (name, text) in [("resource_id", &r.resource_id), ("sensor", &r.sensor)] {
        assert!(!text.trim().is_empty(), "{name} is blank");
    }
    let texts = [
        Some(&r.resource_id),
        Some(&r.sensor),
        r.work_order_id.as_ref(),
        r.operation_id.as_ref(),
        r.unit.as_ref(),
    ];
    for text in texts.into_iter().flatten() {
        assert!(text.len() <= limits.max_field_bytes, "{text:?} too long");
        // PostgreSQL text cannot hold NUL.
        assert!(!text.contains('\0'), "{text:?} holds NUL");
    }
    if let Some(meta) = &r.meta {
        assert!(meta.starts_with('{'), "meta {meta:?} is not an object");
    }
}
