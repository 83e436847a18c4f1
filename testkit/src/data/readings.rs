//! Realistic, valid reading lines.

use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Time between consecutive lines of one [`ReadingGen`] (one box in [`super::generate`]).
pub const LINE_STEP: Duration = Duration::from_millis(50);

/// A sensor: name, unit, realistic range and decimals.
#[derive(Debug, Clone, Copy)]
pub struct Sensor {
    pub name: &'static str,
    pub unit: &'static str,
    pub min: f64,
    pub max: f64,
    pub decimals: i32,
}

const fn def(name: &'static str, unit: &'static str, min: f64, max: f64, decimals: i32) -> Sensor {
    Sensor {
        name,
        unit,
        min,
        max,
        decimals,
    }
}

/// Sensors the generators use, in this order; beyond these come `sensor_9`, `sensor_10`, ...
/// (unit `u`, 0-100).
pub const SENSORS: [Sensor; 8] = [
    def("temp", "C", 35.0, 40.0, 1),
    def("speed", "mm/s", 90.0, 110.0, 1),
    def("defect_rate", "ratio", 0.0, 0.05, 4),
    def("yield", "ratio", 0.95, 1.0, 4),
    def("pressure", "kPa", 95.0, 105.0, 2),
    def("vibration", "mm/s", 0.5, 4.0, 3),
    def("humidity", "%", 35.0, 55.0, 1),
    def("power", "kW", 3.0, 8.0, 2),
];

fn sensor(i: usize) -> Sensor {
    SENSORS
        .get(i)
        .copied()
        .unwrap_or(def("sensor", "u", 0.0, 100.0, 2))
}

fn sensor_name(i: usize) -> String {
    match SENSORS.get(i) {
        Some(s) => s.name.to_owned(),
        None => format!("sensor_{}", i + 1),
    }
}

/// A value of sensor `s`, rounded to its decimals.
fn sensor_value(rng: &mut impl Rng, s: &Sensor) -> f64 {
    let raw = s.min + (s.max - s.min) * rng.random::<f64>();
    let scale = 10f64.powi(s.decimals);
    (raw * scale).round() / scale
}

/// Fields of one reading line, for [`valid_line`].
#[derive(Debug, Clone)]
pub struct LineFields<'a> {
    pub ts: DateTime<Utc>,
    pub resource_id: &'a str,
    pub sensor: &'a str,
    pub value: f64,
    pub unit: Option<&'a str>,
    pub work_order_id: Option<&'a str>,
    pub operation_id: Option<&'a str>,
    /// Written as `"meta":{"site":..,"line":..}` plus `"box"` when set.
    pub site: &'a str,
    pub line: &'a str,
    pub box_id: Option<&'a str>,
}

/// One reading line in the seed's field order (no `\n`); `value` must be finite.
pub fn valid_line(f: &LineFields<'_>) -> String {
    let mut s = String::with_capacity(200);
    s.push_str("{\"ts\":\"");
    s.push_str(&f.ts.to_rfc3339_opts(SecondsFormat::Millis, true));
    s.push_str("\",\"resource_id\":");
    push_json_str(&mut s, f.resource_id);
    if let Some(wo) = f.work_order_id {
        s.push_str(",\"work_order_id\":");
        push_json_str(&mut s, wo);
    }
    if let Some(op) = f.operation_id {
        s.push_str(",\"operation_id\":");
        push_json_str(&mut s, op);
    }
    s.push_str(",\"sensor\":");
    push_json_str(&mut s, f.sensor);
    s.push_str(&format!(",\"value\":{}", f.value));
    if let Some(unit) = f.unit {
        s.push_str(",\"unit\":");
        push_json_str(&mut s, unit);
    }
    s.push_str(",\"meta\":{\"site\":");
    push_json_str(&mut s, f.site);
    s.push_str(",\"line\":");
    push_json_str(&mut s, f.line);
    if let Some(b) = f.box_id {
        s.push_str(",\"box\":");
        push_json_str(&mut s, b);
    }
    s.push_str("}}");
    s
}

fn push_json_str(out: &mut String, v: &str) {
    out.push('"');
    for c in v.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// A deterministic stream of realistic, valid reading lines: series round-robin over resources ×
/// sensors, timestamps [`LINE_STEP`] apart from `start`, work orders changing every 2,000 lines,
/// `work_order_id` absent on ~5 % of lines and `operation_id` on ~3 %, `unit` absent on ~2 %.
#[derive(Debug, Clone)]
pub struct ReadingGen {
    rng: StdRng,
    index: u64,
    start: DateTime<Utc>,
    resources: Vec<String>,
    sensors: usize,
    site: String,
    box_id: Option<String>,
}

impl ReadingGen {
    pub fn new(seed: u64, start: DateTime<Utc>, resources: usize, sensors: usize) -> Self {
        Self {
            rng: StdRng::seed_from_u64(seed),
            index: 0,
            start,
            resources: (1..=resources.max(1))
                .map(|i| format!("SMT{i:02}"))
                .collect(),
            sensors: sensors.max(1),
            site: "BKK".to_owned(),
            box_id: None,
        }
    }

    /// Adds `"box":<id>` to `meta`, so lines of different boxes differ.
    pub fn with_box(mut self, box_id: &str) -> Self {
        self.box_id = Some(box_id.to_owned());
        self
    }

    pub fn with_site(mut self, site: &str) -> Self {
        self.site = site.to_owned();
        self
    }

    /// Timestamp of the next line.
    pub fn next_ts(&self) -> DateTime<Utc> {
        self.start + LINE_STEP * u32::try_from(self.index).unwrap_or(u32::MAX)
    }

    /// `(resource index, sensor index)` of line `i`.
    fn slot(&self, i: u64) -> (usize, usize) {
        let per_round = (self.resources.len() * self.sensors) as u64;
        let slot = (i % per_round) as usize;
        (slot / self.sensors, slot % self.sensors)
    }

    /// `(resource_id, sensor)` of the line [`next_line`](Self::next_line) returns next.
    pub fn next_series(&self) -> (String, String) {
        let (r, s) = self.slot(self.index);
        (self.resources[r].clone(), sensor_name(s))
    }

    pub fn next_line(&mut self) -> String {
        let i = self.index;
        let ts = self.next_ts();
        self.index += 1;
        let (r, si) = self.slot(i);
        let resource = &self.resources[r];
        let s = sensor(si);
        let name = sensor_name(si);
        let value = sensor_value(&mut self.rng, &s);
        let work_order = format!("WO{}", 1000 + i / 2000);
        let operation = format!("OP{}", 10 * (1 + (i / 500) % 4));
        let has_wo = self.rng.random_ratio(19, 20);
        let has_op = self.rng.random_ratio(97, 100);
        let has_unit = self.rng.random_ratio(49, 50);
        valid_line(&LineFields {
            ts,
            resource_id: resource,
            sensor: &name,
            value,
            unit: has_unit.then_some(s.unit),
            work_order_id: has_wo.then_some(work_order.as_str()),
            operation_id: has_op.then_some(operation.as_str()),
            site: &self.site,
            line: "L1",
            box_id: self.box_id.as_deref(),
        })
    }

    pub fn lines(&mut self, n: usize) -> Vec<String> {
        (0..n).map(|_| self.next_line()).collect()
    }
}

/// The seed's example line.
pub const SEED_LINE: &str = r#"{"ts":"2025-08-22T00:37:41Z","resource_id":"SMT01","work_order_id":"WO123","operation_id":"OP10","sensor":"temp","value":37.2,"unit":"C","meta":{"site":"BKK"}}"#;

/// `minutes` minutes of seed-like readings for `SMT01`: `temp`, `speed`, `defect_rate` and `yield`
/// every 5 seconds from `start`, work order `WO123`, operation `OP10`, `meta.site` `BKK`. The
/// content of `hotdata/sample_readings.jsonl` (10 minutes); every line ends with `\n`.
pub fn sample_like(minutes: u32, start: DateTime<Utc>) -> String {
    let mut rng = StdRng::seed_from_u64(0x5a3b1e);
    let mut out = String::new();
    let mut temp = 37.2f64;
    for tick in 0..minutes * 12 {
        let ts = start + Duration::from_secs(5 * u64::from(tick));
        let ts_text = ts.to_rfc3339_opts(SecondsFormat::Secs, true);
        temp = (temp + rng.random_range(-0.3..=0.3)).clamp(35.0, 40.0);
        let values = [
            ("temp", (temp * 10.0).round() / 10.0, "C"),
            (
                "speed",
                (rng.random_range(95.0..105.0f64) * 10.0).round() / 10.0,
                "mm/s",
            ),
            (
                "defect_rate",
                (rng.random_range(0.0..0.05f64) * 10_000.0).round() / 10_000.0,
                "ratio",
            ),
            (
                "yield",
                (rng.random_range(0.95..1.0f64) * 10_000.0).round() / 10_000.0,
                "ratio",
            ),
        ];
        for (sensor, value, unit) in values {
            out.push_str(&format!(
                r#"{{"ts":"{ts_text}","resource_id":"SMT01","work_order_id":"WO123","operation_id":"OP10","sensor":"{sensor}","value":{value},"unit":"{unit}","meta":{{"site":"BKK"}}}}"#
            ));
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use protocol::{decode_line, Limits};

    use crate::data::{classify, Expected, GenSpec, LineOutcome};

    use super::*;

    #[test]
    fn generated_readings_are_valid_realistic_and_in_time_order() {
        let start = GenSpec::default().start_ts;
        let mut gen = ReadingGen::new(7, start, 2, 4).with_box("box01");
        let lines: Vec<String> = (0..4_000)
            .map(|_| {
                let (resource_id, sensor) = gen.next_series();
                let line = gen.next_line();
                assert_eq!(
                    classify(line.as_bytes()),
                    LineOutcome::Valid {
                        resource_id,
                        sensor
                    }
                );
                line
            })
            .collect();
        let mut last_ts = i64::MIN;
        let (mut with_wo, mut with_op) = (0, 0);
        let mut series = BTreeSet::new();
        for line in &lines {
            let r = decode_line(line.as_bytes(), &Limits::default()).unwrap();
            assert!(r.ts_micros > last_ts, "{line}");
            last_ts = r.ts_micros;
            series.insert((r.resource_id.to_string(), r.sensor.to_string()));
            let range = match r.sensor.as_ref() {
                "temp" => 35.0..=40.0,
                "speed" => 90.0..=110.0,
                "defect_rate" => 0.0..=0.05,
                "yield" => 0.95..=1.0,
                other => panic!("unexpected sensor {other}"),
            };
            assert!(range.contains(&r.value), "{line}");
            with_wo += u32::from(r.work_order_id.is_some());
            with_op += u32::from(r.operation_id.is_some());
            let meta: serde_json::Value = serde_json::from_str(r.meta.as_deref().unwrap()).unwrap();
            assert_eq!(meta["site"], "BKK");
            assert_eq!(meta["box"], "box01");
            assert!(meta["line"].is_string());
        }
        assert_eq!(series.len(), 8);
        assert!((3_600..4_000).contains(&with_wo), "{with_wo}");
        assert!((3_800..4_000).contains(&with_op), "{with_op}");
        assert_eq!(
            lines[0].find("\"ts\":\"2025-08-22T00:00:00.000Z\""),
            Some(1)
        );
        let again = ReadingGen::new(7, start, 2, 4)
            .with_box("box01")
            .lines(4_000);
        assert_eq!(lines, again, "deterministic for a seed");
    }

    #[test]
    fn more_sensors_than_the_catalogue_get_numbered_names() {
        let mut gen = ReadingGen::new(1, GenSpec::default().start_ts, 1, 10);
        let sensors: BTreeSet<String> = gen
            .lines(10)
            .iter()
            .map(|l| match classify(l.as_bytes()) {
                LineOutcome::Valid { sensor, .. } => sensor,
                other => panic!("{other:?}"),
            })
            .collect();
        assert!(sensors.contains("sensor_9") && sensors.contains("sensor_10"));
        assert_eq!(sensors.len(), 10);
    }

    #[test]
    fn sample_like_is_ten_minutes_of_seed_readings() {
        let start = GenSpec::default().start_ts;
        let sample = sample_like(10, start);
        assert!(sample.ends_with('\n'));
        let e = Expected::of_bytes(sample.as_bytes());
        assert_eq!((e.valid, e.lines()), (480, 480));
        for sensor in ["temp", "speed", "defect_rate", "yield"] {
            assert_eq!(
                e.per_series.get(&("SMT01".to_owned(), sensor.to_owned())),
                Some(&120)
            );
        }
        let first = sample.lines().next().unwrap();
        assert!(first.starts_with(r#"{"ts":"2025-08-22T00:00:00Z","resource_id":"SMT01","work_order_id":"WO123","operation_id":"OP10","sensor":"temp","value":"#));
        let last = decode_line(
            sample.lines().last().unwrap().as_bytes(),
            &Limits::default(),
        )
        .unwrap();
        assert_eq!(last.ts_micros - start.timestamp_micros(), 595_000_000);
        assert_eq!(sample, sample_like(10, start), "deterministic");
    }
}
