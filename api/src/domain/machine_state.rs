//! Machine state from readings: a resource's rule turns one sensor's readings into stops.
//! Free of SQL and HTTP; the detector ([`crate::machine_state`]) feeds it readings and stores
//! what it finds.
//!
//! The model (docs/api.md, "Machine state"): a reading says the machine is stopped or running;
//! the state holds until the next reading (sample and hold). A stop starts at its first stopped
//! reading and ends at the next reading that is not stopped, or that is stopped with another
//! code (another reason). A stop shorter than the rule's minimum is a blip, not a stop; a stop
//! still going at the last reading is open and counts once it has lasted the minimum by the
//! readings' own times.

use std::collections::BTreeMap;

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};

/// The reason a detected stop gets until an operator assigns one.
pub const UNASSIGNED: &str = "unassigned";
/// Longest minimum stop duration a rule may ask for (a day).
pub const MAX_MIN_STOP_SECONDS: f64 = 86_400.0;
/// Largest magnitude of a threshold or a state code.
pub const MAX_RULE_VALUE: f64 = 1e15;

/// How a sensor's value says the machine stands.
#[derive(Debug, Clone, PartialEq)]
pub enum StopWhen {
    /// Stopped while the value is at or below the threshold (e.g. `speed` ≤ 0.5).
    AtOrBelow(f64),
    /// Stopped while the value is one of the codes, each mapped to a reason code
    /// ([`UNASSIGNED`] when the code does not say why); any other value means running.
    Codes(BTreeMap<i64, String>),
}

/// A resource's machine-state rule.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    pub sensor: String,
    pub stop_when: StopWhen,
    /// Stops shorter than this are not recorded.
    pub min_stop: TimeDelta,
}

/// Why a rule was refused; the caller adds the field's name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    #[error("min_stop_seconds must be a finite number from 0 to {MAX_MIN_STOP_SECONDS}, got {0}")]
    MinStop(String),
    #[error("stopped_at_or_below must be a finite number of magnitude at most 1e15, got {0}")]
    Threshold(String),
    #[error("stop_codes must hold 1 to 256 codes")]
    CodeCount,
    #[error("stop code {0:?} is not an integer of magnitude at most 1e15")]
    Code(String),
}

/// Most codes a `codes` rule may map.
pub const MAX_STOP_CODES: usize = 256;

impl Rule {
    /// Checks the parts of a rule and builds it.
    pub fn new(
        sensor: String,
        stop_when: StopWhen,
        min_stop_seconds: f64,
    ) -> Result<Self, RuleError> {
        if !(min_stop_seconds.is_finite()
            && (0.0..=MAX_MIN_STOP_SECONDS).contains(&min_stop_seconds))
        {
            return Err(RuleError::MinStop(min_stop_seconds.to_string()));
        }
        match &stop_when {
            StopWhen::AtOrBelow(t) if !(t.is_finite() && t.abs() <= MAX_RULE_VALUE) => {
                return Err(RuleError::Threshold(t.to_string()))
            }
            StopWhen::Codes(codes) if codes.is_empty() || codes.len() > MAX_STOP_CODES => {
                return Err(RuleError::CodeCount)
            }
            _ => {}
        }
        let micros = (min_stop_seconds * 1e6).round() as i64;
        Ok(Self {
            sensor,
            stop_when,
            min_stop: TimeDelta::microseconds(micros),
        })
    }

    /// The reason a reading stands for: `None` when the machine runs.
    fn stopped(&self, value: f64) -> Option<&str> {
        match &self.stop_when {
            StopWhen::AtOrBelow(t) => (value <= *t).then_some(UNASSIGNED),
            StopWhen::Codes(codes) => as_code(value)
                .and_then(|c| codes.get(&c))
                .map(String::as_str),
        }
    }

    /// The state code of a reading (codes rules only).
    fn code(&self, value: f64) -> Option<i64> {
        match self.stop_when {
            StopWhen::AtOrBelow(_) => None,
            StopWhen::Codes(_) => as_code(value),
        }
    }
}

/// Parses a stop code as JSON object keys carry it ("3", "-1").
pub fn parse_code(key: &str) -> Result<i64, RuleError> {
    key.trim()
        .parse::<i64>()
        .ok()
        .filter(|c| (*c as f64).abs() <= MAX_RULE_VALUE)
        .ok_or_else(|| RuleError::Code(key.to_owned()))
}

/// A reading's value as a state code: an integer-valued finite number.
fn as_code(value: f64) -> Option<i64> {
    (value.is_finite() && value.fract() == 0.0 && value.abs() <= MAX_RULE_VALUE)
        .then_some(value as i64)
}

/// One reading of the rule's sensor.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    pub ts: DateTime<Utc>,
    pub value: f64,
}

/// A stop the readings show.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stop {
    pub started_at: DateTime<Utc>,
    /// `None`: still stopped at the last reading.
    pub ended_at: Option<DateTime<Utc>>,
    /// [`UNASSIGNED`] or the reason a state code maps to.
    pub reason_code: String,
    pub state_code: Option<i64>,
}

/// The stops in `samples` (ordered by time; equal times keep their order).
pub fn detect(rule: &Rule, samples: &[Sample]) -> Vec<Stop> {
    struct Open<'a> {
        started_at: DateTime<Utc>,
        reason: &'a str,
        code: Option<i64>,
    }
    let mut stops = Vec::new();
    let mut open: Option<Open> = None;
    let keep = |stops: &mut Vec<Stop>, o: Open, ended_at: DateTime<Utc>| {
        if ended_at - o.started_at >= rule.min_stop && ended_at > o.started_at {
            stops.push(Stop {
                started_at: o.started_at,
                ended_at: Some(ended_at),
                reason_code: o.reason.to_owned(),
                state_code: o.code,
            });
        }
    };
    for s in samples {
        let now = rule
            .stopped(s.value)
            .map(|reason| (reason, rule.code(s.value)));
        match (open.take(), now) {
            (None, None) => {}
            (None, Some((reason, code))) => {
                open = Some(Open {
                    started_at: s.ts,
                    reason,
                    code,
                })
            }
            (Some(o), None) => keep(&mut stops, o, s.ts),
            (Some(o), Some((reason, code))) if o.reason == reason && o.code == code => {
                open = Some(o)
            }
            (Some(o), Some((reason, code))) => {
                keep(&mut stops, o, s.ts);
                open = Some(Open {
                    started_at: s.ts,
                    reason,
                    code,
                });
            }
        }
    }
    if let (Some(o), Some(last)) = (open, samples.last()) {
        if last.ts - o.started_at >= rule.min_stop {
            stops.push(Stop {
                started_at: o.started_at,
                ended_at: None,
                reason_code: o.reason.to_owned(),
                state_code: o.code,
            });
        }
    }
    stops
}

/// What the detector should do with the stops it stored before, given what the readings of
/// `[from, ..)` now show ([`reconcile`]).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Reconciliation {
    /// Stored stops to change (id, new span and, unless assigned, reason).
    pub update: Vec<(i64, Stop)>,
    pub insert: Vec<Stop>,
    /// Stored unassigned stops the readings no longer show (late readings filled a gap).
    pub delete: Vec<i64>,
}

/// A stop as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredStop {
    pub id: i64,
    pub stop: Stop,
    /// An operator assigned its reason: the reason is theirs to keep.
    pub assigned: bool,
}

fn end_or_max(t: Option<DateTime<Utc>>) -> DateTime<Utc> {
    t.unwrap_or(DateTime::<Utc>::MAX_UTC)
}

fn overlaps(a: &Stop, b: &Stop) -> bool {
    a.started_at < end_or_max(b.ended_at) && b.started_at < end_or_max(a.ended_at)
}

/// Brings the stored stops of `[from, ..)` in line with the detected ones.
///
/// `stored` holds every stored stop that ends after `from` (or is open); `detected` what the
/// readings from just before `from` on show. A detected stop updates the first stored stop it
/// overlaps (keeping an earlier start, which the readings before `from` no longer show, and an
/// operator's reason), or is inserted. Other stored stops it overlaps are deleted unless an
/// operator assigned them, in which case the detected stop is cut short where they begin.
/// Stored stops that start at or after `from` and that no detected stop overlaps are deleted
/// unless assigned; an operator's word outlives a late correction of the readings.
pub fn reconcile(from: DateTime<Utc>, stored: &[StoredStop], detected: &[Stop]) -> Reconciliation {
    let mut out = Reconciliation::default();
    let mut matched = vec![false; stored.len()];
    for d in detected {
        let hits: Vec<usize> = (0..stored.len())
            .filter(|&i| !matched[i] && overlaps(&stored[i].stop, d))
            .collect();
        let mut stop = d.clone();
        // An assigned stop after the first one keeps its span: the detected stop ends there.
        for &i in hits.iter().skip(1) {
            matched[i] = true;
            if stored[i].assigned {
                let cut = stored[i].stop.started_at;
                if stop.ended_at.is_none_or(|e| e > cut) {
                    stop.ended_at = Some(cut);
                }
            } else {
                out.delete.push(stored[i].id);
            }
        }
        match hits.first() {
            Some(&i) => {
                matched[i] = true;
                let s = &stored[i];
                stop.started_at = stop.started_at.min(s.stop.started_at);
                if s.assigned {
                    stop.reason_code.clone_from(&s.stop.reason_code);
                    stop.state_code = s.stop.state_code;
                }
                if stop.ended_at.is_some_and(|e| e <= stop.started_at) {
                    continue;
                }
                if stop != s.stop {
                    out.update.push((s.id, stop));
                }
            }
            None => {
                if stop.ended_at.is_none_or(|e| e > stop.started_at) {
                    out.insert.push(stop);
                }
            }
        }
    }
    for (i, s) in stored.iter().enumerate() {
        if !matched[i] && !s.assigned && s.stop.started_at >= from {
            out.delete.push(s.id);
        }
    }
    out
}

#[cfg(test)]
mod tests;
