//! Prometheus metrics of the shop-floor board, recorded through the process-wide recorder that
//! [`crate::metrics`] installs. Labels are bounded (the snapshot trigger).

use std::sync::Once;
use std::time::Duration;

use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};

pub const BOARD_CLIENTS: &str = "mes_api_board_clients";
pub const BOARD_SNAPSHOTS: &str = "mes_api_board_snapshots_total";
pub const BOARD_SNAPSHOT_SECONDS: &str = "mes_api_board_snapshot_duration_seconds";

pub fn describe() {
    static DESCRIBED: Once = Once::new();
    DESCRIBED.call_once(|| {
        describe_gauge!(
            BOARD_CLIENTS,
            "board clients connected to GET /board/events in this process"
        );
        describe_counter!(
            BOARD_SNAPSHOTS,
            "board snapshots taken, by trigger (start, run_event, periodic) or failed"
        );
        describe_histogram!(
            BOARD_SNAPSHOT_SECONDS,
            "time to read and serialize one board snapshot"
        );
    });
}

pub fn client_connected() {
    gauge!(BOARD_CLIENTS).increment(1.0);
}

pub fn client_disconnected() {
    gauge!(BOARD_CLIENTS).decrement(1.0);
}

pub fn snapshot(trigger: &'static str, elapsed: Duration) {
    counter!(BOARD_SNAPSHOTS, "trigger" => trigger).increment(1);
    histogram!(BOARD_SNAPSHOT_SECONDS).record(elapsed.as_secs_f64());
}
