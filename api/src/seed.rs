//! The seed's demo run, so OEE views have data at once (`mes-api seed-demo`): a 4-hour run of
//! WO123/OP10 on SMT01 ending now, ideal cycle time 1.5 s, counts reported every 30 minutes
//! (780 good, 20 scrap in all), one 15-minute unplanned stop. Runs through the same SQL as the
//! API, so it also emits its run events. A command, not a migration: production databases are
//! never seeded by accident.

use chrono::{DateTime, Duration, SubsecRound, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use crate::domain::{self, Command, Count, CycleTime, Ending, Ident, Note, Seconds};
use crate::store::{reports, runs, StoreError};

/// The actor of the demo run's rows and events.
const SEED_ACTOR: &str = "mes-api seed-demo";

/// Creates the demo run (completed) and returns its id. Refused (an overlap) if SMT01 already
/// has a run in those four hours.
pub async fn demo_run(pool: &PgPool, site: &str) -> Result<Uuid, StoreError> {
    let end = Utc::now().trunc_subsecs(0);
    let start = end - Duration::hours(4);
    let id = |s: &str| {
        Ident::parse(s).map_err(|e| StoreError::Database(sqlx::Error::Protocol(e.to_string())))
    };
    let request = domain::Start {
        op_run_id: None,
        work_order_id: id("WO123")?,
        operation_id: id("OP10")?,
        resource_id: id("SMT01")?,
        site_id: None,
        started_at: Some(start),
        planned_seconds: Seconds::new(14_400.0).ok(),
        ideal_cycle_time_s: CycleTime::new(1.5).ok(),
    };
    let mut tx = pool.begin().await?;
    let transition = domain::start(&request, end)?;
    let run = runs::write_start(&mut tx, transition, site, Some(SEED_ACTOR)).await?;
    let count = |n| Count::new(n).unwrap_or(Count::ZERO);
    for i in 1..=8 {
        let job = reports::ReportJob {
            op_run_id: run.op_run_id,
            good_delta: count(if i >= 7 { 99 } else { 97 }),
            scrap_delta: count(if i <= 4 { 3 } else { 2 }),
            at: Some(start + Duration::minutes(30 * i)),
            received: end,
            actor: Some(SEED_ACTOR.to_owned()),
        };
        for answer in reports::write(&mut tx, &[job], site).await? {
            answer?;
        }
    }
    let stop = start + Duration::minutes(100);
    let pause = Command::Pause {
        reason_code: id("breakdown")?,
        reason: runs::reason(&mut tx, "breakdown").await?,
        at: Some(stop),
        note: Note::parse("demo").ok(),
    };
    step(&mut tx, run.op_run_id, pause, end, site).await?;
    let resume = Command::Resume {
        at: Some(stop + Duration::minutes(15)),
    };
    step(&mut tx, run.op_run_id, resume, end, site).await?;
    let complete = Command::End {
        ending: Ending::Complete {
            good_units: None,
            scrap_units: None,
        },
        at: Some(end),
    };
    step(&mut tx, run.op_run_id, complete, end, site).await?;
    tx.commit().await?;
    Ok(run.op_run_id)
}

/// One lifecycle change, as the API makes it.
async fn step(
    tx: &mut sqlx::PgConnection,
    id: Uuid,
    command: Command,
    now: DateTime<Utc>,
    site: &str,
) -> Result<(), StoreError> {
    let state = runs::lock(tx, id).await?;
    let transition = domain::decide(&state, command, now)?;
    runs::write(tx, transition, site, Some(SEED_ACTOR)).await?;
    Ok(())
}
