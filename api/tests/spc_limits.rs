//! Stored control limits: `POST /spc/limits` versions per resource, sensor, chart and subgroup
//! size with who set them, `GET /spc` applies the latest, `GET /spc/limits` lists them; only
//! admins set them; every bad baseline is a 4xx problem naming the field; retries and concurrent
//! settings; the least-privilege logins.

use axum::http::Method;
use mes_api::auth::Role;
use mes_api::{AppState, Settings};
use serde_json::{json, Value};

use crate::spc::{baseline_values, close, iso, readings, set_i_mr};
use crate::support::*;

fn body(resource: &str, from: i64, to: i64) -> Value {
    json!({"resource_id": resource, "sensor": "temp", "chart": "i_mr",
           "baseline_from": iso(from), "baseline_to": iso(to)})
}

async fn post_as(app: &axum::Router, token: &str, body: &Value) -> Answer {
    let auth = format!("Bearer {token}");
    call(
        app,
        Method::POST,
        "/spc/limits",
        Some(&body.to_string()),
        &[("authorization", &auth)],
    )
    .await
}

/// Two baselines set by two people: versions 1 and 2, both kept, the second in force and applied
/// by `GET /spc`; its limits are the second baseline's (10.6, 10.5, 10.4, 10.5: x̄ = 10.5).
#[tokio::test]
async fn limits_set_twice_make_two_versions_with_their_actors_and_the_latest_applies() {
    let t0 = db().await;
    let app = app(&t0.pool);
    let anna = mes_api::store::tokens::create(&t0.pool, "qe-anna", Role::Admin, None)
        .await
        .unwrap();
    readings(&t0.pool, "R-ver", "temp", 0, &baseline_values()).await;
    let second: Vec<f64> = baseline_values().iter().map(|v| v + 0.5).collect();
    readings(&t0.pool, "R-ver", "temp", 100, &second).await;

    let v1 = set_i_mr(&app, "R-ver", "temp", 0, 32).await;
    assert_eq!(
        (v1["version"].as_i64(), v1["in_force"].as_bool()),
        (Some(1), Some(true))
    );
    assert_eq!(v1["set_by"], "tests");
    assert_eq!(
        (
            v1["baseline_points"].as_i64(),
            v1["baseline_subgroups"].as_i64()
        ),
        (Some(32), Some(32))
    );
    let v2 = post_as(&app, &anna, &body("R-ver", 100, 132)).await;
    assert_eq!(v2.status, 201, "{}", v2.body);
    let v2 = v2.body;
    assert_eq!(
        (v2["version"].as_i64(), v2["set_by"].as_str()),
        (Some(2), Some("qe-anna"))
    );
    close(&v2["center_line"], 10.5, 1e-9, "second baseline's CL");

    let history = get(&app, "/spc/limits?resource_id=R-ver&sensor=temp").await;
    assert_eq!(history.status, 200, "{}", history.body);
    let versions = history.body["versions"].as_array().unwrap();
    let listed: Vec<(i64, bool, &str)> = versions
        .iter()
        .map(|v| {
            (
                v["version"].as_i64().unwrap(),
                v["in_force"].as_bool().unwrap(),
                v["set_by"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(listed, [(2, true, "qe-anna"), (1, false, "tests")]);
    let set_at =
        |v: &Value| chrono::DateTime::parse_from_rfc3339(v["set_at"].as_str().unwrap()).unwrap();
    assert!(set_at(&versions[0]) >= set_at(&versions[1]));
    assert_eq!(
        versions[1]["center_line"], v1["center_line"],
        "the old version is kept as set"
    );
    let none = get(
        &app,
        "/spc/limits?resource_id=R-ver&sensor=temp&chart=xbar_r",
    )
    .await;
    assert_eq!(none.body["versions"], json!([]));
    let other = get(&app, "/spc/limits?resource_id=R-ver&sensor=pressure").await;
    assert_eq!(
        (other.status.as_u16(), &other.body["versions"]),
        (200, &json!([]))
    );

    let uri = format!(
        "/spc?resource_id=R-ver&sensor=temp&from={}&to={}",
        iso(100),
        iso(132)
    );
    let applied = get(&app, &uri).await.body;
    assert_eq!(applied["limits_source"], "stored");
    assert_eq!(applied["stored_limits"]["version"], 2);
    assert_eq!(applied["stored_limits"]["set_by"], "qe-anna");
    close(&applied["limits"]["mean"], 10.5, 1e-9, "applied CL");
    assert_eq!(applied["violations"], json!([]), "{applied}");
    // The database keeps both rows, and the view marks the one in force.
    assert_eq!(
        scalar_i64(
            &t0.pool,
            "SELECT count(*) FROM spc_control_limits WHERE resource_id = 'R-ver'"
        )
        .await,
        2
    );
    assert_eq!(
        scalar_i64(
            &t0.pool,
            "SELECT version::bigint FROM v_spc_control_limits WHERE resource_id = 'R-ver' AND in_force"
        )
        .await,
        2
    );
}

#[tokio::test]
async fn only_admins_set_limits_and_viewers_read_them() {
    let t0 = db().await;
    let app = app(&t0.pool);
    readings(&t0.pool, "R-role", "temp", 0, &baseline_values()).await;
    let viewer = mes_api::store::tokens::create(&t0.pool, "kiosk", Role::Viewer, None)
        .await
        .unwrap();
    let operator = mes_api::store::tokens::create(&t0.pool, "hmi", Role::Operator, None)
        .await
        .unwrap();
    let b = body("R-role", 0, 32);
    post_as(&app, &viewer, &b)
        .await
        .assert_problem(403, None, "viewer sets limits");
    post_as(&app, &operator, &b)
        .await
        .assert_problem(403, None, "operator sets limits");
    call(
        &app,
        Method::POST,
        "/spc/limits",
        Some(&b.to_string()),
        &[("authorization", "")],
    )
    .await
    .assert_problem(401, None, "no token");
    assert_eq!(
        scalar_i64(&t0.pool, "SELECT count(*) FROM spc_control_limits").await,
        0
    );
    set_i_mr(&app, "R-role", "temp", 0, 32).await;
    let auth = format!("Bearer {viewer}");
    for uri in [
        "/spc/limits?resource_id=R-role&sensor=temp".to_owned(),
        format!(
            "/spc?resource_id=R-role&sensor=temp&from={}&to={}",
            iso(0),
            iso(32)
        ),
    ] {
        let a = call(&app, Method::GET, &uri, None, &[("authorization", &auth)]).await;
        assert_eq!(a.status, 200, "{uri}: {}", a.body);
    }
}

/// Every bad baseline or query is a 4xx problem naming the field; nothing is stored.
#[tokio::test]
async fn bad_baselines_and_queries_are_problems_naming_the_field() {
    let t0 = db().await;
    let app = app(&t0.pool);
    readings(&t0.pool, "R-bad", "temp", 0, &baseline_values()[..19]).await;
    readings(&t0.pool, "R-flat", "temp", 0, &[7.0; 25]).await;
    readings(
        &t0.pool,
        "R-huge",
        "temp",
        0,
        &[f64::MAX, -f64::MAX].repeat(10),
    )
    .await;
    let from_now = |hours: i64| {
        (chrono::Utc::now() + chrono::Duration::hours(hours))
            .format("%Y-%m-%dT%H:%M:%SZ")
            .to_string()
    };
    let with = |patch: Value| {
        let mut b = body("R-bad", 0, 100);
        for (k, v) in patch.as_object().unwrap() {
            b[k] = v.clone();
        }
        b
    };
    let cases: Vec<(Value, u16, &str, &str)> = vec![
        (with(json!({})), 422, "baseline_from", "holds 19 readings"),
        (
            with(json!({"baseline_from": iso(100), "baseline_to": iso(0)})),
            422,
            "baseline_from",
            "is not before",
        ),
        (
            with(json!({"baseline_to": iso(0)})),
            422,
            "baseline_from",
            "is not before",
        ),
        (
            with(json!({"baseline_from": iso(-40 * 86400)})),
            422,
            "baseline_from",
            "window longer than",
        ),
        (
            with(json!({"baseline_from": iso(5000), "baseline_to": iso(6000)})),
            422,
            "baseline_from",
            "holds 0 readings",
        ),
        (
            with(json!({"baseline_from": from_now(-1), "baseline_to": from_now(1)})),
            422,
            "baseline_to",
            "is in the future",
        ),
        (
            with(json!({"resource_id": "R-flat"})),
            422,
            "baseline_from",
            "do not vary",
        ),
        (
            with(json!({"resource_id": "R-huge"})),
            422,
            "baseline_from",
            "too large",
        ),
        (
            with(json!({"subgroup_size": 5})),
            422,
            "subgroup_size",
            "leave subgroup_size out",
        ),
        (
            with(json!({"chart": "xbar_r"})),
            422,
            "subgroup_size",
            "needs a subgroup_size",
        ),
        (
            with(json!({"chart": "xbar_s", "subgroup_size": 1})),
            422,
            "subgroup_size",
            "2 to 25",
        ),
        (
            with(json!({"chart": "xbar_s", "subgroup_size": 26})),
            422,
            "subgroup_size",
            "2 to 25",
        ),
        (
            with(json!({"chart": "xbar_s", "subgroup_size": 300})),
            422,
            "subgroup_size",
            "u8",
        ),
        (
            with(json!({"chart": "xbar_r", "subgroup_size": 5})),
            422,
            "baseline_from",
            "complete subgroups of 5",
        ),
        (with(json!({"chart": "p"})), 422, "chart", "unknown variant"),
        (with(json!({"sensor": ""})), 422, "sensor", "empty"),
        (
            with(json!({"baseline_from": "yesterday"})),
            422,
            "baseline_from",
            "input",
        ),
        (
            with(json!({"colour": "red"})),
            422,
            "colour",
            "unknown field",
        ),
    ];
    for (b, status, field, detail) in cases {
        let a = post(&app, "/spc/limits", b.clone()).await;
        a.assert_problem(status, Some(field), &b.to_string());
        let text = a.body["detail"].as_str().unwrap();
        assert!(text.contains(detail), "{b}: {text}");
    }
    assert_eq!(
        scalar_i64(&t0.pool, "SELECT count(*) FROM spc_control_limits").await,
        0
    );

    let queries: &[(&str, u16, Option<&str>)] = &[
        ("/spc/limits", 400, Some("resource_id")),
        ("/spc/limits?resource_id=R", 400, Some("sensor")),
        (
            "/spc/limits?resource_id=R&sensor=temp&chart=p",
            400,
            Some("chart"),
        ),
        ("/spc/limits?resource_id=R&sensor=temp&x=1", 400, Some("x")),
        (
            "/spc?resource_id=R&sensor=temp&chart=imr",
            400,
            Some("chart"),
        ),
        (
            "/spc?resource_id=R&sensor=temp&subgroup_size=5",
            400,
            Some("subgroup_size"),
        ),
        (
            "/spc?resource_id=R&sensor=temp&chart=i_mr&subgroup_size=5",
            400,
            Some("subgroup_size"),
        ),
        (
            "/spc?resource_id=R&sensor=temp&chart=xbar_r&subgroup_size=1",
            400,
            Some("subgroup_size"),
        ),
        (
            "/spc?resource_id=R&sensor=temp&chart=xbar_r&subgroup_size=26",
            400,
            Some("subgroup_size"),
        ),
        (
            "/spc?resource_id=R&sensor=temp&limits_source=baseline",
            400,
            Some("limits_source"),
        ),
        (
            "/spc?resource_id=R&sensor=temp&limits_source=stored",
            404,
            None,
        ),
    ];
    for (uri, status, field) in queries {
        get(&app, uri)
            .await
            .assert_problem(*status, *field, &format!("GET {uri}"));
    }
    // Empty optional parameters are absent ones.
    let a = get(
        &app,
        "/spc?resource_id=R&sensor=temp&chart=&subgroup_size=&limits_source=",
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.body["chart"], "i_mr");
}

/// A retried POST with its Idempotency-Key gets the first answer and stores nothing more; the
/// key with another body is refused. Concurrent settings of one key get distinct versions.
#[tokio::test]
async fn retries_replay_and_concurrent_settings_number_their_versions() {
    let t0 = db().await;
    let app = app(&t0.pool);
    readings(&t0.pool, "R-key", "temp", 0, &baseline_values()).await;
    let b = body("R-key", 0, 32);
    let first = post_with_key(&app, "/spc/limits", b.clone(), "limits-1").await;
    assert_eq!(first.status, 201, "{}", first.body);
    let again = post_with_key(&app, "/spc/limits", b.clone(), "limits-1").await;
    assert_eq!(again.status, 201);
    assert_eq!(again.headers["idempotent-replayed"], "true");
    assert_eq!(again.body, first.body);
    post_with_key(&app, "/spc/limits", body("R-key", 0, 31), "limits-1")
        .await
        .assert_problem(422, Some("Idempotency-Key"), "key reused");
    assert_eq!(
        scalar_i64(&t0.pool, "SELECT count(*) FROM spc_control_limits").await,
        1
    );

    let tasks: Vec<_> = (0..4)
        .map(|_| {
            let (app, b) = (app.clone(), b.clone());
            tokio::spawn(async move { post(&app, "/spc/limits", b).await })
        })
        .collect();
    let mut versions = Vec::new();
    for task in tasks {
        let a = task.await.unwrap();
        assert_eq!(a.status, 201, "{}", a.body);
        versions.push(a.body["version"].as_i64().unwrap());
    }
    versions.sort_unstable();
    assert_eq!(versions, [2, 3, 4, 5]);
}

/// As the least-privilege logins: `edge_mes_api` sets and reads limits; `edge_mes_mes_reader`
/// reads the view, not the table, and writes nothing.
#[tokio::test]
async fn the_api_login_sets_limits_and_the_mes_reader_reads_the_view() {
    let t0 = db().await;
    readings(&t0.pool, "R-lp", "temp", 0, &baseline_values()).await;
    let login = |group: &'static str| {
        let (owner, url) = (t0.pool.clone(), t0.url.clone());
        async move {
            let name = testkit::unique_name("spc_login");
            sqlx::query(&format!(
                "CREATE ROLE {name} LOGIN PASSWORD 'pw' IN ROLE {group}"
            ))
            .execute(&owner)
            .await
            .unwrap();
            mes_api::db::connect(&testkit::with_login(&url, &name, "pw"), 4)
                .await
                .unwrap()
        }
    };
    let api = login("edge_mes_api").await;
    let app = mes_api::app(AppState::new(
        api,
        None,
        Settings {
            default_site: "BKK".to_owned(),
        },
    ));
    let set = post(&app, "/spc/limits", body("R-lp", 0, 32)).await;
    assert_eq!(set.status, 201, "{}", set.body);
    assert!(set.body["set_by"].is_null(), "no authentication, no actor");
    let listed = get(&app, "/spc/limits?resource_id=R-lp&sensor=temp").await;
    assert_eq!(listed.body["versions"].as_array().map(Vec::len), Some(1));
    let chart = get(
        &app,
        &format!(
            "/spc?resource_id=R-lp&sensor=temp&from={}&to={}",
            iso(0),
            iso(32)
        ),
    )
    .await;
    assert_eq!(chart.body["limits_source"], "stored", "{}", chart.body);

    let reader = login("edge_mes_mes_reader").await;
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM v_spc_control_limits WHERE in_force")
        .fetch_one(&reader)
        .await
        .unwrap();
    assert_eq!(n, 1);
    for sql in [
        "SELECT * FROM spc_control_limits",
        "DELETE FROM spc_control_limits",
    ] {
        match sqlx::query(sql).execute(&reader).await {
            Err(sqlx::Error::Database(db)) => {
                assert_eq!(db.code().as_deref(), Some("42501"), "{sql}")
            }
            other => panic!("{sql}: expected permission denied, got {other:?}"),
        }
    }
    // Versions are history: the API's login may add them, never change or remove them.
    let api = login("edge_mes_api").await;
    for sql in [
        "UPDATE spc_control_limits SET ucl = ucl + 1",
        "DELETE FROM spc_control_limits",
    ] {
        match sqlx::query(sql).execute(&api).await {
            Err(sqlx::Error::Database(db)) => {
                assert_eq!(db.code().as_deref(), Some("42501"), "{sql}")
            }
            other => panic!("{sql}: expected permission denied, got {other:?}"),
        }
    }
}
