//! edge-mes-sim: a small simulated line for demos and first runs.
//!
//! - [`config`]: flags and environment.
//! - [`signals`]: what the sensors read, tick by tick (pure).
//! - [`production`]: the run lifecycle of one line: start, report, break down, complete (pure).
//! - [`api_client`]: JSON requests to mes-api.

pub mod api_client;
pub mod config;
pub mod production;
pub mod signals;

use std::io::Write;
use std::time::Duration;

use chrono::Utc;
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde_json::json;
use thiserror::Error;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

pub use config::Config;
use production::{Action, Line, Settings};
use signals::Signals;

#[derive(Debug, Error)]
pub enum SimError {
    #[error("cannot write {path}: {source}")]
    Write {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}

struct Resource {
    line: Line,
    signals: Signals,
    file: std::io::BufWriter<std::fs::File>,
    path: std::path::PathBuf,
}

/// Writes readings and drives runs until `shutdown`.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), SimError> {
    std::fs::create_dir_all(&config.hot_dir).map_err(|source| SimError::Write {
        path: config.hot_dir.clone(),
        source,
    })?;
    let mut resources = Vec::new();
    for r in &config.resources {
        let path = config.hot_dir.join(format!("{r}.jsonl"));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|source| SimError::Write {
                path: path.clone(),
                source,
            })?;
        resources.push(Resource {
            line: Line::new(r),
            signals: Signals::new(r),
            file: std::io::BufWriter::new(file),
            path,
        });
    }
    let api = (!config.no_runs)
        .then(|| api_client::ApiClient::new(config.api_addr, config.api_token.clone()));
    let tick = Duration::from_millis(config.tick_ms);
    let settings = Settings {
        report_every: Duration::from_secs(config.report_every_secs.max(1)),
        breakdown_per_tick: if config.breakdown_every_min == 0 {
            0.0
        } else {
            tick.as_secs_f64() / (config.breakdown_every_min as f64 * 60.0)
        },
        breakdown_secs: (60, 240),
    };
    let mut rng = StdRng::seed_from_u64(config.seed);
    let mut adopted = api.is_none();
    let mut lines_written: u64 = 0;
    let mut api_down_logged = false;
    let mut interval = tokio::time::interval(tick);
    info!(hot_dir = %config.hot_dir.display(), resources = ?config.resources,
        runs = api.is_some(), "simulated line started");
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = interval.tick() => {}
        }
        let now = Utc::now();
        let shift = production::shift_of(now, config.time_zone);
        if let Some(api) = &api {
            if !adopted {
                adopted = adopt_active_runs(api, &mut resources, config.time_zone).await;
            }
            for r in &mut resources {
                let Some(action) = r.line.next(now, shift, &settings, &mut rng) else {
                    continue;
                };
                match apply(api, r, &action, now).await {
                    Ok(run_id) => {
                        api_down_logged = false;
                        r.line.applied(&action, now, shift, run_id);
                    }
                    Err(e) if !api_down_logged => {
                        warn!(resource = %r.line.resource_id, error = %e, "mes-api call failed; retrying each tick");
                        api_down_logged = true;
                    }
                    Err(_) => {}
                }
            }
        }
        for r in &mut resources {
            let running = api.is_none() || r.line.running();
            let work = r.line.work_order_id.as_deref().map(|wo| (wo, "OP10"));
            let lines = r.signals.tick(now, running, work, &config.site, &mut rng);
            for l in lines {
                lines_written += 1;
                if config.bad_line_every > 0 && lines_written.is_multiple_of(config.bad_line_every)
                {
                    write_line(
                        r,
                        &signals::bad_line(
                            lines_written / config.bad_line_every,
                            &r.line.resource_id,
                        ),
                    )?;
                }
                write_line(r, &l)?;
            }
            r.file.flush().map_err(|source| SimError::Write {
                path: r.path.clone(),
                source,
            })?;
        }
    }
    info!(lines_written, "simulated line stopped");
    Ok(())
}

fn write_line(r: &mut Resource, line: &str) -> Result<(), SimError> {
    writeln!(r.file, "{line}").map_err(|source| SimError::Write {
        path: r.path.clone(),
        source,
    })
}

/// Runs already active for our resources (a second start) are taken over, not started again.
async fn adopt_active_runs(
    api: &api_client::ApiClient,
    resources: &mut [Resource],
    tz: chrono_tz::Tz,
) -> bool {
    let Ok(active) = api.get("/op_run/active").await else {
        return false;
    };
    let now = Utc::now();
    for run in active["runs"].as_array().into_iter().flatten() {
        let (Some(id), Some(resource), Some(wo)) = (
            run["op_run_id"].as_str(),
            run["resource_id"].as_str(),
            run["work_order_id"].as_str(),
        ) else {
            continue;
        };
        let started = run["started_at"]
            .as_str()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .map_or(now, |t| t.with_timezone(&Utc));
        if let Some(r) = resources
            .iter_mut()
            .find(|r| r.line.resource_id == resource)
        {
            info!(resource, op_run_id = id, "taking over the active run");
            r.line.adopt(
                id.to_owned(),
                wo.to_owned(),
                run["status"] == "paused",
                production::shift_of(started, tz),
                now,
            );
        }
    }
    true
}

/// Sends one action; the new run's id for a start.
async fn apply(
    api: &api_client::ApiClient,
    r: &Resource,
    action: &Action,
    now: chrono::DateTime<Utc>,
) -> Result<Option<String>, api_client::ApiError> {
    let id = r.line.run_id.clone().unwrap_or_default();
    match action {
        Action::Start {
            work_order_id,
            operation_id,
        } => {
            let answer = api
                .post(
                    "/op_run/start",
                    &json!({
                        "work_order_id": work_order_id,
                        "operation_id": operation_id,
                        "resource_id": r.line.resource_id,
                        "ideal_cycle_time_s": 60.0 / signals::NOMINAL_SPEED,
                        "planned_seconds": 8.0 * 3600.0,
                    }),
                )
                .await?;
            Ok(answer["op_run_id"].as_str().map(str::to_owned))
        }
        Action::Report => {
            let (good, scrap) = r.signals.units(r.line.secs_since_report(now));
            if good + scrap > 0 {
                api.post(
                    "/op_run/report",
                    &json!({"op_run_id": id, "good_delta": good, "scrap_delta": scrap}),
                )
                .await?;
            }
            Ok(None)
        }
        Action::Pause { reason_code, .. } => {
            api.post(
                "/op_run/pause",
                &json!({"op_run_id": id, "reason_code": reason_code}),
            )
            .await?;
            Ok(None)
        }
        Action::Resume => {
            api.post("/op_run/resume", &json!({"op_run_id": id}))
                .await?;
            Ok(None)
        }
        Action::Complete => {
            api.post("/op_run/complete", &json!({"op_run_id": id}))
                .await?;
            Ok(None)
        }
    }
}
