//! The line simulator against the real binaries: its readings land (its bad lines are rejected
//! with a reason), it drives one production run per resource through mes-api with counts, and a
//! second start takes over the active runs instead of starting new ones.

use std::time::Duration;

use chrono::Utc;

use crate::support::{api_ready, eventually, stop_cleanly, Stack};

async fn scalar(stack: &Stack, sql: &str) -> i64 {
    let pool = stack.pool().await;
    let v = sqlx::query_scalar(sql).fetch_one(&pool).await.unwrap_or(-1);
    pool.close().await;
    v
}

#[tokio::test]
async fn simulated_line_fills_readings_and_runs_and_a_second_start_takes_over() {
    let stack = Stack::new().await;
    let port = testkit::nats::free_port().unwrap();
    let token = stack.api_token("operator").await;
    let mut api = stack.api(port, &[]).spawn().unwrap();
    assert!(api_ready(port).await, "mes-api listens");
    let mut worker = stack.worker(&[]).spawn().unwrap();
    let mut shipper = stack.shipper("sim", &[]).spawn().unwrap();
    let mut sim = stack
        .simulator("sim", port, &token, &["--bad-line-every", "40"])
        .spawn()
        .unwrap();

    let filled = eventually(Duration::from_secs(90), || async {
        stack.readings().await >= 200
            && scalar(&stack, "SELECT count(*) FROM rejected_readings").await > 0
            && scalar(
                &stack,
                "SELECT count(*) FROM op_run WHERE status = 'running'",
            )
            .await
                == 3
            && scalar(
                &stack,
                "SELECT coalesce(sum(good_units), 0)::int8 FROM op_run",
            )
            .await
                > 0
    })
    .await;
    assert!(
        filled,
        "readings, rejections, three running runs with counts: readings {}, rejected {}, running {}, good {}",
        stack.readings().await,
        scalar(&stack, "SELECT count(*) FROM rejected_readings").await,
        scalar(&stack, "SELECT count(*) FROM op_run WHERE status = 'running'").await,
        scalar(&stack, "SELECT coalesce(sum(good_units), 0)::int8 FROM op_run").await
    );
    let sensors = scalar(&stack, "SELECT count(DISTINCT sensor) FROM readings").await;
    assert_eq!(sensors, 4, "temp, speed, yield, defect_rate");
    let with_order = scalar(
        &stack,
        "SELECT count(*) FROM readings WHERE work_order_id LIKE 'WO-%'",
    )
    .await;
    assert!(with_order > 0, "readings carry the running work order");
    assert_eq!(
        scalar(
            &stack,
            "SELECT count(*) FROM op_run WHERE started_by IS NULL"
        )
        .await,
        0,
        "every run records the simulator's token as who started it"
    );

    // A second start: the active runs are taken over, not started again.
    let shift_before = edge_mes_sim::production::shift_of(Utc::now(), chrono_tz::Asia::Bangkok);
    stop_cleanly(&mut sim).await;
    let runs = scalar(&stack, "SELECT count(*) FROM op_run").await;
    let good = scalar(
        &stack,
        "SELECT coalesce(sum(good_units), 0)::int8 FROM op_run",
    )
    .await;
    let mut sim = stack.simulator("sim", port, &token, &[]).spawn().unwrap();
    assert!(
        eventually(Duration::from_secs(30), || async {
            scalar(
                &stack,
                "SELECT coalesce(sum(good_units), 0)::int8 FROM op_run",
            )
            .await
                > good
        })
        .await,
        "the second simulator reports into the runs it took over"
    );
    let shift_after = edge_mes_sim::production::shift_of(Utc::now(), chrono_tz::Asia::Bangkok);
    if shift_before == shift_after {
        assert_eq!(
            scalar(&stack, "SELECT count(*) FROM op_run").await,
            runs,
            "no new runs: the active ones were taken over"
        );
    }
    for child in [&mut sim, &mut shipper, &mut worker, &mut api] {
        stop_cleanly(child).await;
    }
}
