//! The lifecycle table, command by command and status by status, then properties over random
//! command sequences.

use chrono::TimeZone;
use proptest::prelude::*;

use super::*;

fn t(minute: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, 1, 6, 0, 0).unwrap() + Duration::minutes(minute)
}

fn id(s: &str) -> Ident {
    Ident::parse(s).unwrap()
}

fn count(n: i64) -> Count {
    Count::new(n).unwrap()
}

fn breakdown() -> Reason {
    Reason {
        code: "breakdown".into(),
        planned: false,
        loss_bucket: "availability".into(),
    }
}

fn started() -> RunState {
    let req = Start {
        op_run_id: None,
        work_order_id: id("WO1"),
        operation_id: id("OP10"),
        resource_id: id("SMT01"),
        site_id: None,
        started_at: Some(t(0)),
        planned_seconds: None,
        ideal_cycle_time_s: Some(CycleTime::new(1.5).unwrap()),
    };
    RunState::new(start(&req, t(0)).unwrap().run)
}

/// Applies a transition as the store does: the run after it, the downtime it opened or closed,
/// the latest count.
fn apply(state: &RunState, tr: &Transition, next_downtime_id: i64) -> RunState {
    let mut s = state.clone();
    s.run = tr.run.clone();
    for e in &tr.effects {
        match e {
            Effect::Count { at, .. } => {
                s.last_count_at = Some(s.last_count_at.map_or(*at, |l| l.max(*at)))
            }
            Effect::OpenDowntime { at, note, .. } => {
                let reason = tr.event.downtime.as_ref().unwrap().reason.clone();
                s.open_downtime = Some(Downtime {
                    id: Some(next_downtime_id),
                    reason,
                    started_at: *at,
                    ended_at: None,
                    note: note.clone(),
                });
            }
            Effect::CloseDowntime { at, .. } => {
                s.open_downtime = None;
                s.last_downtime_end = Some(s.last_downtime_end.map_or(*at, |l| l.max(*at)));
            }
        }
    }
    s
}

fn report(good: i64, scrap: i64, at: i64) -> Command {
    Command::Report {
        good_delta: count(good),
        scrap_delta: count(scrap),
        at: Some(t(at)),
    }
}

fn pause(at: i64) -> Command {
    Command::Pause {
        reason_code: id("breakdown"),
        reason: Some(breakdown()),
        at: Some(t(at)),
        note: None,
    }
}

fn resume(at: i64) -> Command {
    Command::Resume { at: Some(t(at)) }
}

fn complete(good: Option<i64>, scrap: Option<i64>, at: Option<i64>) -> Command {
    Command::End {
        ending: Ending::Complete {
            good_units: good.map(count),
            scrap_units: scrap.map(count),
        },
        at: at.map(t),
    }
}

fn abort(at: i64) -> Command {
    Command::End {
        ending: Ending::Abort,
        at: Some(t(at)),
    }
}

fn status_409(e: DomainError) -> String {
    match e {
        DomainError::WrongStatus { what, .. } => what,
        other => panic!("expected a status conflict, got {other:?}"),
    }
}

fn invalid_field(e: DomainError) -> &'static str {
    match e {
        DomainError::Invalid { field, .. } => field,
        other => panic!("expected an invalid field, got {other:?}"),
    }
}

#[test]
fn statuses_round_trip_through_their_stored_text() {
    for s in RunStatus::ALL {
        assert_eq!(s.as_str().parse::<RunStatus>(), Ok(s));
        assert_eq!(serde_json::to_string(&s).unwrap(), format!("\"{s}\""));
    }
    assert!("done".parse::<RunStatus>().is_err());
    let open: Vec<&str> = RunStatus::ALL
        .iter()
        .filter(|s| s.is_open())
        .map(|s| s.as_str())
        .collect();
    assert_eq!(open, RunStatus::OPEN);
}

#[test]
fn the_seeds_lifecycle() {
    let s0 = started();
    assert_eq!(s0.run.status, RunStatus::Running);
    let tr = decide(&s0, report(10, 1, 5), t(5)).unwrap();
    assert_eq!((tr.run.good_units, tr.run.scrap_units), (10, 1));
    assert_eq!(tr.event.event_type, RunEventType::Reported);
    assert_eq!(
        tr.event.delta,
        Some(CountDelta {
            good_delta: 10,
            scrap_delta: 1
        })
    );
    let s1 = apply(&s0, &tr, 1);
    let tr = decide(&s1, complete(Some(780), Some(20), Some(240)), t(240)).unwrap();
    assert_eq!(tr.run.status, RunStatus::Completed);
    assert_eq!((tr.run.good_units, tr.run.scrap_units), (780, 20));
    assert_eq!(tr.run.ended_at, Some(t(240)));
    assert_eq!(
        tr.effects,
        vec![Effect::Count {
            at: t(240),
            delta: CountDelta {
                good_delta: 770,
                scrap_delta: 19
            },
            kind: CountKind::Final
        }]
    );
    let done = apply(&s1, &tr, 1);
    // A completed run takes nothing more.
    for cmd in [
        report(1, 0, 241),
        pause(241),
        resume(241),
        complete(None, None, None),
        abort(241),
    ] {
        assert_eq!(
            status_409(decide(&done, cmd, t(241)).unwrap_err()),
            "completed"
        );
    }
}

#[test]
fn pause_and_resume() {
    let s0 = started();
    let tr = decide(&s0, pause(10), t(10)).unwrap();
    assert_eq!(tr.run.status, RunStatus::Paused);
    assert_eq!(tr.event.event_type, RunEventType::Paused);
    assert!(matches!(tr.effects[..], [Effect::OpenDowntime { at, .. }] if at == t(10)));
    let paused = apply(&s0, &tr, 7);
    assert_eq!(
        status_409(decide(&paused, pause(11), t(11)).unwrap_err()),
        "already paused"
    );
    // Reports still count while paused (units made before the stop, reported late).
    assert!(decide(&paused, report(1, 0, 12), t(12)).is_ok());
    assert_eq!(
        invalid_field(decide(&paused, resume(9), t(12)).unwrap_err()),
        "at"
    );
    let tr = decide(&paused, resume(25), t(25)).unwrap();
    assert_eq!(tr.run.status, RunStatus::Running);
    assert_eq!(tr.effects, vec![Effect::CloseDowntime { id: 7, at: t(25) }]);
    let dt = tr.event.downtime.as_ref().unwrap();
    assert_eq!(
        (dt.id, dt.started_at, dt.ended_at),
        (Some(7), t(10), Some(t(25)))
    );
    let running = apply(&paused, &tr, 7);
    assert_eq!(
        status_409(decide(&running, resume(26), t(26)).unwrap_err()),
        "not paused"
    );
    // A new pause may not start inside the previous downtime.
    assert_eq!(
        invalid_field(decide(&running, pause(20), t(26)).unwrap_err()),
        "at"
    );
    assert!(decide(&running, pause(25), t(26)).is_ok());
}

#[test]
fn unknown_reason_is_refused_after_the_status_checks() {
    let s0 = started();
    let unknown = |at| Command::Pause {
        reason_code: id("coffee"),
        reason: None,
        at: Some(t(at)),
        note: None,
    };
    assert_eq!(
        decide(&s0, unknown(1), t(1)).unwrap_err(),
        DomainError::UnknownReason("coffee".into())
    );
    let done = apply(&s0, &decide(&s0, abort(2), t(2)).unwrap(), 1);
    assert_eq!(
        status_409(decide(&done, unknown(3), t(3)).unwrap_err()),
        "aborted"
    );
}

#[test]
fn ending_closes_an_open_downtime_and_keeps_counts() {
    let s0 = started();
    let s1 = apply(&s0, &decide(&s0, report(5, 0, 1), t(1)).unwrap(), 1);
    let paused = apply(&s1, &decide(&s1, pause(10), t(10)).unwrap(), 3);
    let tr = decide(&paused, abort(30), t(30)).unwrap();
    assert_eq!(tr.run.status, RunStatus::Aborted);
    assert_eq!((tr.run.good_units, tr.run.ended_at), (5, Some(t(30))));
    assert_eq!(tr.effects, vec![Effect::CloseDowntime { id: 3, at: t(30) }]);
    assert_eq!(tr.event.event_type, RunEventType::Aborted);
    assert_eq!(
        tr.event.delta,
        Some(CountDelta {
            good_delta: 0,
            scrap_delta: 0
        })
    );
    // Not before the open downtime's start.
    assert_eq!(
        invalid_field(decide(&paused, abort(9), t(30)).unwrap_err()),
        "ended_at"
    );
}

#[test]
fn time_rules() {
    let s0 = started();
    // Ahead of the server by more than the skew: refused; within it: taken as given.
    let ahead = t(10) + MAX_CLOCK_SKEW + Duration::seconds(1);
    let cmd = Command::Report {
        good_delta: count(1),
        scrap_delta: Count::ZERO,
        at: Some(ahead),
    };
    assert_eq!(invalid_field(decide(&s0, cmd, t(10)).unwrap_err()), "at");
    assert!(decide(&s0, report(1, 0, 14), t(10)).is_ok());
    // Before 2000: a wrong clock, refused even where no other rule applies.
    let mut early = Start {
        op_run_id: None,
        work_order_id: id("WO1"),
        operation_id: id("OP10"),
        resource_id: id("R"),
        site_id: None,
        started_at: Some(Utc.with_ymd_and_hms(1999, 12, 31, 23, 59, 59).unwrap()),
        planned_seconds: None,
        ideal_cycle_time_s: None,
    };
    assert_eq!(
        invalid_field(start(&early, t(10)).unwrap_err()),
        "started_at"
    );
    early.started_at = Some(earliest_time());
    assert!(start(&early, t(10)).is_ok());
    // Before the start.
    assert_eq!(
        invalid_field(decide(&s0, report(1, 0, -1), t(10)).unwrap_err()),
        "at"
    );
    assert_eq!(
        invalid_field(decide(&s0, pause(-1), t(10)).unwrap_err()),
        "at"
    );
    assert_eq!(
        invalid_field(decide(&s0, abort(-1), t(10)).unwrap_err()),
        "ended_at"
    );
    // An end before the latest count is refused; a default end is never before it.
    let s1 = apply(&s0, &decide(&s0, report(1, 0, 12), t(10)).unwrap(), 1);
    assert_eq!(
        invalid_field(decide(&s1, complete(None, None, Some(11)), t(13)).unwrap_err()),
        "ended_at"
    );
    let tr = decide(&s1, complete(None, None, None), t(10)).unwrap();
    assert_eq!(tr.run.ended_at, Some(t(12)));
    let tr = decide(&s1, complete(None, None, None), t(20)).unwrap();
    assert_eq!(tr.run.ended_at, Some(t(20)));
    // A start time ahead of the server is refused too.
    let mut req = Start {
        op_run_id: None,
        work_order_id: id("WO1"),
        operation_id: id("OP10"),
        resource_id: id("R"),
        site_id: None,
        started_at: Some(ahead),
        planned_seconds: None,
        ideal_cycle_time_s: None,
    };
    assert_eq!(invalid_field(start(&req, t(10)).unwrap_err()), "started_at");
    req.started_at = None;
    assert_eq!(start(&req, t(10)).unwrap().run.started_at, t(10));
}

#[test]
fn a_report_before_the_start_of_an_ended_run_is_invalid_not_a_conflict() {
    let s0 = started();
    let done = apply(&s0, &decide(&s0, abort(5), t(5)).unwrap(), 1);
    assert_eq!(
        invalid_field(decide(&done, report(1, 0, -1), t(6)).unwrap_err()),
        "at"
    );
    assert_eq!(
        status_409(decide(&done, report(1, 0, 6), t(6)).unwrap_err()),
        "aborted"
    );
}

#[test]
fn final_counters_may_raise_never_lower() {
    let s0 = started();
    let s1 = apply(&s0, &decide(&s0, report(10, 2, 1), t(1)).unwrap(), 1);
    assert_eq!(
        decide(&s1, complete(Some(9), None, None), t(2)).unwrap_err(),
        DomainError::FinalBelowReported {
            field: "good_units",
            final_total: 9,
            reported: 10
        }
    );
    assert!(matches!(
        decide(&s1, complete(None, Some(1), None), t(2)).unwrap_err(),
        DomainError::FinalBelowReported {
            field: "scrap_units",
            ..
        }
    ));
    // Equal totals: no final count row.
    let tr = decide(&s1, complete(Some(10), Some(2), None), t(2)).unwrap();
    assert!(tr.effects.is_empty());
}

#[test]
fn events_carry_the_run_after_the_transition() {
    let s0 = started();
    let tr = decide(&s0, pause(3), t(3)).unwrap();
    let mut draft = tr.event.clone();
    draft.downtime.as_mut().unwrap().id = Some(42);
    let ev = event(&tr.run, &draft, "BKK", t(3), Some("hmi-1"));
    assert_eq!(ev.actor.as_deref(), Some("hmi-1"));
    assert_eq!(ev.status, "paused");
    assert_eq!(ev.site_id, "BKK");
    assert_eq!(ev.event_type, RunEventType::Paused);
    let dt = ev.downtime.unwrap();
    assert_eq!(
        (dt.downtime_id, dt.reason_code.as_str(), dt.planned),
        (42, "breakdown", false)
    );
    assert_eq!(ev.schema_version, RUN_EVENT_SCHEMA_VERSION);
}

/// One step of a random history.
#[derive(Debug, Clone)]
enum Step {
    Report(i64, i64),
    Pause,
    Resume,
    Complete(Option<i64>),
    Abort,
}

fn step() -> impl Strategy<Value = (Step, i64)> {
    let s = prop_oneof![
        4 => (0..1000i64, 0..50i64).prop_map(|(g, s)| Step::Report(g, s)),
        3 => Just(Step::Pause),
        3 => Just(Step::Resume),
        1 => proptest::option::of(0..20_000i64).prop_map(Step::Complete),
        1 => Just(Step::Abort),
    ];
    // Minutes since the previous step; a quarter of them backwards (a late or wrong time).
    (s, -6..18i64)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    /// Any sequence of commands keeps the invariants: counts never decrease (a completion's
    /// final counters only raise them), totals equal the sum of the accepted count rows, downtimes
    /// never overlap and are closed when the run ends, a refused command changes nothing, events
    /// follow in time, and nothing is accepted after the end.
    #[test]
    fn any_history_keeps_the_invariants(steps in proptest::collection::vec(step(), 0..40)) {
        let mut state = started();
        let mut clock = 0i64;
        let mut sum = (0i64, 0i64);
        let mut downtimes: Vec<(DateTime<Utc>, Option<DateTime<Utc>>)> = Vec::new();
        let mut last_event_at = state.run.started_at;
        let mut next_id = 1;
        for (step, dt) in steps {
            clock += dt.max(0);
            let at = clock + dt.min(0);
            let cmd = match step {
                Step::Report(g, s) => report(g, s, at),
                Step::Pause => pause(at),
                Step::Resume => resume(at),
                Step::Complete(g) => complete(g, None, Some(at)),
                Step::Abort => abort(at),
            };
            let before = state.clone();
            match decide(&state, cmd, t(clock)) {
                Err(_) => prop_assert_eq!(&state, &before),
                Ok(tr) => {
                    prop_assert!(before.run.status.is_open(), "accepted after the end");
                    prop_assert!(tr.run.good_units >= before.run.good_units);
                    prop_assert!(tr.run.scrap_units >= before.run.scrap_units);
                    prop_assert!(tr.event.occurred_at >= before.run.started_at);
                    if tr.event.event_type != RunEventType::Reported {
                        // State changes follow each other in time (reports may come late).
                        prop_assert!(tr.event.occurred_at >= last_event_at);
                    }
                    for e in &tr.effects {
                        match e {
                            Effect::Count { delta, .. } => {
                                sum.0 += delta.good_delta;
                                sum.1 += delta.scrap_delta;
                            }
                            Effect::OpenDowntime { at, .. } => {
                                prop_assert!(downtimes.iter().all(|(_, end)| end.is_some_and(|e| e <= *at)));
                                downtimes.push((*at, None));
                            }
                            Effect::CloseDowntime { at, .. } => {
                                let open = downtimes.last_mut().unwrap();
                                prop_assert!(open.1.is_none() && open.0 <= *at);
                                open.1 = Some(*at);
                            }
                        }
                    }
                    if tr.event.event_type != RunEventType::Reported {
                        last_event_at = tr.event.occurred_at;
                    }
                    state = apply(&state, &tr, next_id);
                    next_id += 1;
                }
            }
            prop_assert_eq!((state.run.good_units, state.run.scrap_units), sum);
            prop_assert_eq!(state.run.status == RunStatus::Paused, state.open_downtime.is_some());
            if !state.run.status.is_open() {
                prop_assert!(state.open_downtime.is_none());
                prop_assert!(downtimes.iter().all(|(_, end)| end.is_some()));
                let end = state.run.ended_at.unwrap();
                prop_assert!(end >= state.run.started_at);
                prop_assert!(state.last_count_at.is_none_or(|c| c <= end));
                // Every downtime lies inside the run.
                prop_assert!(downtimes.iter().all(|(from, to)| *from >= state.run.started_at && to.is_some_and(|to| to <= end)));
            }
        }
    }
}
