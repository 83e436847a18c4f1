//! What a line's sensors read, tick by tick: temperature drifting around its set point, speed
//! that drops to zero while the machine is down, yield and defect rate with noise. Pure: the
//! caller passes the time, whether the machine runs, and the random source.

use chrono::{DateTime, SecondsFormat, Utc};
use rand::Rng;
use serde_json::json;

/// One resource's sensor state.
#[derive(Debug, Clone)]
pub struct Signals {
    pub resource_id: String,
    temp_c: f64,
    speed_per_min: f64,
    yield_ratio: f64,
}

/// Nominal speed of a running machine, units per minute.
pub const NOMINAL_SPEED: f64 = 40.0;
const TEMP_SET_POINT: f64 = 38.0;

impl Signals {
    pub fn new(resource_id: &str) -> Self {
        Self {
            resource_id: resource_id.to_owned(),
            temp_c: TEMP_SET_POINT,
            speed_per_min: 0.0,
            yield_ratio: 0.98,
        }
    }

    /// Advances one tick and returns the JSONL lines it reads (one per sensor).
    pub fn tick(
        &mut self,
        now: DateTime<Utc>,
        running: bool,
        work: Option<(&str, &str)>,
        site: &str,
        rng: &mut impl Rng,
    ) -> Vec<String> {
        // Mean-reverting drift, warmer while running.
        let target = if running {
            TEMP_SET_POINT + 4.0
        } else {
            TEMP_SET_POINT
        };
        self.temp_c += 0.05 * (target - self.temp_c) + rng.random_range(-0.3..0.3);
        let speed_target = if running {
            NOMINAL_SPEED * rng.random_range(0.9..1.02)
        } else {
            0.0
        };
        self.speed_per_min += 0.5 * (speed_target - self.speed_per_min);
        if self.speed_per_min < 0.5 {
            self.speed_per_min = if running { self.speed_per_min } else { 0.0 };
        }
        self.yield_ratio = (self.yield_ratio + rng.random_range(-0.004..0.004)).clamp(0.93, 0.998);
        let ts = now.to_rfc3339_opts(SecondsFormat::Millis, true);
        let line = |sensor: &str, value: f64, unit: &str| {
            let mut v = json!({
                "ts": ts,
                "resource_id": self.resource_id,
                "sensor": sensor,
                "value": (value * 1000.0).round() / 1000.0,
                "unit": unit,
                "meta": {"site": site, "source": "edge-mes-sim"},
            });
            if let Some((wo, op)) = work {
                v["work_order_id"] = json!(wo);
                v["operation_id"] = json!(op);
            }
            v.to_string()
        };
        vec![
            line("temp", self.temp_c, "C"),
            line("speed", self.speed_per_min, "units/min"),
            line("yield", self.yield_ratio, "ratio"),
            line("defect_rate", 1.0 - self.yield_ratio, "ratio"),
        ]
    }

    /// Units made in `secs` at the current speed, split into good and scrap by the yield.
    pub fn units(&self, secs: f64) -> (i64, i64) {
        let made = (self.speed_per_min * secs / 60.0).round() as i64;
        let good = (made as f64 * self.yield_ratio).round() as i64;
        (good, made - good)
    }
}

/// A line the ingest worker must reject (and record with its reason): the kinds a real edge app
/// produces now and then.
pub fn bad_line(n: u64, resource_id: &str) -> String {
    match n % 3 {
        0 => format!(
            r#"{{"ts":"2026-01-01T00:00:00Z","resource_id":"{resource_id}","sensor":"temp","value":"#
        ),
        1 => format!(
            r#"{{"ts":"not a time","resource_id":"{resource_id}","sensor":"temp","value":1}}"#
        ),
        _ => format!(
            r#"{{"ts":"2026-01-01T00:00:00Z","resource_id":"{resource_id}","sensor":"temp"}}"#
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    fn parse(line: &str) -> serde_json::Value {
        serde_json::from_str(line).expect("a valid JSON line")
    }

    #[test]
    fn every_tick_reads_four_sensors_of_the_seed_contract() {
        let mut s = Signals::new("SMT01");
        let mut rng = StdRng::seed_from_u64(1);
        let lines = s.tick(Utc::now(), true, Some(("WO1", "OP10")), "BKK", &mut rng);
        let sensors: Vec<String> = lines
            .iter()
            .map(|l| parse(l)["sensor"].as_str().unwrap_or_default().to_owned())
            .collect();
        assert_eq!(sensors, ["temp", "speed", "yield", "defect_rate"]);
        for l in &lines {
            let v = parse(l);
            assert_eq!(v["resource_id"], "SMT01");
            assert_eq!(v["work_order_id"], "WO1");
            assert!(v["value"].as_f64().is_some_and(f64::is_finite));
            assert!(v["ts"].as_str().is_some_and(|t| t.ends_with('Z')));
        }
    }

    #[test]
    fn a_stopped_machine_slows_to_zero_and_makes_nothing() {
        let mut s = Signals::new("SMT01");
        let mut rng = StdRng::seed_from_u64(2);
        for _ in 0..20 {
            s.tick(Utc::now(), true, None, "BKK", &mut rng);
        }
        assert!(s.units(60.0).0 > 30, "running at nominal speed makes units");
        for _ in 0..20 {
            s.tick(Utc::now(), false, None, "BKK", &mut rng);
        }
        assert_eq!(s.units(60.0), (0, 0));
    }

    #[test]
    fn temperature_and_yield_stay_in_a_plausible_band() {
        let mut s = Signals::new("SMT01");
        let mut rng = StdRng::seed_from_u64(3);
        for i in 0..5000 {
            let lines = s.tick(Utc::now(), i % 700 < 600, None, "BKK", &mut rng);
            let temp = parse(&lines[0])["value"].as_f64().unwrap_or(f64::NAN);
            let y = parse(&lines[2])["value"].as_f64().unwrap_or(f64::NAN);
            assert!((30.0..50.0).contains(&temp), "temp {temp}");
            assert!((0.93..=0.998).contains(&y), "yield {y}");
        }
    }

    #[test]
    fn bad_lines_are_not_valid_readings() {
        for n in 0..3 {
            let line = bad_line(n, "SMT01");
            let v: Result<serde_json::Value, _> = serde_json::from_str(&line);
            let valid = v.is_ok_and(|v| {
                v["value"].is_number()
                    && chrono::DateTime::parse_from_rfc3339(v["ts"].as_str().unwrap_or("")).is_ok()
            });
            assert!(!valid, "{line}");
        }
    }
}
