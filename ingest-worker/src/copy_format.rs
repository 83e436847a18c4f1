//! PostgreSQL binary `COPY` encoding of readings rows.
//!
//! Binary COPY skips the server's text parsing of timestamps and doubles, which is where text COPY
//! spends its time at large batches. Rows are encoded once, straight from the borrowed
//! [`Reading`], into one buffer per message; the loader sends whole buffers (or row spans of them
//! when part of a message was loaded before).

use protocol::Reading;

/// The column list every encoded row matches, in order.
pub const READINGS_COLUMNS: &str =
    "ts, site, resource_id, work_order_id, operation_id, sensor, value, unit, meta";

const SIGNATURE: &[u8] = b"PGCOPY\n\xff\r\n\0";
const FIELD_COUNT: i16 = 9;
/// PostgreSQL timestamps count microseconds from 2000-01-01T00:00:00Z.
const PG_EPOCH_OFFSET_MICROS: i64 = 946_684_800_000_000;
const JSONB_VERSION: u8 = 1;

/// The 19-byte header that starts a binary COPY stream.
pub fn header() -> Vec<u8> {
    let mut out = Vec::with_capacity(19);
    out.extend_from_slice(SIGNATURE);
    out.extend_from_slice(&0i32.to_be_bytes()); // flags
    out.extend_from_slice(&0i32.to_be_bytes()); // header extension length
    out
}

/// The trailer that ends a binary COPY stream.
pub fn trailer() -> [u8; 2] {
    (-1i16).to_be_bytes()
}

/// Appends one row. `site` is the message's (its subject's, which its headers must match), the
/// rest comes from the line.
pub fn encode_row(out: &mut Vec<u8>, site: &str, r: &Reading<'_>) {
    out.extend_from_slice(&FIELD_COUNT.to_be_bytes());
    field(out, &(r.ts_micros - PG_EPOCH_OFFSET_MICROS).to_be_bytes());
    field(out, site.as_bytes());
    field(out, r.resource_id.as_bytes());
    opt_field(out, r.work_order_id.as_deref().map(str::as_bytes));
    opt_field(out, r.operation_id.as_deref().map(str::as_bytes));
    field(out, r.sensor.as_bytes());
    field(out, &r.value.to_bits().to_be_bytes());
    opt_field(out, r.unit.as_deref().map(str::as_bytes));
    match r.meta.as_deref() {
        Some(meta) => {
            out.extend_from_slice(&len_prefix(meta.len() + 1));
            out.push(JSONB_VERSION);
            out.extend_from_slice(meta.as_bytes());
        }
        None => out.extend_from_slice(&(-1i32).to_be_bytes()),
    }
}

fn field(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&len_prefix(bytes.len()));
    out.extend_from_slice(bytes);
}

fn opt_field(out: &mut Vec<u8>, bytes: Option<&[u8]>) {
    match bytes {
        Some(b) => field(out, b),
        None => out.extend_from_slice(&(-1i32).to_be_bytes()),
    }
}

/// Field lengths are i32. Lines are capped far below 2 GiB before they get here, so the clamp only
/// guards the invariant; an oversized field would be refused by the server, not mis-framed.
fn len_prefix(len: usize) -> [u8; 4] {
    i32::try_from(len).unwrap_or(i32::MAX).to_be_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::{decode_line, Limits};

    #[test]
    fn row_layout_matches_the_binary_copy_format() {
        let line = br#"{"ts":"2000-01-01T00:00:01Z","resource_id":"R","sensor":"s","value":1.5,"meta":{"a":1}}"#;
        let r = decode_line(line, &Limits::default()).unwrap();
        let mut out = Vec::new();
        encode_row(&mut out, "S", &r);
        let mut expect = Vec::new();
        expect.extend_from_slice(&9i16.to_be_bytes());
        expect.extend_from_slice(&8i32.to_be_bytes());
        expect.extend_from_slice(&1_000_000i64.to_be_bytes());
        for text in [&b"S"[..], b"R"] {
            expect.extend_from_slice(&(text.len() as i32).to_be_bytes());
            expect.extend_from_slice(text);
        }
        expect.extend_from_slice(&(-1i32).to_be_bytes());
        expect.extend_from_slice(&(-1i32).to_be_bytes());
        expect.extend_from_slice(&1i32.to_be_bytes());
        expect.push(b's');
        expect.extend_from_slice(&8i32.to_be_bytes());
        expect.extend_from_slice(&1.5f64.to_bits().to_be_bytes());
        expect.extend_from_slice(&(-1i32).to_be_bytes());
        expect.extend_from_slice(&8i32.to_be_bytes());
        expect.push(1);
        expect.extend_from_slice(br#"{"a":1}"#);
        assert_eq!(out, expect);
        assert_eq!(header().len(), 19);
        assert_eq!(trailer(), [0xff, 0xff]);
    }
}
