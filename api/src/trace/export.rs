//! `GET /trace/run/{op_run_id}/readings`: every reading of a run's resource from its start to
//! its end (or now), optionally of one sensor, as NDJSON (the default) or CSV — by sensor, then
//! time.
//!
//! Streamed: a task reads one sensor's rows at a time from the database (in one read-only
//! snapshot) as PostgreSQL sends them, encodes them into chunks of about [`CHUNK_BYTES`] and hands
//! each to the response body through a channel of [`CHANNEL_CHUNKS`]. It waits while the client
//! is slower than the database, so what is held at any time is those few chunks and the
//! connection's buffers, whatever the run's size. A client that takes nothing for
//! [`STALL_TIMEOUT`] is dropped (its database connection goes back to the pool). A failure after
//! the first bytes cannot become a problem document: the body then ends with an error (the
//! connection is reset, no final chunk), never like a complete export.

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, SecondsFormat, SubsecRound, Utc};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use sqlx::{Postgres, Transaction};
use tokio::sync::mpsc;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::error::{problem_response, ApiError, Problem};
use crate::extract::{parse_uuid, QueryParams};
use crate::state::AppState;
use crate::store::runs as run_store;
use crate::store::trace::{self as store, ReadingRow};

/// A chunk is handed to the body once it holds this much.
pub const CHUNK_BYTES: usize = 64 * 1024;
/// Chunks waiting for the client at most.
pub const CHANNEL_CHUNKS: usize = 2;
/// How long the export waits for a client that takes nothing.
pub const STALL_TIMEOUT: Duration = Duration::from_secs(60);

pub const NDJSON: &str = "application/x-ndjson";
pub const CSV: &str = "text/csv; charset=utf-8; header=present";
/// The CSV header row (RFC 4180: CRLF line ends).
pub const CSV_HEADER: &str = "ts,site,resource_id,sensor,value,unit,work_order_id,operation_id\r\n";

/// One reading: one NDJSON line, one CSV row (in this column order).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ExportedReading {
    pub ts: DateTime<Utc>,
    /// The site the edge box shipped it from.
    pub site: String,
    pub resource_id: String,
    pub sensor: String,
    pub value: f64,
    pub unit: Option<String>,
    /// The work order and operation the reading was tagged with at the edge, if any.
    pub work_order_id: Option<String>,
    pub operation_id: Option<String>,
}

impl From<ReadingRow> for ExportedReading {
    fn from(r: ReadingRow) -> Self {
        Self {
            ts: r.ts,
            site: r.site,
            resource_id: r.resource_id,
            sensor: r.sensor,
            value: r.value,
            unit: r.unit,
            work_order_id: r.work_order_id,
            operation_id: r.operation_id,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Ndjson,
    Csv,
}

impl Format {
    fn content_type(self) -> &'static str {
        match self {
            Format::Ndjson => NDJSON,
            Format::Csv => CSV,
        }
    }

    fn extension(self) -> &'static str {
        match self {
            Format::Ndjson => "ndjson",
            Format::Csv => "csv",
        }
    }

    /// Appends one reading.
    pub fn write(self, out: &mut Vec<u8>, reading: &ExportedReading) {
        match self {
            Format::Ndjson => {
                // Cannot fail: the fields are strings, a time and a number (a non-finite one,
                // which ingest refuses, would be written as null).
                let _ = serde_json::to_writer(&mut *out, reading);
                out.push(b'\n');
            }
            Format::Csv => write_csv_row(out, reading),
        }
    }
}

/// The format an `Accept` header asks for: the offered type (`application/x-ndjson`, `text/csv`)
/// with the highest `q`; on a tie the one named more exactly (`text/csv` over `text/*` over
/// `*/*`), then NDJSON. No header, or an empty one: NDJSON.
pub fn negotiate(accept: Option<&HeaderValue>) -> Result<Format, String> {
    let Some(accept) = accept else {
        return Ok(Format::Ndjson);
    };
    let accept = accept
        .to_str()
        .map_err(|_| "Accept: not visible ASCII".to_owned())?;
    if accept.trim().is_empty() {
        return Ok(Format::Ndjson);
    }
    let offers = [
        (Format::Ndjson, "application", "x-ndjson"),
        (Format::Csv, "text", "csv"),
    ];
    // (q in thousandths, specificity, preference) of each offer's best-matching range.
    let mut best: Option<(Format, (u16, u8, u8))> = None;
    for (preference, (format, main, sub)) in offers.into_iter().enumerate() {
        let mut matched: Option<(u8, u16)> = None;
        for range in accept.split(',') {
            let mut parts = range.split(';');
            let media = parts.next().unwrap_or("").trim().to_ascii_lowercase();
            let Some((m, s)) = media.split_once('/') else {
                continue;
            };
            let specificity = match (m, s) {
                (m, s) if m == main && s == sub => 2,
                (m, "*") if m == main => 1,
                ("*", "*") => 0,
                _ => continue,
            };
            let q = parts
                .filter_map(|p| p.split_once('='))
                .find(|(k, _)| k.trim().eq_ignore_ascii_case("q"))
                .map_or(Some(1000), |(_, v)| quality(v.trim()));
            let Some(q) = q else { continue };
            if matched.is_none_or(|(sp, _)| specificity > sp) {
                matched = Some((specificity, q));
            }
        }
        if let Some((specificity, q)) = matched.filter(|&(_, q)| q > 0) {
            let rank = (q, specificity, u8::MAX - preference as u8);
            if best.is_none_or(|(_, b)| rank > b) {
                best = Some((format, rank));
            }
        }
    }
    best.map(|(f, _)| f).ok_or_else(|| {
        format!("Accept: offers are {NDJSON} (the default) and text/csv, asked for {accept:?}")
    })
}

/// An RFC 9110 qvalue (`0`, `0.5`, `1.000`) in thousandths; `None` if it is not one.
fn quality(v: &str) -> Option<u16> {
    let (whole, frac) = v.split_once('.').unwrap_or((v, ""));
    if frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let thousandths = format!("{frac:0<3}").parse::<u16>().ok()?;
    match whole {
        "0" => Some(thousandths),
        "1" if thousandths == 0 => Some(1000),
        _ => None,
    }
}

/// One CSV row (RFC 4180): a field with a comma, quote or line break is quoted, its quotes
/// doubled; an absent value is an empty field. Numbers are written as in the JSON answers
/// (shortest text that reads back as the same double).
pub fn write_csv_row(out: &mut Vec<u8>, r: &ExportedReading) {
    let ts = r.ts.to_rfc3339_opts(SecondsFormat::AutoSi, true);
    let value = number(r.value);
    let fields: [&str; 8] = [
        &ts,
        &r.site,
        &r.resource_id,
        &r.sensor,
        &value,
        r.unit.as_deref().unwrap_or(""),
        r.work_order_id.as_deref().unwrap_or(""),
        r.operation_id.as_deref().unwrap_or(""),
    ];
    for (i, field) in fields.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        if field.contains([',', '"', '\r', '\n']) {
            out.push(b'"');
            out.extend_from_slice(field.replace('"', "\"\"").as_bytes());
            out.push(b'"');
        } else {
            out.extend_from_slice(field.as_bytes());
        }
    }
    out.extend_from_slice(b"\r\n");
}

/// A double as JSON writes it; the non-finite ones (which JSON has no text for) as PostgreSQL
/// spells them.
fn number(v: f64) -> String {
    match serde_json::Number::from_f64(v) {
        Some(n) => n.to_string(),
        None if v.is_nan() => "NaN".to_owned(),
        None if v > 0.0 => "Infinity".to_owned(),
        None => "-Infinity".to_owned(),
    }
}

/// 406 as a problem document (no [`ApiError`] kind: only this operation negotiates).
fn not_acceptable(detail: String) -> Response {
    problem_response(
        StatusCode::NOT_ACCEPTABLE,
        &Problem {
            kind: "urn:edge-mes:problem:not-acceptable".to_owned(),
            title: "Not acceptable".to_owned(),
            status: StatusCode::NOT_ACCEPTABLE.as_u16(),
            detail,
            field: Some("Accept".to_owned()),
        },
    )
}

/// What the producer hands the body: data, or the mark of a complete export.
enum Piece {
    Data(Bytes),
    End,
}

/// Every reading of a run, streamed.
#[utoipa::path(get, path = "/trace/run/{op_run_id}/readings", tag = "kpi",
    params(
        ("op_run_id" = Uuid, Path, description = "run id"),
        ("sensor" = Option<crate::domain::Ident>, Query, description = "only this sensor; empty or absent: all")),
    responses(crate::http::ServerFaults,
        (status = 200, description = "the readings of the run's resource at [started_at, ended_at) (an open run: up to now), by sensor then time; NDJSON (one ExportedReading per line) unless `Accept` prefers text/csv (a header row, then one row per reading in its field order; RFC 4180 quoting, CRLF). Streamed: a failure midway resets the connection instead of ending the body", content(
            (ExportedReading = "application/x-ndjson"),
            (String = "text/csv"))),
        (status = 400, description = "not a UUID, or a query parameter is malformed, unknown or repeated", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "unknown run", body = Problem, content_type = "application/problem+json"),
        (status = 406, description = "`Accept` admits neither application/x-ndjson nor text/csv", body = Problem, content_type = "application/problem+json")))]
pub async fn run_readings(
    State(state): State<AppState>,
    raw: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    mut q: QueryParams,
) -> Result<Response, ApiError> {
    let Path(raw) = raw.map_err(|e| ApiError::malformed("op_run_id", e.body_text()))?;
    let id = parse_uuid("op_run_id", &raw)?;
    let sensor = q.take_ident("sensor")?.map(String::from);
    q.finish()?;
    let format = match negotiate(headers.get(header::ACCEPT)) {
        Ok(format) => format,
        Err(detail) => return Ok(not_acceptable(detail)),
    };
    let now = Utc::now().trunc_subsecs(6);
    let mut tx = store::snapshot(&state.pool).await?;
    let run = run_store::get_run(&mut *tx, id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("op_run_id: no run {id}")))?;
    let span = (
        run.started_at,
        run.ended_at.unwrap_or(now).max(run.started_at),
    );
    let sensors = match sensor {
        Some(sensor) => vec![sensor],
        None => store::sensors(&mut *tx, &run.resource_id, span.0, span.1).await?,
    };
    let (sender, receiver) = mpsc::channel(CHANNEL_CHUNKS);
    tokio::spawn(produce(
        tx,
        id,
        run.resource_id,
        span,
        sensors,
        format,
        sender,
    ));

    let body = futures::stream::unfold(Some(receiver), |receiver| async move {
        let mut receiver = receiver?;
        match receiver.recv().await {
            Some(Piece::Data(bytes)) => Some((Ok(bytes), Some(receiver))),
            Some(Piece::End) => None,
            None => Some((
                Err(std::io::Error::other("the export stopped before its end")),
                None,
            )),
        }
    });
    let disposition = format!(
        "attachment; filename=\"run-{id}-readings.{}\"",
        format.extension()
    );
    Ok((
        [
            (header::CONTENT_TYPE, format.content_type().to_owned()),
            (header::CONTENT_DISPOSITION, disposition),
        ],
        Body::from_stream(body),
    )
        .into_response())
}

/// Reads and encodes the run's readings, sensor by sensor, into `sender`; ends with
/// [`Piece::End`] only when every row was sent.
async fn produce(
    mut tx: Transaction<'static, Postgres>,
    op_run_id: Uuid,
    resource_id: String,
    span: (DateTime<Utc>, DateTime<Utc>),
    sensors: Vec<String>,
    format: Format,
    sender: mpsc::Sender<Piece>,
) {
    let mut chunk = Vec::with_capacity(CHUNK_BYTES + 4096);
    if format == Format::Csv {
        chunk.extend_from_slice(CSV_HEADER.as_bytes());
    }
    let mut rows: u64 = 0;
    for sensor in sensors {
        let mut stream = store::readings_of_sensor(&mut tx, resource_id.clone(), sensor, span);
        while let Some(row) = stream.next().await {
            let row = match row {
                Ok(row) => row,
                Err(e) => {
                    tracing::warn!(%op_run_id, rows, error = %e, "readings export failed");
                    return;
                }
            };
            format.write(&mut chunk, &ExportedReading::from(row));
            rows += 1;
            if chunk.len() >= CHUNK_BYTES {
                let full = std::mem::replace(&mut chunk, Vec::with_capacity(CHUNK_BYTES + 4096));
                if !send(&sender, Piece::Data(full.into()), op_run_id).await {
                    return;
                }
            }
        }
    }
    if !chunk.is_empty() && !send(&sender, Piece::Data(chunk.into()), op_run_id).await {
        return;
    }
    if send(&sender, Piece::End, op_run_id).await {
        tracing::debug!(%op_run_id, rows, "readings export sent");
    }
    let _ = tx.commit().await;
}

/// Hands `piece` to the body; false when the client is gone or took nothing for
/// [`STALL_TIMEOUT`].
async fn send(sender: &mpsc::Sender<Piece>, piece: Piece, op_run_id: Uuid) -> bool {
    match tokio::time::timeout(STALL_TIMEOUT, sender.send(piece)).await {
        Ok(sent) => sent.is_ok(),
        Err(_) => {
            tracing::warn!(%op_run_id, "readings export dropped: the client took nothing for a minute");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(v: &str) -> Result<Format, String> {
        negotiate(Some(&HeaderValue::from_str(v).unwrap()))
    }

    #[test]
    fn accept_picks_the_preferred_offer() {
        assert_eq!(negotiate(None), Ok(Format::Ndjson));
        assert_eq!(accept(""), Ok(Format::Ndjson));
        assert_eq!(accept("*/*"), Ok(Format::Ndjson));
        assert_eq!(accept("text/csv"), Ok(Format::Csv));
        assert_eq!(accept("TEXT/CSV; charset=utf-8"), Ok(Format::Csv));
        assert_eq!(accept("application/x-ndjson"), Ok(Format::Ndjson));
        assert_eq!(accept("text/*"), Ok(Format::Csv));
        // Named beats a wildcard of the same q; a higher q beats both.
        assert_eq!(accept("text/csv, */*"), Ok(Format::Csv));
        assert_eq!(accept("*/*, text/csv"), Ok(Format::Csv));
        assert_eq!(
            accept("application/x-ndjson;q=0.5, text/csv;q=0.9"),
            Ok(Format::Csv)
        );
        assert_eq!(accept("text/csv;q=0.1, */*;q=0.2"), Ok(Format::Ndjson));
        // The most exact range decides an offer's q, even when lower.
        assert_eq!(accept("text/csv;q=0, */*"), Ok(Format::Ndjson));
        assert_eq!(accept("application/x-ndjson;q=0, */*"), Ok(Format::Csv));
        // A malformed q makes its range count for nothing.
        assert_eq!(
            accept("text/csv;q=2, application/x-ndjson;q=0.1"),
            Ok(Format::Ndjson)
        );
    }

    #[test]
    fn accept_without_an_offer_is_refused() {
        for v in [
            "application/json",
            "text/html, application/xml;q=0.9",
            "text/csv;q=0, application/x-ndjson;q=0",
            "*/*;q=0",
            "nonsense",
        ] {
            let e = accept(v).unwrap_err();
            assert!(e.starts_with("Accept: "), "{e}");
        }
    }

    #[test]
    fn qvalues() {
        assert_eq!(quality("1"), Some(1000));
        assert_eq!(quality("1.000"), Some(1000));
        assert_eq!(quality("0.5"), Some(500));
        assert_eq!(quality("0.005"), Some(5));
        assert_eq!(quality("0"), Some(0));
        for bad in ["1.5", "2", "0.0001", "-0.1", "x", ".5", "0.x"] {
            assert_eq!(quality(bad), None, "{bad}");
        }
    }

    fn reading(sensor: &str, unit: Option<&str>, value: f64) -> ExportedReading {
        ExportedReading {
            ts: "2025-02-01T00:05:00.25Z".parse().unwrap(),
            site: "BKK".into(),
            resource_id: "SMT01".into(),
            sensor: sensor.into(),
            value,
            unit: unit.map(Into::into),
            work_order_id: None,
            operation_id: Some("OP10".into()),
        }
    }

    fn csv(r: &ExportedReading) -> String {
        let mut out = Vec::new();
        write_csv_row(&mut out, r);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn csv_quotes_commas_quotes_and_line_breaks() {
        assert_eq!(
            csv(&reading("temp", Some("C"), 36.5)),
            "2025-02-01T00:05:00.250Z,BKK,SMT01,temp,36.5,C,,OP10\r\n"
        );
        assert_eq!(
            csv(&reading("p, \"inner\"", Some("mm,s"), -1e300)),
            "2025-02-01T00:05:00.250Z,BKK,SMT01,\"p, \"\"inner\"\"\",-1e+300,\"mm,s\",,OP10\r\n"
        );
        assert_eq!(
            csv(&reading("a\nb", None, 1.0)),
            "2025-02-01T00:05:00.250Z,BKK,SMT01,\"a\nb\",1.0,,,OP10\r\n"
        );
        assert_eq!(number(f64::NAN), "NaN");
        assert_eq!(number(f64::NEG_INFINITY), "-Infinity");
        assert_eq!(number(0.1 + 0.2), "0.30000000000000004");
    }

    #[test]
    fn ndjson_is_one_object_per_line() {
        let mut out = Vec::new();
        let r = reading("p, \"inner\"", None, 2.5);
        Format::Ndjson.write(&mut out, &r);
        Format::Ndjson.write(&mut out, &r);
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.split_terminator('\n').collect();
        assert_eq!(lines.len(), 2);
        let back: ExportedReading = serde_json::from_str(lines[0]).unwrap();
        assert_eq!(back, r);
    }
}
