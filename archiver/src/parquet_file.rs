//! One Parquet file of the archive: rows of one (day, site, resource, sensor) in, bytes out; and
//! back: a file's row groups (byte ranges, rows) and its rows.
//!
//! Files are built in memory and stored whole (one put, atomic on every target). Writing is
//! deterministic: the same rows in the same order give the same bytes with the same build, which
//! is what lets a crashed archive run be redone with identical files.

use std::sync::Arc;

use arrow_array::builder::{Float64Builder, StringBuilder, StringDictionaryBuilder};
use arrow_array::cast::AsArray;
use arrow_array::types::{Int32Type, TimestampMicrosecondType};
use arrow_array::{
    Array, ArrayAccessor, ArrayRef, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use bytes::Bytes;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::{ParquetMetaData, ParquetMetaDataReader};
use parquet::file::properties::WriterProperties;
use thiserror::Error;

use crate::merkle::{self, Hash};
use crate::schema;

/// Rows per row group: large enough for good compression and few leaves, small enough that a
/// reader can take one group at a time.
pub const ROW_GROUP_ROWS: usize = 128 * 1024;
/// Rows per Arrow batch handed to the writer.
const BATCH_ROWS: usize = 8192;
const ZSTD_LEVEL: i32 = 3;

#[derive(Debug, Error)]
pub enum ParquetFileError {
    #[error("parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    #[error("arrow: {0}")]
    Arrow(#[from] arrow_schema::ArrowError),
    #[error("column {0} is missing or of another type")]
    Column(&'static str),
    #[error(
        "row group {index}: byte range {start}+{len} lies outside the file of {file_len} bytes"
    )]
    RowGroupRange {
        index: usize,
        start: u64,
        len: u64,
        file_len: usize,
    },
}

/// One reading as archived (site, resource and sensor are the file's partition values).
#[derive(Debug, Clone, PartialEq)]
pub struct ArchiveRow {
    pub ts_micros: i64,
    pub work_order_id: Option<String>,
    pub operation_id: Option<String>,
    pub value: f64,
    pub unit: Option<String>,
    /// JSON text.
    pub meta: Option<String>,
}

/// Builds one file from rows pushed in order.
pub struct FileWriter {
    writer: ArrowWriter<Vec<u8>>,
    resource_id: String,
    sensor: String,
    pending: Vec<ArchiveRow>,
    rows: u64,
    min_ts: i64,
    max_ts: i64,
}

impl FileWriter {
    pub fn new(resource_id: &str, sensor: &str) -> Result<Self, ParquetFileError> {
        let props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(ZstdLevel::try_new(ZSTD_LEVEL)?))
            .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
            .set_dictionary_enabled(true)
            .build();
        Ok(Self {
            writer: ArrowWriter::try_new(Vec::new(), schema::schema(), Some(props))?,
            resource_id: resource_id.to_owned(),
            sensor: sensor.to_owned(),
            pending: Vec::with_capacity(BATCH_ROWS),
            rows: 0,
            min_ts: i64::MAX,
            max_ts: i64::MIN,
        })
    }

    pub fn push(&mut self, row: ArchiveRow) -> Result<(), ParquetFileError> {
        self.min_ts = self.min_ts.min(row.ts_micros);
        self.max_ts = self.max_ts.max(row.ts_micros);
        self.rows += 1;
        self.pending.push(row);
        if self.pending.len() >= BATCH_ROWS {
            self.flush_batch()?;
        }
        Ok(())
    }

    fn flush_batch(&mut self) -> Result<(), ParquetFileError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let rows = std::mem::take(&mut self.pending);
        let batch = to_batch(&self.resource_id, &self.sensor, &rows)?;
        self.writer.write(&batch)?;
        self.pending = rows;
        self.pending.clear();
        Ok(())
    }

    /// The file's bytes, its row count and its time range (µs).
    pub fn finish(mut self) -> Result<(Vec<u8>, u64, i64, i64), ParquetFileError> {
        self.flush_batch()?;
        let bytes = self.writer.into_inner()?;
        Ok((bytes, self.rows, self.min_ts, self.max_ts))
    }
}

fn dict_column<'a>(values: impl Iterator<Item = Option<&'a str>>) -> ArrayRef {
    let mut b = StringDictionaryBuilder::<Int32Type>::new();
    for v in values {
        b.append_option(v);
    }
    Arc::new(b.finish())
}

fn to_batch(
    resource_id: &str,
    sensor: &str,
    rows: &[ArchiveRow],
) -> Result<RecordBatch, ParquetFileError> {
    let ts: ArrayRef = Arc::new(
        TimestampMicrosecondArray::from_iter_values(rows.iter().map(|r| r.ts_micros))
            .with_timezone("UTC"),
    );
    let mut value = Float64Builder::with_capacity(rows.len());
    let mut meta = StringBuilder::new();
    for r in rows {
        value.append_value(r.value);
        meta.append_option(r.meta.as_deref());
    }
    let columns: Vec<ArrayRef> = vec![
        ts,
        dict_column(rows.iter().map(|_| Some(resource_id))),
        dict_column(rows.iter().map(|r| r.work_order_id.as_deref())),
        dict_column(rows.iter().map(|r| r.operation_id.as_deref())),
        dict_column(rows.iter().map(|_| Some(sensor))),
        Arc::new(value.finish()),
        dict_column(rows.iter().map(|r| r.unit.as_deref())),
        Arc::new(meta.finish()),
    ];
    Ok(RecordBatch::try_new(schema::schema(), columns)?)
}

/// A row group as the manifest describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowGroupInfo {
    pub offset: u64,
    pub length: u64,
    pub rows: u64,
    pub hash: Hash,
}

/// What a file's own metadata says: rows, row groups with their leaf hashes, schema fingerprint.
#[derive(Debug, Clone)]
pub struct FileFacts {
    pub rows: u64,
    pub row_groups: Vec<RowGroupInfo>,
    pub schema_fingerprint: String,
}

fn metadata(bytes: &Bytes) -> Result<ParquetMetaData, ParquetFileError> {
    Ok(ParquetMetaDataReader::new().parse_and_finish(bytes)?)
}

/// Reads a file's footer and hashes its row groups (see [`crate::merkle`]).
pub fn facts(bytes: &Bytes) -> Result<FileFacts, ParquetFileError> {
    let meta = metadata(bytes)?;
    let mut row_groups = Vec::with_capacity(meta.num_row_groups());
    for (index, rg) in meta.row_groups().iter().enumerate() {
        let mut start = u64::MAX;
        let mut end = 0u64;
        for col in rg.columns() {
            let (s, len) = col.byte_range();
            start = start.min(s);
            end = end.max(s.saturating_add(len));
        }
        let len = end.saturating_sub(start);
        let range = usize::try_from(start)
            .ok()
            .zip(usize::try_from(end).ok())
            .filter(|&(s, e)| s <= e && e <= bytes.len())
            .ok_or(ParquetFileError::RowGroupRange {
                index,
                start,
                len,
                file_len: bytes.len(),
            })?;
        row_groups.push(RowGroupInfo {
            offset: start,
            length: len,
            rows: u64::try_from(rg.num_rows()).unwrap_or(0),
            hash: merkle::leaf_hash(&bytes[range.0..range.1]),
        });
    }
    let arrow_schema = parquet::arrow::parquet_to_arrow_schema(
        meta.file_metadata().schema_descr(),
        meta.file_metadata().key_value_metadata(),
    )?;
    Ok(FileFacts {
        rows: u64::try_from(meta.file_metadata().num_rows()).unwrap_or(0),
        row_groups,
        schema_fingerprint: schema::fingerprint(&arrow_schema),
    })
}

/// A file's rows, in order (replay).
pub fn read_rows(bytes: Bytes) -> Result<Vec<(String, String, ArchiveRow)>, ParquetFileError> {
    let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)?.build()?;
    let mut out = Vec::new();
    for batch in reader {
        let batch = batch?;
        let ts = batch
            .column_by_name("ts")
            .and_then(|c| c.as_primitive_opt::<TimestampMicrosecondType>())
            .ok_or(ParquetFileError::Column("ts"))?;
        let value = batch
            .column_by_name("value")
            .and_then(|c| c.as_primitive_opt::<arrow_array::types::Float64Type>())
            .ok_or(ParquetFileError::Column("value"))?;
        let meta = batch
            .column_by_name("meta")
            .and_then(|c| c.as_any().downcast_ref::<StringArray>())
            .ok_or(ParquetFileError::Column("meta"))?;
        let text = |name: &'static str| -> Result<Vec<Option<String>>, ParquetFileError> {
            let col = batch
                .column_by_name(name)
                .and_then(|c| c.as_dictionary_opt::<Int32Type>())
                .ok_or(ParquetFileError::Column(name))?;
            let dict = col
                .downcast_dict::<StringArray>()
                .ok_or(ParquetFileError::Column(name))?;
            Ok((0..col.len())
                .map(|i| (!col.is_null(i)).then(|| dict.value(i).to_owned()))
                .collect())
        };
        let resource = text("resource_id")?;
        let sensor = text("sensor")?;
        let work_order = text("work_order_id")?;
        let operation = text("operation_id")?;
        let unit = text("unit")?;
        for i in 0..batch.num_rows() {
            out.push((
                resource[i].clone().unwrap_or_default(),
                sensor[i].clone().unwrap_or_default(),
                ArchiveRow {
                    ts_micros: ts.value(i),
                    work_order_id: work_order[i].clone(),
                    operation_id: operation[i].clone(),
                    value: value.value(i),
                    unit: unit[i].clone(),
                    meta: (!meta.is_null(i)).then(|| meta.value(i).to_owned()),
                },
            ));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(i: i64) -> ArchiveRow {
        ArchiveRow {
            ts_micros: 1_755_820_800_000_000 + i,
            work_order_id: (i % 2 == 0).then(|| "WO1".to_owned()),
            operation_id: None,
            value: i as f64 * 0.5,
            unit: Some("C".into()),
            meta: (i % 3 == 0).then(|| format!("{{\"i\":{i}}}")),
        }
    }

    fn write(n: i64) -> Vec<u8> {
        let mut w = FileWriter::new("R1", "temp").unwrap();
        for i in 0..n {
            w.push(row(i)).unwrap();
        }
        let (bytes, rows, min, max) = w.finish().unwrap();
        assert_eq!(rows, n as u64);
        assert_eq!((min, max), (row(0).ts_micros, row(n - 1).ts_micros));
        bytes
    }

    #[test]
    fn rows_round_trip_and_files_are_deterministic() {
        let a = write(20_000);
        assert_eq!(a, write(20_000));
        let rows = read_rows(Bytes::from(a.clone())).unwrap();
        assert_eq!(rows.len(), 20_000);
        assert_eq!(rows[7], ("R1".into(), "temp".into(), row(7)));
        let facts = facts(&Bytes::from(a)).unwrap();
        assert_eq!(facts.rows, 20_000);
        assert_eq!(
            facts.schema_fingerprint,
            schema::fingerprint(&schema::schema())
        );
        assert_eq!(facts.row_groups.iter().map(|g| g.rows).sum::<u64>(), 20_000);
    }

    #[test]
    fn large_files_have_several_row_groups_that_tile_the_data() {
        let n = ROW_GROUP_ROWS as i64 * 2 + 5;
        let bytes = Bytes::from(write(n));
        let facts = facts(&bytes).unwrap();
        assert_eq!(facts.row_groups.len(), 3);
        assert_eq!(facts.row_groups[0].rows, ROW_GROUP_ROWS as u64);
        // Row groups follow each other without overlap after the 4-byte magic.
        assert_eq!(facts.row_groups[0].offset, 4);
        for w in facts.row_groups.windows(2) {
            assert_eq!(w[0].offset + w[0].length, w[1].offset);
        }
    }
}
