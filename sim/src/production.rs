//! The production side of one simulated line: start a run, report counts every few seconds, break
//! down now and then (pause with a reason, resume later), and at each shift change complete the
//! run and start the next work order. Pure: [`Line::next`] proposes what to ask mes-api, and
//! [`Line::applied`] records it once the API accepted it, so a failed call is simply proposed
//! again on the next tick.

use std::time::Duration;

use chrono::{DateTime, NaiveDate, Timelike, Utc};
use chrono_tz::Tz;
use rand::Rng;

/// A shift: the local date it starts on and its index in the day (0 Night 00–08, 1 Day 08–16,
/// 2 Evening 16–24, the seed's calendar).
pub type ShiftKey = (NaiveDate, u32);

/// The shift `now` falls in, in the site's time zone.
pub fn shift_of(now: DateTime<Utc>, tz: Tz) -> ShiftKey {
    let local = now.with_timezone(&tz);
    (local.date_naive(), local.hour() / 8)
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Settings {
    pub report_every: Duration,
    /// Chance per tick that a running machine breaks down.
    pub breakdown_per_tick: f64,
    /// How long a breakdown lasts (uniform).
    pub breakdown_secs: (u64, u64),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Phase {
    Idle,
    Running,
    Down { until: DateTime<Utc> },
}

/// What to ask mes-api for next.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Start {
        work_order_id: String,
        operation_id: String,
    },
    /// Counts made since the last report (the caller measures them).
    Report,
    Pause {
        reason_code: &'static str,
        until: DateTime<Utc>,
    },
    Resume,
    Complete,
}

#[derive(Debug, Clone)]
pub struct Line {
    pub resource_id: String,
    pub phase: Phase,
    pub run_id: Option<String>,
    pub work_order_id: Option<String>,
    run_shift: Option<ShiftKey>,
    last_report: Option<DateTime<Utc>>,
    orders: u32,
}

impl Line {
    pub fn new(resource_id: &str) -> Self {
        Self {
            resource_id: resource_id.to_owned(),
            phase: Phase::Idle,
            run_id: None,
            work_order_id: None,
            run_shift: None,
            last_report: None,
            orders: 0,
        }
    }

    /// Seconds since the last count report (what the next report covers).
    pub fn secs_since_report(&self, now: DateTime<Utc>) -> f64 {
        self.last_report.map_or(0.0, |t| {
            now.signed_duration_since(t).num_milliseconds().max(0) as f64 / 1000.0
        })
    }

    /// Takes over a run that was active when the simulator started (a second start); it is
    /// completed at the next tick if it began in another shift than `now`'s.
    pub fn adopt(
        &mut self,
        run_id: String,
        work_order_id: String,
        paused: bool,
        started_in: ShiftKey,
        now: DateTime<Utc>,
    ) {
        self.phase = if paused {
            Phase::Down { until: now }
        } else {
            Phase::Running
        };
        self.run_id = Some(run_id);
        self.work_order_id = Some(work_order_id);
        self.run_shift = Some(started_in);
        self.last_report = Some(now);
    }

    /// Whether the machine produces (for the sensors).
    pub fn running(&self) -> bool {
        self.phase == Phase::Running
    }

    pub fn next(
        &self,
        now: DateTime<Utc>,
        shift: ShiftKey,
        settings: &Settings,
        rng: &mut impl Rng,
    ) -> Option<Action> {
        match &self.phase {
            Phase::Idle => Some(Action::Start {
                work_order_id: format!(
                    "WO-{}-{}-{:03}",
                    self.resource_id,
                    shift.0.format("%Y%m%d"),
                    self.orders + 1
                ),
                operation_id: "OP10".to_owned(),
            }),
            Phase::Down { until } => {
                (now >= *until || self.run_shift != Some(shift)).then_some(Action::Resume)
            }
            Phase::Running => {
                if self.run_shift != Some(shift) {
                    return Some(Action::Complete);
                }
                let due = self.last_report.is_none_or(|t| {
                    now.signed_duration_since(t).to_std().unwrap_or_default()
                        >= settings.report_every
                });
                if due {
                    return Some(Action::Report);
                }
                rng.random_bool(settings.breakdown_per_tick.clamp(0.0, 1.0))
                    .then(|| {
                        let (lo, hi) = settings.breakdown_secs;
                        let secs = rng.random_range(lo..=hi.max(lo));
                        Action::Pause {
                            reason_code: "breakdown",
                            until: now + chrono::Duration::seconds(secs as i64),
                        }
                    })
            }
        }
    }

    /// Records an action mes-api accepted; `run_id` is the new run's id for [`Action::Start`].
    pub fn applied(
        &mut self,
        action: &Action,
        now: DateTime<Utc>,
        shift: ShiftKey,
        run_id: Option<String>,
    ) {
        match action {
            Action::Start { work_order_id, .. } => {
                self.phase = Phase::Running;
                self.run_id = run_id;
                self.work_order_id = Some(work_order_id.clone());
                self.run_shift = Some(shift);
                self.last_report = Some(now);
                self.orders += 1;
            }
            Action::Report => self.last_report = Some(now),
            Action::Pause { until, .. } => self.phase = Phase::Down { until: *until },
            Action::Resume => {
                self.phase = Phase::Running;
                self.last_report = Some(now);
            }
            Action::Complete => {
                self.phase = Phase::Idle;
                self.run_id = None;
                self.work_order_id = None;
                self.run_shift = None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    const SETTINGS: Settings = Settings {
        report_every: Duration::from_secs(5),
        breakdown_per_tick: 0.0,
        breakdown_secs: (60, 120),
    };

    fn at(h: u32, m: u32, s: u32) -> DateTime<Utc> {
        // 2026-03-02 in Bangkok (UTC+7): local h:m:s.
        chrono_tz::Asia::Bangkok
            .with_ymd_and_hms(2026, 3, 2, h, m, s)
            .single()
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_default()
    }

    fn step(line: &mut Line, now: DateTime<Utc>, rng: &mut StdRng) -> Option<Action> {
        let shift = shift_of(now, chrono_tz::Asia::Bangkok);
        let action = line.next(now, shift, &SETTINGS, rng)?;
        let id = matches!(action, Action::Start { .. }).then(|| "run-1".to_owned());
        line.applied(&action, now, shift, id);
        Some(action)
    }

    #[test]
    fn shifts_follow_the_seed_calendar_in_local_time() {
        let bkk = chrono_tz::Asia::Bangkok;
        assert_eq!(shift_of(at(7, 59, 59), bkk).1, 0);
        assert_eq!(shift_of(at(8, 0, 0), bkk).1, 1);
        assert_eq!(shift_of(at(23, 0, 0), bkk).1, 2);
    }

    #[test]
    fn a_line_starts_reports_and_completes_at_the_shift_change() {
        let mut rng = StdRng::seed_from_u64(1);
        let mut line = Line::new("SMT01");
        assert!(matches!(
            step(&mut line, at(7, 50, 0), &mut rng),
            Some(Action::Start { .. })
        ));
        assert_eq!(line.run_id.as_deref(), Some("run-1"));
        assert_eq!(step(&mut line, at(7, 50, 2), &mut rng), None, "not due yet");
        assert_eq!(
            step(&mut line, at(7, 50, 5), &mut rng),
            Some(Action::Report)
        );
        assert_eq!(
            step(&mut line, at(8, 0, 1), &mut rng),
            Some(Action::Complete)
        );
        match step(&mut line, at(8, 0, 2), &mut rng) {
            Some(Action::Start { work_order_id, .. }) => {
                assert_eq!(work_order_id, "WO-SMT01-20260302-002");
            }
            other => panic!("expected the next work order, got {other:?}"),
        }
    }

    #[test]
    fn a_breakdown_pauses_then_resumes_when_it_is_over() {
        let mut rng = StdRng::seed_from_u64(2);
        let always = Settings {
            breakdown_per_tick: 1.0,
            ..SETTINGS
        };
        let mut line = Line::new("SMT01");
        let now = at(9, 0, 0);
        let shift = shift_of(now, chrono_tz::Asia::Bangkok);
        let start = line.next(now, shift, &always, &mut rng);
        if let Some(a) = &start {
            line.applied(a, now, shift, Some("r".into()));
        }
        let now = at(9, 0, 1);
        let pause = line.next(now, shift, &always, &mut rng);
        let Some(Action::Pause { until, .. }) = pause.clone() else {
            panic!("expected a breakdown, got {pause:?}");
        };
        if let Some(a) = &pause {
            line.applied(a, now, shift, None);
        }
        assert!(!line.running());
        assert_eq!(
            line.next(
                until - chrono::Duration::seconds(1),
                shift,
                &always,
                &mut rng
            ),
            None
        );
        assert_eq!(
            line.next(until, shift, &always, &mut rng),
            Some(Action::Resume)
        );
    }

    #[test]
    fn an_adopted_run_continues_in_its_shift_and_is_completed_after_it() {
        let mut rng = StdRng::seed_from_u64(4);
        let bkk = chrono_tz::Asia::Bangkok;
        let mut line = Line::new("SMT01");
        line.adopt(
            "r".into(),
            "WO1".into(),
            false,
            shift_of(at(9, 0, 0), bkk),
            at(9, 30, 0),
        );
        assert_eq!(
            line.next(
                at(9, 30, 5),
                shift_of(at(9, 30, 5), bkk),
                &SETTINGS,
                &mut rng
            ),
            Some(Action::Report)
        );
        assert_eq!(
            line.next(
                at(16, 0, 0),
                shift_of(at(16, 0, 0), bkk),
                &SETTINGS,
                &mut rng
            ),
            Some(Action::Complete)
        );
    }

    #[test]
    fn a_failed_call_is_proposed_again() {
        let mut rng = StdRng::seed_from_u64(3);
        let line = Line::new("SMT01");
        let now = at(10, 0, 0);
        let shift = shift_of(now, chrono_tz::Asia::Bangkok);
        let first = line.next(now, shift, &SETTINGS, &mut rng);
        let again = line.next(now, shift, &SETTINGS, &mut rng);
        assert_eq!(first, again, "nothing applied, the same start is proposed");
    }
}
