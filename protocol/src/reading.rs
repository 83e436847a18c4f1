//! The JSONL reading and its validation.
//!
//! ```json
//! {"ts":"2025-08-22T00:37:41Z","resource_id":"SMT01","work_order_id":"WO123","operation_id":"OP10","sensor":"temp","value":37.2,"unit":"C","meta":{"site":"BKK"}}
//! ```
//!
//! Required: `ts` (RFC 3339 with an offset or `Z`, fractions allowed, kept to the microsecond),
//! `resource_id`, `sensor` (non-empty strings), `value` (a finite JSON number). Optional, `null`
//! allowed: `work_order_id`, `operation_id`, `unit` (strings), `meta` (an object). Unknown top-level
//! fields are kept: they are merged into `meta`; where `meta` already has that key, the top-level
//! value goes under `meta._extra.<key>` so nothing is lost.
//!
//! Decoding borrows from the line wherever JSON escapes allow, and `meta` is passed through as the
//! line's own bytes: the hot path allocates nothing per line in the common case.

use std::borrow::Cow;
use std::fmt;

use chrono::DateTime;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::value::RawValue;

/// Why a line was rejected. The string forms are stored in `rejected_readings.reason` and are part
/// of the contract: add new values, never rename.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RejectReason {
    /// The line is not valid UTF-8.
    InvalidUtf8,
    /// The line is longer than the configured cap (default 64 KiB).
    LineTooLong,
    /// The JSON ends before the value is complete (a cut-off line).
    TruncatedJson,
    /// The line is not well-formed JSON.
    InvalidJson,
    /// The line is JSON but not an object.
    NotAnObject,
    /// The same field appears twice.
    DuplicateField,
    /// A required field is absent.
    MissingField,
    /// A field has the wrong JSON type (e.g. `value` as a string).
    InvalidType,
    /// `resource_id` or `sensor` is an empty string.
    EmptyField,
    /// An id or unit is longer than [`Limits::max_field_bytes`].
    FieldTooLong,
    /// `ts` is not an RFC 3339 timestamp with an offset.
    InvalidTimestamp,
    /// `value` is NaN, ±Infinity, or a number outside the range of a double.
    NonFiniteValue,
    /// A text field or `meta` contains the NUL character, which PostgreSQL cannot store.
    NulCharacter,
    /// `meta` is present but not a JSON object, or holds an escape that is not Unicode text (a
    /// lone surrogate such as `\ud800`).
    InvalidMeta,
    /// PostgreSQL refused the row although it passed validation (detail holds its message).
    DatabaseRejected,
}

impl RejectReason {
    pub const ALL: [RejectReason; 15] = [
        RejectReason::InvalidUtf8,
        RejectReason::LineTooLong,
        RejectReason::TruncatedJson,
        RejectReason::InvalidJson,
        RejectReason::NotAnObject,
        RejectReason::DuplicateField,
        RejectReason::MissingField,
        RejectReason::InvalidType,
        RejectReason::EmptyField,
        RejectReason::FieldTooLong,
        RejectReason::InvalidTimestamp,
        RejectReason::NonFiniteValue,
        RejectReason::NulCharacter,
        RejectReason::InvalidMeta,
        RejectReason::DatabaseRejected,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::InvalidUtf8 => "invalid_utf8",
            RejectReason::LineTooLong => "line_too_long",
            RejectReason::TruncatedJson => "truncated_json",
            RejectReason::InvalidJson => "invalid_json",
            RejectReason::NotAnObject => "not_an_object",
            RejectReason::DuplicateField => "duplicate_field",
            RejectReason::MissingField => "missing_field",
            RejectReason::InvalidType => "invalid_type",
            RejectReason::EmptyField => "empty_field",
            RejectReason::FieldTooLong => "field_too_long",
            RejectReason::InvalidTimestamp => "invalid_timestamp",
            RejectReason::NonFiniteValue => "non_finite_value",
            RejectReason::NulCharacter => "nul_character",
            RejectReason::InvalidMeta => "invalid_meta",
            RejectReason::DatabaseRejected => "database_rejected",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A rejected line: a stable reason code and a human-readable detail naming the field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub reason: RejectReason,
    pub detail: String,
}

impl Rejection {
    pub fn new(reason: RejectReason, detail: impl Into<String>) -> Self {
        Self {
            reason,
            detail: detail.into(),
        }
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.reason, self.detail)
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Longest accepted line in bytes, without its line ending.
    pub max_line_bytes: usize,
    /// Longest accepted `resource_id`, `sensor`, `work_order_id`, `operation_id`, `unit`.
    pub max_field_bytes: usize,
}

pub const DEFAULT_MAX_LINE_BYTES: usize = 64 * 1024;
pub const DEFAULT_MAX_FIELD_BYTES: usize = 256;

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_line_bytes: DEFAULT_MAX_LINE_BYTES,
            max_field_bytes: DEFAULT_MAX_FIELD_BYTES,
        }
    }
}

/// A valid reading, borrowing from its line where it can.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading<'a> {
    /// Microseconds since 1970-01-01T00:00:00Z.
    pub ts_micros: i64,
    pub resource_id: Cow<'a, str>,
    pub work_order_id: Option<Cow<'a, str>>,
    pub operation_id: Option<Cow<'a, str>>,
    pub sensor: Cow<'a, str>,
    pub value: f64,
    pub unit: Option<Cow<'a, str>>,
    /// JSON text of an object, ready for a `jsonb` column.
    pub meta: Option<Cow<'a, str>>,
}

/// Validates one line (without its line ending) and decodes it.
pub fn decode_line<'a>(line: &'a [u8], limits: &Limits) -> Result<Reading<'a>, Rejection> {
    if line.len() > limits.max_line_bytes {
        return Err(Rejection::new(
            RejectReason::LineTooLong,
            format!(
                "line is {} bytes, the limit is {}",
                line.len(),
                limits.max_line_bytes
            ),
        ));
    }
    let text = std::str::from_utf8(line).map_err(|e| {
        Rejection::new(
            RejectReason::InvalidUtf8,
            format!("invalid UTF-8 at byte {}", e.valid_up_to()),
        )
    })?;
    let mut de = serde_json::Deserializer::from_str(text);
    let raw = match (&mut de).deserialize_any(LineVisitor) {
        Ok(raw) => raw,
        Err(e) => return Err(classify_json_error(text, e)),
    };
    if let Err(e) = de.end() {
        return Err(Rejection::new(
            RejectReason::InvalidJson,
            format!("trailing characters after the object: {e}"),
        ));
    }
    raw.finish(limits)
}

/// Fields as they came off the parser, before the per-field rules.
#[derive(Default)]
struct RawLine<'a> {
    ts: Option<Cow<'a, str>>,
    resource_id: Option<Cow<'a, str>>,
    work_order_id: Option<Cow<'a, str>>,
    operation_id: Option<Cow<'a, str>>,
    sensor: Option<Cow<'a, str>>,
    value: Option<f64>,
    unit: Option<Cow<'a, str>>,
    meta: Option<&'a RawValue>,
    extra: Vec<(Cow<'a, str>, &'a RawValue)>,
}

/// Marker error messages the visitor raises, recognised by [`classify_json_error`]. serde only
/// lets a visitor fail with a message, so the reason travels as a prefix.
const TAG_NOT_OBJECT: &str = "edge:not_an_object:";
const TAG_DUPLICATE: &str = "edge:duplicate_field:";
const TAG_TYPE: &str = "edge:invalid_type:";

struct LineVisitor;

impl<'de> Visitor<'de> for LineVisitor {
    type Value = RawLine<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut raw = RawLine::default();
        let mut seen = 0u8;
        while let Some(key) = map.next_key_seed(Key)? {
            let bit = match key.as_ref() {
                "ts" => 1,
                "resource_id" => 2,
                "work_order_id" => 4,
                "operation_id" => 8,
                "sensor" => 16,
                "value" => 32,
                "unit" => 64,
                "meta" => 128,
                _ => 0,
            };
            if bit != 0 {
                if seen & bit != 0 {
                    return Err(de::Error::custom(format_args!("{TAG_DUPLICATE}{key}")));
                }
                seen |= bit;
            }
            match bit {
                1 => raw.ts = map.next_value_seed(Text("ts"))?,
                2 => raw.resource_id = map.next_value_seed(Text("resource_id"))?,
                4 => raw.work_order_id = map.next_value_seed(Text("work_order_id"))?,
                8 => raw.operation_id = map.next_value_seed(Text("operation_id"))?,
                16 => raw.sensor = map.next_value_seed(Text("sensor"))?,
                32 => raw.value = map.next_value_seed(Number("value"))?,
                64 => raw.unit = map.next_value_seed(Text("unit"))?,
                128 => {
                    let v: &'de RawValue = map.next_value()?;
                    raw.meta = (v.get() != "null").then_some(v);
                }
                _ => {
                    let v: &'de RawValue = map.next_value()?;
                    if raw.extra.iter().any(|(k, _)| *k == key) {
                        return Err(de::Error::custom(format_args!("{TAG_DUPLICATE}{key}")));
                    }
                    raw.extra.push((key, v));
                }
            }
        }
        Ok(raw)
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Err(de::Error::custom(format_args!("{TAG_NOT_OBJECT}array")))
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
        Err(E::custom(format_args!("{TAG_NOT_OBJECT}string")))
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Err(E::custom(format_args!("{TAG_NOT_OBJECT}boolean")))
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
        Err(E::custom(format_args!("{TAG_NOT_OBJECT}number")))
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
        Err(E::custom(format_args!("{TAG_NOT_OBJECT}number")))
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Err(E::custom(format_args!("{TAG_NOT_OBJECT}number")))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Err(E::custom(format_args!("{TAG_NOT_OBJECT}null")))
    }
}

/// An object key, borrowed from the line unless it holds escapes. (serde's own `Cow<str>`
/// always allocates, which cost one allocation per key per line.)
struct Key;

impl<'de> DeserializeSeed<'de> for Key {
    type Value = Cow<'de, str>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(KeyVisitor)
    }
}

struct KeyVisitor;

impl<'de> Visitor<'de> for KeyVisitor {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a field name")
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v))
    }
}

/// A string field that may be `null`; anything else is `invalid_type` naming the field.
struct Text(&'static str);

impl<'de> DeserializeSeed<'de> for Text {
    type Value = Option<Cow<'de, str>>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(TextVisitor(self.0))
    }
}

struct TextVisitor(&'static str);

impl TextVisitor {
    fn wrong<E: de::Error>(&self, found: &str) -> E {
        E::custom(format_args!(
            "{TAG_TYPE}{} must be a string, found {found}",
            self.0
        ))
    }
}

impl<'de> Visitor<'de> for TextVisitor {
    type Value = Option<Cow<'de, str>>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{} as a string", self.0)
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Some(Cow::Borrowed(v)))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Some(Cow::Owned(v.to_owned())))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(Some(Cow::Owned(v)))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Err(self.wrong("a boolean"))
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
        Err(self.wrong("a number"))
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
        Err(self.wrong("a number"))
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Err(self.wrong("a number"))
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Err(self.wrong("an array"))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Err(self.wrong("an object"))
    }
}

/// A number field; `null` reads as absent, anything else is `invalid_type` naming the field.
struct Number(&'static str);

impl<'de> DeserializeSeed<'de> for Number {
    type Value = Option<f64>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(NumberVisitor(self.0))
    }
}

struct NumberVisitor(&'static str);

impl NumberVisitor {
    fn wrong<E: de::Error>(&self, found: &str) -> E {
        E::custom(format_args!(
            "{TAG_TYPE}{} must be a number, found {found}",
            self.0
        ))
    }
}

impl<'de> Visitor<'de> for NumberVisitor {
    type Value = Option<f64>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{} as a number", self.0)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Some(v as f64))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(Some(v as f64))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        Ok(Some(v))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
        Err(self.wrong("a string"))
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Err(self.wrong("a boolean"))
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Err(self.wrong("an array"))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Err(self.wrong("an object"))
    }
}

fn classify_json_error(text: &str, e: serde_json::Error) -> Rejection {
    let msg = e.to_string();
    if let Some(rest) = msg.strip_prefix(TAG_NOT_OBJECT) {
        let what = rest.split(" at line").next().unwrap_or(rest);
        return Rejection::new(
            RejectReason::NotAnObject,
            format!("expected a JSON object, found {what}"),
        );
    }
    if let Some(rest) = msg.strip_prefix(TAG_DUPLICATE) {
        let field = rest.split(" at line").next().unwrap_or(rest);
        return Rejection::new(
            RejectReason::DuplicateField,
            format!("field {field} appears more than once"),
        );
    }
    if let Some(rest) = msg.strip_prefix(TAG_TYPE) {
        let detail = rest.split(" at line").next().unwrap_or(rest);
        return Rejection::new(RejectReason::InvalidType, detail.to_owned());
    }
    if msg.starts_with("number out of range") {
        return Rejection::new(
            RejectReason::NonFiniteValue,
            format!("a number is outside the range of a double ({msg})"),
        );
    }
    if e.is_syntax() {
        // JSON has no NaN or Infinity; writers that emit them produce a syntax error right where
        // the bare token starts. Name that, it is a common fault of edge apps.
        let at = byte_offset(text, e.line(), e.column());
        let around = text.get(at.saturating_sub(1)..).unwrap_or("");
        if [
            "NaN",
            "Infinity",
            "-Infinity",
            "+Infinity",
            "inf",
            "-inf",
            "nan",
        ]
        .iter()
        .any(|t| around.trim_start_matches([':', ' ']).starts_with(t))
        {
            return Rejection::new(
                RejectReason::NonFiniteValue,
                format!("NaN and Infinity are not JSON numbers ({msg})"),
            );
        }
    }
    if e.is_eof() {
        return Rejection::new(
            RejectReason::TruncatedJson,
            format!("line ends inside the JSON ({msg})"),
        );
    }
    Rejection::new(RejectReason::InvalidJson, msg)
}

/// serde_json reports 1-based line and column (the column of the offending character).
fn byte_offset(text: &str, line: usize, column: usize) -> usize {
    let line_start: usize = text
        .split_inclusive('\n')
        .take(line.saturating_sub(1))
        .map(str::len)
        .sum();
    (line_start + column).saturating_sub(1)
}

impl<'a> RawLine<'a> {
    fn finish(self, limits: &Limits) -> Result<Reading<'a>, Rejection> {
        let missing =
            |f: &str| Rejection::new(RejectReason::MissingField, format!("{f} is missing"));
        let ts_text = self.ts.ok_or_else(|| missing("ts"))?;
        let resource_id = required_text("resource_id", self.resource_id, limits)?;
        let sensor = required_text("sensor", self.sensor, limits)?;
        let value = self.value.ok_or_else(|| missing("value"))?;
        if !value.is_finite() {
            return Err(Rejection::new(
                RejectReason::NonFiniteValue,
                "value is not finite",
            ));
        }
        let ts = DateTime::parse_from_rfc3339(&ts_text).map_err(|e| {
            Rejection::new(
                RejectReason::InvalidTimestamp,
                format!(
                    "ts {:?} is not RFC 3339 with an offset: {e}",
                    truncate(&ts_text, 64)
                ),
            )
        })?;
        let work_order_id = optional_text("work_order_id", self.work_order_id, limits)?;
        let operation_id = optional_text("operation_id", self.operation_id, limits)?;
        let unit = optional_text("unit", self.unit, limits)?;
        let meta = build_meta(self.meta, self.extra)?;
        Ok(Reading {
            ts_micros: ts.timestamp_micros(),
            resource_id,
            work_order_id,
            operation_id,
            sensor,
            value,
            unit,
            meta,
        })
    }
}

fn required_text<'a>(
    field: &str,
    v: Option<Cow<'a, str>>,
    limits: &Limits,
) -> Result<Cow<'a, str>, Rejection> {
    let v = v.ok_or_else(|| {
        Rejection::new(
            RejectReason::MissingField,
            format!("{field} is missing or null"),
        )
    })?;
    if v.trim().is_empty() {
        return Err(Rejection::new(
            RejectReason::EmptyField,
            format!("{field} is empty"),
        ));
    }
    check_text(field, &v, limits)?;
    Ok(v)
}

fn optional_text<'a>(
    field: &str,
    v: Option<Cow<'a, str>>,
    limits: &Limits,
) -> Result<Option<Cow<'a, str>>, Rejection> {
    if let Some(v) = &v {
        check_text(field, v, limits)?;
    }
    Ok(v)
}

fn check_text(field: &str, v: &str, limits: &Limits) -> Result<(), Rejection> {
    if v.len() > limits.max_field_bytes {
        return Err(Rejection::new(
            RejectReason::FieldTooLong,
            format!(
                "{field} is {} bytes, the limit is {}",
                v.len(),
                limits.max_field_bytes
            ),
        ));
    }
    if v.contains('\0') {
        return Err(Rejection::new(
            RejectReason::NulCharacter,
            format!("{field} contains a NUL character"),
        ));
    }
    Ok(())
}

fn build_meta<'a>(
    meta: Option<&'a RawValue>,
    extra: Vec<(Cow<'a, str>, &'a RawValue)>,
) -> Result<Option<Cow<'a, str>>, Rejection> {
    if let Some(m) = meta {
        if !m.get().starts_with('{') {
            return Err(Rejection::new(
                RejectReason::InvalidMeta,
                "meta must be a JSON object",
            ));
        }
        // Most meta objects hold no escape at all: one scan for a backslash, and nothing more.
        if memchr::memchr(b'\\', m.get().as_bytes()).is_some() {
            if has_escaped_nul(m.get()) {
                return Err(Rejection::new(
                    RejectReason::NulCharacter,
                    "meta contains a NUL character",
                ));
            }
            // Passed through unparsed, so a `\u` escape is checked here: a lone surrogate
            // (`"\ud800"`) is not text, and PostgreSQL's jsonb would refuse the whole batch's
            // COPY (found by the jsonl_line fuzz target).
            if m.get().contains("\\u") {
                serde_json::from_str::<serde_json::Value>(m.get())
                    .map_err(|e| Rejection::new(RejectReason::InvalidMeta, e.to_string()))?;
            }
        }
    }
    if extra.is_empty() {
        return Ok(meta.map(|m| Cow::Borrowed(m.get())));
    }
    for (key, v) in &extra {
        if key.contains('\0') || has_escaped_nul(v.get()) {
            return Err(Rejection::new(
                RejectReason::NulCharacter,
                format!("field {:?} contains a NUL character", truncate(key, 64)),
            ));
        }
    }
    // Rare path: unknown top-level fields are merged into meta.
    let mut obj: serde_json::Map<String, serde_json::Value> = match meta {
        Some(m) => serde_json::from_str(m.get())
            .map_err(|e| Rejection::new(RejectReason::InvalidMeta, e.to_string()))?,
        None => serde_json::Map::new(),
    };
    let mut clashes = serde_json::Map::new();
    for (key, v) in extra {
        let value: serde_json::Value = serde_json::from_str(v.get())
            .map_err(|e| Rejection::new(RejectReason::InvalidJson, e.to_string()))?;
        if obj.contains_key(key.as_ref()) {
            clashes.insert(key.into_owned(), value);
        } else {
            obj.insert(key.into_owned(), value);
        }
    }
    if !clashes.is_empty() {
        obj.insert("_extra".to_owned(), serde_json::Value::Object(clashes));
    }
    Ok(Some(Cow::Owned(serde_json::Value::Object(obj).to_string())))
}

/// True if the JSON text holds the escape `\u0000` (an odd run of backslashes before `u0000`).
fn has_escaped_nul(json: &str) -> bool {
    let bytes = json.as_bytes();
    // A NUL can only be written as an escape: most meta objects have no backslash at all.
    if memchr::memchr(b'\\', bytes).is_none() {
        return false;
    }
    let mut from = 0;
    while let Some(pos) = json[from..].find("u0000") {
        let at = from + pos;
        let slashes = bytes[..at]
            .iter()
            .rev()
            .take_while(|&&b| b == b'\\')
            .count();
        if slashes % 2 == 1 {
            return true;
        }
        from = at + 5;
    }
    false
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"{"ts":"2025-08-22T00:37:41Z","resource_id":"SMT01","work_order_id":"WO123","operation_id":"OP10","sensor":"temp","value":37.2,"unit":"C","meta":{"site":"BKK"}}"#;

    fn reject(line: &str) -> RejectReason {
        match decode_line(line.as_bytes(), &Limits::default()) {
            Ok(r) => panic!("expected a rejection for {line}, got {r:?}"),
            Err(e) => e.reason,
        }
    }

    #[test]
    fn seed_line_decodes_without_copying() {
        let r = decode_line(GOOD.as_bytes(), &Limits::default()).unwrap();
        assert_eq!(r.ts_micros, 1_755_823_061_000_000);
        assert!(matches!(r.resource_id, Cow::Borrowed("SMT01")));
        assert_eq!(r.work_order_id.as_deref(), Some("WO123"));
        assert_eq!(r.operation_id.as_deref(), Some("OP10"));
        assert_eq!(r.sensor, "temp");
        assert_eq!(r.value, 37.2);
        assert_eq!(r.unit.as_deref(), Some("C"));
        assert!(matches!(r.meta, Some(Cow::Borrowed(r#"{"site":"BKK"}"#))));
    }

    #[test]
    fn meta_with_a_lone_surrogate_is_refused_and_a_pair_is_kept() {
        // Found by the jsonl_line fuzz target: accepted, then refused by jsonb in the COPY.
        let lone = r#"{"ts":"2025-08-22T00:37:41Z","resource_id":"R","sensor":"s","value":1,"meta":{"a":"\ud800"}}"#;
        assert_eq!(reject(lone), RejectReason::InvalidMeta);
        let low = r#"{"ts":"2025-08-22T00:37:41Z","resource_id":"R","sensor":"s","value":1,"meta":{"a":"x\udc00"}}"#;
        assert_eq!(reject(low), RejectReason::InvalidMeta);
        let pair = r#"{"ts":"2025-08-22T00:37:41Z","resource_id":"R","sensor":"s","value":1,"meta":{"a":"\ud83d\ude00 \u00e9"}}"#;
        let r = decode_line(pair.as_bytes(), &Limits::default()).unwrap();
        assert_eq!(r.meta.as_deref(), Some(r#"{"a":"\ud83d\ude00 \u00e9"}"#));
    }

    #[test]
    fn optional_fields_may_be_absent_or_null() {
        let r = decode_line(
            br#"{"ts":"2025-08-22T07:37:41.123456789+07:00","resource_id":"R","sensor":"s","value":-3,"unit":null,"meta":null}"#,
            &Limits::default(),
        )
        .unwrap();
        assert_eq!(r.ts_micros, 1_755_823_061_123_456);
        assert_eq!(r.value, -3.0);
        assert_eq!((r.unit, r.meta, r.work_order_id), (None, None, None));
    }

    #[test]
    fn escaped_strings_are_unescaped() {
        let r = decode_line(
            br#"{"ts":"2025-08-22T00:00:00Z","resource_id":"S\u004dT","sensor":"t\"q","value":1e3}"#,
            &Limits::default(),
        )
        .unwrap();
        assert_eq!(r.resource_id, "SMT");
        assert_eq!(r.sensor, "t\"q");
        assert_eq!(r.value, 1000.0);
    }

    #[test]
    fn escaped_field_names_are_recognised() {
        // Keys are borrowed unless escaped; an escaped key must still name its field, and a
        // duplicate spelled differently must still be caught.
        let r = decode_line(
            br#"{"\u0074s":"2025-08-22T00:00:00Z","resource_id":"R","sens\u006fr":"s","value":1,"x\u0079":2}"#,
            &Limits::default(),
        )
        .unwrap();
        assert_eq!(r.sensor, "s");
        assert_eq!(r.meta.as_deref(), Some(r#"{"xy":2}"#));
        assert_eq!(
            reject(
                r#"{"ts":"2025-08-22T00:00:00Z","t\u0073":"x","resource_id":"R","sensor":"s","value":1}"#
            ),
            RejectReason::DuplicateField
        );
    }
    #[test]
    fn unknown_fields_are_merged_into_meta() {
        let r = decode_line(
            br#"{"ts":"2025-08-22T00:00:00Z","resource_id":"R","sensor":"s","value":1,"line":"L1","meta":{"site":"BKK","line":"L0"},"shift":2}"#,
            &Limits::default(),
        )
        .unwrap();
        let meta: serde_json::Value = serde_json::from_str(r.meta.as_deref().unwrap()).unwrap();
        assert_eq!(
            meta,
            serde_json::json!({"site":"BKK","line":"L0","shift":2,"_extra":{"line":"L1"}})
        );
        let r = decode_line(
            br#"{"ts":"2025-08-22T00:00:00Z","resource_id":"R","sensor":"s","value":1,"batch":[1,2]}"#,
            &Limits::default(),
        )
        .unwrap();
        let meta: serde_json::Value = serde_json::from_str(r.meta.as_deref().unwrap()).unwrap();
        assert_eq!(meta, serde_json::json!({"batch":[1,2]}));
    }

    #[test]
    fn every_reject_reason_has_a_trigger() {
        let cases: &[(&str, RejectReason)] = &[
            ("{\"ts\":", RejectReason::TruncatedJson),
            (&GOOD[..GOOD.len() - 10], RejectReason::TruncatedJson),
            ("{ts:1}", RejectReason::InvalidJson),
            (&format!("{GOOD}x"), RejectReason::InvalidJson),
            ("[1,2]", RejectReason::NotAnObject),
            ("42", RejectReason::NotAnObject),
            ("\"x\"", RejectReason::NotAnObject),
            ("null", RejectReason::NotAnObject),
            (
                r#"{"ts":"2025-08-22T00:00:00Z","ts":"2025-08-22T00:00:00Z","resource_id":"R","sensor":"s","value":1}"#,
                RejectReason::DuplicateField,
            ),
            (
                r#"{"x":1,"x":2,"ts":"2025-08-22T00:00:00Z","resource_id":"R","sensor":"s","value":1}"#,
                RejectReason::DuplicateField,
            ),
            (
                r#"{"resource_id":"R","sensor":"s","value":1}"#,
                RejectReason::MissingField,
            ),
            (
                r#"{"ts":"2025-08-22T00:00:00Z","sensor":"s","value":1}"#,
                RejectReason::MissingField,
            ),
            (
                r#"{"ts":"2025-08-22T00:00:00Z","resource_id":"R","value":1}"#,
                RejectReason::MissingField,
            ),
            (
                r#"{"ts":"2025-08-22T00:00:00Z","resource_id":"R","sensor":"s"}"#,
                RejectReason::MissingField,
            ),
            (
                r#"{"ts":"2025-08-22T00:00:00Z","resource_id":"R","sensor":"s","value":null}"#,
                RejectReason::MissingField,
            ),
            (
                r#"{"ts":"2025-08-22T00:00:00Z","resource_id":"R","sensor":"s","value":"37.2"}"#,
                RejectReason::InvalidType,
            ),
            (
                r#"{"ts":"2025-08-22T00:00:00Z","resource_id":7,"sensor":"s","value":1}"#,
                RejectReason::InvalidType,
            ),
            (
                r#"{"ts":1755823061,"resource_id":"R","sensor":"s","value":1}"#,
                RejectReason::InvalidType,
            ),
            (
                r#"{"ts":"2025-08-22T00:00:00Z","resource_id":"R","sensor":"s","value":true}"#,
                RejectReason::InvalidType,
            ),
            (
                r#"{"ts":"2025-08-22T00:00:00Z","resource_id":"R","sensor":["s"],"value":1}"#,
                RejectReason::InvalidType,
            ),
            (
                r#"{"ts":"2025-08-22T00:00:00Z","resource_id":"R","sensor":"s","value":{"v":1}}"#,
                RejectReason::InvalidType,
            ),
            (
                r#"{"ts":"2025-08-22T00:00:00Z","resource_id":"","sensor":"s","value":1}"#,
                RejectReason::EmptyField,
            ),
            (
                r#"{"ts":"2025-08-22T00:00:00Z","resource_id":"R","sensor":"  ","value":1}"#,
                RejectReason::EmptyField,
            ),
            (
                r#"{"ts":"2025-08-22 00:00:00","resource_id":"R","sensor":"s","value":1}"#,
                RejectReason::InvalidTimestamp,
            ),
            (
                r#"{"ts":"yesterday","resource_id":"R","sensor":"s","value":1}"#,
                RejectReason::InvalidTimestamp,
            ),
            (
                r#"{"ts":"2025-13-22T00:00:00Z","resource_id":"R","sensor":"s","value":1}"#,
                RejectReason::InvalidTimestamp,
            ),
            (
                r#"{"ts":"2025-08-22T00:00:00Z","resource_id":"R","sensor":"s","value":NaN}"#,
                RejectReason::NonFiniteValue,
            ),
            (
                r#"{"ts":"2025-08-22T00:00:00Z","resource_id":"R","sensor":"s","value":Infinity}"#,
                RejectReason::NonFiniteValue,
            ),
            (
                r#"{"ts":"2025-08-22T00:00:00Z","resource_id":"R","sensor":"s","value":-Infinity}"#,
                RejectReason::NonFiniteValue,
            ),
            (
                r#"{"ts":"2025-08-22T00:00:00Z","resource_id":"R","sensor":"s","value":1e400}"#,
                RejectReason::NonFiniteValue,
            ),
            (
                r#"{"ts":"2025-08-22T00:00:00Z","resource_id":"R\u0000","sensor":"s","value":1}"#,
                RejectReason::NulCharacter,
            ),
            (
                r#"{"ts":"2025-08-22T00:00:00Z","resource_id":"R","sensor":"s","value":1,"meta":{"a":"\u0000"}}"#,
                RejectReason::NulCharacter,
            ),
            (
                r#"{"ts":"2025-08-22T00:00:00Z","resource_id":"R","sensor":"s","value":1,"meta":[1]}"#,
                RejectReason::InvalidMeta,
            ),
            (
                r#"{"ts":"2025-08-22T00:00:00Z","resource_id":"R","sensor":"s","value":1,"meta":"x"}"#,
                RejectReason::InvalidMeta,
            ),
        ];
        for (line, want) in cases {
            assert_eq!(reject(line), *want, "line: {line}");
        }
        let long_id = format!(
            r#"{{"ts":"2025-08-22T00:00:00Z","resource_id":"{}","sensor":"s","value":1}}"#,
            "R".repeat(300)
        );
        assert_eq!(reject(&long_id), RejectReason::FieldTooLong);
        let long_line = format!("{GOOD}{}", " ".repeat(70_000));
        assert_eq!(reject(&long_line), RejectReason::LineTooLong);
        let bad_utf8 = decode_line(b"{\"ts\":\"\xff\"}", &Limits::default()).unwrap_err();
        assert_eq!(bad_utf8.reason, RejectReason::InvalidUtf8);
    }

    #[test]
    fn escaped_backslash_before_u0000_is_not_nul() {
        let line = r#"{"ts":"2025-08-22T00:00:00Z","resource_id":"R","sensor":"s","value":1,"meta":{"path":"C:\\u0000"}}"#;
        assert!(decode_line(line.as_bytes(), &Limits::default()).is_ok());
    }

    #[test]
    fn rejection_details_name_the_field() {
        let e = decode_line(
            br#"{"ts":"2025-08-22T00:00:00Z","resource_id":"R","sensor":"s","value":"x"}"#,
            &Limits::default(),
        )
        .unwrap_err();
        assert!(e.detail.contains("value"), "{}", e.detail);
        let e = decode_line(
            br#"{"resource_id":"R","sensor":"s","value":1}"#,
            &Limits::default(),
        )
        .unwrap_err();
        assert!(e.detail.contains("ts"), "{}", e.detail);
    }

    #[test]
    fn reason_strings_are_unique_and_parse_back() {
        let mut seen = std::collections::HashSet::new();
        for r in RejectReason::ALL {
            assert!(seen.insert(r.as_str()));
            assert_eq!(RejectReason::parse(r.as_str()), Some(r));
        }
        assert_eq!(RejectReason::parse("nope"), None);
    }
}
