//! Part 3, the API under load: the release build of mes-api against the benchmark's servers (a
//! fresh database, its own OP_RUN stream and subjects), `--api-runs` runs started through the API,
//! then
//!
//! 1. an open-loop load (see [`crate::http_load`]): `POST /op_run/report` at `--api-rate` round
//!    robin over the runs and `GET /op_run/active` at `--api-active-rate`, both latencies counted
//!    from each request's scheduled time; a warm-up, then the measured window;
//! 2. a closed loop on the same connections for `--api-max-secs`: the most reports/s held;
//! 3. exactly once: every report answered 2xx is in the runs' totals and count rows once, and no
//!    other; every outbox event was published to the stream.
//!
//! mes-api runs with its defaults (its own `API_*` environment is not passed on) plus
//! `--api-arg`, with authentication on as deployed: every request carries an operator token made
//! by `mes-api token create`.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use hyper::header::HeaderValue;
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;
use tracing::info;

use crate::http_load::{self, Call, Connection, MakeCall, Sample, Schedule};
use crate::machine;
use crate::monitored::{terminate_all, Monitored};
use crate::procstat;
use crate::report::{ApiCpu, ApiReport, Check, ClosedLoopReport, Distribution, EndpointReport};
use crate::servers::ServerCpu;
use crate::stack::{wait_until, Bench};

/// Environment variable prefixes of the binaries' tuning knobs, not passed on to mes-api.
const FOREIGN_ENV_PREFIXES: [&str; 4] = ["API_", "EDGE_", "INGEST_", "READINGS_"];
const FOREIGN_ENV: [&str; 2] = ["NATS_STREAM_REPLICAS", "LOG_FORMAT"];
/// Connections for the `GET /op_run/active` load.
const ACTIVE_CONNECTIONS: u32 = 4;
/// Request numbers of the closed loop start here (the open loop's start at 0).
const CLOSED_LOOP_FIRST: u64 = 1 << 40;
const READY_LIMIT: Duration = Duration::from_secs(120);
const EXIT_LIMIT: Duration = Duration::from_secs(60);

/// `good_units` of a run in a 2xx answer.
fn answered_good_units(body: &[u8]) -> Option<i64> {
    #[derive(serde::Deserialize)]
    struct Totals {
        good_units: i64,
    }
    serde_json::from_slice::<Totals>(body)
        .ok()
        .map(|t| t.good_units)
}

/// `good_delta` and `scrap_delta` of report number `n`: 1 to 4 good, one scrap in ten.
pub fn report_delta(n: u64) -> (i64, i64) {
    ((n % 4) as i64 + 1, i64::from(n.is_multiple_of(10)))
}

pub async fn run(bench: &Bench) -> anyhow::Result<(ApiReport, Vec<Check>)> {
    let cfg = &bench.config;
    let bin = bench
        .bins
        .api
        .clone()
        .context("the mes-api binary was not located")?;
    let name = testkit::unique_name("bench_api");
    let db_url = bench.servers.create_database(&name).await?;
    let pool = PgPoolOptions::new()
        .max_connections(2)
        .connect(&db_url)
        .await
        .context("connect to the API benchmark database")?;
    let addr = free_addr()?;
    let auth = create_token(bench, &bin, &db_url).await?;
    let api = bench.spawn(
        "api-mes-api",
        api_command(bench, &bin, &db_url, &name, addr),
    )?;
    wait_until("mes-api to be ready", READY_LIMIT, &[&api], || async {
        Ok(is_ready(addr, &auth).await)
    })
    .await?;
    let runs = Arc::new(start_runs(addr, &auth, cfg.api_runs).await?);
    info!(runs = runs.len(), addr = %addr, "mes-api ready, runs started");

    let load = open_loop_phase(bench, &api, addr, &auth, runs.clone()).await?;
    let max = if cfg.api_max_secs() > 0 {
        Some(closed_loop_phase(bench, &api, addr, &auth, runs.clone()).await?)
    } else {
        None
    };
    let load_end = Instant::now();

    let unsent = || async {
        crate::stack::count(&pool, "SELECT count(*) FROM outbox WHERE sent_at IS NULL").await
    };
    wait_until(
        "the outbox to drain",
        Duration::from_secs(cfg.drain_timeout_secs),
        &[&api],
        || async { Ok(unsent().await? == 0) },
    )
    .await?;
    let drain_secs = load_end.elapsed().as_secs_f64();

    let mut samples = load.reports.clone();
    if let Some((_, closed)) = &max {
        samples.extend_from_slice(closed);
    }
    let mut checks = exactly_once(&pool, &runs, &samples).await?;
    let outbox_events = crate::stack::count(&pool, "SELECT count(*) FROM outbox").await?;
    checks.push(Check::equal(
        "api: outbox events still unsent after the drain",
        0,
        unsent().await?,
    ));
    let stream = protocol::OpRunNames::isolated(&name).stream;
    checks.push(Check::equal(
        "api: messages in the run's OP_RUN stream = outbox events",
        outbox_events,
        stream_messages(bench, &stream).await?,
    ));

    let peak_rss = api.peak_rss_kib();
    let exits = terminate_all(vec![api], EXIT_LIMIT).await?;
    for e in &exits {
        e.ensure_success()?;
    }
    pool.close().await;
    if let Err(e) = delete_stream(bench, &stream).await {
        tracing::warn!(error = %format!("{e:#}"), "cannot delete the API benchmark's stream");
    }
    bench.servers.drop_database(&name).await?;

    let mut errors_all_phases = errors_of(load.reports.iter().chain(&load.active));
    if let Some((_, closed)) = &max {
        for (k, v) in errors_of(closed.iter()) {
            *errors_all_phases.entry(k).or_default() += v;
        }
    }
    checks.push(Check::equal(
        "api: requests without an answer (transport errors)",
        0,
        errors_all_phases.get("transport").copied().unwrap_or(0),
    ));
    let report = ApiReport {
        runs: cfg.api_runs,
        connections: cfg.api_connections,
        active_connections: if cfg.api_active_rate > 0 {
            ACTIVE_CONNECTIONS
        } else {
            0
        },
        idempotency_keys: cfg.api_idempotency_keys,
        api_args: cfg.api_args(),
        warmup_secs: load.warmup_secs,
        window_secs: load.window_secs,
        report: load.report,
        active: load.active_report,
        cpu: load.cpu,
        max: max.map(|(m, _)| m),
        api_peak_rss_kib: peak_rss.max(exits[0].peak_rss_kib),
        drain_secs,
        errors_all_phases,
        load_1m: load.load_1m,
    };
    Ok((report, checks))
}

/// `mes-api` on `addr` with the deployment's database and namespace, its own environment
/// knobs removed.
fn api_command(
    bench: &Bench,
    bin: &std::path::Path,
    db_url: &str,
    namespace: &str,
    addr: SocketAddr,
) -> Command {
    let mut cmd = Command::new(bin);
    for (key, _) in std::env::vars_os() {
        if let Some(k) = key.to_str() {
            if FOREIGN_ENV_PREFIXES.iter().any(|p| k.starts_with(p)) || FOREIGN_ENV.contains(&k) {
                cmd.env_remove(k);
            }
        }
    }
    cmd.env("NATS_URL", bench.servers.nats_url())
        .env("DATABASE_URL", db_url)
        .env("RUST_LOG", "warn")
        .env("NO_COLOR", "1")
        // As deployed; an `--api-arg --auth off` still wins over the environment.
        .env("API_AUTH", "tokens")
        // The benchmark measures capacity, not the per-token policy (500 writes/s by default).
        .env("API_WRITE_RATE_PER_TOKEN", "0")
        .env("API_METRICS_LISTEN", "off")
        .arg("--listen")
        .arg(addr.to_string())
        .args(["--namespace", namespace])
        .args(bench.config.api_args());
    cmd
}

/// An operator token for the benchmark's database, made as an operator makes one; the
/// `Authorization` value that carries it.
async fn create_token(
    bench: &Bench,
    bin: &std::path::Path,
    db_url: &str,
) -> anyhow::Result<HeaderValue> {
    let mut cmd = Command::new(bin);
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("NATS_URL", bench.servers.nats_url())
        .env("DATABASE_URL", db_url)
        .env("RUST_LOG", "warn")
        .env("NO_COLOR", "1")
        .args(["token", "create", "--role", "operator", "--name", "bench"]);
    let output = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .context("mes-api token create")?
        .context("run mes-api token create")?;
    if !output.status.success() {
        bail!(
            "mes-api token create failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let stdout = String::from_utf8(output.stdout).context("the output of mes-api token create")?;
    let token = stdout
        .lines()
        .last()
        .context("mes-api token create printed no token")?
        .trim();
    HeaderValue::from_str(&format!("Bearer {token}")).context("the token as a header")
}

fn authorized(mut call: Call, auth: &HeaderValue) -> Call {
    call.headers
        .push((hyper::header::AUTHORIZATION, auth.clone()));
    call
}

/// A free port on 127.0.0.1 (bound and released; mes-api binds it right after).
fn free_addr() -> anyhow::Result<SocketAddr> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("find a free port")?;
    Ok(listener.local_addr()?)
}

async fn is_ready(addr: SocketAddr, auth: &HeaderValue) -> bool {
    let mut conn = Connection::new(addr);
    let call = authorized(Call::get("/ready"), auth);
    matches!(conn.send(&call).await, Ok(a) if a.status == 200)
}

/// Starts `n` runs, one per resource (`BENCH-R0001`, ...); their ids.
async fn start_runs(addr: SocketAddr, auth: &HeaderValue, n: u32) -> anyhow::Result<Vec<String>> {
    let mut conn = Connection::new(addr);
    let mut ids = Vec::with_capacity(n as usize);
    for i in 1..=n {
        let body = format!(
            r#"{{"work_order_id":"WO-BENCH-{i:04}","operation_id":"OP10","resource_id":"BENCH-R{i:04}","planned_seconds":28800,"ideal_cycle_time_s":0.5}}"#
        );
        let answer = conn
            .send(&authorized(Call::post_json("/op_run/start", body), auth))
            .await
            .context("POST /op_run/start")?;
        if answer.status != 201 {
            bail!(
                "POST /op_run/start answered {}: {}",
                answer.status,
                String::from_utf8_lossy(&answer.body)
            );
        }
        let run: serde_json::Value =
            serde_json::from_slice(&answer.body).context("the answer of POST /op_run/start")?;
        let id = run
            .get("op_run_id")
            .and_then(serde_json::Value::as_str)
            .context("no op_run_id in the answer of POST /op_run/start")?;
        ids.push(id.to_owned());
    }
    Ok(ids)
}

/// Report number `n`: to run `n % runs`, with [`report_delta`], with an Idempotency-Key when
/// asked.
fn report_calls(runs: Arc<Vec<String>>, auth: &HeaderValue, idempotency_keys: bool) -> MakeCall {
    let auth = auth.clone();
    Arc::new(move |n| {
        let id = &runs[(n % runs.len() as u64) as usize];
        let (good, scrap) = report_delta(n);
        let mut call = Call::post_json(
            "/op_run/report",
            format!(r#"{{"op_run_id":"{id}","good_delta":{good},"scrap_delta":{scrap}}}"#),
        );
        call.inspect = Some(answered_good_units);
        call.headers
            .push((hyper::header::AUTHORIZATION, auth.clone()));
        if idempotency_keys {
            if let Ok(key) = HeaderValue::from_str(&format!("bench-report-{n}")) {
                call.headers.push((
                    hyper::header::HeaderName::from_static("idempotency-key"),
                    key,
                ));
            }
        }
        call
    })
}

/// CPU ticks of mes-api, the servers and this process at one moment.
struct CpuMark {
    at: Instant,
    api: u64,
    servers: ServerCpu,
    bench: u64,
}

impl CpuMark {
    fn take(bench: &Bench, api: &Monitored) -> Self {
        Self {
            at: Instant::now(),
            api: api.cpu_ticks(),
            servers: bench.servers.cpu(),
            bench: procstat::self_ticks(),
        }
    }

    fn since(&self, earlier: &CpuMark) -> ApiCpu {
        let (nats_secs, postgres_secs) = self.servers.since(&earlier.servers);
        ApiCpu {
            wall_secs: (self.at - earlier.at).as_secs_f64(),
            api_secs: procstat::secs(self.api.saturating_sub(earlier.api)),
            postgres_secs,
            nats_secs,
            bench_secs: procstat::secs(self.bench.saturating_sub(earlier.bench)),
        }
    }
}

struct OpenLoop {
    report: EndpointReport,
    active_report: Option<EndpointReport>,
    /// Every report request (warm-up and window).
    reports: Vec<Sample>,
    active: Vec<Sample>,
    cpu: ApiCpu,
    warmup_secs: f64,
    window_secs: f64,
    load_1m: (f64, f64),
}

async fn open_loop_phase(
    bench: &Bench,
    api: &Monitored,
    addr: SocketAddr,
    auth: &HeaderValue,
    runs: Arc<Vec<String>>,
) -> anyhow::Result<OpenLoop> {
    let cfg = &bench.config;
    let start = Instant::now() + Duration::from_millis(100);
    let t0 = start + Duration::from_secs(cfg.api_warmup_secs());
    let t_end = t0 + Duration::from_secs(cfg.api_secs());
    let rate = f64::from(cfg.api_rate);
    let reports = tokio::spawn(http_load::open_loop(
        addr,
        cfg.api_connections as usize,
        Arc::new(Schedule::new(start, t_end, rate, 0)),
        report_calls(runs, auth, cfg.api_idempotency_keys),
    ));
    let active_rate = f64::from(cfg.api_active_rate);
    let active = (cfg.api_active_rate > 0).then(|| {
        tokio::spawn(http_load::open_loop(
            addr,
            ACTIVE_CONNECTIONS as usize,
            Arc::new(Schedule::new(start, t_end, active_rate, 0)),
            Arc::new({
                let auth = auth.clone();
                move |_| authorized(Call::get("/op_run/active"), &auth)
            }),
        ))
    });
    info!(
        rate = cfg.api_rate,
        active_rate = cfg.api_active_rate,
        warmup_secs = cfg.api_warmup_secs(),
        secs = cfg.api_secs(),
        "API open-loop load started"
    );
    tokio::time::sleep_until(t0.into()).await;
    let (before, load_before) = (CpuMark::take(bench, api), machine::load_1m());
    tokio::time::sleep_until(t_end.into()).await;
    let (after, load_after) = (CpuMark::take(bench, api), machine::load_1m());
    let reports = reports.await.context("the report load")??;
    let active = match active {
        Some(task) => task.await.context("the active-runs load")??,
        None => Vec::new(),
    };
    let report = endpoint_report(&reports, rate, t0, t_end);
    info!(
        p50_ms = report.latency_ms.p50,
        p99_ms = report.latency_ms.p99,
        ok_rate = report.ok_rate,
        "API open-loop window done"
    );
    Ok(OpenLoop {
        active_report: (cfg.api_active_rate > 0)
            .then(|| endpoint_report(&active, active_rate, t0, t_end)),
        report,
        reports,
        active,
        cpu: after.since(&before),
        warmup_secs: (t0 - start).as_secs_f64(),
        window_secs: (t_end - t0).as_secs_f64(),
        load_1m: (load_before, load_after),
    })
}

async fn closed_loop_phase(
    bench: &Bench,
    api: &Monitored,
    addr: SocketAddr,
    auth: &HeaderValue,
    runs: Arc<Vec<String>>,
) -> anyhow::Result<(ClosedLoopReport, Vec<Sample>)> {
    let cfg = &bench.config;
    let before = CpuMark::take(bench, api);
    let until = before.at + Duration::from_secs(cfg.api_max_secs());
    let samples = http_load::closed_loop(
        addr,
        cfg.api_connections as usize,
        until,
        CLOSED_LOOP_FIRST,
        report_calls(runs, auth, cfg.api_idempotency_keys),
    )
    .await?;
    let after = CpuMark::take(bench, api);
    let secs = (until - before.at).as_secs_f64();
    let ok = samples
        .iter()
        .filter(|s| s.outcome.is_success() && s.done <= until)
        .count();
    let report = ClosedLoopReport {
        connections: cfg.api_connections,
        secs,
        ok_rate: ok as f64 / secs,
        latency_ms: latency(samples.iter()),
        errors: errors_of(samples.iter()),
        cpu: after.since(&before),
    };
    info!(
        ok_rate = report.ok_rate,
        p99_ms = report.latency_ms.p99,
        "API closed loop done"
    );
    Ok((report, samples))
}

fn latency<'a>(samples: impl Iterator<Item = &'a Sample>) -> Distribution {
    Distribution::of_micros(
        samples
            .filter(|s| matches!(s.outcome, http_load::Outcome::Status(_)))
            .map(|s| i64::try_from(s.latency().as_micros()).unwrap_or(i64::MAX))
            .collect(),
    )
}

fn errors_of<'a>(samples: impl Iterator<Item = &'a Sample>) -> BTreeMap<String, u64> {
    let mut errors = BTreeMap::new();
    for s in samples.filter(|s| !s.outcome.is_success()) {
        let key = match s.outcome {
            http_load::Outcome::Status(code) => code.to_string(),
            http_load::Outcome::Transport => "transport".to_owned(),
        };
        *errors.entry(key).or_default() += 1;
    }
    errors
}

/// The figures of the requests due in `[t0, t_end)`.
fn endpoint_report(
    samples: &[Sample],
    requested: f64,
    t0: Instant,
    t_end: Instant,
) -> EndpointReport {
    let secs = (t_end - t0).as_secs_f64();
    let in_window = || samples.iter().filter(|s| s.due >= t0 && s.due < t_end);
    let ok_in_window = samples
        .iter()
        .filter(|s| s.outcome.is_success() && s.done >= t0 && s.done < t_end)
        .count();
    EndpointReport {
        requested_rate: requested,
        sent_rate: in_window().count() as f64 / secs,
        ok_rate: ok_in_window as f64 / secs,
        latency_ms: latency(in_window()),
        errors: errors_of(in_window()),
    }
}

/// Good and scrap per run over the reports answered 2xx.
fn answered_counts(runs: &[String], samples: &[Sample]) -> HashMap<String, (i64, i64, u64)> {
    let mut sums: HashMap<String, (i64, i64, u64)> =
        runs.iter().map(|r| (r.clone(), (0, 0, 0))).collect();
    for s in samples.iter().filter(|s| s.outcome.is_success()) {
        let run = &runs[(s.number % runs.len() as u64) as usize];
        let (good, scrap) = report_delta(s.number);
        if let Some(e) = sums.get_mut(run) {
            e.0 += good;
            e.1 += scrap;
            e.2 += 1;
        }
    }
    sums
}

/// The run totals (`good_units`) the 2xx answers showed, per run, sorted; and how many 2xx
/// answers showed none.
fn answered_totals(runs: &[String], samples: &[Sample]) -> (HashMap<String, Vec<i64>>, u64) {
    let mut totals: HashMap<String, Vec<i64>> = HashMap::new();
    let mut missing = 0;
    for s in samples.iter().filter(|s| s.outcome.is_success()) {
        let run = &runs[(s.number % runs.len() as u64) as usize];
        match s.value {
            Some(v) => totals.entry(run.clone()).or_default().push(v),
            None => missing += 1,
        }
    }
    for v in totals.values_mut() {
        v.sort_unstable();
    }
    (totals, missing)
}

/// Every 2xx report is counted once in its run's totals and count rows, and nothing else is;
/// every event is in the outbox.
async fn exactly_once(
    pool: &PgPool,
    runs: &[String],
    samples: &[Sample],
) -> anyhow::Result<Vec<Check>> {
    let answered = answered_counts(runs, samples);
    let (shown, without_totals) = answered_totals(runs, samples);
    let (sent_good, sent_scrap, sent_reports) = answered
        .values()
        .fold((0, 0, 0), |(g, s, n), v| (g + v.0, s + v.1, n + v.2));
    let totals: Vec<(String, i64, i64)> =
        sqlx::query_as("SELECT op_run_id::text, good_units, scrap_units FROM op_run")
            .fetch_all(pool)
            .await
            .context("the runs' totals")?;
    let differing = totals
        .iter()
        .filter(|(id, good, scrap)| {
            answered
                .get(id)
                .is_none_or(|&(g, s, _)| (g, s) != (*good, *scrap))
        })
        .count();
    let (rows, good, scrap): (i64, i64, i64) = sqlx::query_as(
        "SELECT count(*), coalesce(sum(good_delta), 0)::int8, coalesce(sum(scrap_delta), 0)::int8
         FROM op_run_count WHERE kind = 'report'",
    )
    .fetch_one(pool)
    .await
    .context("the count rows")?;
    let (events, reported): (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(*) FILTER (WHERE event_type = 'reported') FROM outbox",
    )
    .fetch_one(pool)
    .await
    .context("the outbox")?;
    let total = |column: usize| -> i64 {
        totals
            .iter()
            .map(|t| if column == 0 { t.1 } else { t.2 })
            .sum()
    };
    let n = |v: i64| u64::try_from(v).unwrap_or(0);
    // Every report adds at least one good unit, so the totals the answers of one run show are all
    // different, and the largest is the run's total.
    let repeated: usize = shown
        .values()
        .map(|v| v.windows(2).filter(|w| w[0] == w[1]).count())
        .sum();
    let last_differs = totals
        .iter()
        .filter(|(id, good, _)| {
            shown
                .get(id)
                .and_then(|v| v.last())
                .is_some_and(|last| last != good)
        })
        .count();
    Ok(vec![
        Check::equal(
            "api: runs in the database",
            runs.len() as u64,
            totals.len() as u64,
        ),
        Check::equal(
            "api: good units in the runs' totals = good_delta answered 2xx",
            n(sent_good),
            n(total(0)),
        ),
        Check::equal(
            "api: scrap units in the runs' totals = scrap_delta answered 2xx",
            n(sent_scrap),
            n(total(1)),
        ),
        Check::equal(
            "api: runs whose totals differ from their 2xx reports",
            0,
            differing as u64,
        ),
        Check::equal(
            "api: 2xx answers without the run's totals",
            0,
            without_totals,
        ),
        Check::equal(
            "api: 2xx answers showing a run total another answer showed",
            0,
            repeated as u64,
        ),
        Check::equal(
            "api: runs whose last answered total is not their total",
            0,
            last_differs as u64,
        ),
        Check::equal(
            "api: count rows = reports answered 2xx",
            sent_reports,
            n(rows),
        ),
        Check::equal(
            "api: good / scrap in the count rows = answered 2xx",
            n(sent_good + sent_scrap),
            n(good + scrap),
        ),
        Check::equal(
            "api: reported events in the outbox = reports answered 2xx",
            sent_reports,
            n(reported),
        ),
        Check::equal(
            "api: outbox events = runs started + reports answered 2xx",
            runs.len() as u64 + sent_reports,
            n(events),
        ),
    ])
}

async fn jetstream(bench: &Bench) -> anyhow::Result<async_nats::jetstream::Context> {
    let options = match std::env::var_os("NATS_CREDS") {
        Some(creds) => async_nats::ConnectOptions::with_credentials_file(creds).await?,
        None => async_nats::ConnectOptions::new(),
    };
    let client = options.connect(bench.servers.nats_url()).await?;
    Ok(async_nats::jetstream::new(client))
}

/// Messages in `stream` (JetStream drops republished outbox ids, so this is events relayed once).
async fn stream_messages(bench: &Bench, stream: &str) -> anyhow::Result<u64> {
    let js = jetstream(bench).await?;
    let mut s = js
        .get_stream(stream)
        .await
        .with_context(|| format!("stream {stream}"))?;
    Ok(s.info().await?.state.messages)
}

async fn delete_stream(bench: &Bench, stream: &str) -> anyhow::Result<()> {
    jetstream(bench)
        .await?
        .delete_stream(stream)
        .await
        .with_context(|| format!("delete stream {stream}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http_load::Outcome;

    fn sample(number: u64, due_ms: u64, latency_ms: u64, outcome: Outcome, t: Instant) -> Sample {
        let due = t + Duration::from_millis(due_ms);
        Sample {
            number,
            due,
            done: due + Duration::from_millis(latency_ms),
            outcome,
            value: None,
        }
    }

    #[test]
    fn report_deltas_are_small_and_some_are_scrap() {
        let deltas: Vec<(i64, i64)> = (0..20).map(report_delta).collect();
        assert!(deltas
            .iter()
            .all(|&(g, s)| (1..=4).contains(&g) && (0..=1).contains(&s)));
        assert_eq!(deltas.iter().map(|d| d.1).sum::<i64>(), 2);
        assert_eq!(deltas[0], (1, 1));
        assert_eq!(deltas[3], (4, 0));
    }

    #[test]
    fn the_window_counts_what_was_due_in_it_and_latency_from_the_schedule() {
        let t = Instant::now();
        let samples = vec![
            // warm-up: not in the window
            sample(0, 0, 1, Outcome::Status(200), t),
            sample(1, 1000, 5, Outcome::Status(200), t),
            sample(2, 1500, 30, Outcome::Status(200), t),
            sample(3, 1600, 2, Outcome::Status(409), t),
            sample(4, 1700, 0, Outcome::Transport, t),
            // due in the window, answered after it: in the latency, not in the 2xx rate
            sample(5, 1999, 10, Outcome::Status(200), t),
        ];
        let r = endpoint_report(
            &samples,
            5.0,
            t + Duration::from_millis(1000),
            t + Duration::from_millis(2000),
        );
        assert_eq!(r.sent_rate, 5.0);
        assert_eq!(r.ok_rate, 2.0);
        assert_eq!(r.latency_ms.count, 4);
        assert_eq!(r.latency_ms.max, 30.0);
        assert_eq!(
            r.errors,
            BTreeMap::from([("409".to_owned(), 1), ("transport".to_owned(), 1)])
        );
    }

    #[test]
    fn only_reports_answered_2xx_are_expected_in_the_runs() {
        let t = Instant::now();
        let runs = vec!["a".to_owned(), "b".to_owned()];
        let samples = vec![
            sample(0, 0, 1, Outcome::Status(200), t),
            sample(1, 0, 1, Outcome::Status(200), t),
            sample(2, 0, 1, Outcome::Status(500), t),
            sample(3, 0, 1, Outcome::Transport, t),
            sample(4, 0, 1, Outcome::Status(200), t),
        ];
        let sums = answered_counts(&runs, &samples);
        // run a: reports 0 (1 good, 1 scrap) and 4 (1 good); run b: report 1 (2 good).
        assert_eq!(sums["a"], (2, 1, 2));
        assert_eq!(sums["b"], (2, 0, 1));
    }

    #[test]
    fn answered_totals_are_collected_per_run_and_sorted() {
        let t = Instant::now();
        let runs = vec!["a".to_owned(), "b".to_owned()];
        let with = |number, value| Sample {
            value,
            ..sample(number, 0, 1, Outcome::Status(200), t)
        };
        let samples = vec![
            with(2, Some(7)),
            with(0, Some(3)),
            with(1, Some(5)),
            with(4, None),
            sample(6, 0, 1, Outcome::Status(409), t),
        ];
        let (totals, missing) = answered_totals(&runs, &samples);
        assert_eq!(totals["a"], vec![3, 7]);
        assert_eq!(totals["b"], vec![5]);
        assert_eq!(missing, 1);
        assert_eq!(answered_good_units(br#"{"good_units":12,"x":1}"#), Some(12));
        assert_eq!(answered_good_units(b"{}"), None);
    }
}
