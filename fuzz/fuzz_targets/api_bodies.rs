//! A POST body of mes-api's run endpoints, through the same parser as its handlers
//! (`mes_api::extract::parse_json`, which builds the domain's typed values of
//! `mes_api::domain::values`), and, when it parses, through the domain: `domain::start` or
//! `domain::decide` on a running, a paused and a completed run, then the run event the MES would
//! receive.
//!
//! Input: the body's bytes. Each input is tried as every body type, so one seed per endpoint
//! reaches all of them.
//!
//! Besides "does not panic": a refusal is an `ApiError` that renders as a problem document; an
//! accepted body serializes to JSON that parses back (the idempotency store keeps it so).

#![no_main]

use chrono::{DateTime, SubsecRound, TimeZone, Utc};
use libfuzzer_sys::fuzz_target;
use mes_api::domain::{
    self, Command, Downtime, Ending, Reason, Run, RunState, RunStatus, Transition,
};
use mes_api::extract::parse_json;
use mes_api::run_schema::{AbortRun, CompleteRun, PauseRun, ReportCounts, ResumeRun, StartRun};
use serde::de::DeserializeOwned;
use serde::Serialize;
use uuid::Uuid;

fuzz_target!(|body: &[u8]| {
    let now = Utc
        .with_ymd_and_hms(2025, 8, 22, 12, 0, 0)
        .single()
        .expect("a valid time");
    if let Some(b) = parse::<StartRun>(body) {
        let mut start = b.into_domain();
        start.started_at = micros(start.started_at);
        if let Ok(t) = domain::start(&start, now) {
            answer(&t, now);
        }
    }
    if let Some(b) = parse::<ReportCounts>(body) {
        decide_on_each_run(now, || Command::Report {
            good_delta: b.good_delta,
            scrap_delta: b.scrap_delta,
            at: micros(b.at),
        });
    }
    if let Some(b) = parse::<PauseRun>(body) {
        // As the store would find it: the code known, unless it is "unknown".
        let reason = (b.reason_code.as_str() != "unknown").then(|| Reason {
            code: b.reason_code.to_string(),
            planned: false,
            loss_bucket: "availability".into(),
        });
        decide_on_each_run(now, || Command::Pause {
            reason_code: b.reason_code.clone(),
            reason: reason.clone(),
            at: micros(b.at),
            note: b.note.clone(),
        });
    }
    if let Some(b) = parse::<ResumeRun>(body) {
        decide_on_each_run(now, || Command::Resume { at: micros(b.at) });
    }
    if let Some(b) = parse::<CompleteRun>(body) {
        decide_on_each_run(now, || Command::End {
            ending: Ending::Complete {
                good_units: b.good_units,
                scrap_units: b.scrap_units,
            },
            at: micros(b.ended_at),
        });
    }
    if let Some(b) = parse::<AbortRun>(body) {
        decide_on_each_run(now, || Command::End {
            ending: Ending::Abort,
            at: micros(b.ended_at),
        });
    }
});

/// The handlers' parse; an accepted body must serialize and parse back.
fn parse<T: DeserializeOwned + Serialize>(body: &[u8]) -> Option<T> {
    match parse_json::<T>(body) {
        Ok(value) => {
            let json = serde_json::to_vec(&value).expect("an accepted body serializes");
            if let Err(e) = parse_json::<T>(&json) {
                panic!(
                    "an accepted body does not parse back: {:?}: {e:?}",
                    String::from_utf8_lossy(&json)
                );
            }
            Some(value)
        }
        Err(e) => {
            // The detail the client would read in its problem document.
            assert!(!e.to_string().is_empty());
            None
        }
    }
}

/// The handlers keep caller times at the database's precision.
fn micros(t: Option<DateTime<Utc>>) -> Option<DateTime<Utc>> {
    t.map(|t| t.trunc_subsecs(6))
}

fn decide_on_each_run(now: DateTime<Utc>, command: impl Fn() -> Command) {
    for state in runs(now) {
        if let Ok(t) = domain::decide(&state, command(), now) {
            answer(&t, now);
        }
    }
}

/// The answer and the event of an accepted change, serialized as the API and the relay do.
fn answer(t: &Transition, now: DateTime<Utc>) {
    let event = domain::event(&t.run, &t.event, "SITE", now, Some("fuzz"));
    serde_json::to_string(&event).expect("a run event serializes");
    let run = mes_api::run_schema::Run::from(t.run.clone());
    serde_json::to_string(&run).expect("a run serializes");
}

/// A running run with counts, the same run paused, and a completed one.
fn runs(now: DateTime<Utc>) -> [RunState; 3] {
    let started_at = now - chrono::Duration::hours(2);
    let run = Run {
        op_run_id: Uuid::from_u128(1),
        work_order_id: "WO1".into(),
        operation_id: "OP10".into(),
        resource_id: "SMT01".into(),
        site_id: None,
        status: RunStatus::Running,
        started_at,
        ended_at: None,
        planned_seconds: Some(3600.0),
        ideal_cycle_time_s: Some(1.5),
        good_units: 100,
        scrap_units: 3,
    };
    let running = RunState {
        run: run.clone(),
        open_downtime: None,
        last_downtime_end: Some(started_at + chrono::Duration::minutes(30)),
        last_count_at: Some(now - chrono::Duration::minutes(10)),
    };
    let paused = RunState {
        run: Run {
            status: RunStatus::Paused,
            ..run.clone()
        },
        open_downtime: Some(Downtime {
            id: Some(7),
            reason: Reason {
                code: "breakdown".into(),
                planned: false,
                loss_bucket: "availability".into(),
            },
            started_at: now - chrono::Duration::minutes(5),
            ended_at: None,
            note: None,
        }),
        ..running.clone()
    };
    let completed = RunState {
        run: Run {
            status: RunStatus::Completed,
            ended_at: Some(now - chrono::Duration::minutes(1)),
            ..run
        },
        ..running.clone()
    };
    [running, paused, completed]
}
