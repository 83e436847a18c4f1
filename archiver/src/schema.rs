//! The archive's Arrow/Parquet schema and its fingerprint.
//!
//! Columns, in order: `ts` timestamp µs UTC, `resource_id`, `work_order_id`, `operation_id`,
//! `sensor` (dictionary-encoded strings), `value` float64, `unit` (dictionary string), `meta`
//! (the reading's `meta` object as JSON text, a plain string). `site` is not a column: it is the
//! `site=` partition of the path, as `date` is.
//!
//! # Fingerprint
//! The canonical text of a schema is the line `edge-mes-archive/1` followed by one line per field,
//! `<name>: <type> <null|not null>`, joined with `\n` (no trailing newline), with types written
//! `timestamp[us, UTC]`, `dictionary<int32, utf8>`, `float64`, `utf8` (any other type as its
//! Rust debug form, which never matches). The fingerprint is the lower-case hex SHA-256 of that
//! text. `verify` recomputes it from the Arrow schema stored in each file.

use std::sync::Arc;

use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use sha2::{Digest, Sha256};

/// First line of the canonical schema text; changes only with an incompatible layout.
pub const FORMAT: &str = "edge-mes-archive/1";

fn dict() -> DataType {
    DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8))
}

/// The schema every archive file has.
pub fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new(
            "ts",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
        Field::new("resource_id", dict(), false),
        Field::new("work_order_id", dict(), true),
        Field::new("operation_id", dict(), true),
        Field::new("sensor", dict(), false),
        Field::new("value", DataType::Float64, false),
        Field::new("unit", dict(), true),
        Field::new("meta", DataType::Utf8, true),
    ]))
}

fn type_text(t: &DataType) -> String {
    match t {
        DataType::Timestamp(TimeUnit::Microsecond, Some(tz)) => format!("timestamp[us, {tz}]"),
        DataType::Dictionary(k, v) => format!("dictionary<{}, {}>", type_text(k), type_text(v)),
        DataType::Int32 => "int32".into(),
        DataType::Utf8 => "utf8".into(),
        DataType::Float64 => "float64".into(),
        other => format!("{other:?}"),
    }
}

/// The canonical text of `schema` (see the module docs).
pub fn canonical_lines(schema: &Schema) -> Vec<String> {
    let mut lines = vec![FORMAT.to_owned()];
    for f in schema.fields() {
        let null = if f.is_nullable() { "null" } else { "not null" };
        lines.push(format!("{}: {} {null}", f.name(), type_text(f.data_type())));
    }
    lines
}

/// Hex SHA-256 of the canonical text.
pub fn fingerprint(schema: &Schema) -> String {
    hex::encode(Sha256::digest(
        canonical_lines(schema).join("\n").as_bytes(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_text_is_stable() {
        let lines = canonical_lines(&schema());
        assert_eq!(
            lines,
            vec![
                "edge-mes-archive/1",
                "ts: timestamp[us, UTC] not null",
                "resource_id: dictionary<int32, utf8> not null",
                "work_order_id: dictionary<int32, utf8> null",
                "operation_id: dictionary<int32, utf8> null",
                "sensor: dictionary<int32, utf8> not null",
                "value: float64 not null",
                "unit: dictionary<int32, utf8> null",
                "meta: utf8 null",
            ]
        );
        let expect = hex::encode(Sha256::digest(lines.join("\n").as_bytes()));
        assert_eq!(fingerprint(&schema()), expect);
    }

    #[test]
    fn another_type_changes_the_fingerprint() {
        let mut fields: Vec<Field> = schema().fields().iter().map(|f| (**f).clone()).collect();
        fields[5] = Field::new("value", DataType::Float32, false);
        assert_ne!(fingerprint(&Schema::new(fields)), fingerprint(&schema()));
    }
}
