//! What Grafana does to a dashboard's SQL before its PostgreSQL data source runs it, so that a
//! test can run the same SQL.
//!
//! - [`Dashboard`]: a dashboard JSON file, its query variables, panel targets (also inside rows)
//!   and annotation queries.
//! - [`interpolate`]: the front end's template step — `$var`, `${var}`, `${var:format}`,
//!   `[[var]]`, `$__interval`, `$__interval_ms`, `$__range*`, `$__from`, `$__to` — with the SQL
//!   data sources' default formatting (a single value of a plain variable is inserted with `'`
//!   doubled but no quotes; values of a multi-value or include-All variable are quoted and joined
//!   with `,`, for `IN ($var)`).
//! - [`expand_macros`]: the back end's step (grafana-postgresql-datasource `macros.go`):
//!   `$__time`, `$__timeEpoch`, `$__timeFilter`, `$__timeFrom`, `$__timeTo`, `$__timeGroup` (and
//!   its `,`-means-alias rule), `$__timeGroupAlias`, `$__unixEpoch*`; `time_bucket` instead of
//!   `floor(extract(epoch ...))` when the data source has the TimescaleDB flag. An unknown macro is
//!   an error, as in Grafana.
//! - [`TimeRange::parse`] (`now-6h`, `now/w`) and [`auto_interval`] (Grafana's interval for a
//!   range, rounded as its `roundInterval` does, never below the panel's or data source's minimum).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context};
use chrono::{DateTime, Datelike, Duration, Months, SecondsFormat, TimeZone, Timelike, Utc};
use regex::Regex;
use serde_json::Value;

/// The data source type every panel of ours must use.
pub const DATASOURCE_TYPE: &str = "grafana-postgresql-datasource";

/// A dashboard file.
pub struct Dashboard {
    pub file: PathBuf,
    pub uid: String,
    pub json: Value,
}

/// A query variable (`"type": "query"`).
#[derive(Debug, Clone)]
pub struct Variable {
    pub name: String,
    pub sql: String,
    pub multi: bool,
    pub include_all: bool,
    /// The saved current value(s), `$__all` for All.
    pub current: Vec<String>,
}

/// Where a query comes from, and what Grafana does with its result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueryKind {
    /// A panel target; `format` is `time_series` or `table`.
    Target {
        format: String,
    },
    Annotation,
}

/// One SQL query of a panel or an annotation.
#[derive(Debug, Clone)]
pub struct Query {
    /// `"<dashboard uid>: panel 3 'Last value' target A"`.
    pub location: String,
    pub kind: QueryKind,
    pub sql: String,
    /// The panel (for column expectations), `None` for annotations.
    pub panel: Option<Value>,
    /// The variable the panel repeats over: Grafana runs it once per value.
    pub repeat: Option<String>,
    /// The panel's minimum interval (`"interval"`), e.g. `1m`.
    pub min_interval: Option<String>,
    pub max_data_points: Option<u64>,
}

impl Dashboard {
    pub fn load_dir(dir: &Path) -> anyhow::Result<Vec<Dashboard>> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .with_context(|| format!("read {}", dir.display()))?
            .map(|e| e.map(|e| e.path()))
            .collect::<Result<_, _>>()?;
        files.retain(|p| p.extension().is_some_and(|e| e == "json"));
        files.sort();
        files.into_iter().map(|f| Dashboard::load(&f)).collect()
    }

    pub fn load(file: &Path) -> anyhow::Result<Dashboard> {
        let text =
            std::fs::read_to_string(file).with_context(|| format!("read {}", file.display()))?;
        let json: Value =
            serde_json::from_str(&text).with_context(|| format!("parse {}", file.display()))?;
        let uid = json["uid"]
            .as_str()
            .ok_or_else(|| anyhow!("{}: no uid", file.display()))?
            .to_owned();
        Ok(Dashboard {
            file: file.to_owned(),
            uid,
            json,
        })
    }

    /// The saved time range, e.g. `("now-6h", "now")`.
    pub fn default_range(&self) -> (String, String) {
        let t = &self.json["time"];
        (
            t["from"].as_str().unwrap_or("now-6h").to_owned(),
            t["to"].as_str().unwrap_or("now").to_owned(),
        )
    }

    /// Query variables in dashboard order (a later one may use an earlier one). Any other kind of
    /// variable is an error: the test could not give it a value the way Grafana would.
    pub fn variables(&self) -> anyhow::Result<Vec<Variable>> {
        let mut out = Vec::new();
        let list = self.json["templating"]["list"].as_array().cloned();
        for v in list.unwrap_or_default() {
            let name = v["name"].as_str().unwrap_or("?").to_owned();
            if v["type"] != "query" {
                bail!("{}: variable {name} is not a query variable", self.uid);
            }
            check_datasource(&v["datasource"]).with_context(|| format!("variable {name}"))?;
            let sql = match &v["query"] {
                Value::String(s) => s.clone(),
                Value::Object(o) => o
                    .get("rawSql")
                    .or_else(|| o.get("query"))
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned(),
                _ => String::new(),
            };
            if sql.trim().is_empty() {
                bail!("{}: variable {name} has no SQL", self.uid);
            }
            let current = match &v["current"]["value"] {
                Value::String(s) => vec![s.clone()],
                Value::Array(a) => a
                    .iter()
                    .filter_map(Value::as_str)
                    .map(String::from)
                    .collect(),
                _ => Vec::new(),
            };
            out.push(Variable {
                name,
                sql,
                multi: v["multi"].as_bool().unwrap_or(false),
                include_all: v["includeAll"].as_bool().unwrap_or(false),
                current,
            });
        }
        Ok(out)
    }

    /// Every SQL query of every panel (rows' nested panels too) and every annotation. A panel
    /// target without SQL, or on another data source, is an error.
    pub fn queries(&self) -> anyhow::Result<Vec<Query>> {
        let mut out = Vec::new();
        let mut panels: Vec<Value> = self.json["panels"].as_array().cloned().unwrap_or_default();
        let mut i = 0;
        while i < panels.len() {
            let nested = panels[i]["panels"].as_array().cloned().unwrap_or_default();
            panels.extend(nested);
            i += 1;
        }
        for panel in panels {
            if panel["type"] == "row" {
                continue;
            }
            let id = &panel["id"];
            let title = panel["title"].as_str().unwrap_or("");
            let targets = panel["targets"].as_array().cloned().unwrap_or_default();
            if targets.is_empty() {
                bail!("{}: panel {id} '{title}' has no query", self.uid);
            }
            for t in targets {
                let ref_id = t["refId"].as_str().unwrap_or("?");
                let location = format!("{}: panel {id} '{title}' target {ref_id}", self.uid);
                let ds = if t["datasource"].is_null() {
                    &panel["datasource"]
                } else {
                    &t["datasource"]
                };
                check_datasource(ds).with_context(|| location.clone())?;
                let sql = t["rawSql"].as_str().unwrap_or("").to_owned();
                if sql.trim().is_empty() || t["rawQuery"] == false {
                    bail!("{location}: not a raw SQL query");
                }
                let format = t["format"].as_str().unwrap_or("time_series").to_owned();
                if format != "time_series" && format != "table" {
                    bail!("{location}: unknown format {format}");
                }
                out.push(Query {
                    location,
                    kind: QueryKind::Target { format },
                    sql,
                    panel: Some(panel.clone()),
                    repeat: panel["repeat"].as_str().map(String::from),
                    min_interval: panel["interval"].as_str().map(String::from),
                    max_data_points: panel["maxDataPoints"].as_u64(),
                });
            }
        }
        let annotations = self.json["annotations"]["list"].as_array().cloned();
        for a in annotations.unwrap_or_default() {
            if a["builtIn"] == 1 {
                continue;
            }
            let name = a["name"].as_str().unwrap_or("?");
            let location = format!("{}: annotation '{name}'", self.uid);
            check_datasource(&a["datasource"]).with_context(|| location.clone())?;
            let sql = a["target"]["rawSql"]
                .as_str()
                .or_else(|| a["rawQuery"].as_str())
                .unwrap_or("")
                .to_owned();
            if sql.trim().is_empty() {
                bail!("{location}: no SQL");
            }
            out.push(Query {
                location,
                kind: QueryKind::Annotation,
                sql,
                panel: None,
                repeat: None,
                min_interval: None,
                max_data_points: None,
            });
        }
        Ok(out)
    }
}

fn check_datasource(ds: &Value) -> anyhow::Result<()> {
    let t = ds["type"].as_str().unwrap_or("");
    if t != DATASOURCE_TYPE && t != "postgres" {
        bail!("data source {ds} is not PostgreSQL");
    }
    Ok(())
}

/// A dashboard time range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeRange {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
}

impl TimeRange {
    /// Grafana's relative range: `now`, `now-6h`, `now/w` (rounded down for `from`, up to the
    /// unit's last millisecond for `to`), `now-1d/d`; or an RFC 3339 time. Weeks start on Monday,
    /// times are UTC.
    pub fn parse(from: &str, to: &str, now: DateTime<Utc>) -> anyhow::Result<TimeRange> {
        Ok(TimeRange {
            from: parse_time(from, now, false)?,
            to: parse_time(to, now, true)?,
        })
    }

    pub fn duration(&self) -> Duration {
        self.to - self.from
    }
}

fn parse_time(text: &str, now: DateTime<Utc>, round_up: bool) -> anyhow::Result<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(t.with_timezone(&Utc));
    }
    let rest = text
        .strip_prefix("now")
        .ok_or_else(|| anyhow!("unsupported time {text:?}"))?;
    let (offset, round) = match rest.split_once('/') {
        Some((o, r)) => (o, Some(r)),
        None => (rest, None),
    };
    let mut t = now;
    if !offset.is_empty() {
        let re = Regex::new(r"^([+-])(\d+)([smhdwMy])$")?;
        let c = re
            .captures(offset)
            .ok_or_else(|| anyhow!("unsupported time {text:?}"))?;
        let n: i64 = c[2].parse()?;
        let n = if &c[1] == "-" { -n } else { n };
        t = add_units(t, n, &c[3])?;
    }
    if let Some(unit) = round {
        let start = start_of(t, unit)?;
        t = if round_up {
            add_units(start, 1, unit)? - Duration::milliseconds(1)
        } else {
            start
        };
    }
    Ok(t)
}

fn add_units(t: DateTime<Utc>, n: i64, unit: &str) -> anyhow::Result<DateTime<Utc>> {
    let months = |m: i64| -> anyhow::Result<DateTime<Utc>> {
        let r = if m >= 0 {
            t.checked_add_months(Months::new(u32::try_from(m)?))
        } else {
            t.checked_sub_months(Months::new(u32::try_from(-m)?))
        };
        r.ok_or_else(|| anyhow!("time out of range"))
    };
    Ok(match unit {
        "s" => t + Duration::seconds(n),
        "m" => t + Duration::minutes(n),
        "h" => t + Duration::hours(n),
        "d" => t + Duration::days(n),
        "w" => t + Duration::weeks(n),
        "M" => months(n)?,
        "y" => months(12 * n)?,
        _ => bail!("unknown time unit {unit}"),
    })
}

fn start_of(t: DateTime<Utc>, unit: &str) -> anyhow::Result<DateTime<Utc>> {
    let day = Utc
        .with_ymd_and_hms(t.year(), t.month(), t.day(), 0, 0, 0)
        .single()
        .ok_or_else(|| anyhow!("bad day"))?;
    Ok(match unit {
        "s" => t.with_nanosecond(0).unwrap_or(t),
        "m" => day + Duration::minutes(i64::from(t.hour() * 60 + t.minute())),
        "h" => day + Duration::hours(i64::from(t.hour())),
        "d" => day,
        "w" => day - Duration::days(i64::from(t.weekday().num_days_from_monday())),
        "M" => Utc
            .with_ymd_and_hms(t.year(), t.month(), 1, 0, 0, 0)
            .single()
            .ok_or_else(|| anyhow!("bad month"))?,
        "y" => Utc
            .with_ymd_and_hms(t.year(), 1, 1, 0, 0, 0)
            .single()
            .ok_or_else(|| anyhow!("bad year"))?,
        _ => bail!("unknown rounding unit {unit}"),
    })
}

/// Grafana's `$__interval` for a range: range / max data points, rounded to a "nice" step
/// (`roundInterval`), raised to the minimum interval (`panel.interval`, else the data source's
/// `timeInterval`).
pub fn auto_interval(
    range: &TimeRange,
    max_data_points: u64,
    min_interval: Option<&str>,
) -> Duration {
    let raw_ms =
        range.duration().num_milliseconds() / i64::try_from(max_data_points.max(1)).unwrap_or(1);
    let mut ms = round_interval_ms(raw_ms);
    if let Some(min) = min_interval.and_then(|m| parse_interval(m).ok()) {
        ms = ms.max(min.num_milliseconds());
    }
    Duration::milliseconds(ms)
}

fn round_interval_ms(ms: i64) -> i64 {
    const STEPS: [(i64, i64); 28] = [
        (15, 10),
        (35, 20),
        (75, 50),
        (150, 100),
        (350, 200),
        (750, 500),
        (1_500, 1_000),
        (3_500, 2_000),
        (7_500, 5_000),
        (12_500, 10_000),
        (17_500, 15_000),
        (25_000, 20_000),
        (45_000, 30_000),
        (90_000, 60_000),
        (210_000, 120_000),
        (450_000, 300_000),
        (750_000, 600_000),
        (1_050_000, 900_000),
        (1_500_000, 1_200_000),
        (2_700_000, 1_800_000),
        (5_400_000, 3_600_000),
        (9_000_000, 7_200_000),
        (16_200_000, 10_800_000),
        (27_000_000, 21_600_000),
        (86_400_000, 43_200_000),
        (604_800_000, 86_400_000),
        (1_814_400_000, 604_800_000),
        (3_628_800_000, 2_592_000_000),
    ];
    STEPS
        .iter()
        .find(|(below, _)| ms < *below)
        .map_or(31_536_000_000, |(_, step)| *step)
}

/// `gtime.ParseInterval`: `500ms`, `30s`, `5m`, `1h`, `1d`, `1w`, `1M`, `1y` (quotes trimmed).
pub fn parse_interval(text: &str) -> anyhow::Result<Duration> {
    let t = text.trim().trim_matches('\'').trim_matches('"');
    let re = Regex::new(r"^(\d+)(ms|s|m|h|d|w|M|y)$")?;
    let c = re
        .captures(t)
        .ok_or_else(|| anyhow!("error parsing interval {text}"))?;
    let n: i64 = c[1].parse()?;
    Ok(match &c[2] {
        "ms" => Duration::milliseconds(n),
        "s" => Duration::seconds(n),
        "m" => Duration::minutes(n),
        "h" => Duration::hours(n),
        "d" => Duration::days(n),
        "w" => Duration::weeks(n),
        "M" => Duration::days(30 * n),
        _ => Duration::days(365 * n),
    })
}

/// `gtime.FormatInterval`: the largest whole unit (`1y`, `1d`, `2h`, `1m`, `30s`, `500ms`).
pub fn format_interval(d: Duration) -> String {
    let ms = d.num_milliseconds();
    let units = [
        (365 * 86_400_000, "y"),
        (86_400_000, "d"),
        (3_600_000, "h"),
        (60_000, "m"),
        (1_000, "s"),
        (1, "ms"),
    ];
    for (size, unit) in units {
        if ms >= size {
            return format!("{}{unit}", ms / size);
        }
    }
    "1ms".to_owned()
}

/// A variable's value as the panel sees it.
#[derive(Debug, Clone)]
pub struct VarValue {
    pub values: Vec<String>,
    /// The variable is multi-value or has "All": its values are always quoted and joined.
    pub quoted: bool,
}

/// What the front end substitutes: variables, the interval and the range.
#[derive(Debug, Clone)]
pub struct Scope {
    pub vars: BTreeMap<String, VarValue>,
    pub range: TimeRange,
    pub interval: Duration,
}

fn quote_literal(v: &str) -> String {
    format!("'{}'", v.replace('\'', "''"))
}

fn format_value(v: &VarValue, format: Option<&str>) -> anyhow::Result<String> {
    let join = |f: &dyn Fn(&str) -> String, sep: &str| {
        v.values.iter().map(|s| f(s)).collect::<Vec<_>>().join(sep)
    };
    Ok(match format {
        None if v.quoted || v.values.len() > 1 => join(&quote_literal, ","),
        None => join(&|s: &str| s.replace('\'', "''"), ","),
        Some("sqlstring") => join(&quote_literal, ","),
        Some("singlequote") => join(&|s: &str| format!("'{}'", s.replace('\'', "\\'")), ","),
        Some("doublequote") => join(&|s: &str| format!("\"{}\"", s.replace('"', "\\\"")), ","),
        Some("csv") | Some("raw") => join(&|s: &str| s.to_owned(), ","),
        Some("pipe") => join(&|s: &str| s.to_owned(), "|"),
        Some(f) => bail!("variable format {f} is not supported by this test"),
    })
}

/// The front end's template step. Names it does not know (macros such as `$__timeFilter`) are
/// left as they are, as Grafana does.
pub fn interpolate(sql: &str, scope: &Scope) -> anyhow::Result<String> {
    let re = Regex::new(
        r"\$(\w+)|\[\[(\w+?)(?::(\w+))?\]\]|\$\{(\w+)(?:\.([^:^\}]+))?(?::([^\}]+))?\}",
    )?;
    let mut out = String::with_capacity(sql.len());
    let mut last = 0;
    for c in re.captures_iter(sql) {
        let whole = c.get(0).map_or(0..0, |m| m.range());
        let name = c
            .get(1)
            .or_else(|| c.get(2))
            .or_else(|| c.get(4))
            .map_or("", |m| m.as_str());
        let format = c.get(3).or_else(|| c.get(6)).map(|m| m.as_str());
        let replacement = match name {
            "__interval" => Some(format_interval(scope.interval)),
            "__interval_ms" => Some(scope.interval.num_milliseconds().to_string()),
            "__range" => Some(format_interval(scope.range.duration())),
            "__range_s" => Some(scope.range.duration().num_seconds().to_string()),
            "__range_ms" => Some(scope.range.duration().num_milliseconds().to_string()),
            "__from" => Some(scope.range.from.timestamp_millis().to_string()),
            "__to" => Some(scope.range.to.timestamp_millis().to_string()),
            _ => match scope.vars.get(name) {
                Some(v) => Some(format_value(v, format)?),
                None => None,
            },
        };
        out.push_str(&sql[last..whole.start]);
        match replacement {
            Some(r) => out.push_str(&r),
            None => out.push_str(&sql[whole.clone()]),
        }
        last = whole.end;
    }
    out.push_str(&sql[last..]);
    Ok(out)
}

fn rfc3339_nano(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// Go's `%v` of a float64 number of seconds (`60`, `0.5`).
fn go_float(secs: f64) -> String {
    format!("{secs}")
}

/// The back end's macro step (grafana-postgresql-datasource). `timescaledb` is the data
/// source's flag.
pub fn expand_macros(sql: &str, range: &TimeRange, timescaledb: bool) -> anyhow::Result<String> {
    // sqleng.Interpolate runs first: these have no parentheses to match.
    let sql = sql
        .replace("$__unixEpochFrom()", &range.from.timestamp().to_string())
        .replace("$__unixEpochTo()", &range.to.timestamp().to_string());
    let re = Regex::new(r"\$([_a-zA-Z0-9]+)\(([^\)]*)\)")?;
    let mut out = String::with_capacity(sql.len());
    let mut last = 0;
    for c in re.captures_iter(&sql) {
        let whole = c.get(0).map_or(0..0, |m| m.range());
        let mut name = c[1].to_owned();
        if name == "__timeGroup" {
            // Pre-5.3 compatibility: a `,` right after the first occurrence means "alias".
            if let Some(i) = sql.find(&c[0]) {
                if sql[i + c[0].len()..].starts_with(',') {
                    name = "__timeGroupAlias".to_owned();
                }
            }
        }
        let args: Vec<String> = c[2].split(',').map(|a| a.trim().to_owned()).collect();
        let expanded = evaluate_macro(&name, &args, range, timescaledb)
            .with_context(|| format!("macro {}", &c[0]))?;
        out.push_str(&sql[last..whole.start]);
        out.push_str(&expanded);
        last = whole.end;
    }
    out.push_str(&sql[last..]);
    Ok(out)
}

fn evaluate_macro(
    name: &str,
    args: &[String],
    range: &TimeRange,
    timescaledb: bool,
) -> anyhow::Result<String> {
    let column = || -> anyhow::Result<&str> {
        match args.first() {
            Some(a) if !a.is_empty() => Ok(a.as_str()),
            _ => bail!("missing time column argument for macro {name}"),
        }
    };
    let group_interval = || -> anyhow::Result<f64> {
        if args.len() < 2 {
            bail!("macro {name} needs time column and interval and optional fill value");
        }
        let d = parse_interval(args[1].trim_matches('\''))?;
        Ok(d.num_milliseconds() as f64 / 1000.0)
    };
    Ok(match name {
        "__time" => format!("{} AS \"time\"", column()?),
        "__timeEpoch" => format!("extract(epoch from {}) as \"time\"", column()?),
        "__timeFilter" => format!(
            "{} BETWEEN '{}' AND '{}'",
            column()?,
            rfc3339_nano(range.from),
            rfc3339_nano(range.to)
        ),
        "__timeFrom" => format!("'{}'", rfc3339_nano(range.from)),
        "__timeTo" => format!("'{}'", rfc3339_nano(range.to)),
        "__timeGroup" => {
            let secs = group_interval()?;
            if timescaledb {
                format!("time_bucket('{secs:.3}s',{})", column()?)
            } else {
                let s = go_float(secs);
                format!("floor(extract(epoch from {})/{s})*{s}", column()?)
            }
        }
        "__timeGroupAlias" => format!(
            "{} AS \"time\"",
            evaluate_macro("__timeGroup", args, range, timescaledb)?
        ),
        "__unixEpochFilter" => {
            let c = column()?;
            format!(
                "{c} >= {} AND {c} <= {}",
                range.from.timestamp(),
                range.to.timestamp()
            )
        }
        "__unixEpochNanoFilter" => {
            let c = column()?;
            format!(
                "{c} >= {} AND {c} <= {}",
                range.from.timestamp_nanos_opt().unwrap_or(0),
                range.to.timestamp_nanos_opt().unwrap_or(0)
            )
        }
        "__unixEpochNanoFrom" => range.from.timestamp_nanos_opt().unwrap_or(0).to_string(),
        "__unixEpochNanoTo" => range.to.timestamp_nanos_opt().unwrap_or(0).to_string(),
        "__unixEpochGroup" => {
            let s = go_float(group_interval()?);
            format!("floor(({})/{s})*{s}", column()?)
        }
        "__unixEpochGroupAlias" => format!(
            "{} AS \"time\"",
            evaluate_macro("__unixEpochGroup", args, range, timescaledb)?
        ),
        _ => bail!("unknown macro {name:?}"),
    })
}

/// `$name` tokens left after both steps, outside string literals and comments: a variable the
/// dashboard does not define (Grafana would send it to PostgreSQL as is).
pub fn leftover_variables(sql: &str) -> Vec<String> {
    let mut found = Vec::new();
    let bytes = sql.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\'' => {
                i += 1;
                while i < bytes.len() && bytes[i] != b'\'' {
                    i += 1;
                }
            }
            b'-' if bytes.get(i + 1) == Some(&b'-') => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
            }
            b'$' => {
                let rest = &sql[i + 1..];
                let word: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                // `$$` (dollar quoting) and `$1` (parameters) are SQL, not variables.
                if !word.is_empty() && !word.starts_with(|c: char| c.is_ascii_digit()) {
                    found.push(format!("${word}"));
                }
            }
            _ => {}
        }
        i += 1;
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn scope() -> Scope {
        let mut vars = BTreeMap::new();
        vars.insert(
            "site".to_owned(),
            VarValue {
                values: vec!["BKK".into(), "O'Hare".into()],
                quoted: true,
            },
        );
        vars.insert(
            "resource".to_owned(),
            VarValue {
                values: vec!["SMT01".into()],
                quoted: false,
            },
        );
        Scope {
            vars,
            range: TimeRange {
                from: t("2026-11-25T10:00:00Z"),
                to: t("2026-11-25T11:00:00.5Z"),
            },
            interval: Duration::seconds(5),
        }
    }

    #[test]
    fn variables_are_formatted_like_grafanas_sql_data_sources() {
        let s = scope();
        let sql = "site IN ($site) AND r = '$resource' AND x = '${resource}' AND y IN (${site:csv}) AND [[resource]] $__interval $__interval_ms $__timeFilter(ts)";
        assert_eq!(
            interpolate(sql, &s).unwrap(),
            "site IN ('BKK','O''Hare') AND r = 'SMT01' AND x = 'SMT01' AND y IN (BKK,O'Hare) AND SMT01 5s 5000 $__timeFilter(ts)"
        );
    }

    #[test]
    fn macros_expand_like_the_postgres_data_source() {
        let r = scope().range;
        assert_eq!(
            expand_macros("WHERE $__timeFilter(ts) AND a < $__timeTo()", &r, false).unwrap(),
            "WHERE ts BETWEEN '2026-11-25T10:00:00Z' AND '2026-11-25T11:00:00.500Z' AND a < '2026-11-25T11:00:00.500Z'"
        );
        assert_eq!(
            expand_macros("SELECT $__timeGroupAlias(ts, 1m), 1", &r, false).unwrap(),
            "SELECT floor(extract(epoch from ts)/60)*60 AS \"time\", 1"
        );
        assert_eq!(
            expand_macros("SELECT $__timeGroup(ts, '500ms'), 1", &r, true).unwrap(),
            "SELECT time_bucket('0.500s',ts) AS \"time\", 1"
        );
        assert_eq!(
            expand_macros("GROUP BY $__timeGroup(ts, 5m)", &r, false).unwrap(),
            "GROUP BY floor(extract(epoch from ts)/300)*300"
        );
        assert!(expand_macros("SELECT $__nope(ts)", &r, false).is_err());
        assert!(expand_macros("SELECT $__timeGroup(ts)", &r, false).is_err());
    }

    #[test]
    fn relative_ranges_and_intervals() {
        let now = t("2026-11-25T17:42:10Z"); // a Wednesday
        let r = TimeRange::parse("now/w", "now/w", now).unwrap();
        assert_eq!(r.from, t("2026-11-23T00:00:00Z"));
        assert_eq!(r.to, t("2026-11-29T23:59:59.999Z"));
        let r = TimeRange::parse("now-6h", "now", now).unwrap();
        assert_eq!(r.from, t("2026-11-25T11:42:10Z"));
        assert_eq!(auto_interval(&r, 1000, None), Duration::seconds(20));
        assert_eq!(auto_interval(&r, 1000, Some("1m")), Duration::minutes(1));
        assert_eq!(format_interval(Duration::minutes(1)), "1m");
        assert_eq!(format_interval(Duration::hours(36)), "1d");
    }

    #[test]
    fn leftovers_ignore_strings_comments_and_dollar_quotes() {
        assert_eq!(
            leftover_variables("SELECT '$x' -- $y\n, $$ a $$, $1, $z"),
            vec!["$z".to_owned()]
        );
    }
}
