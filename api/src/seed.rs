//! The seed's demo run, so OEE views have data at once (`mes-api seed-demo`): a 4-hour run of
//! WO123/OP10 on SMT01 ending now, ideal cycle time 1.5 s, counts reported every 30 minutes
//! (780 good, 20 scrap in all), one 15-minute unplanned stop. Runs through the same SQL as the
//! API, so it also emits its run events. A command, not a migration: production databases are
//! never seeded by accident.

use chrono::{Duration, SubsecRound, Utc};
use protocol::run_event::{CountDelta, RunEventType};
use sqlx::PgPool;
use uuid::Uuid;

use crate::run_store::{self, NewRun};

/// Creates the demo run (completed) and returns its id. Refused (an exclusion violation) if
/// SMT01 already has a run in those four hours.
pub async fn demo_run(pool: &PgPool, site: &str) -> Result<Uuid, sqlx::Error> {
    let end = Utc::now().trunc_subsecs(0);
    let start = end - Duration::hours(4);
    let mut tx = pool.begin().await?;
    let mut run = run_store::insert_run(
        &mut tx,
        &NewRun {
            op_run_id: Uuid::now_v7(),
            work_order_id: "WO123",
            operation_id: "OP10",
            resource_id: "SMT01",
            site_id: None,
            default_site: site,
            started_at: start,
            planned_seconds: Some(14_400.0),
            ideal_cycle_time_s: Some(1.5),
        },
    )
    .await
    .map_err(to_sqlx)?;
    let ev = run_store::event(&run, site, RunEventType::Started, start, None, None);
    run_store::insert_event(&mut tx, &ev)
        .await
        .map_err(to_sqlx)?;
    for i in 1..=8 {
        let at = start + Duration::minutes(30 * i);
        let delta = CountDelta {
            good_delta: if i >= 7 { 99 } else { 97 },
            scrap_delta: if i <= 4 { 3 } else { 2 },
        };
        run = run_store::report(&mut tx, run.op_run_id, delta, at, site)
            .await
            .map_err(to_sqlx)?;
    }
    let stop = start + Duration::minutes(100);
    let dt = run_store::insert_downtime(&mut tx, run.op_run_id, "breakdown", stop, Some("demo"))
        .await
        .map_err(to_sqlx)?;
    run_store::close_downtime(&mut tx, dt, stop + Duration::minutes(15))
        .await
        .map_err(to_sqlx)?;
    run.status = "completed".to_owned();
    run.ended_at = Some(end);
    run_store::update_run(&mut tx, &run)
        .await
        .map_err(to_sqlx)?;
    let ev = run_store::event(&run, site, RunEventType::Completed, end, None, None);
    run_store::insert_event(&mut tx, &ev)
        .await
        .map_err(to_sqlx)?;
    tx.commit().await?;
    Ok(run.op_run_id)
}

fn to_sqlx(e: crate::error::ApiError) -> sqlx::Error {
    sqlx::Error::Protocol(e.to_string())
}
