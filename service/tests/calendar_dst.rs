//! Shift and break times at DST edges (migration 0015), against real PostgreSQL, with chrono-tz's
//! reading of the same IANA rules as the reference: a local time that occurs once is that
//! instant, one that occurs twice is its first occurrence, one the clocks skip is the first
//! instant after the jump. Zones: Europe/Berlin and America/New_York (one-hour changes at 02:00 /
//! 03:00 local) and Australia/Lord_Howe (a 30-minute change at 02:00).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;
use service::db::{MigrateMode, PoolSettings};
use sqlx::PgPool;
use testkit::PgHandle;
use tokio::sync::OnceCell;

/// A local date: year, month, day.
type Ymd = (i32, u32, u32);

/// Each zone with the local dates of its 2025 changes (spring forward, fall back).
const EDGES: [(&str, [Ymd; 2]); 3] = [
    ("Europe/Berlin", [(2025, 3, 30), (2025, 10, 26)]),
    ("America/New_York", [(2025, 3, 9), (2025, 11, 2)]),
    ("Australia/Lord_Howe", [(2025, 10, 5), (2025, 4, 6)]),
];

/// The server, kept for the whole test binary (a private one stops when its handle drops).
async fn pg() -> &'static PgHandle {
    static PG: OnceCell<PgHandle> = OnceCell::const_new();
    PG.get_or_init(|| async { testkit::pg_for_test().await.expect("postgres for test") })
        .await
}

async fn database() -> PgPool {
    let url = pg().await.url(&testkit::unique_name("dst"));
    let pool = service::db::connect(
        &url,
        &PoolSettings {
            application_name: "calendar-dst-test",
            max_connections: 2,
            acquire_timeout: Duration::from_secs(30),
            ping_if_idle_for: None,
        },
    )
    .await
    .unwrap();
    service::db::prepare(&pool, MigrateMode::Auto)
        .await
        .unwrap();
    pool
}

/// The rule, computed by chrono-tz.
fn reference(zone: Tz, local: NaiveDateTime) -> DateTime<Utc> {
    match zone.from_local_datetime(&local) {
        chrono::LocalResult::Single(t) => t.with_timezone(&Utc),
        chrono::LocalResult::Ambiguous(a, b) => a.min(b).with_timezone(&Utc),
        chrono::LocalResult::None => {
            // The first local minute after `local` that exists is the end of the gap; its
            // instant is the jump.
            let mut next = local;
            loop {
                next += chrono::Duration::minutes(1);
                if let Some(t) = zone.from_local_datetime(&next).earliest() {
                    return t.with_timezone(&Utc);
                }
            }
        }
    }
}

/// Local times every 5 minutes from 00:00 to 04:00 of `date`.
fn night(date: NaiveDate) -> impl Iterator<Item = NaiveDateTime> {
    (0..=48)
        .map(move |i| date.and_time(NaiveTime::MIN) + chrono::Duration::minutes(5 * i64::from(i)))
}

#[tokio::test]
async fn local_times_at_every_edge_follow_the_rule() {
    let pool = database().await;
    let mut kinds = [0usize; 3];
    for (zone_name, dates) in EDGES {
        let zone: Tz = zone_name.parse().unwrap();
        for (y, m, d) in dates {
            let date = NaiveDate::from_ymd_opt(y, m, d).unwrap();
            for local in night(date) {
                let kind = match zone.from_local_datetime(&local) {
                    chrono::LocalResult::Single(_) => 0,
                    chrono::LocalResult::Ambiguous(..) => 1,
                    chrono::LocalResult::None => 2,
                };
                kinds[kind] += 1;
                let got: DateTime<Utc> =
                    sqlx::query_scalar("SELECT edge_mes_local_instant($1, $2)")
                        .bind(local)
                        .bind(zone_name)
                        .fetch_one(&pool)
                        .await
                        .unwrap();
                assert_eq!(got, reference(zone, local), "{zone_name} {local}");
            }
        }
    }
    // The nights hold all three kinds (Lord Howe's 30-minute gap and overlap included).
    assert!(
        kinds.iter().all(|&k| k > 0),
        "single, ambiguous, skipped: {kinds:?}"
    );
}

/// A site in `zone` whose one shift (`start`, `hours`) has the planned breaks `breaks` (local
/// start, minutes).
async fn site(
    pool: &PgPool,
    site: &str,
    zone: &str,
    start: &str,
    hours: i32,
    breaks: &[(&str, i32)],
) {
    sqlx::query("INSERT INTO sites (site_id, time_zone) VALUES ($1, $2)")
        .bind(site)
        .bind(zone)
        .execute(pool)
        .await
        .unwrap();
    let id: i32 = sqlx::query_scalar(
        "INSERT INTO shift_definitions (site_id, shift_name, start_local, duration)
         VALUES ($1, 'Night', $2::time, make_interval(hours => $3)) RETURNING id",
    )
    .bind(site)
    .bind(start)
    .bind(hours)
    .fetch_one(pool)
    .await
    .unwrap();
    for (start, minutes) in breaks {
        sqlx::query(
            "INSERT INTO shift_breaks (shift_definition_id, start_local, duration)
             VALUES ($1, $2::time, make_interval(mins => $3))",
        )
        .bind(id)
        .bind(start)
        .bind(minutes)
        .execute(pool)
        .await
        .unwrap();
    }
}

/// Seconds of each planned break of `site`'s shift on `date`, in local start order.
async fn break_seconds(pool: &PgPool, site: &str, date: &str) -> Vec<i64> {
    sqlx::query_scalar(
        "SELECT extract(epoch FROM upper(r) - lower(r))::int8
         FROM edge_mes_shift_instances($2::date, $2::date, $1) si, unnest(si.breaks) r
         ORDER BY lower(r)",
    )
    .bind(site)
    .bind(date)
    .fetch_all(pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn breaks_on_dst_nights_last_what_the_clocks_allow_and_never_break_the_views() {
    let pool = database().await;
    // Berlin, 2025-03-30, 02:00 CET → 03:00 CEST (at 01:00Z): 01:40–02:10 ends in the gap (20
    // minutes, to the jump), 02:15–02:45 lies in it (skipped by the clocks: no break), and at
    // the second site 02:50–03:20 starts in it (20 minutes, from the jump). Before 0015 a break
    // like the last made an inverted range and every OEE query of every site failed. (Breaks
    // that meet become one range, hence two sites.)
    site(
        &pool,
        "BER",
        "Europe/Berlin",
        "00:00",
        8,
        &[("01:40", 30), ("02:15", 30)],
    )
    .await;
    site(&pool, "BES", "Europe/Berlin", "00:00", 8, &[("02:50", 30)]).await;
    assert_eq!(break_seconds(&pool, "BER", "2025-03-30").await, [1200]);
    assert_eq!(break_seconds(&pool, "BES", "2025-03-30").await, [1200]);
    // Berlin, 2025-10-26, 03:00 CEST → 02:00 CET: breaks are taken at their first occurrence and
    // last their 30 minutes; one that starts in the repeated hour and ends after it spans the
    // repeated hour too (02:50 CEST to 03:20 CET, 90 minutes).
    assert_eq!(
        break_seconds(&pool, "BER", "2025-10-26").await,
        [1800, 1800]
    );
    assert_eq!(break_seconds(&pool, "BES", "2025-10-26").await, [5400]);

    // Lord Howe, 2025-10-05, 02:00 → 02:30 (+10:30 → +11): 01:30–01:50 is untouched, 02:10–02:40
    // keeps the 10 minutes after the jump; 2025-04-06, 02:00 → 01:30: 01:30–01:50 is taken at
    // its first occurrence (20 minutes), 02:10–02:40 occurs once (30 minutes).
    site(
        &pool,
        "LHI",
        "Australia/Lord_Howe",
        "00:00",
        8,
        &[("01:30", 20), ("02:10", 30)],
    )
    .await;
    assert_eq!(break_seconds(&pool, "LHI", "2025-10-05").await, [1200, 600]);
    assert_eq!(
        break_seconds(&pool, "LHI", "2025-04-06").await,
        [1200, 1800]
    );

    // New York: a shift starting in the gap (02:30 on 2025-03-09) starts at the jump (03:00
    // EDT); the shift before it, ending at 02:30, ends there too: no gap, no overlap.
    site(
        &pool,
        "NYC",
        "America/New_York",
        "02:30",
        24,
        &[("02:40", 20)],
    )
    .await;
    let shifts: Vec<(DateTime<Utc>, DateTime<Utc>)> = sqlx::query_as(
        "SELECT starts_at, ends_at FROM edge_mes_shift_instances('2025-03-08', '2025-03-09', 'NYC')
         ORDER BY starts_at",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let ny: Tz = "America/New_York".parse().unwrap();
    let jump = ny.with_ymd_and_hms(2025, 3, 9, 3, 0, 0).unwrap();
    assert_eq!(shifts.len(), 2);
    assert_eq!(shifts[0].1, jump, "the shift before ends at the jump");
    assert_eq!(shifts[1].0, jump, "the shift in the gap starts at the jump");
    // Its break 02:40–03:00 is skipped by the clocks.
    assert!(break_seconds(&pool, "NYC", "2025-03-09").await.is_empty());

    // A run in each site across those nights: every site's OEE rows come back.
    for (site, from, to) in [
        ("BER", "2025-03-29T22:00:00Z", "2025-10-27T06:00:00Z"),
        ("LHI", "2025-04-05T13:00:00Z", "2025-10-05T21:00:00Z"),
        ("NYC", "2025-03-08T07:00:00Z", "2025-03-10T07:00:00Z"),
    ] {
        sqlx::query(
            "INSERT INTO op_run (op_run_id, work_order_id, operation_id, resource_id, site_id,
                                 status, started_at, ended_at, planned_seconds)
             VALUES (gen_random_uuid(), 'WO', 'OP', $1 || '-1', $1, 'completed',
                     $2::timestamptz, $3::timestamptz, 3600)",
        )
        .bind(site)
        .bind(from)
        .bind(to)
        .execute(&pool)
        .await
        .unwrap();
    }
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT site_id, count(*) FROM v_oee_shift_real GROUP BY site_id ORDER BY site_id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let sites: Vec<&str> = rows.iter().map(|(s, _)| s.as_str()).collect();
    assert_eq!(sites, ["BER", "LHI", "NYC"], "{rows:?}");
    assert!(rows.iter().all(|(_, n)| *n > 0), "{rows:?}");
}

#[tokio::test]
async fn a_site_with_an_unknown_zone_is_refused() {
    let pool = database().await;
    let refused =
        sqlx::query("INSERT INTO sites (site_id, time_zone) VALUES ('X', 'Mars/Olympus')")
            .execute(&pool)
            .await
            .unwrap_err();
    assert!(
        refused
            .to_string()
            .contains("unknown time zone Mars/Olympus"),
        "{refused}"
    );
    sqlx::query("INSERT INTO sites (site_id, time_zone) VALUES ('Y', 'Europe/Berlin')")
        .execute(&pool)
        .await
        .unwrap();
    let refused = sqlx::query("UPDATE sites SET time_zone = 'Europe/Berlinn' WHERE site_id = 'Y'")
        .execute(&pool)
        .await
        .unwrap_err();
    assert!(
        refused.to_string().contains("unknown time zone"),
        "{refused}"
    );
}
