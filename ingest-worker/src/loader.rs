//! One batch, one transaction: ledger check, binary COPY of the new rows, rejected lines, ledger
//! ranges, commit. The caller acknowledges the messages only after this returns `Ok`.
//!
//! A row the server refuses although it passed validation (say, a `meta` text PostgreSQL's jsonb
//! parser dislikes) would fail the whole COPY. Then the batch is retried in careful mode: the same
//! transaction, but rows go in under savepoints, halving the failing set until the offending rows
//! are found; they become `database_rejected` rejections and every other row still loads.

use std::collections::HashMap;
use std::ops::Range;
use std::time::Instant;

use protocol::{ByteRange, RejectReason};
use sqlx::{PgConnection, PgPool};
use thiserror::Error;
use tracing::{debug, instrument, warn};

use crate::copy_format::{self, READINGS_COLUMNS};
use crate::decode::{sanitize_text, DecodedMessage, LineOutcome, RejectRecord};
use crate::ledger::{self, LedgerEntry, Plan};
use crate::metrics;

#[derive(Debug, Error)]
pub enum LoadError {
    /// Another transaction loaded an overlapping range first, or a deadlock: retry now.
    #[error("concurrent load of an overlapping range: {0}")]
    Conflict(#[source] sqlx::Error),
    /// The database is down, restarting, out of resources, or the schema is not as expected:
    /// the messages must wait (nak with backoff), none is dropped.
    #[error("database unavailable: {0}")]
    Unavailable(#[source] sqlx::Error),
    /// A data error that careful mode could not pin to single rows: these messages cannot be
    /// loaded as they are and belong in the dead-letter stream.
    #[error("messages cannot be loaded: {0}")]
    Poison(#[source] sqlx::Error),
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct LoadStats {
    pub rows: u64,
    pub rejected: u64,
    pub skipped_lines: u64,
    pub partial_overlaps: u64,
    pub database_rejected: u64,
}

enum Mode {
    Fast,
    Careful,
}

/// Loads `messages` exactly once. Retries conflicts a few times itself.
#[instrument(skip_all, fields(messages = messages.len()), err)]
pub async fn load(pool: &PgPool, messages: &[DecodedMessage]) -> Result<LoadStats, LoadError> {
    let mut attempt = 0;
    let mut mode = Mode::Fast;
    loop {
        attempt += 1;
        match load_once(pool, messages, &mode).await {
            Err(LoadError::Conflict(e)) if attempt < 8 => {
                metrics::retry("conflict");
                debug!(error = %e, attempt, "overlapping concurrent load, retrying");
            }
            Err(LoadError::Poison(e)) if matches!(mode, Mode::Fast) => {
                metrics::retry("careful_mode");
                warn!(error = %e, "copy refused a row, retrying the batch row by row");
                mode = Mode::Careful;
            }
            other => return other,
        }
    }
}

async fn load_once(
    pool: &PgPool,
    messages: &[DecodedMessage],
    mode: &Mode,
) -> Result<LoadStats, LoadError> {
    let mut tx = pool.begin().await.map_err(classify)?;
    let covered = fetch_covered(&mut tx, messages).await?;
    let mut plan = ledger::plan(messages, covered);
    let mut stats = LoadStats {
        skipped_lines: plan.skipped_lines,
        partial_overlaps: plan.partial_overlaps,
        ..LoadStats::default()
    };
    if plan.partial_overlaps > 0 {
        warn!(
            lines = plan.partial_overlaps,
            "lines partly covered by the ledger were skipped: a source's bytes changed under the same name"
        );
    }
    let rows = new_rows(messages, &plan);
    let mut rejects: Vec<(usize, &RejectRecord, ByteRange)> = Vec::new();
    let mut db_rejects: Vec<(usize, RejectRecord, ByteRange)> = Vec::new();
    for (mi, m) in messages.iter().enumerate() {
        for (li, line) in m.lines.iter().enumerate() {
            if let LineOutcome::Reject(r) = &line.outcome {
                if plan.is_new[mi][li] {
                    rejects.push((mi, r.as_ref(), line.range));
                }
            }
        }
    }

    let started = Instant::now();
    match mode {
        Mode::Fast => {
            copy_rows(&mut tx, messages, &rows)
                .await
                .map_err(classify)?;
        }
        Mode::Careful => {
            db_rejects = copy_rows_carefully(&mut tx, messages, rows.clone()).await?;
            for (mi, _, range) in &db_rejects {
                move_row_to_rejected(&mut plan, messages[*mi].meta.source.as_str(), range);
            }
        }
    }
    metrics::copy_duration(started.elapsed());

    insert_ledger(&mut tx, &plan.entries).await?;
    let all_rejects: Vec<(usize, &RejectRecord, ByteRange)> = rejects
        .into_iter()
        .chain(db_rejects.iter().map(|(mi, r, range)| (*mi, r, *range)))
        .collect();
    insert_rejects(&mut tx, messages, &all_rejects).await?;
    tx.commit().await.map_err(classify)?;

    stats.rows = (rows.len() - db_rejects.len()) as u64;
    stats.rejected = all_rejects.len() as u64;
    stats.database_rejected = db_rejects.len() as u64;
    for (_, r, _) in &all_rejects {
        metrics::rejected(r.reason);
    }
    Ok(stats)
}

/// A row to load: message index, line index, and its span in that message's row buffer.
#[derive(Debug, Clone)]
struct RowRef {
    message: usize,
    line: usize,
    span: Range<usize>,
}

fn new_rows(messages: &[DecodedMessage], plan: &Plan) -> Vec<RowRef> {
    let mut rows = Vec::new();
    for (mi, m) in messages.iter().enumerate() {
        for (li, line) in m.lines.iter().enumerate() {
            if let LineOutcome::Row(span) = &line.outcome {
                if plan.is_new[mi][li] {
                    rows.push(RowRef {
                        message: mi,
                        line: li,
                        span: span.clone(),
                    });
                }
            }
        }
    }
    rows
}

async fn fetch_covered(
    conn: &mut PgConnection,
    messages: &[DecodedMessage],
) -> Result<Vec<(String, ByteRange)>, LoadError> {
    let probes = ledger::probe_ranges(messages);
    let sources: Vec<&str> = probes.iter().map(|(s, _)| s.as_str()).collect();
    let starts: Vec<i64> = probes.iter().map(|(_, r)| to_i64(r.start)).collect();
    let ends: Vec<i64> = probes.iter().map(|(_, r)| to_i64(r.end)).collect();
    let rows: Vec<(String, i64, i64)> = sqlx::query_as(
        "SELECT l.source, lower(l.byte_range), upper(l.byte_range)
         FROM unnest($1::text[], $2::int8[], $3::int8[]) AS q(source, lo, hi)
         JOIN ingest_ledger l
           ON l.source = q.source AND l.byte_range && int8range(q.lo, q.hi)",
    )
    .bind(&sources)
    .bind(&starts)
    .bind(&ends)
    .fetch_all(&mut *conn)
    .await
    .map_err(classify)?;
    Ok(rows
        .into_iter()
        .filter_map(|(s, lo, hi)| {
            let range = ByteRange::new(u64::try_from(lo).ok()?, u64::try_from(hi).ok()?)?;
            Some((s, range))
        })
        .collect())
}

/// Offsets are file positions; a file beyond 8 EiB is not a concern, so saturate.
fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

const COPY_STATEMENT: &str = "COPY readings (ts, site, resource_id, work_order_id, operation_id, sensor, value, unit, meta) FROM STDIN (FORMAT binary)";

/// Sends whole message buffers where every row is new, coalescing spans otherwise.
async fn copy_rows(
    conn: &mut PgConnection,
    messages: &[DecodedMessage],
    rows: &[RowRef],
) -> Result<u64, sqlx::Error> {
    debug_assert!(COPY_STATEMENT.contains(READINGS_COLUMNS));
    if rows.is_empty() {
        return Ok(0);
    }
    let mut copy = conn.copy_in_raw(COPY_STATEMENT).await?;
    let mut chunk: Vec<u8> = copy_format::header();
    let result = async {
        let mut i = 0;
        while i < rows.len() {
            let m = &messages[rows[i].message];
            // Extend a run of rows that are contiguous in the same message's buffer.
            let mut span = rows[i].span.clone();
            let mut j = i + 1;
            while j < rows.len()
                && rows[j].message == rows[i].message
                && rows[j].span.start == span.end
            {
                span.end = rows[j].span.end;
                j += 1;
            }
            let bytes = &m.rows[span];
            if chunk.len() + bytes.len() > SEND_CHUNK_BYTES && !chunk.is_empty() {
                copy.send(std::mem::take(&mut chunk)).await?;
            }
            if bytes.len() >= SEND_CHUNK_BYTES {
                copy.send(bytes).await?;
            } else {
                chunk.extend_from_slice(bytes);
            }
            i = j;
        }
        chunk.extend_from_slice(&copy_format::trailer());
        copy.send(chunk).await?;
        Ok::<(), sqlx::Error>(())
    }
    .await;
    match result {
        Ok(()) => copy.finish().await,
        Err(e) => {
            let _ = copy.abort("edge-mes: send failed").await;
            Err(e)
        }
    }
}

/// Writes to the server in pieces of about this size: large enough to amortise a flush, small
/// enough to keep memory flat.
const SEND_CHUNK_BYTES: usize = 1024 * 1024;

/// Careful mode: COPY under savepoints, halving a failing set down to single rows.
async fn copy_rows_carefully(
    conn: &mut PgConnection,
    messages: &[DecodedMessage],
    rows: Vec<RowRef>,
) -> Result<Vec<(usize, RejectRecord, ByteRange)>, LoadError> {
    let mut refused = Vec::new();
    let mut stack = vec![rows];
    while let Some(set) = stack.pop() {
        if set.is_empty() {
            continue;
        }
        sqlx::query("SAVEPOINT edge_mes_rows")
            .execute(&mut *conn)
            .await
            .map_err(classify)?;
        match copy_rows(conn, messages, &set).await {
            Ok(_) => {
                sqlx::query("RELEASE SAVEPOINT edge_mes_rows")
                    .execute(&mut *conn)
                    .await
                    .map_err(classify)?;
            }
            Err(e) => {
                let class = classify(e);
                sqlx::query("ROLLBACK TO SAVEPOINT edge_mes_rows")
                    .execute(&mut *conn)
                    .await
                    .map_err(classify)?;
                let LoadError::Poison(e) = class else {
                    return Err(class);
                };
                if set.len() == 1 {
                    let row = &set[0];
                    let m = &messages[row.message];
                    let line = &m.lines[row.line];
                    warn!(source = %m.meta.source, offset = line.range.start, error = %e, "database refused a row");
                    refused.push((
                        row.message,
                        RejectRecord {
                            reason: RejectReason::DatabaseRejected,
                            detail: database_message(&e),
                            line: format!(
                                "(row at byte {} refused by the database)",
                                line.range.start
                            ),
                            line_bytes: line.range.len(),
                        },
                        line.range,
                    ));
                } else {
                    let mut first = set;
                    let second = first.split_off(first.len() / 2);
                    stack.push(second);
                    stack.push(first);
                }
            }
        }
    }
    Ok(refused)
}

fn database_message(e: &sqlx::Error) -> String {
    match e {
        sqlx::Error::Database(db) => {
            format!("{} ({})", db.message(), db.code().as_deref().unwrap_or("?"))
        }
        other => other.to_string(),
    }
}

fn move_row_to_rejected(plan: &mut Plan, source: &str, range: &ByteRange) {
    if let Some(e) = plan
        .entries
        .iter_mut()
        .find(|e| e.source == source && e.range.contains_range(range))
    {
        e.rows -= 1;
        e.rejected += 1;
    }
}

async fn insert_ledger(conn: &mut PgConnection, entries: &[LedgerEntry]) -> Result<(), LoadError> {
    if entries.is_empty() {
        return Ok(());
    }
    let mut cols = LedgerColumns::default();
    for e in entries {
        cols.source.push(&e.source);
        cols.start.push(to_i64(e.range.start));
        cols.end.push(to_i64(e.range.end));
        cols.site.push(sanitize_text(&e.site));
        cols.box_id.push(sanitize_text(&e.box_id));
        cols.path.push(sanitize_text(&e.path));
        cols.lines.push(e.lines);
        cols.rows.push(e.rows);
        cols.rejected.push(e.rejected);
        cols.min_ts.push(e.ts_span.map(|(lo, _)| lo));
        cols.max_ts.push(e.ts_span.map(|(_, hi)| hi));
    }
    sqlx::query(
        "INSERT INTO ingest_ledger (source, byte_range, site, box_id, path, lines, rows_loaded, rejected,
                                    min_ts, max_ts)
         SELECT s, int8range(lo, hi), site, box_id, path, l, r, j,
                timestamptz 'epoch' + t0 * interval '1 microsecond',
                timestamptz 'epoch' + t1 * interval '1 microsecond'
         FROM unnest($1::text[], $2::int8[], $3::int8[], $4::text[], $5::text[], $6::text[],
                     $7::int8[], $8::int8[], $9::int8[], $10::int8[], $11::int8[])
              AS u(s, lo, hi, site, box_id, path, l, r, j, t0, t1)",
    )
    .bind(&cols.source)
    .bind(&cols.start)
    .bind(&cols.end)
    .bind(&cols.site)
    .bind(&cols.box_id)
    .bind(&cols.path)
    .bind(&cols.lines)
    .bind(&cols.rows)
    .bind(&cols.rejected)
    .bind(&cols.min_ts)
    .bind(&cols.max_ts)
    .execute(&mut *conn)
    .await
    .map_err(classify)?;
    Ok(())
}

/// `ingest_ledger` rows as column arrays, for one `INSERT … SELECT FROM unnest(…)`.
#[derive(Default)]
struct LedgerColumns<'a> {
    source: Vec<&'a str>,
    start: Vec<i64>,
    end: Vec<i64>,
    site: Vec<String>,
    box_id: Vec<String>,
    path: Vec<String>,
    lines: Vec<i64>,
    rows: Vec<i64>,
    rejected: Vec<i64>,
    /// µs since the Unix epoch; NULL for an entry without rows.
    min_ts: Vec<Option<i64>>,
    max_ts: Vec<Option<i64>>,
}

/// `rejected_readings` rows as column arrays.
#[derive(Default)]
struct RejectColumns<'a> {
    site: Vec<String>,
    box_id: Vec<String>,
    source: Vec<&'a str>,
    path: Vec<String>,
    offset: Vec<i64>,
    line_bytes: Vec<i64>,
    reason: Vec<&'static str>,
    detail: Vec<&'a str>,
    line: Vec<&'a str>,
}

async fn insert_rejects(
    conn: &mut PgConnection,
    messages: &[DecodedMessage],
    rejects: &[(usize, &RejectRecord, ByteRange)],
) -> Result<(), LoadError> {
    if rejects.is_empty() {
        return Ok(());
    }
    // Header-derived text is the same for all lines of a message: sanitise once per message.
    let mut header_text: HashMap<usize, (String, String, String)> = HashMap::new();
    let mut cols = RejectColumns::default();
    for (mi, r, range) in rejects {
        let m = &messages[*mi];
        let (site, box_id, path) = header_text
            .entry(*mi)
            .or_insert_with(|| {
                (
                    sanitize_text(&m.meta.site),
                    sanitize_text(&m.meta.box_id),
                    sanitize_text(&m.meta.path),
                )
            })
            .clone();
        cols.site.push(site);
        cols.box_id.push(box_id);
        cols.source.push(m.meta.source.as_str());
        cols.path.push(path);
        cols.offset.push(to_i64(range.start));
        cols.line_bytes
            .push(i64::try_from(r.line_bytes).unwrap_or(i64::MAX));
        cols.reason.push(r.reason.as_str());
        cols.detail.push(&r.detail);
        cols.line.push(&r.line);
    }
    sqlx::query(
        "INSERT INTO rejected_readings (site, box_id, source, path, byte_offset, line_bytes, reason, detail, line)
         SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::int8[], $6::int8[],
                              $7::text[], $8::text[], $9::text[])",
    )
    .bind(&cols.site)
    .bind(&cols.box_id)
    .bind(&cols.source)
    .bind(&cols.path)
    .bind(&cols.offset)
    .bind(&cols.line_bytes)
    .bind(&cols.reason)
    .bind(&cols.detail)
    .bind(&cols.line)
    .execute(&mut *conn)
    .await
    .map_err(classify)?;
    Ok(())
}

/// Sorts an error into what the consumer should do with the messages.
pub fn classify(e: sqlx::Error) -> LoadError {
    let code = match &e {
        sqlx::Error::Database(db) => db.code().map(|c| c.into_owned()),
        _ => None,
    };
    match code.as_deref() {
        // exclusion_violation (a concurrent load of the same range), deadlock, serialization.
        Some("23P01" | "40P01" | "40001") => LoadError::Conflict(e),
        // Data exceptions and integrity violations are properties of the rows themselves.
        Some(c) if c.starts_with("22") || c.starts_with("23") => LoadError::Poison(e),
        _ => LoadError::Unavailable(e),
    }
}
