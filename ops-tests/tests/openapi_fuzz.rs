//! mes-api against its own OpenAPI document: Schemathesis (PyPI, pinned in `.ci/tools.sh`)
//! generates requests from `GET /openapi.json` and sends them to the real binary, served from a
//! private PostgreSQL database (with the demo run) and NATS. Every operation goes through the
//! coverage phase (boundary values of every documented constraint), the fuzzing phase (random
//! schema-valid and schema-invalid requests) and the stateful phase (runs started with
//! `POST /op_run/start`, then the document's links from its `op_run_id` to report, pause, resume,
//! complete, abort and read it). Checks:
//!
//! - `not_a_server_error`: no 5xx;
//! - `status_code_conformance`: every status answered is documented for the operation;
//! - `content_type_conformance`, `response_schema_conformance`: each answer has a documented
//!   media type and matches its schema (the board's event stream event by event, its `data`
//!   against `BoardSnapshot`);
//! - `positive_data_acceptance`: a request the document allows is not refused with 400 or 422;
//! - `ignored_auth`: every operation the document says needs a token refuses the request sent
//!   without one, or with a wrong one (the requests themselves carry an admin token).
//!
//! Some refusals follow rules the document states in words because JSON Schema cannot: the
//! server's clock (a time more than 5 minutes ahead), the database (an unknown site or reason
//! code, a time before the run's start), other fields (`from` before `to`, `from` or
//! `window_seconds`), earlier answers (a page cursor is one the API answered for that query). The hooks below drop a `positive_data_acceptance` failure only when the
//! answer is the problem document of one of those rules, by status, type, field and wording; any
//! other refusal of a schema-valid request fails the test. They also shape a few drawn values
//! the server must see as new (an `Idempotency-Key`, a started run's id and resource; each draw
//! is as good as another, but draws repeat) and spell counts and subgroup sizes as integers (`10`, not `10.0`: the
//! API refuses the float spelling, JSON Schema's `integer` admits it, and Schemathesis sends it
//! on purpose).
//!
//! Bounded: a fixed seed and [`MAX_EXAMPLES`] per operation and phase, about a minute on the
//! 2-core machine (a deadline of [`DEADLINE`] stops a run that hangs). A missing Schemathesis
//! fails naming `.ci/tools.sh`, unless `EDGE_MES_SKIP_MISSING_TOOLS=1`.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::process::Command;

use crate::loaded_stack::{create_token, free_addr, stop, wait_healthy};
use crate::static_checks::tool;

const CHECKS: &str = "not_a_server_error,status_code_conformance,content_type_conformance,\
                      response_schema_conformance,positive_data_acceptance,ignored_auth";
const SEED: &str = "20260612";
/// Test cases per operation and phase.
const MAX_EXAMPLES: &str = "20";
/// A run this long hangs; a normal one takes about a minute.
const DEADLINE: Duration = Duration::from_secs(300);

/// `schemathesis.toml`: one event of the board's stream is enough (it never ends on its own);
/// only the document's links drive the stateful phase (the inferred ones make a `GET
/// /board/state` the only entry point, so no run would be started); nothing is cached between
/// runs.
const CONFIG: &str = r#"
max-stream-events = 1

[cache]
enabled = false

[phases.stateful.inference]
algorithms = []
"#;

/// The hooks module (`SCHEMATHESIS_HOOKS`).
const HOOKS: &str = r#"
"""Hooks of ops-tests/tests/openapi_fuzz.rs (see its docs)."""
import atexit
import collections
import itertools
import json
import re
import sys
import uuid

import schemathesis

COUNT_FIELDS = ("good_delta", "scrap_delta", "good_units", "scrap_units", "subgroup_size")

# Refusals for a rule the document states in words: (name, status, problem type, fields, detail).
RULES_BEYOND_THE_SCHEMA = [
    ("time before 2000, before the run's start, pause or latest report", 422,
     "invalid-field", ("started_at", "at", "ended_at", "from", "ts"), r" is before "),
    ("time more than 5 minutes ahead of the server", 422,
     "invalid-field", ("started_at", "at", "ended_at"), r" is in the future \(server time "),
    ("unknown reason code", 422, "invalid-field", ("reason_code",), r"unknown reason code"),
    ("unknown site", 422, "invalid-field", ("site", "site_id"), r"unknown site"),
    ("query window: from not before to, or too long", 422,
     "invalid-field", ("from",), r"is not before to|window longer than"),
    ("from together with window_seconds", 400,
     "malformed-request", ("window_seconds",), r"give either from or window_seconds, not both"),
    ("page cursor not one the API answered for this query", 400,
     "malformed-request", ("cursor",), r"^cursor: (not a cursor|belongs to another query)"),
    ("spc subgroup_size only with a subgroup chart", 400,
     "malformed-request", ("subgroup_size",), r"only with chart=xbar_r or chart=xbar_s"),
    ("spc chart and subgroup_size", 422,
     "invalid-field", ("subgroup_size",), r"leave subgroup_size out|needs a subgroup_size"),
    ("a detected stop's reason must be a reason", 422, "invalid-field", ("reason_code",),
     r"`unassigned` is what a stop has until one is assigned"),
    ("machine-state rule: the fields of its kind, codes and reasons", 422, "invalid-field",
     ("stopped_at_or_below", "stop_codes", "min_stop_seconds"),
     r"required for kind|not for kind|must hold 1 to 256 codes|is not an integer"
     r"|unknown reason code|given twice"),
    ("spc baseline window and its readings", 422, "invalid-field",
     ("baseline_from", "baseline_to"),
     r"is not before baseline_to|window longer than|the baseline holds|do not vary"
     r"|too large for control limits|is in the future \(server time "),
]

_draws = itertools.count(1)
_dropped = collections.Counter()


def _unique(value, max_bytes):
    """`value` with a suffix no other draw has, cut to `max_bytes` bytes of UTF-8."""
    suffix = f"~{next(_draws)}"
    while len((value + suffix).encode()) > max_bytes:
        value = value[:-1]
    return value + suffix


@schemathesis.hook
def before_call(context, case, kwargs):
    for name in list(case.headers or {}):
        if name.lower() == "idempotency-key" and case.headers[name]:
            case.headers[name] = _unique(case.headers[name], 255)
    if not isinstance(case.body, dict):
        return
    if case.operation.path == "/op_run/start":
        if case.body.get("op_run_id"):
            case.body["op_run_id"] = str(uuid.uuid4())
        if isinstance(case.body.get("resource_id"), str) and case.body["resource_id"]:
            case.body["resource_id"] = _unique(case.body["resource_id"], 128)
    for field in COUNT_FIELDS:
        value = case.body.get(field)
        if isinstance(value, float) and value.is_integer():
            case.body[field] = int(value)


@schemathesis.hook
def filter_failure(context, failure, case, response):
    if type(failure).__name__ != "RejectedPositiveData":
        return True
    try:
        problem = json.loads(response.content)
    except ValueError:
        return True
    for name, status, kind, fields, detail in RULES_BEYOND_THE_SCHEMA:
        if (
            response.status_code == status
            and problem.get("type") == f"urn:edge-mes:problem:{kind}"
            and problem.get("field") in fields
            and re.search(detail, problem.get("detail", ""))
        ):
            _dropped[name] += 1
            return False
    return True


@atexit.register
def _summary():
    for name, count in sorted(_dropped.items()):
        print(f"refused for a rule beyond the schema: {count} x {name}", file=sys.stderr)
"#;

/// The version `.ci/tools.sh` pins (`schemathesis=X.Y.Z`).
fn pinned_version() -> String {
    let script = std::fs::read_to_string(testkit::bins::workspace_root().join(".ci/tools.sh"))
        .expect("read .ci/tools.sh");
    script
        .lines()
        .find_map(|l| l.strip_prefix("schemathesis="))
        .expect(".ci/tools.sh pins schemathesis=X.Y.Z")
        .trim()
        .to_owned()
}

async fn run_to_end(mut command: Command, what: &str) {
    let status = tokio::time::timeout(Duration::from_secs(120), command.status())
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within 120 s"))
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    assert!(status.success(), "{what} exited with {status}");
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[tokio::test]
async fn requests_generated_from_the_openapi_document_get_documented_answers() {
    let Some(schemathesis) = tool("schemathesis") else {
        return;
    };
    let pinned = pinned_version();
    let version = std::process::Command::new(&schemathesis)
        .arg("--version")
        .output()
        .expect("run schemathesis --version");
    let version = String::from_utf8_lossy(&version.stdout).trim().to_owned();
    assert_eq!(
        version,
        format!("schemathesis, version {pinned}"),
        "{} is not the version .ci/tools.sh pins; run .ci/tools.sh",
        schemathesis.display()
    );

    let pg = testkit::pg_for_test().await.unwrap();
    let nats = testkit::nats_for_test().await.unwrap();
    let tag = testkit::unique_name("fuzz");
    let db_url = pg.create_database(&tag).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let api_log = dir.path().join("mes-api.log");
    let api = |args: &[&str]| {
        let mut c = Command::new(testkit::bins::bin_path("mes-api").unwrap());
        c.args(args)
            .env("DATABASE_URL", &db_url)
            .env("NATS_URL", nats.url())
            .env("EDGE_NAMESPACE", &tag)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&api_log).unwrap())
            .kill_on_drop(true);
        c
    };
    // The demo run: KPI, trace and board answers with data in them.
    run_to_end(api(&["seed-demo"]), "mes-api seed-demo").await;
    // Admin: every operation is open to it; the requests without a token are `ignored_auth`'s.
    let token = create_token(api(&[
        "token",
        "create",
        "--role",
        "admin",
        "--name",
        "schemathesis",
    ]))
    .await
    .unwrap();
    let addr = free_addr().unwrap();
    let mut server = api(&["--listen", &addr.to_string()])
        .env("API_AUTH", "tokens")
        // Generated writes come faster than the per-token default allows.
        .env("API_WRITE_RATE_PER_TOKEN", "0")
        .env("API_METRICS_LISTEN", "off")
        .spawn()
        .expect("start mes-api");
    wait_healthy(addr).await.unwrap();

    std::fs::write(dir.path().join("schemathesis.toml"), CONFIG).unwrap();
    std::fs::write(dir.path().join("edge_mes_fuzz_hooks.py"), HOOKS).unwrap();
    let started = Instant::now();
    let mut fuzz = Command::new(&schemathesis);
    fuzz.current_dir(dir.path())
        .env("PYTHONPATH", dir.path())
        .env("SCHEMATHESIS_HOOKS", "edge_mes_fuzz_hooks")
        .env("NO_COLOR", "1")
        .arg("--config-file")
        .arg(dir.path().join("schemathesis.toml"))
        .args(["run", &format!("http://{addr}/openapi.json")])
        .args(["--checks", CHECKS])
        .args(["--header", &format!("Authorization: Bearer {token}")])
        .args(["--seed", SEED])
        .args(["--max-examples", MAX_EXAMPLES])
        .args(["--workers", "1"])
        .args(["--request-timeout", "30"])
        // Nothing kept between runs; reproductions printed as sent.
        .args(["--generation-database", "none"])
        .args(["--output-sanitize", "false"])
        .arg("--no-color")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let output = tokio::time::timeout(DEADLINE, fuzz.output()).await;
    stop(&mut server).await;
    let output = output
        .unwrap_or_else(|_| panic!("schemathesis did not finish within {DEADLINE:?}"))
        .expect("run schemathesis");
    let report = format!(
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "schemathesis found requests the document and the API disagree on \
         ({}):\n{report}\n--- mes-api log (tail) ---\n{}",
        output.status,
        tail(&api_log, 40)
    );
    // Every operation was tested, and the stateful phase knew the six links of a started run.
    let field = |prefix: &str| {
        report
            .lines()
            .find_map(|l| l.trim().strip_prefix(prefix))
            .map(str::trim)
            .unwrap_or_default()
            .to_owned()
    };
    let selected = field("Selected:");
    assert!(
        selected
            .split_once('/')
            .is_some_and(|(s, all)| s == all && field("Tested:") == s),
        "not every operation was tested: {report}"
    );
    assert!(
        report.contains("/ 6 total"),
        "the six links of a started run: {report}"
    );
    eprintln!(
        "schemathesis passed in {:.0} s:\n{}",
        started.elapsed().as_secs_f64(),
        report
            .lines()
            .skip_while(|l| !l.contains("SUMMARY"))
            .take_while(|l| !l.starts_with("refused for a rule"))
            .chain(
                report
                    .lines()
                    .filter(|l| l.starts_with("refused for a rule"))
            )
            .collect::<Vec<_>>()
            .join("\n")
    );
}
