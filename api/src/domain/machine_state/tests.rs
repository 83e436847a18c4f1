use super::*;

fn t(s: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_767_600_000 + s, 0).unwrap()
}

fn samples(points: &[(i64, f64)]) -> Vec<Sample> {
    points
        .iter()
        .map(|&(s, value)| Sample { ts: t(s), value })
        .collect()
}

fn speed_rule(min_stop_seconds: f64) -> Rule {
    Rule::new("speed".into(), StopWhen::AtOrBelow(0.5), min_stop_seconds).unwrap()
}

fn stop(from: i64, to: Option<i64>, reason: &str, code: Option<i64>) -> Stop {
    Stop {
        started_at: t(from),
        ended_at: to.map(t),
        reason_code: reason.into(),
        state_code: code,
    }
}

#[test]
fn a_threshold_rule_finds_stops_that_last_the_minimum_and_ignores_blips() {
    // Running, stopped from 10 s to 100 s (90 s: a stop), a 20 s blip from 130 s, stopped again
    // from 200 s and still at the last reading (100 s by then: an open stop).
    let readings = samples(&[
        (0, 10.0),
        (10, 0.0),
        (40, 0.5),
        (100, 5.0),
        (130, 0.2),
        (150, 5.0),
        (200, 0.0),
        (300, 0.0),
    ]);
    assert_eq!(
        detect(&speed_rule(60.0), &readings),
        vec![
            stop(10, Some(100), UNASSIGNED, None),
            stop(200, None, UNASSIGNED, None)
        ]
    );
    // With a 120 s minimum only the stop still going counts once it has lasted 120 s.
    assert_eq!(detect(&speed_rule(120.0), &readings), vec![]);
    let mut longer = readings.clone();
    longer.push(Sample {
        ts: t(320),
        value: 0.0,
    });
    assert_eq!(
        detect(&speed_rule(120.0), &longer),
        vec![stop(200, None, UNASSIGNED, None)]
    );
}

#[test]
fn a_minimum_of_zero_keeps_every_stop_that_has_a_length() {
    let readings = samples(&[(0, 1.0), (5, 0.0), (6, 1.0), (7, 0.0)]);
    assert_eq!(
        detect(&speed_rule(0.0), &readings),
        vec![
            stop(5, Some(6), UNASSIGNED, None),
            stop(7, None, UNASSIGNED, None)
        ]
    );
}

#[test]
fn a_code_rule_maps_codes_to_reasons_and_splits_stops_where_the_code_changes() {
    let codes = BTreeMap::from([(2, UNASSIGNED.to_owned()), (3, "breakdown".to_owned())]);
    let rule = Rule::new("state".into(), StopWhen::Codes(codes), 30.0).unwrap();
    let readings = samples(&[
        (0, 1.0),
        (60, 2.0),
        (90, 2.0),
        (120, 3.0),
        (400, 1.0),
        (500, 2.5), // not an integer: not a code, so running
        (600, 3.0),
        (610, 1.0), // 10 s: a blip
    ]);
    assert_eq!(
        detect(&rule, &readings),
        vec![
            stop(60, Some(120), UNASSIGNED, Some(2)),
            stop(120, Some(400), "breakdown", Some(3)),
        ]
    );
}

#[test]
fn no_readings_no_stops() {
    assert_eq!(detect(&speed_rule(0.0), &[]), vec![]);
    assert_eq!(
        detect(&speed_rule(0.0), &samples(&[(0, 0.0)])),
        vec![stop(0, None, UNASSIGNED, None)]
    );
}

#[test]
fn rules_out_of_range_are_refused() {
    let at = |v| StopWhen::AtOrBelow(v);
    assert!(Rule::new("s".into(), at(0.0), -1.0).is_err());
    assert!(Rule::new("s".into(), at(0.0), f64::NAN).is_err());
    assert!(Rule::new("s".into(), at(0.0), 86_401.0).is_err());
    assert!(Rule::new("s".into(), at(f64::INFINITY), 1.0).is_err());
    assert!(Rule::new("s".into(), at(2e15), 1.0).is_err());
    assert!(Rule::new("s".into(), StopWhen::Codes(BTreeMap::new()), 1.0).is_err());
    assert_eq!(parse_code("-3"), Ok(-3));
    assert!(parse_code("3.5").is_err() && parse_code("x").is_err() && parse_code("1e16").is_err());
    assert_eq!(speed_rule(1.5).min_stop, TimeDelta::milliseconds(1500));
}

fn stored(id: i64, s: Stop, assigned: bool) -> StoredStop {
    StoredStop {
        id,
        stop: s,
        assigned,
    }
}

#[test]
fn reconciling_updates_inserts_and_forgets_what_the_readings_no_longer_show() {
    let from = t(1000);
    let before = [
        // An open stop from before the window, now ended by the readings.
        stored(1, stop(900, None, UNASSIGNED, None), false),
        // Late readings show the machine ran here: forgotten.
        stored(2, stop(1200, Some(1300), UNASSIGNED, None), false),
        // The same, but an operator explained it: kept.
        stored(3, stop(1400, Some(1500), "breakdown", None), true),
        // Unchanged.
        stored(4, stop(1600, Some(1700), UNASSIGNED, None), false),
    ];
    let detected = [
        stop(990, Some(1100), UNASSIGNED, None),
        stop(1600, Some(1700), UNASSIGNED, None),
        stop(1800, None, UNASSIGNED, None),
    ];
    let r = reconcile(from, &before, &detected);
    assert_eq!(r.update, vec![(1, stop(900, Some(1100), UNASSIGNED, None))]);
    assert_eq!(r.insert, vec![stop(1800, None, UNASSIGNED, None)]);
    assert_eq!(r.delete, vec![2]);
}

#[test]
fn an_operator_reason_survives_a_changed_span_and_cuts_a_merged_stop() {
    let from = t(0);
    let before = [
        stored(1, stop(100, Some(200), "material_shortage", None), true),
        stored(2, stop(250, Some(300), UNASSIGNED, None), false),
        stored(3, stop(350, Some(400), "breakdown", None), true),
    ];
    // Late readings join the three into one stop from 100 s to 500 s.
    let r = reconcile(from, &before, &[stop(100, Some(500), UNASSIGNED, None)]);
    assert_eq!(
        r.update,
        vec![(1, stop(100, Some(350), "material_shortage", None))]
    );
    assert_eq!(r.delete, vec![2]);
    assert!(r.insert.is_empty());
}
