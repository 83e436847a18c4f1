//! Every SQL query of every Grafana dashboard runs against a loaded database and returns rows
//! with the columns its panel needs.
//!
//! The database is loaded through the real binaries ([`LoadedStack`]). Each dashboard is then
//! evaluated the way Grafana does: its variables in order (each variable's own query gives its
//! options, for "All" and for the first option alone), then each panel target (a repeated panel
//! once per value of its variable) and each annotation, with variables and Grafana's macros
//! expanded ([`crate::grafana`]), as the read-only role `edge_mes_grafana`
//! (deploy/sql/grafana-reader.sql). Two time ranges:
//! - the dashboard's saved range ending now: every query must return at least one row;
//! - the 10 minutes of hotdata/sample_readings.jsonl (2025-08-22 00:30-00:40 UTC): every query
//!   must run with the right columns, and the time series of the sensor dashboards must have
//!   rows.
//!
//! With the data source's TimescaleDB flag, `$__timeGroup` becomes `time_bucket`; queries that
//! use it run in both forms (on plain PostgreSQL against a `time_bucket` defined with `date_bin`
//! and TimescaleDB's origin, so the SQL around it is checked too).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use chrono::Utc;
use serde_json::Value;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Column, Executor, PgPool, TypeInfo};

use crate::grafana::{
    self, auto_interval, expand_macros, interpolate, leftover_variables, Dashboard, Query,
    QueryKind, Scope, TimeRange, VarValue,
};
use crate::loaded_stack::LoadedStack;

/// Grafana's data points per panel when the panel sets none (about a panel's width in pixels).
const MAX_DATA_POINTS: u64 = 1000;
/// Dashboards whose time series must show the sample file's readings.
const SENSOR_DASHBOARDS: [&str; 2] = ["edge-mes-live", "edge-mes-spc"];
const NUMERIC: [&str; 6] = ["INT2", "INT4", "INT8", "FLOAT4", "FLOAT8", "NUMERIC"];
const TIME: [&str; 3] = ["TIMESTAMPTZ", "TIMESTAMP", "DATE"];

fn root() -> PathBuf {
    testkit::bins::workspace_root()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pass {
    /// The dashboard's saved range, ending now.
    Saved,
    /// The sample file's ten minutes.
    Sample,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Selection {
    /// Multi-value variables on All.
    All,
    /// Multi-value variables on their first option.
    First,
}

/// One executed query and what was wrong with it.
struct Outcome {
    what: String,
    sql: String,
    problems: Vec<String>,
}

struct Checker {
    pool: PgPool,
    min_interval: Option<String>,
    outcomes: Vec<Outcome>,
    executed: usize,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_query_returns_rows_with_the_expected_columns() {
    let dashboards = Dashboard::load_dir(&root().join("grafana/dashboards")).unwrap();
    let uids: BTreeSet<&str> = dashboards.iter().map(|d| d.uid.as_str()).collect();
    for uid in [
        "edge-mes-live",
        "edge-mes-spc",
        "edge-mes-oee",
        "edge-mes-shifts",
        "edge-mes-pipeline",
    ] {
        assert!(uids.contains(uid), "dashboard {uid} missing: {uids:?}");
    }

    let stack = LoadedStack::load().await.unwrap();
    let admin = PgPool::connect(&stack.db_url).await.unwrap();
    admin
        .execute(
            std::fs::read_to_string(root().join("deploy/sql/grafana-reader.sql"))
                .unwrap()
                .as_str(),
        )
        .await
        .unwrap();
    emulate_time_bucket_if_missing(&admin).await;
    admin.close().await;

    let options: PgConnectOptions = stack.db_url.parse().unwrap();
    let pool = PgPoolOptions::new()
        .max_connections(2)
        .connect_with(options.options([("role", "edge_mes_grafana"), ("statement_timeout", "30s")]))
        .await
        .unwrap();
    let mut checker = Checker {
        pool,
        min_interval: datasource_min_interval(),
        outcomes: Vec::new(),
        executed: 0,
    };

    let sample =
        TimeRange::parse("2025-08-22T00:30:00Z", "2025-08-22T00:40:00Z", stack.now).unwrap();
    for d in &dashboards {
        let (from, to) = d.default_range();
        let saved = TimeRange::parse(&from, &to, Utc::now()).unwrap();
        for (pass, range) in [(Pass::Saved, saved), (Pass::Sample, sample)] {
            for selection in [Selection::All, Selection::First] {
                checker.dashboard(d, pass, selection, range).await;
            }
        }
    }

    // The alert rules' queries, with the same rights: each runs and gives a numeric `value`.
    for (uid, sql) in alert_queries() {
        let what = format!("alert rule {uid}");
        let columns = match columns_of(&checker.pool, &sql).await {
            Ok(c) => c,
            Err(e) => {
                checker.fail(&what, &sql, format!("query failed: {e}"));
                continue;
            }
        };
        let mut problems = match columns.iter().find(|(name, _)| name == "value") {
            Some((_, t)) if NUMERIC.contains(&t.as_str()) => Vec::new(),
            Some((_, t)) => vec![format!("value is {t}")],
            None => vec!["no column `value`".to_owned()],
        };
        if let Err(e) = sqlx::raw_sql(&sql).fetch_all(&checker.pool).await {
            problems.push(format!("query failed: {e}"));
        }
        checker.record(what, sql, problems);
    }

    let failures: Vec<&Outcome> = checker
        .outcomes
        .iter()
        .filter(|o| !o.problems.is_empty())
        .collect();
    let report: Vec<String> = failures
        .iter()
        .map(|o| {
            format!(
                "{}\n  {}\n  SQL:\n{}",
                o.what,
                o.problems.join("\n  "),
                o.sql
            )
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} dashboard query runs failed:\n\n{}",
        failures.len(),
        checker.executed,
        report.join("\n\n")
    );
    // 5 dashboards, ≥ 2 queries each, 2 passes, 2 selections.
    assert!(
        checker.executed >= 40,
        "only {} query runs",
        checker.executed
    );
    eprintln!(
        "dashboards: {} query runs over {} dashboards passed",
        checker.executed,
        dashboards.len()
    );
}

/// TimescaleDB's `time_bucket(interval, timestamptz)` (origin Monday 2000-01-03) on plain
/// PostgreSQL, so the TimescaleDB form of `$__timeGroup` runs here too.
/// `(name, type)` of each column `sql` returns, as PostgreSQL describes it.
async fn columns_of(pool: &PgPool, sql: &str) -> Result<Vec<(String, String)>, sqlx::Error> {
    Ok(pool
        .describe(sql)
        .await?
        .columns()
        .iter()
        .map(|c| (c.name().to_owned(), c.type_info().name().to_owned()))
        .collect())
}

/// `(uid, SQL)` of every SQL query of the provisioned alert rules.
fn alert_queries() -> Vec<(String, String)> {
    let rules = alert_rules();
    let mut out = Vec::new();
    for rule in &rules {
        for q in rule["data"].as_array().into_iter().flatten() {
            if let Some(sql) = q["model"]["rawSql"].as_str() {
                out.push((
                    rule["uid"].as_str().unwrap_or("?").to_owned(),
                    sql.to_owned(),
                ));
            }
        }
    }
    out
}

fn alert_rules() -> Vec<Value> {
    let text = std::fs::read_to_string(root().join("grafana/provisioning/alerting/edge-mes.yaml"))
        .unwrap();
    let file: Value = serde_yaml::from_str(&text).unwrap();
    assert_eq!(file["apiVersion"], 1);
    file["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
        .collect()
}

/// Grafana refuses a rule whose condition or expressions name a query that is not there, or
/// whose data source is not provisioned; this checks what it would.
#[test]
fn alert_rules_are_well_formed() {
    let datasource = "edge-mes-pg";
    let rules = alert_rules();
    assert!(
        rules.len() >= 3,
        "pipeline stalled, reject rate, OEE under target"
    );
    let mut uids = BTreeSet::new();
    for rule in &rules {
        let uid = rule["uid"].as_str().expect("uid");
        assert!(uids.insert(uid.to_owned()), "uid {uid} twice");
        assert!(
            uid.len() <= 40,
            "{uid}: Grafana uids are at most 40 characters"
        );
        assert!(rule["title"].is_string(), "{uid}: title");
        assert!(rule["for"].is_string(), "{uid}: for");
        let data = rule["data"].as_array().expect("data");
        let refs: BTreeSet<&str> = data.iter().filter_map(|d| d["refId"].as_str()).collect();
        assert_eq!(refs.len(), data.len(), "{uid}: refIds unique");
        let condition = rule["condition"].as_str().expect("condition");
        assert!(
            refs.contains(condition),
            "{uid}: condition {condition} is no refId"
        );
        for d in data {
            let r = d["refId"].as_str().unwrap_or("?");
            assert_eq!(
                d["model"]["refId"].as_str(),
                Some(r),
                "{uid}/{r}: model.refId"
            );
            match d["datasourceUid"].as_str() {
                Some("__expr__") => {
                    let e = d["model"]["expression"].as_str().expect("expression");
                    assert!(refs.contains(e), "{uid}/{r}: expression {e} is no refId");
                    assert!(d["model"]["type"].is_string(), "{uid}/{r}: type");
                }
                Some(ds) => {
                    assert_eq!(ds, datasource, "{uid}/{r}: data source");
                    assert!(d["model"]["rawSql"].is_string(), "{uid}/{r}: rawSql");
                    assert!(
                        d["relativeTimeRange"]["from"].is_u64(),
                        "{uid}/{r}: time range"
                    );
                }
                None => panic!("{uid}/{r}: datasourceUid"),
            }
        }
    }
    for flavour in ["postgresql", "timescaledb"] {
        let path = root().join(format!(
            "grafana/provisioning/datasources/{flavour}/edge-mes.yaml"
        ));
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.contains(&format!("uid: {datasource}")),
            "{}",
            path.display()
        );
    }
}

async fn emulate_time_bucket_if_missing(pool: &PgPool) {
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_proc WHERE proname = 'time_bucket')")
            .fetch_one(pool)
            .await
            .unwrap();
    if !exists {
        eprintln!("dashboards: TimescaleDB not installed; time_bucket emulated with date_bin");
        pool.execute(
            "CREATE FUNCTION time_bucket(bucket_width interval, ts timestamptz) RETURNS timestamptz
             LANGUAGE sql IMMUTABLE PARALLEL SAFE
             AS $$ SELECT date_bin(bucket_width, ts, timestamptz '2000-01-03 00:00:00+00') $$",
        )
        .await
        .unwrap();
    }
}

/// `jsonData.timeInterval` of the provisioned data source: the lowest `$__interval`.
fn datasource_min_interval() -> Option<String> {
    let file = root().join("grafana/provisioning/datasources/postgresql/edge-mes.yaml");
    let yaml: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(file).ok()?).ok()?;
    yaml["datasources"][0]["jsonData"]["timeInterval"]
        .as_str()
        .map(String::from)
}

impl Checker {
    async fn dashboard(
        &mut self,
        d: &Dashboard,
        pass: Pass,
        selection: Selection,
        range: TimeRange,
    ) {
        let file = d
            .file
            .file_name()
            .map(|f| f.to_string_lossy())
            .unwrap_or_default();
        let label = format!("{} ({file}) [{pass:?}, {selection:?}]", d.uid);
        let mut scope = Scope {
            vars: BTreeMap::new(),
            range,
            interval: auto_interval(&range, MAX_DATA_POINTS, self.min_interval.as_deref()),
        };
        let variables = match d.variables() {
            Ok(v) => v,
            Err(e) => return self.fail(&label, "", format!("{e:#}")),
        };
        for v in variables {
            let what = format!("{label} variable {}", v.name);
            let Some(sql) = self.expand(&what, &v.sql, &scope, false) else {
                return;
            };
            let mut problems = Vec::new();
            let options: Vec<String> = match sqlx::raw_sql(&sql).fetch_all(&self.pool).await {
                Ok(rows) => rows.iter().filter_map(first_column_text).collect(),
                Err(e) => {
                    problems.push(format!("query failed: {e}"));
                    Vec::new()
                }
            };
            if options.is_empty() && problems.is_empty() {
                problems.push("no options (no rows)".to_owned());
            }
            self.record(what, sql, problems.clone());
            if !problems.is_empty() {
                return;
            }
            let chosen = if v.multi || v.include_all {
                match selection {
                    Selection::All => options.clone(),
                    Selection::First => vec![options[0].clone()],
                }
            } else if let Some(c) = v.current.first().filter(|c| options.contains(c)) {
                vec![c.clone()]
            } else {
                vec![options[0].clone()]
            };
            scope.vars.insert(
                v.name.clone(),
                VarValue {
                    values: chosen,
                    quoted: v.multi || v.include_all,
                },
            );
        }

        let queries = match d.queries() {
            Ok(q) => q,
            Err(e) => return self.fail(&label, "", format!("{e:#}")),
        };
        for q in queries {
            let repeats: Vec<Scope> = match q
                .repeat
                .as_deref()
                .and_then(|r| scope.vars.get(r).map(|v| (r, v)))
            {
                Some((name, value)) => value
                    .values
                    .iter()
                    .map(|one| {
                        let mut s = scope.clone();
                        s.vars.insert(
                            name.to_owned(),
                            VarValue {
                                values: vec![one.clone()],
                                quoted: value.quoted,
                            },
                        );
                        s
                    })
                    .collect(),
                None => vec![scope.clone()],
            };
            for mut s in repeats {
                s.interval = auto_interval(
                    &range,
                    q.max_data_points.unwrap_or(MAX_DATA_POINTS),
                    q.min_interval.as_deref().or(self.min_interval.as_deref()),
                );
                let rows_required = match pass {
                    Pass::Saved => true,
                    Pass::Sample => {
                        SENSOR_DASHBOARDS.contains(&d.uid.as_str())
                            && q.kind
                                == (QueryKind::Target {
                                    format: "time_series".into(),
                                })
                    }
                };
                let what = format!("{label} {}", q.location);
                self.query(&what, &q, &s, rows_required, false).await;
                if q.sql.contains("$__timeGroup") || q.sql.contains("$__timeGroupAlias") {
                    self.query(
                        &format!("{what} (TimescaleDB flag)"),
                        &q,
                        &s,
                        rows_required,
                        true,
                    )
                    .await;
                }
            }
        }
    }

    fn expand(
        &mut self,
        what: &str,
        sql: &str,
        scope: &Scope,
        timescaledb: bool,
    ) -> Option<String> {
        let expanded =
            interpolate(sql, scope).and_then(|s| expand_macros(&s, &scope.range, timescaledb));
        match expanded {
            Ok(s) => {
                let left = leftover_variables(&s);
                if left.is_empty() {
                    Some(s)
                } else {
                    self.fail(what, &s, format!("undefined variables {left:?}"));
                    None
                }
            }
            Err(e) => {
                self.fail(what, sql, format!("expansion failed: {e:#}"));
                None
            }
        }
    }

    async fn query(
        &mut self,
        what: &str,
        q: &Query,
        scope: &Scope,
        rows_required: bool,
        timescaledb: bool,
    ) {
        let Some(sql) = self.expand(what, &q.sql, scope, timescaledb) else {
            return;
        };
        let mut problems = Vec::new();
        let columns = match columns_of(&self.pool, &sql).await {
            Ok(c) => c,
            Err(e) => {
                self.fail(what, &sql, format!("query failed: {e}"));
                return;
            }
        };
        match sqlx::raw_sql(&sql).fetch_all(&self.pool).await {
            Ok(rows) if rows.is_empty() && rows_required => problems.push("no rows".to_owned()),
            Ok(_) => {}
            Err(e) => problems.push(format!("query failed: {e}")),
        }
        problems.extend(column_problems(q, &columns));
        self.record(what.to_owned(), sql, problems);
    }

    fn record(&mut self, what: String, sql: String, problems: Vec<String>) {
        self.executed += 1;
        self.outcomes.push(Outcome {
            what,
            sql,
            problems,
        });
    }

    fn fail(&mut self, what: &str, sql: &str, problem: String) {
        self.record(what.to_owned(), sql.to_owned(), vec![problem]);
    }
}

fn first_column_text(row: &sqlx::postgres::PgRow) -> Option<String> {
    use sqlx::Row;
    row.try_get::<Option<String>, _>(0).ok().flatten()
}

/// What Grafana needs of a result, from the query's format and its panel's configuration.
fn column_problems(q: &Query, columns: &[(String, String)]) -> Vec<String> {
    let mut problems = Vec::new();
    let names: BTreeSet<&str> = columns.iter().map(|(n, _)| n.as_str()).collect();
    let type_of = |n: &str| {
        columns
            .iter()
            .find(|(c, _)| c == n)
            .map(|(_, t)| t.as_str())
    };
    let numeric = |t: &str| NUMERIC.contains(&t);
    if columns.is_empty() {
        problems.push("no columns".to_owned());
    }
    if names.len() != columns.len() {
        problems.push(format!("duplicate column names: {columns:?}"));
    }
    match &q.kind {
        QueryKind::Annotation => {
            for c in ["time", "text"] {
                if !names.contains(c) {
                    problems.push(format!("annotation without column {c}: {columns:?}"));
                }
            }
        }
        QueryKind::Target { format } if format == "time_series" => {
            match type_of("time") {
                Some(t) if TIME.contains(&t) || numeric(t) => {}
                Some(t) => problems.push(format!("time column has type {t}")),
                None => problems.push(format!("time series without a time column: {columns:?}")),
            }
            let values: Vec<&(String, String)> = columns
                .iter()
                .filter(|(n, _)| n != "time" && n != "metric")
                .collect();
            if values.is_empty() || values.iter().any(|(_, t)| !numeric(t)) {
                problems.push(format!(
                    "time series value columns must be numeric (besides time and metric): {columns:?}"
                ));
            }
        }
        QueryKind::Target { .. } => {}
    }
    let Some(panel) = &q.panel else {
        return problems;
    };
    let any_numeric = columns.iter().any(|(_, t)| numeric(t));
    let ptype = panel["type"].as_str().unwrap_or("");
    if matches!(
        ptype,
        "stat" | "gauge" | "bargauge" | "barchart" | "timeseries"
    ) && !any_numeric
    {
        problems.push(format!(
            "{ptype} panel without a numeric column: {columns:?}"
        ));
    }
    if let Some(fields) = panel["options"]["reduceOptions"]["fields"].as_str() {
        if let Some(name) = fields.strip_prefix("/^").and_then(|f| f.strip_suffix("$/")) {
            if !names.contains(name) {
                problems.push(format!(
                    "reduceOptions.fields {fields} matches no column: {columns:?}"
                ));
            }
        }
    }
    if let Some(x) = panel["options"]["xField"].as_str() {
        if !names.contains(x) {
            problems.push(format!("xField {x} is not a column: {columns:?}"));
        }
    }
    let display = panel["fieldConfig"]["defaults"]["displayName"]
        .as_str()
        .unwrap_or("");
    for (prefix, kind) in [
        ("${__data.fields.", "data field"),
        ("${__field.labels.", "label"),
    ] {
        if let Some(rest) = display.strip_prefix(prefix) {
            let field = rest.trim_end_matches('}');
            if !names.contains(field) {
                problems.push(format!(
                    "displayName uses {kind} {field}, not a column: {columns:?}"
                ));
            }
        }
    }
    let overrides = panel["fieldConfig"]["overrides"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for o in overrides {
        if o["matcher"]["id"] == "byName" {
            let name = o["matcher"]["options"].as_str().unwrap_or("");
            if !names.contains(name) {
                problems.push(format!(
                    "override for column {name}, which the query does not return: {columns:?}"
                ));
            }
        }
    }
    problems
}

#[test]
fn provisioned_datasource_flavours_differ_only_in_the_timescaledb_flag() {
    let dir = root().join("grafana/provisioning/datasources");
    let load = |flavour: &str| -> serde_yaml::Value {
        serde_yaml::from_str(
            &std::fs::read_to_string(dir.join(flavour).join("edge-mes.yaml")).unwrap(),
        )
        .unwrap()
    };
    let mut plain = load("postgresql");
    let mut tsdb = load("timescaledb");
    let flag = |v: &mut serde_yaml::Value| {
        std::mem::take(&mut v["datasources"][0]["jsonData"]["timescaledb"])
    };
    assert_eq!(flag(&mut plain), serde_yaml::Value::Bool(false));
    assert_eq!(flag(&mut tsdb), serde_yaml::Value::Bool(true));
    assert_eq!(plain, tsdb);
    let ds = &plain["datasources"][0];
    assert_eq!(ds["uid"], "edge-mes-pg");
    assert_eq!(ds["type"], grafana::DATASOURCE_TYPE);
    // Credentials come from the environment, never from the file.
    for value in [
        &ds["url"],
        &ds["user"],
        &ds["jsonData"]["database"],
        &ds["secureJsonData"]["password"],
    ] {
        let s = value.as_str().unwrap_or("");
        assert!(
            s.starts_with("${EDGE_MES_PG_"),
            "not from the environment: {value:?}"
        );
    }
    // Every dashboard uses this data source by uid.
    for d in Dashboard::load_dir(&root().join("grafana/dashboards")).unwrap() {
        let text = serde_json::to_string(&d.json).unwrap();
        assert!(
            !text.contains("${DS_"),
            "{}: an exported data source placeholder",
            d.uid
        );
        let mut uids = BTreeSet::new();
        collect_datasource_uids(&d.json, &mut uids);
        uids.remove("-- Grafana --");
        assert_eq!(
            uids,
            BTreeSet::from(["edge-mes-pg".to_owned()]),
            "{}",
            d.uid
        );
    }
}

fn collect_datasource_uids(v: &Value, out: &mut BTreeSet<String>) {
    match v {
        Value::Object(o) => {
            if let Some(uid) = o
                .get("datasource")
                .and_then(|d| d.get("uid"))
                .and_then(Value::as_str)
            {
                out.insert(uid.to_owned());
            }
            o.values().for_each(|v| collect_datasource_uids(v, out));
        }
        Value::Array(a) => a.iter().for_each(|v| collect_datasource_uids(v, out)),
        _ => {}
    }
}

#[test]
fn dashboard_provider_points_at_the_mounted_dashboards() {
    let yaml: serde_yaml::Value = serde_yaml::from_str(
        &std::fs::read_to_string(root().join("grafana/provisioning/dashboards/edge-mes.yaml"))
            .unwrap(),
    )
    .unwrap();
    let p = &yaml["providers"][0];
    assert_eq!(p["type"], "file");
    assert_eq!(p["options"]["path"], "/var/lib/grafana/dashboards/edge-mes");
}

#[test]
fn dashboards_have_unique_uids_and_panel_ids_and_a_layout() {
    let dashboards = Dashboard::load_dir(&root().join("grafana/dashboards")).unwrap();
    let mut uids = BTreeSet::new();
    for d in &dashboards {
        assert!(uids.insert(d.uid.clone()), "uid {} twice", d.uid);
        assert!(d.json["title"].is_string(), "{}: no title", d.uid);
        assert!(d.json["tags"]
            .as_array()
            .is_some_and(|t| t.iter().any(|t| t == "edge-mes")));
        let mut ids = BTreeSet::new();
        let mut panels: Vec<Value> = d.json["panels"].as_array().cloned().unwrap_or_default();
        let mut i = 0;
        while i < panels.len() {
            let nested = panels[i]["panels"].as_array().cloned().unwrap_or_default();
            panels.extend(nested);
            i += 1;
        }
        for p in &panels {
            let id = p["id"]
                .as_u64()
                .unwrap_or_else(|| panic!("{}: panel without id", d.uid));
            assert!(ids.insert(id), "{}: panel id {id} twice", d.uid);
            let g = &p["gridPos"];
            for k in ["h", "w", "x", "y"] {
                assert!(g[k].is_u64(), "{}: panel {id} gridPos.{k}", d.uid);
            }
            assert!(
                g["x"].as_u64().unwrap() + g["w"].as_u64().unwrap() <= 24,
                "{}: panel {id} wider than the grid",
                d.uid
            );
        }
        // Every variable a query uses is defined (checked when the queries run, too).
        let names: BTreeSet<String> = d.variables().unwrap().into_iter().map(|v| v.name).collect();
        for q in d.queries().unwrap() {
            if let Some(r) = &q.repeat {
                assert!(
                    names.contains(r),
                    "{}: repeats over unknown variable {r}",
                    q.location
                );
            }
        }
    }
}
