//! The production run (`op_run`): its statuses, the commands that change it, and [`decide`], the
//! one function that says whether a command is allowed and what it changes. No HTTP and no SQL
//! here: the store reads a run's [`RunState`] under its lock, `decide` answers with a
//! [`Transition`] (the run after it, the rows to write, the event to publish), the store writes
//! it.
//!
//! The lifecycle (the seed's, plus pause/resume and abort):
//!
//! ```text
//!            start            pause              resume
//!   (none) ───────► running ────────► paused ───────────► running
//!                    │  ▲ report        │ report
//!                    │  └─────          │
//!                    ├── complete ──────┴── complete ──► completed   (final)
//!                    └── abort ─────────┴── abort ─────► aborted     (final)
//! ```
//!
//! Time rules (docs/api.md): a time more than [`MAX_CLOCK_SKEW`] ahead of the server, or before
//! 2000-01-01, is refused;
//! a report before the run's start, a pause before the start or before the end of the previous
//! downtime, a resume before its pause, an end before the start, the latest count report, the end
//! of the latest downtime or the open downtime's start are refused. Counts only grow: a report adds its deltas, a completion's
//! final counters may raise the totals (the difference is counted at the end) but never lower
//! them.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Duration, Utc};
use protocol::run_event::{
    CountDelta, DowntimeInfo, RunEvent, RunEventType, RUN_EVENT_SCHEMA_VERSION,
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::values::{Count, CycleTime, Ident, Note, Seconds};

/// Caller timestamps may be this far ahead of the server clock.
pub const MAX_CLOCK_SKEW: Duration = Duration::minutes(5);

/// Where a run is in its lifecycle. Stored as text in `op_run.status` ([`RunStatus::as_str`] is
/// the one mapping; the column's CHECK constraint lists the same four).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Running,
    Paused,
    Completed,
    Aborted,
}

impl RunStatus {
    pub const ALL: [RunStatus; 4] = [
        RunStatus::Running,
        RunStatus::Paused,
        RunStatus::Completed,
        RunStatus::Aborted,
    ];
    /// The statuses of a run that still takes reports, as stored.
    pub const OPEN: [&'static str; 2] = ["running", "paused"];

    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Paused => "paused",
            RunStatus::Completed => "completed",
            RunStatus::Aborted => "aborted",
        }
    }

    /// Running or paused: takes reports, pauses, resumes and its end.
    pub fn is_open(self) -> bool {
        matches!(self, RunStatus::Running | RunStatus::Paused)
    }
}

impl fmt::Display for RunStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A stored status this version does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown run status {0:?}")]
pub struct UnknownStatus(pub String);

impl FromStr for RunStatus {
    type Err = UnknownStatus;
    fn from_str(s: &str) -> Result<Self, UnknownStatus> {
        RunStatus::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| UnknownStatus(s.to_owned()))
    }
}

/// A production run as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Run {
    pub op_run_id: Uuid,
    pub work_order_id: String,
    pub operation_id: String,
    pub resource_id: String,
    pub site_id: Option<String>,
    pub status: RunStatus,
    pub started_at: DateTime<Utc>,
    pub ended_at: Option<DateTime<Utc>>,
    pub planned_seconds: Option<f64>,
    pub ideal_cycle_time_s: Option<f64>,
    pub good_units: i64,
    pub scrap_units: i64,
}

/// A downtime reason's classification (table `downtime_reasons`, which the plant edits).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reason {
    pub code: String,
    pub planned: bool,
    /// `availability`, `performance` or `excluded`.
    pub loss_bucket: String,
}

/// A downtime of a run. `id` is `None` for one this transition opens (the store numbers it).
#[derive(Debug, Clone, PartialEq)]
pub struct Downtime {
    pub id: Option<i64>,
    pub reason: Reason,
    pub started_at: DateTime<Utc>,
    pub ended_at: Option<DateTime<Utc>>,
    pub note: Option<String>,
}

impl Downtime {
    fn info(&self) -> DowntimeInfo {
        DowntimeInfo {
            downtime_id: self.id.unwrap_or_default(),
            reason_code: self.reason.code.clone(),
            planned: self.reason.planned,
            loss_bucket: self.reason.loss_bucket.clone(),
            started_at: self.started_at,
            ended_at: self.ended_at,
            detected: false,
        }
    }
}

/// What [`decide`] needs to know about a run: the run and the facts of its history the time rules
/// refer to, read under the run's lock.
#[derive(Debug, Clone, PartialEq)]
pub struct RunState {
    pub run: Run,
    pub open_downtime: Option<Downtime>,
    /// Latest end of a closed downtime.
    pub last_downtime_end: Option<DateTime<Utc>>,
    /// Time of the latest count row (report or final counter).
    pub last_count_at: Option<DateTime<Utc>>,
}

impl RunState {
    /// A run with no downtime and no counts yet.
    pub fn new(run: Run) -> Self {
        Self {
            run,
            open_downtime: None,
            last_downtime_end: None,
            last_count_at: None,
        }
    }
}

/// A validated start request.
#[derive(Debug, Clone)]
pub struct Start {
    pub op_run_id: Option<Uuid>,
    pub work_order_id: Ident,
    pub operation_id: Ident,
    pub resource_id: Ident,
    pub site_id: Option<Ident>,
    pub started_at: Option<DateTime<Utc>>,
    pub planned_seconds: Option<Seconds>,
    pub ideal_cycle_time_s: Option<CycleTime>,
}

/// How a run ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// Completed, optionally with final totals for the whole run.
    Complete {
        good_units: Option<Count>,
        scrap_units: Option<Count>,
    },
    /// Stopped without finishing the order: its time and counts stay in the KPIs.
    Abort,
}

/// A change asked of an existing run. Times are `None` for "now".
#[derive(Debug, Clone)]
pub enum Command {
    Report {
        good_delta: Count,
        scrap_delta: Count,
        at: Option<DateTime<Utc>>,
    },
    /// `reason` is `None` when the code is not in `downtime_reasons`.
    Pause {
        reason_code: Ident,
        reason: Option<Reason>,
        at: Option<DateTime<Utc>>,
        note: Option<Note>,
    },
    Resume {
        at: Option<DateTime<Utc>>,
    },
    End {
        ending: Ending,
        at: Option<DateTime<Utc>>,
    },
}

/// The kind of a count row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CountKind {
    Report,
    /// A completion's final counters above the reported totals.
    Final,
}

impl CountKind {
    pub fn as_str(self) -> &'static str {
        match self {
            CountKind::Report => "report",
            CountKind::Final => "final",
        }
    }
}

/// A row the store writes besides the run itself.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    Count {
        at: DateTime<Utc>,
        delta: CountDelta,
        kind: CountKind,
    },
    OpenDowntime {
        reason_code: String,
        at: DateTime<Utc>,
        note: Option<String>,
    },
    CloseDowntime {
        id: i64,
        at: DateTime<Utc>,
    },
}

/// The event of a transition, before the store has numbered a downtime it opened.
#[derive(Debug, Clone, PartialEq)]
pub struct EventDraft {
    pub event_type: RunEventType,
    pub occurred_at: DateTime<Utc>,
    pub delta: Option<CountDelta>,
    pub downtime: Option<Downtime>,
}

/// What a command does: the run after it, the rows to write, the event.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    pub run: Run,
    pub effects: Vec<Effect>,
    pub event: EventDraft,
}

/// Why a command is refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DomainError {
    /// A value breaks a rule (a time in the future, before the run's start, ...): 422.
    #[error("{field}: {detail}")]
    Invalid { field: &'static str, detail: String },
    /// The run's status does not allow the command: 409.
    #[error("op_run_id: run {op_run_id} is {what}")]
    WrongStatus { op_run_id: Uuid, what: String },
    /// A final counter below what was reported: 409.
    #[error("{field}: final total {final_total} is below the {reported} already reported")]
    FinalBelowReported {
        field: &'static str,
        final_total: i64,
        reported: i64,
    },
    #[error("reason_code: unknown reason code {0:?} (see table downtime_reasons)")]
    UnknownReason(String),
}

fn invalid(field: &'static str, detail: String) -> DomainError {
    DomainError::Invalid { field, detail }
}

/// The earliest time a caller may give: shop-floor data from before it is a wrong clock or a
/// wrong field, and a run started in year 0 would make every shift query span two millennia.
pub fn earliest_time() -> DateTime<Utc> {
    DateTime::<Utc>::from_timestamp(946_684_800, 0).unwrap_or(DateTime::<Utc>::MIN_UTC)
}

/// A caller's time, or now; refused when further ahead of `now` than [`MAX_CLOCK_SKEW`] or before
/// [`earliest_time`] (2000-01-01). `now` and caller times are at the database's precision
/// (microseconds).
pub fn time_or_now(
    field: &'static str,
    value: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Result<DateTime<Utc>, DomainError> {
    match value {
        None => Ok(now),
        Some(t) if t < earliest_time() => {
            Err(invalid(field, format!("{t} is before {}", earliest_time())))
        }
        Some(t) if t > now + MAX_CLOCK_SKEW => Err(invalid(
            field,
            format!("{t} is in the future (server time {now})"),
        )),
        Some(t) => Ok(t),
    }
}

fn not_before(
    field: &'static str,
    t: DateTime<Utc>,
    bound: DateTime<Utc>,
    what: &str,
) -> Result<(), DomainError> {
    if t < bound {
        return Err(invalid(field, format!("{t} is before {what} ({bound})")));
    }
    Ok(())
}

/// The run a start request creates (the store then settles its site and refuses overlaps).
pub fn start(req: &Start, now: DateTime<Utc>) -> Result<Transition, DomainError> {
    let started_at = time_or_now("started_at", req.started_at, now)?;
    let run = Run {
        op_run_id: req.op_run_id.unwrap_or_else(Uuid::now_v7),
        work_order_id: req.work_order_id.to_string(),
        operation_id: req.operation_id.to_string(),
        resource_id: req.resource_id.to_string(),
        site_id: req.site_id.as_ref().map(Ident::to_string),
        status: RunStatus::Running,
        started_at,
        ended_at: None,
        planned_seconds: req.planned_seconds.map(Seconds::get),
        ideal_cycle_time_s: req.ideal_cycle_time_s.map(CycleTime::get),
        good_units: 0,
        scrap_units: 0,
    };
    Ok(Transition {
        run,
        effects: Vec::new(),
        event: EventDraft {
            event_type: RunEventType::Started,
            occurred_at: started_at,
            delta: None,
            downtime: None,
        },
    })
}

/// Decides `command` on the run in `state` at server time `now`.
pub fn decide(
    state: &RunState,
    command: Command,
    now: DateTime<Utc>,
) -> Result<Transition, DomainError> {
    let run = &state.run;
    match command {
        Command::Report {
            good_delta,
            scrap_delta,
            at,
        } => {
            let at = time_or_now("at", at, now)?;
            // A report before the start is refused as such even on an ended run (as it always was).
            not_before("at", at, run.started_at, "the run's start")?;
            must_be_open(run)?;
            let delta = CountDelta {
                good_delta: good_delta.get(),
                scrap_delta: scrap_delta.get(),
            };
            let mut after = run.clone();
            after.good_units += delta.good_delta;
            after.scrap_units += delta.scrap_delta;
            Ok(Transition {
                run: after,
                effects: vec![Effect::Count {
                    at,
                    delta,
                    kind: CountKind::Report,
                }],
                event: EventDraft {
                    event_type: RunEventType::Reported,
                    occurred_at: at,
                    delta: Some(delta),
                    downtime: None,
                },
            })
        }
        Command::Pause {
            reason_code,
            reason,
            at,
            note,
        } => {
            let at = time_or_now("at", at, now)?;
            must_be_open(run)?;
            if run.status == RunStatus::Paused {
                return Err(DomainError::WrongStatus {
                    op_run_id: run.op_run_id,
                    what: "already paused".into(),
                });
            }
            let reason =
                reason.ok_or_else(|| DomainError::UnknownReason(reason_code.to_string()))?;
            not_before("at", at, run.started_at, "the run's start")?;
            if let Some(end) = state.last_downtime_end {
                not_before("at", at, end, "the end of the run's previous downtime")?;
            }
            let note = note.map(|n| n.as_str().to_owned());
            let mut after = run.clone();
            after.status = RunStatus::Paused;
            Ok(Transition {
                run: after,
                effects: vec![Effect::OpenDowntime {
                    reason_code: reason.code.clone(),
                    at,
                    note: note.clone(),
                }],
                event: EventDraft {
                    event_type: RunEventType::Paused,
                    occurred_at: at,
                    delta: None,
                    downtime: Some(Downtime {
                        id: None,
                        reason,
                        started_at: at,
                        ended_at: None,
                        note,
                    }),
                },
            })
        }
        Command::Resume { at } => {
            let at = time_or_now("at", at, now)?;
            must_be_open(run)?;
            let Some(open) = &state.open_downtime else {
                return Err(DomainError::WrongStatus {
                    op_run_id: run.op_run_id,
                    what: "not paused".into(),
                });
            };
            not_before("at", at, open.started_at, "the start of the downtime")?;
            let closed = Downtime {
                ended_at: Some(at),
                ..open.clone()
            };
            let mut after = run.clone();
            after.status = RunStatus::Running;
            Ok(Transition {
                run: after,
                effects: vec![Effect::CloseDowntime {
                    id: open.id.unwrap_or_default(),
                    at,
                }],
                event: EventDraft {
                    event_type: RunEventType::Resumed,
                    occurred_at: at,
                    delta: None,
                    downtime: Some(closed),
                },
            })
        }
        Command::End { ending, at } => end(state, ending, at, now),
    }
}

/// Completion or abort: the end time (default: now, or the latest count if that is later), the
/// final counters' difference counted at the end, an open downtime closed at the end.
fn end(
    state: &RunState,
    ending: Ending,
    asked: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Result<Transition, DomainError> {
    let run = &state.run;
    let asked = match asked {
        Some(t) => Some(time_or_now("ended_at", Some(t), now)?),
        None => None,
    };
    must_be_open(run)?;
    let ended_at = asked.unwrap_or_else(|| state.last_count_at.map_or(now, |last| last.max(now)));
    not_before("ended_at", ended_at, run.started_at, "the run's start")?;
    if let Some(last) = state.last_count_at {
        not_before("ended_at", ended_at, last, "the run's latest count report")?;
    }
    if let Some(last) = state.last_downtime_end {
        not_before(
            "ended_at",
            ended_at,
            last,
            "the end of the run's latest downtime",
        )?;
    }
    let (finals, event_type, status) = match ending {
        Ending::Complete {
            good_units,
            scrap_units,
        } => (
            (good_units, scrap_units),
            RunEventType::Completed,
            RunStatus::Completed,
        ),
        Ending::Abort => ((None, None), RunEventType::Aborted, RunStatus::Aborted),
    };
    let delta = CountDelta {
        good_delta: final_delta("good_units", finals.0, run.good_units)?,
        scrap_delta: final_delta("scrap_units", finals.1, run.scrap_units)?,
    };
    let mut effects = Vec::new();
    let mut closed = None;
    if let Some(open) = &state.open_downtime {
        not_before(
            "ended_at",
            ended_at,
            open.started_at,
            "the start of the open downtime",
        )?;
        effects.push(Effect::CloseDowntime {
            id: open.id.unwrap_or_default(),
            at: ended_at,
        });
        closed = Some(Downtime {
            ended_at: Some(ended_at),
            ..open.clone()
        });
    }
    if delta.good_delta > 0 || delta.scrap_delta > 0 {
        effects.push(Effect::Count {
            at: ended_at,
            delta,
            kind: CountKind::Final,
        });
    }
    let mut after = run.clone();
    after.good_units += delta.good_delta;
    after.scrap_units += delta.scrap_delta;
    after.status = status;
    after.ended_at = Some(ended_at);
    Ok(Transition {
        run: after,
        effects,
        event: EventDraft {
            event_type,
            occurred_at: ended_at,
            delta: Some(delta),
            downtime: closed,
        },
    })
}

fn must_be_open(run: &Run) -> Result<(), DomainError> {
    if run.status.is_open() {
        Ok(())
    } else {
        Err(DomainError::WrongStatus {
            op_run_id: run.op_run_id,
            what: run.status.as_str().to_owned(),
        })
    }
}

/// Final total minus the reported total; a final total below it is refused.
fn final_delta(
    field: &'static str,
    final_total: Option<Count>,
    reported: i64,
) -> Result<i64, DomainError> {
    match final_total.map(Count::get) {
        None => Ok(0),
        Some(f) if f >= reported => Ok(f - reported),
        Some(f) => Err(DomainError::FinalBelowReported {
            field,
            final_total: f,
            reported,
        }),
    }
}

/// The event the MES receives for a transition ([`RunEvent`], the contract in the protocol
/// crate): the run after it, its site (`default_site` for a run stored without one), the draft's
/// downtime with the id the store gave it.
pub fn event(
    run: &Run,
    draft: &EventDraft,
    default_site: &str,
    recorded_at: DateTime<Utc>,
    actor: Option<&str>,
) -> RunEvent {
    RunEvent {
        schema_version: RUN_EVENT_SCHEMA_VERSION,
        event_id: Uuid::now_v7().to_string(),
        event_type: draft.event_type,
        occurred_at: draft.occurred_at,
        recorded_at,
        op_run_id: run.op_run_id.to_string(),
        work_order_id: run.work_order_id.clone(),
        operation_id: run.operation_id.clone(),
        resource_id: run.resource_id.clone(),
        site_id: run
            .site_id
            .clone()
            .unwrap_or_else(|| default_site.to_owned()),
        status: run.status.as_str().to_owned(),
        started_at: run.started_at,
        ended_at: run.ended_at,
        planned_seconds: run.planned_seconds,
        ideal_cycle_time_s: run.ideal_cycle_time_s,
        good_units: run.good_units,
        scrap_units: run.scrap_units,
        delta: draft.delta,
        downtime: draft.downtime.as_ref().map(Downtime::info),
        actor: actor.map(str::to_owned),
    }
}

#[cfg(test)]
mod tests;
