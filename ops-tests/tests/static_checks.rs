//! Static checks of the deploy files: NATS configs and stream definitions, the compose file and
//! Dockerfile (and that they agree: what compose and Kubernetes run is in the image), the systemd
//! units, the Kubernetes overlays, the Prometheus alert rules.
//!
//! Tools: `nats-server`, `systemd-analyze`, `kubectl` (kustomize), `promtool`, and `kubernetes-validate` /
//! `check-jsonschema` from `target/ops-tools/venv` — `.ci/tools.sh` installs what is missing. A
//! check whose tool is not installed fails naming the install command, unless
//! `EDGE_MES_SKIP_MISSING_TOOLS=1` says to skip it (CI never sets it).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use async_nats::jetstream::stream::{self, DiscardPolicy, RetentionPolicy, StorageType};
use protocol::streams;
use regex::Regex;
use serde_yaml::Value;

fn root() -> PathBuf {
    testkit::bins::workspace_root()
}

/// A tool on PATH or in target/ops-tools/venv/bin; `None` (with a message) when missing.
pub fn tool(name: &str) -> Option<PathBuf> {
    let venv = root().join("target/ops-tools/venv/bin").join(name);
    if venv.is_file() {
        return Some(venv);
    }
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(name))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        let install = install_hint(name);
        if std::env::var_os(SKIP_MISSING_TOOLS).is_some_and(|v| v == "1") {
            eprintln!("SKIPPED ({SKIP_MISSING_TOOLS}=1): `{name}` is not installed; {install}");
        } else {
            panic!(
                "`{name}` is not installed: {install} (or set {SKIP_MISSING_TOOLS}=1 to skip \
                 the checks that need it; CI never does)"
            );
        }
    }
    found
}

/// Explicit opt-out for a machine without the checkers: their checks are skipped, loudly.
const SKIP_MISSING_TOOLS: &str = "EDGE_MES_SKIP_MISSING_TOOLS";

fn install_hint(name: &str) -> &'static str {
    match name {
        "nats-server" => "apt-get install nats-server, or run .ci/tools.sh",
        "systemd-analyze" => "apt-get install systemd, or run .ci/tools.sh",
        "kubectl" => "run .ci/tools.sh (kubectl, or Debian's kubernetes-client)",
        "promtool" => "apt-get install prometheus, or run .ci/tools.sh",
        _ => "run .ci/tools.sh (pip install into target/ops-tools/venv)",
    }
}

fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

fn files_under(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|e| e == ext) {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

fn yaml_docs(text: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(text)
        .map(|d| {
            let mut v = <Value as serde::Deserialize>::deserialize(d).unwrap();
            v.apply_merge().unwrap();
            v
        })
        .filter(|v| !v.is_null())
        .collect()
}

fn yaml_file(path: &Path) -> Vec<Value> {
    yaml_docs(&std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
}

// ---------------------------------------------------------------------------------------------
// NATS

/// `$NATS_...` variables a config refers to (nats-server refuses to start without them).
pub fn nats_config_env(conf: &str) -> BTreeSet<String> {
    Regex::new(r"\$(NATS_[A-Z0-9_]+)")
        .unwrap()
        .captures_iter(conf)
        .map(|c| c[1].to_owned())
        .collect()
}

/// Every config is checked with Debian's nats-server (2.9, what our machines run) and with the
/// newer one the gateway tests use; the site gateway's config needs reliable sourcing of work
/// queues (>= 2.14) and is checked with the newer one only.
#[test]
fn every_nats_config_is_valid() {
    let confs = files_under(&root().join("nats"), "conf");
    assert!(confs.len() >= 3, "{confs:?}");
    let debian = PathBuf::from("nats-server");
    assert!(
        testkit::nats::binary_version(&debian).is_some(),
        "nats-server is not installed: apt-get install nats-server (or run .ci/tools.sh)"
    );
    let modern = testkit::nats::modern_binary().unwrap_or_else(|e| panic!("{e:#}"));
    for conf in confs {
        let text = std::fs::read_to_string(&conf).unwrap();
        let needs_modern = text.contains("Needs nats-server >= 2.14");
        let binaries: Vec<&PathBuf> = if needs_modern {
            vec![&modern]
        } else {
            vec![&debian, &modern]
        };
        for nats in binaries {
            let mut cmd = Command::new(nats);
            cmd.arg("-t").arg("-c").arg(&conf);
            for var in nats_config_env(&text) {
                let value = match var.as_str() {
                    "NATS_HUB_URL" => "nats-leaf://leaf:secret@127.0.0.1:7422",
                    "NATS_SITE" => "bkk",
                    _ => "placeholder-value",
                };
                cmd.env(var, value);
            }
            let out = run(&mut cmd);
            let text = String::from_utf8_lossy(&out.stderr).to_string()
                + &String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success() && text.contains("is valid"),
                "{} -t -c {}: {text}",
                nats.display(),
                conf.display()
            );
        }
    }
}

pub fn stream_file(name: &str) -> stream::Config {
    let path = root().join("nats/streams").join(name);
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[tokio::test]
async fn stream_definitions_match_the_protocol_and_the_server_accepts_them() {
    let readings = stream_file("READINGS.json");
    assert_eq!(readings.name, streams::READINGS_STREAM);
    assert_eq!(
        readings.subjects,
        vec![streams::READINGS_SUBJECTS.to_owned()]
    );
    assert_eq!(readings.discard, DiscardPolicy::New);
    assert_eq!(readings.storage, StorageType::File);
    assert_eq!(readings.max_age, streams::READINGS_MAX_AGE);
    assert_eq!(readings.max_bytes, streams::READINGS_MAX_BYTES);
    assert_eq!(readings.duplicate_window, streams::DUPLICATE_WINDOW);

    let dlq = stream_file("READINGS_DLQ.json");
    assert_eq!(dlq.name, streams::DLQ_STREAM);
    assert_eq!(dlq.subjects, vec![streams::DLQ_SUBJECTS.to_owned()]);
    assert_eq!(dlq.discard, DiscardPolicy::Old);
    assert_eq!(dlq.max_age, streams::DLQ_MAX_AGE);
    assert_eq!(dlq.duplicate_window, streams::DUPLICATE_WINDOW);

    let op_run = stream_file("OP_RUN.json");
    assert_eq!(op_run.name, streams::OP_RUN_STREAM);
    assert_eq!(op_run.subjects, vec![streams::OP_RUN_SUBJECTS.to_owned()]);
    assert_eq!(op_run.discard, DiscardPolicy::Old);
    assert_eq!(op_run.max_age, streams::OP_RUN_MAX_AGE);
    assert_eq!(op_run.duplicate_window, streams::OP_RUN_DUPLICATE_WINDOW);

    assert_eq!(readings.retention, RetentionPolicy::WorkQueue);
    assert_eq!(dlq.max_bytes, streams::DLQ_MAX_BYTES);
    let site = stream_file("site-gateway/READINGS.json");
    assert_eq!(site.subjects, readings.subjects);
    assert_eq!(site.discard, DiscardPolicy::New);
    assert_eq!(site.retention, RetentionPolicy::WorkQueue);

    if tool("nats-server").is_none() {
        return;
    }
    let server = testkit::NatsServer::start().await.unwrap();
    let js = async_nats::jetstream::new(async_nats::connect(server.url()).await.unwrap());
    for config in [readings, dlq, op_run] {
        let name = config.name.clone();
        let mut created = js
            .create_stream(config.clone())
            .await
            .unwrap_or_else(|e| panic!("nats-server refused stream {name}: {e}"));
        let info = created.info().await.unwrap();
        assert_eq!(info.config.subjects, config.subjects, "{name}");
        assert_eq!(info.config.max_age, config.max_age, "{name}");
        assert_eq!(info.config.discard, config.discard, "{name}");
    }
}

// ---------------------------------------------------------------------------------------------
// Compose and Dockerfile

/// `${VAR:-default}` / `${VAR-default}` / `${VAR}` with compose's defaults (unset variables).
fn compose_interpolate(s: &str) -> String {
    Regex::new(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?-([^}]*))?\}")
        .unwrap()
        .replace_all(s, |c: &regex::Captures| {
            c.get(2).map_or(String::new(), |m| m.as_str().to_owned())
        })
        .into_owned()
}

/// Third-party images are pinned to an exact release (`x.y.z` in the tag), so a `compose up` next
/// month runs what was tested; only the project's own image (built here) is exempt.
#[test]
fn third_party_images_are_pinned_to_exact_versions() {
    let exact = Regex::new(r"^[a-z0-9./_-]+:[A-Za-z-]*\d+\.\d+\.\d+(-[a-z0-9.-]+)?$").unwrap();
    let mut images = Vec::new();
    let compose = &yaml_file(&root().join("deploy/compose.yaml"))[0];
    for (name, svc) in compose["services"].as_mapping().unwrap() {
        if svc.get("build").is_none() {
            images.push((
                format!("compose {}", name.as_str().unwrap()),
                svc["image"].clone(),
            ));
        }
    }
    let grafana = yaml_file(&root().join("deploy/k8s/components/grafana/grafana.yaml"));
    let deployment = grafana.iter().find(|d| d["kind"] == "Deployment").unwrap();
    images.push((
        "k8s grafana".into(),
        deployment["spec"]["template"]["spec"]["containers"][0]["image"].clone(),
    ));
    let dockerfile = std::fs::read_to_string(root().join("deploy/Dockerfile")).unwrap();
    let build = dockerfile
        .lines()
        .find(|l| l.starts_with("FROM ") && l.contains(" AS build"))
        .expect("Dockerfile: build stage");
    images.push((
        "Dockerfile build stage".into(),
        Value::from(build.split_whitespace().nth(1).unwrap()),
    ));
    assert!(images.len() >= 5, "{images:?}");
    for (what, image) in images {
        let image = image.as_str().unwrap_or_else(|| panic!("{what}: no image"));
        assert!(
            exact.is_match(image),
            "{what}: image {image} is not pinned to an exact version"
        );
    }
}

#[test]
fn compose_file_parses_and_every_referenced_file_exists() {
    let deploy = root().join("deploy");
    let docs = yaml_file(&deploy.join("compose.yaml"));
    assert_eq!(docs.len(), 1);
    let compose = &docs[0];
    let services = compose["services"].as_mapping().expect("services");
    let names: BTreeSet<String> = services
        .keys()
        .filter_map(|k| k.as_str().map(String::from))
        .collect();
    for s in [
        "timescaledb",
        "nats",
        "mes-api",
        "ingest-worker",
        "edge-shipper",
        "archiver",
        "grafana",
    ] {
        assert!(names.contains(s), "service {s} missing: {names:?}");
    }
    assert!(compose["services"]["timescaledb"]["image"]
        .as_str()
        .unwrap()
        .starts_with("timescale/timescaledb:"));
    assert_eq!(
        compose["services"]["ingest-worker"]["deploy"]["replicas"],
        2
    );

    let mut checked = 0;
    for (name, svc) in services {
        let name = name.as_str().unwrap();
        // Build context and Dockerfile.
        if let Some(build) = svc.get("build") {
            let context = deploy.join(build["context"].as_str().unwrap());
            let dockerfile = context.join(build["dockerfile"].as_str().unwrap_or("Dockerfile"));
            assert!(
                dockerfile.is_file(),
                "{name}: {} missing",
                dockerfile.display()
            );
            checked += 1;
        } else {
            assert!(svc["image"].is_string(), "{name}: neither image nor build");
        }
        // Bind mounts: every host path exists (for each value its variable may take).
        for v in svc["volumes"].as_sequence().into_iter().flatten() {
            let spec = v.as_str().unwrap();
            // Every value its variable may take (the data source flavour), else the default.
            let specs: Vec<String> = if spec.contains("${GRAFANA_PG_FLAVOR") {
                ["timescaledb", "postgresql"]
                    .iter()
                    .map(|f| spec.replace("${GRAFANA_PG_FLAVOR:-timescaledb}", f))
                    .collect()
            } else {
                vec![compose_interpolate(spec)]
            };
            for spec in specs {
                let host = spec.split(':').next().unwrap();
                if !(host.starts_with('.') || host.starts_with('/')) {
                    assert!(
                        compose["volumes"].get(host).is_some(),
                        "{name}: named volume {host} not declared"
                    );
                    continue;
                }
                let path = deploy.join(host);
                assert!(path.exists(), "{name}: mounted {} missing", path.display());
                checked += 1;
            }
        }
        // Start order: a condition service_healthy needs a health check on that service.
        if let Some(deps) = svc["depends_on"].as_mapping() {
            for (dep, cond) in deps {
                let dep = dep.as_str().unwrap();
                assert!(names.contains(dep), "{name} depends on unknown {dep}");
                if cond["condition"] == "service_healthy" {
                    assert!(
                        services[dep].get("healthcheck").is_some(),
                        "{name} waits for {dep} to be healthy, which has no healthcheck"
                    );
                }
                // A one-shot job (the migrations) must not be restarted, or it never completes.
                if cond["condition"] == "service_completed_successfully" {
                    assert_eq!(
                        services[dep]["restart"], "no",
                        "{name} waits for {dep} to complete, which restarts"
                    );
                }
            }
        }
        let one_shot = svc["restart"] == "no";
        assert!(
            one_shot || svc.get("healthcheck").is_some(),
            "{name}: no healthcheck"
        );
    }
    assert!(checked >= 10, "only {checked} references checked");
    assert!(root().join("hotdata/sample_readings.jsonl").is_file());

    // The compose specification's JSON schema (vendored in check-jsonschema), offline.
    if let Some(checker) = tool("check-jsonschema") {
        let out = run(Command::new(checker)
            .args(["--builtin-schema", "vendor.compose-spec"])
            .arg(deploy.join("compose.yaml")));
        assert!(
            out.status.success(),
            "compose.yaml does not match the compose spec: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// The port of a compose health check that requests `GET /...` through bash's /dev/tcp.
fn healthcheck_port(svc: &Value) -> Option<u16> {
    let test = svc["healthcheck"]["test"].as_sequence()?;
    let script = test.last()?.as_str()?;
    Regex::new(r"/dev/tcp/127\.0\.0\.1/(\d+)")
        .unwrap()
        .captures(script)
        .map(|c| c[1].parse().unwrap())
}

/// The long-running services log in to PostgreSQL as their own least-privilege logins, which
/// deploy/compose/initdb creates in the group role the migrations grant to, with the password
/// variable (and default) the service's URL uses; only the one-shot jobs use the schema's owner.
#[test]
fn compose_services_log_in_with_their_own_least_privilege_logins() {
    let compose = &yaml_file(&root().join("deploy/compose.yaml"))[0];
    let services = &compose["services"];
    let script =
        std::fs::read_to_string(root().join("deploy/compose/initdb/20-service-logins.sh")).unwrap();
    let migrations: String = files_under(&root().join("db/migrations"), "sql")
        .iter()
        .map(|f| std::fs::read_to_string(f).unwrap())
        .collect();
    // login -> (psql variable, group role)
    let logins: BTreeMap<String, (String, String)> =
        Regex::new(r"CREATE ROLE (\w+) LOGIN PASSWORD :'(\w+)' IN ROLE (\w+);")
            .unwrap()
            .captures_iter(&script)
            .map(|c| (c[1].to_owned(), (c[2].to_owned(), c[3].to_owned())))
            .collect();
    // psql variable -> environment variable of the database container
    let psql_vars: BTreeMap<String, String> = Regex::new(r#"-v (\w+)="\$(\w+)""#)
        .unwrap()
        .captures_iter(&script)
        .map(|c| (c[1].to_owned(), c[2].to_owned()))
        .collect();
    let url = Regex::new(r"^postgres://(\w+):\$\{(\w+):-([^}]*)\}@timescaledb:5432/").unwrap();
    let expected_group = BTreeMap::from([
        ("mes-api", "edge_mes_api"),
        ("ingest-worker", "edge_mes_worker"),
        ("archiver", "edge_mes_archiver"),
    ]);
    let mut checked = BTreeSet::new();
    for (name, svc) in services.as_mapping().unwrap() {
        let name = name.as_str().unwrap();
        let Some(database_url) = svc["environment"]["DATABASE_URL"].as_str() else {
            continue;
        };
        let c = url
            .captures(database_url)
            .unwrap_or_else(|| panic!("compose {name}: DATABASE_URL {database_url}"));
        let (login, var, default) = (&c[1], &c[2], &c[3]);
        if login == "postgres" {
            assert_eq!(
                svc["restart"], "no",
                "compose {name}: a long-running service logs in as the schema's owner"
            );
            continue;
        }
        assert_eq!(
            svc["environment"]["DB_MIGRATE"], "never",
            "compose {name}: a least-privilege login only checks the migrations"
        );
        let (psql_var, group) = logins
            .get(login)
            .unwrap_or_else(|| panic!("compose {name}: login {login} is not created by initdb"));
        if let Some(want) = expected_group.get(name) {
            assert_eq!(group, want, "compose {name}: login {login}");
            checked.insert(name);
        }
        assert!(
            script.contains(&format!("CREATE ROLE {group} NOLOGIN;")),
            "initdb: group role {group} is not created before the migrations"
        );
        assert!(
            migrations.contains(&format!("TO {group}")),
            "no migration grants anything to {group}"
        );
        assert_eq!(
            psql_vars.get(psql_var).map(String::as_str),
            Some(var),
            "compose {name}: the login's password comes from ${var}"
        );
        assert_eq!(
            services["timescaledb"]["environment"][var].as_str(),
            Some(format!("${{{var}:-{default}}}").as_str()),
            "compose timescaledb: {var} with the default of {name}'s URL"
        );
    }
    assert_eq!(checked.len(), expected_group.len(), "{checked:?}");
}

/// The archiver in compose: `run` with metrics on the port its health check asks, the local
/// archive on a named volume, started after the migrations.
#[test]
fn compose_archiver_archives_to_a_volume_and_is_checked_on_its_metrics() {
    let compose = &yaml_file(&root().join("deploy/compose.yaml"))[0];
    let svc = &compose["services"]["archiver"];
    assert_eq!(svc["command"][0], "edge-mes-archiver");
    assert_eq!(svc["command"][1], "run");
    let env = &svc["environment"];
    let metrics = env["ARCHIVER_METRICS_ADDR"]
        .as_str()
        .expect("metrics address");
    let port: u16 = metrics.rsplit_once(':').unwrap().1.parse().unwrap();
    assert_eq!(healthcheck_port(svc), Some(port), "health check port");
    let target = compose_interpolate(env["ARCHIVER_TARGET"].as_str().unwrap());
    let mounted = svc["volumes"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .any(|v| {
            let parts: Vec<&str> = v.split(':').collect();
            parts[1] == target && compose["volumes"].get(parts[0]).is_some()
        });
    assert!(mounted, "ARCHIVER_TARGET {target} is not on a named volume");
    assert_eq!(
        svc["depends_on"]["migrate"]["condition"],
        "service_completed_successfully"
    );
    assert_eq!(svc["restart"], "unless-stopped");
}

/// What the Dockerfile builds and installs.
struct ImageContents {
    /// Packages of `cargo build ... -p <package>`.
    packages: BTreeSet<String>,
    /// Binaries copied from `target/release/` into the image.
    binaries: BTreeSet<String>,
    /// Directories the final stage creates for the non-root user (its home and `chown edge:edge`).
    user_dirs: BTreeSet<String>,
}

fn image_contents() -> ImageContents {
    let text = std::fs::read_to_string(root().join("deploy/Dockerfile")).unwrap();
    // One logical line per instruction.
    let text = text.replace("\\\n", " ");
    let words = |re: &str| -> BTreeSet<String> {
        let re = Regex::new(re).unwrap();
        let found: BTreeSet<String> = text
            .lines()
            .flat_map(|l| {
                re.captures_iter(l)
                    .map(|c| c[1].to_owned())
                    .collect::<Vec<_>>()
            })
            .collect();
        assert!(!found.is_empty(), "Dockerfile: nothing matches {re}");
        found
    };
    let build = text
        .lines()
        .find(|l| l.contains("cargo build --release"))
        .expect("Dockerfile: cargo build --release");
    let cargo_build = build
        .split("&&")
        .find(|c| c.contains("cargo build"))
        .unwrap();
    let packages = Regex::new(r"-p\s+([A-Za-z0-9_-]+)")
        .unwrap()
        .captures_iter(cargo_build)
        .map(|c| c[1].to_owned())
        .collect();
    let chowned = words(r"chown\s+edge:edge\s+([^&]+)");
    let mut user_dirs: BTreeSet<String> = chowned
        .iter()
        .flat_map(|dirs| dirs.split_whitespace().map(str::to_owned))
        .collect();
    user_dirs.extend(words(r"--home-dir\s+(\S+)\s+--create-home"));
    ImageContents {
        packages,
        binaries: words(r"target/release/([A-Za-z0-9_-]+)"),
        user_dirs,
    }
}

/// Binaries of each workspace package (`cargo metadata --no-deps`).
fn workspace_binaries() -> BTreeMap<String, BTreeSet<String>> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = run(Command::new(cargo)
        .args([
            "metadata",
            "--no-deps",
            "--offline",
            "--format-version",
            "1",
        ])
        .current_dir(root()));
    assert!(
        out.status.success(),
        "cargo metadata: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    meta["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let bins = p["targets"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|t| t["kind"].as_array().unwrap().iter().any(|k| k == "bin"))
                .map(|t| t["name"].as_str().unwrap().to_owned())
                .collect();
            (p["name"].as_str().unwrap().to_owned(), bins)
        })
        .collect()
}

#[test]
fn dockerfile_builds_every_service_binary_into_a_small_non_root_image() {
    let text = std::fs::read_to_string(root().join("deploy/Dockerfile")).unwrap();
    let stages: Vec<&str> = text
        .lines()
        .filter(|l| l.trim_start().to_ascii_uppercase().starts_with("FROM "))
        .collect();
    assert!(stages.len() >= 2, "not multi-stage: {stages:?}");
    let last = text.rsplit_once("\nFROM ").map(|(_, s)| s).unwrap();
    assert!(
        !last.starts_with("rust"),
        "the final image must not carry the compiler: FROM {}",
        last.lines().next().unwrap()
    );
    assert!(text.contains(
        "cargo build --release --locked -p edge-shipper -p ingest-worker -p mes-api -p edge-mes-sim -p edge-mes-archiver"
    ));
    assert!(
        last.contains("COPY --from="),
        "final stage copies the binaries"
    );
    let user = last
        .lines()
        .rev()
        .find_map(|l| l.trim().strip_prefix("USER "))
        .expect("final stage sets USER");
    assert!(
        !user.starts_with("root") && !user.starts_with("0"),
        "USER {user}"
    );
    assert!(root().join("deploy/Dockerfile.dockerignore").is_file());

    // Every binary of every package built is in the image, and nothing else is copied.
    let image = image_contents();
    let workspace = workspace_binaries();
    let mut built = BTreeSet::new();
    for p in &image.packages {
        let bins = workspace
            .get(p)
            .unwrap_or_else(|| panic!("Dockerfile builds {p}, not a workspace package"));
        built.extend(bins.iter().cloned());
    }
    assert_eq!(
        image.binaries, built,
        "Dockerfile: binaries copied into the image vs. binaries of the packages built"
    );
    for b in [
        "edge-shipper",
        "ingest-worker",
        "mes-api",
        "edge-mes-sim",
        "edge-mes-archiver",
    ] {
        assert!(image.binaries.contains(b), "the image lacks {b}");
    }
    assert!(
        image.user_dirs.contains("/var/lib/edge-mes/archive"),
        "{:?}",
        image.user_dirs
    );
}

/// The programs compose and Kubernetes start from the project's image are in it, and the
/// directories its non-root user writes in compose exist in the image owned by that user (a named
/// volume starts with the ownership of the directory it is mounted on; without one, the
/// container's own layer is written).
#[test]
fn compose_and_kubernetes_run_only_what_the_image_holds() {
    let image = image_contents();
    let runs = |what: &str, program: &str| {
        // bash is the base image's (the demo's one-shot token script).
        assert!(
            image.binaries.contains(program) || program == "bash",
            "{what} runs {program}, which deploy/Dockerfile does not build"
        );
    };

    let compose = &yaml_file(&root().join("deploy/compose.yaml"))[0];
    let mut compose_runs = 0;
    for (name, svc) in compose["services"].as_mapping().unwrap() {
        let name = name.as_str().unwrap();
        if svc["image"] != "edge-mes:local" {
            continue;
        }
        let program = svc["command"][0]
            .as_str()
            .unwrap_or_else(|| panic!("compose {name}: no command"));
        runs(&format!("compose {name}"), program);
        compose_runs += 1;
        for v in svc["volumes"].as_sequence().into_iter().flatten() {
            let spec = compose_interpolate(v.as_str().unwrap());
            let parts: Vec<&str> = spec.split(':').collect();
            let named = !(parts[0].starts_with('.') || parts[0].starts_with('/'));
            if named && parts.get(2) != Some(&"ro") {
                assert!(
                    image.user_dirs.contains(parts[1]),
                    "compose {name}: volume {} on {}, which the image does not create for its user",
                    parts[0],
                    parts[1]
                );
            }
        }
        for (var, value) in svc["environment"].as_mapping().into_iter().flatten() {
            let var = var.as_str().unwrap();
            let Some(value) = value.as_str().map(compose_interpolate) else {
                continue;
            };
            if (var.ends_with("_DIR") || var == "ARCHIVER_TARGET") && value.starts_with('/') {
                assert!(
                    image.user_dirs.contains(&value),
                    "compose {name}: {var}={value}, which the image does not create for its user"
                );
            }
        }
    }
    assert!(
        compose_runs >= 6,
        "only {compose_runs} compose services checked"
    );

    // Kubernetes: every container of the project's image, in base, components and overlays.
    let mut k8s_runs = 0;
    for file in files_under(&root().join("deploy/k8s"), "yaml") {
        for doc in yaml_file(&file) {
            let spec = &doc["spec"]["template"]["spec"];
            for c in ["initContainers", "containers"]
                .iter()
                .flat_map(|k| spec[*k].as_sequence().into_iter().flatten())
            {
                let image = c["image"].as_str().unwrap_or("");
                if image != "edge-mes" && !image.ends_with("/edge-mes") {
                    continue;
                }
                let program = c["command"][0]
                    .as_str()
                    .or(c["args"][0].as_str())
                    .unwrap_or_else(|| panic!("{}: a container without args", file.display()));
                runs(&file.display().to_string(), program);
                k8s_runs += 1;
            }
        }
    }
    assert!(
        k8s_runs >= 5,
        "only {k8s_runs} Kubernetes containers checked"
    );
}

// ---------------------------------------------------------------------------------------------
// systemd

/// `systemd-analyze verify` on a unit whose `ExecStart` names `/usr/local/bin/<binary>`, after
/// checking that it holds `directives`.
fn unit_verifies_and_is_hardened(unit_path: &Path, binary: &str, directives: &[&str]) {
    let unit = std::fs::read_to_string(unit_path).unwrap();
    let exec = format!("ExecStart=/usr/local/bin/{binary}");
    for directive in directives.iter().copied().chain([
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        exec.as_str(),
    ]) {
        assert!(
            unit.contains(directive),
            "{}: {directive} missing",
            unit_path.display()
        );
    }
    let Some(analyze) = tool("systemd-analyze") else {
        return;
    };
    // verify checks that ExecStart's binary exists: point it at a built one (or at true).
    let built = testkit::bins::bin_path(binary).unwrap_or_else(|_| PathBuf::from("/bin/true"));
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join(unit_path.file_name().unwrap());
    std::fs::write(
        &copy,
        unit.replace(
            &format!("/usr/local/bin/{binary}"),
            &built.display().to_string(),
        ),
    )
    .unwrap();
    let out = run(Command::new(analyze)
        .args(["verify", "--man=no"])
        .arg(&copy));
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Unknown keys and bad values are only warnings (exit 0): any output fails the check.
    assert!(
        out.status.success() && stderr.trim().is_empty(),
        "systemd-analyze verify {}: {stderr}",
        unit_path.display()
    );
}

#[test]
fn edge_shipper_unit_verifies_and_is_hardened() {
    unit_verifies_and_is_hardened(
        &root().join("deploy/edge/edge-shipper.service"),
        "edge-shipper",
        &["Restart=always", "StateDirectory=edge-shipper"],
    );
    assert!(root().join("deploy/edge/README.md").is_file());
}

/// The archiver's unit for a server without containers: its own login (the URL as a credential),
/// the local archive in its state directory, spill files in its private /var/tmp.
#[test]
fn archiver_unit_verifies_and_is_hardened() {
    unit_verifies_and_is_hardened(
        &root().join("deploy/systemd/edge-mes-archiver.service"),
        "edge-mes-archiver",
        &[
            "Restart=always",
            "StateDirectory=edge-mes-archiver",
            "Environment=ARCHIVER_TARGET=/var/lib/edge-mes-archiver/archive",
            "PrivateTmp=yes",
            "Environment=ARCHIVER_SPILL_DIR=/var/tmp",
            "Environment=DATABASE_URL_FILE=%d/database-url",
            "Environment=DB_MIGRATE=never",
            "EnvironmentFile=/etc/edge-mes/edge-mes-archiver.env",
        ],
    );
    assert!(root()
        .join("deploy/systemd/edge-mes-archiver.env")
        .is_file());
}

// ---------------------------------------------------------------------------------------------
// Kubernetes

const KNOWN_KINDS: [(&str, &str); 11] = [
    ("v1", "Namespace"),
    ("v1", "PersistentVolumeClaim"),
    ("apps/v1", "DaemonSet"),
    ("v1", "Service"),
    ("v1", "ConfigMap"),
    ("apps/v1", "Deployment"),
    ("policy/v1", "PodDisruptionBudget"),
    ("networking.k8s.io/v1", "NetworkPolicy"),
    ("autoscaling/v2", "HorizontalPodAutoscaler"),
    ("keda.sh/v1alpha1", "ScaledObject"),
    ("v1", "ServiceAccount"),
];

fn overlays() -> Vec<PathBuf> {
    let mut o: Vec<PathBuf> = std::fs::read_dir(root().join("deploy/k8s/overlays"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("kustomization.yaml").is_file())
        .collect();
    o.sort();
    o
}

/// Without kubectl: the resources every kustomization names exist (files or directories with a
/// kustomization), recursively.
fn check_kustomization_tree(dir: &Path, seen: &mut BTreeSet<PathBuf>) {
    if !seen.insert(dir.to_owned()) {
        return;
    }
    let k = &yaml_file(&dir.join("kustomization.yaml"))[0];
    for key in ["resources", "components"] {
        for r in k[key].as_sequence().into_iter().flatten() {
            let p = dir.join(r.as_str().unwrap());
            if p.is_dir() {
                assert!(
                    p.join("kustomization.yaml").is_file(),
                    "{}: no kustomization",
                    p.display()
                );
                check_kustomization_tree(&p, seen);
            } else {
                assert!(
                    p.is_file(),
                    "{}: resource {} missing",
                    dir.display(),
                    p.display()
                );
                for doc in yaml_file(&p) {
                    assert!(
                        doc["kind"].is_string() && doc["apiVersion"].is_string(),
                        "{}",
                        p.display()
                    );
                }
            }
        }
    }
}

fn check_rendered(overlay: &Path, docs: &[Value]) {
    let label = overlay.display();
    let mut by_kind: BTreeMap<String, Vec<&Value>> = BTreeMap::new();
    for d in docs {
        let api = d["apiVersion"].as_str().unwrap_or("");
        let kind = d["kind"].as_str().unwrap_or("");
        assert!(
            KNOWN_KINDS.contains(&(api, kind)),
            "{label}: unknown kind {api} {kind}"
        );
        assert!(
            d["metadata"]["name"].is_string(),
            "{label}: {kind} without a name"
        );
        by_kind.entry(kind.to_owned()).or_default().push(d);
    }
    // Everything in a namespace the overlay creates, the project's image at the overlay's tag:
    // a component added by an overlay built on another one is outside that one's transformers.
    let namespaces: BTreeMap<&str, &str> = by_kind["Namespace"]
        .iter()
        .map(|n| {
            let labels = &n["metadata"]["labels"];
            (
                n["metadata"]["name"].as_str().unwrap(),
                labels["pod-security.kubernetes.io/enforce"]
                    .as_str()
                    .unwrap_or("privileged"),
            )
        })
        .collect();
    for d in docs.iter().filter(|d| d["kind"] != "Namespace") {
        let ns = d["metadata"]["namespace"].as_str().unwrap_or("");
        assert!(
            namespaces.contains_key(ns),
            "{label}: {} {:?} is in namespace {ns:?}, not one of the overlay's {:?}",
            d["kind"].as_str().unwrap(),
            d["metadata"]["name"],
            namespaces.keys()
        );
    }
    let deployments = &by_kind["Deployment"];
    // Deployments and DaemonSets (the edge shipper) follow the same container rules.
    let workloads: Vec<&&Value> = deployments
        .iter()
        .chain(by_kind.get("DaemonSet").into_iter().flatten())
        .collect();
    let deployment = |name: &str| {
        deployments
            .iter()
            .find(|d| d["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("{label}: Deployment {name} missing"))
    };
    let project_image = deployment("mes-api")["spec"]["template"]["spec"]["containers"][0]["image"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        project_image.contains('/') && project_image.contains(':'),
        "{label}: mes-api's image {project_image} has no registry or tag"
    );
    for d in workloads {
        let name = d["metadata"]["name"].as_str().unwrap();
        let spec = &d["spec"]["template"]["spec"];
        for c in ["initContainers", "containers"]
            .iter()
            .flat_map(|k| spec[*k].as_sequence().into_iter().flatten())
        {
            let image = c["image"].as_str().unwrap();
            if image == "edge-mes" || image.contains("/edge-mes:") {
                assert_eq!(image, project_image, "{label}: {name}'s image");
            }
        }
        // Pod Security admits the pods: hostPath volumes only where the namespace enforces
        // the privileged level (the restricted and baseline levels refuse them), and such a
        // namespace denies traffic by default.
        let ns = d["metadata"]["namespace"].as_str().unwrap_or("");
        let host_path = spec["volumes"]
            .as_sequence()
            .into_iter()
            .flatten()
            .any(|v| !v["hostPath"].is_null());
        if host_path {
            assert_eq!(
                namespaces.get(ns).copied(),
                Some("privileged"),
                "{label}: {name} mounts hostPath volumes in namespace {ns}, whose Pod Security \
                 level refuses them"
            );
            assert!(
                by_kind["NetworkPolicy"].iter().any(|p| {
                    p["metadata"]["namespace"] == ns
                        && p["spec"]["podSelector"]
                            .as_mapping()
                            .is_some_and(|m| m.is_empty())
                        && p["spec"]["policyTypes"]
                            .as_sequence()
                            .is_some_and(|t| t.len() == 2)
                }),
                "{label}: namespace {ns} of {name} has no default-deny NetworkPolicy"
            );
        }
        for c in d["spec"]["template"]["spec"]["containers"]
            .as_sequence()
            .unwrap()
        {
            for r in ["requests", "limits"] {
                for res in ["cpu", "memory"] {
                    if r == "limits" && res == "cpu" && c["resources"][r][res].is_null() {
                        continue;
                    }
                    assert!(
                        !c["resources"][r][res].is_null(),
                        "{label}: {name} has no {r}.{res}"
                    );
                }
            }
            // Secrets by reference: no literal passwords or connection strings with them.
            for e in c["env"].as_sequence().into_iter().flatten() {
                let var = e["name"].as_str().unwrap();
                if var == "DATABASE_URL"
                    || var.contains("PASSWORD")
                    || var.contains("SECRET")
                    || var.contains("ACCESS_KEY")
                {
                    assert!(
                        e["value"].is_null(),
                        "{label}: {name} has {var} as a literal"
                    );
                    assert!(
                        e["valueFrom"]["secretKeyRef"]["name"].is_string(),
                        "{label}: {name} {var} not from a Secret"
                    );
                }
                if let Some(url) = e["value"].as_str() {
                    assert!(
                        !url.contains('@'),
                        "{label}: {name} {var} carries credentials"
                    );
                }
            }
            // Volumes mounted for credentials come from Secrets.
            let volumes = &d["spec"]["template"]["spec"]["volumes"];
            for m in c["volumeMounts"].as_sequence().into_iter().flatten() {
                let v = volumes
                    .as_sequence()
                    .and_then(|vs| vs.iter().find(|v| v["name"] == m["name"]))
                    .unwrap_or_else(|| panic!("{label}: {name} mounts an undeclared volume"));
                if m["name"].as_str().unwrap_or("").contains("creds") {
                    assert!(
                        v["secret"]["secretName"].is_string(),
                        "{label}: {name} creds not from a Secret"
                    );
                }
            }
        }
    }
    let api = &deployment("mes-api")["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(
        api["livenessProbe"]["httpGet"]["path"], "/health",
        "{label}"
    );
    assert_eq!(
        api["readinessProbe"]["httpGet"]["path"], "/ready",
        "{label}"
    );
    deployment("ingest-worker");
    // The edge shipper reaches NATS and is scraped, past its namespace's default deny.
    for ds in by_kind.get("DaemonSet").into_iter().flatten() {
        let labels = &ds["spec"]["template"]["metadata"]["labels"];
        let name = ds["metadata"]["name"].as_str().unwrap();
        assert!(
            policy_ports(&by_kind, labels, "egress").contains(&4222),
            "{label}: no NetworkPolicy lets {name} reach NATS on 4222"
        );
        let metrics = ds["spec"]["template"]["spec"]["containers"][0]["ports"]
            .as_sequence()
            .into_iter()
            .flatten()
            .find(|p| p["name"] == "metrics")
            .and_then(|p| p["containerPort"].as_u64())
            .unwrap_or_else(|| panic!("{label}: {name} has no metrics port"));
        assert!(
            policy_ports(&by_kind, labels, "ingress").contains(&metrics),
            "{label}: no NetworkPolicy admits Prometheus to {name}'s metrics on {metrics}"
        );
    }
    for kind in ["Service", "PodDisruptionBudget", "NetworkPolicy"] {
        assert!(by_kind.contains_key(kind), "{label}: no {kind}");
    }
    // Each PDB selects a Deployment's pods.
    for pdb in &by_kind["PodDisruptionBudget"] {
        let sel = &pdb["spec"]["selector"]["matchLabels"];
        assert!(
            deployments.iter().any(|d| {
                let labels = &d["spec"]["template"]["metadata"]["labels"];
                sel.as_mapping()
                    .unwrap()
                    .iter()
                    .all(|(k, v)| &labels[k] == v)
            }),
            "{label}: PDB {:?} selects no Deployment",
            pdb["metadata"]["name"]
        );
    }
    if by_kind["Deployment"]
        .iter()
        .any(|d| d["metadata"]["name"] == "grafana")
    {
        check_rendered_grafana(overlay, &by_kind);
    }
    if by_kind["Deployment"]
        .iter()
        .any(|d| d["metadata"]["name"] == "archiver")
    {
        check_rendered_archiver(overlay, &by_kind);
    }
    // Autoscaling: KEDA on the consumer lag, or the HPA alternative.
    let scaled = by_kind.get("ScaledObject").map(Vec::len).unwrap_or(0)
        + by_kind
            .get("HorizontalPodAutoscaler")
            .map(Vec::len)
            .unwrap_or(0);
    assert_eq!(
        scaled, 1,
        "{label}: ingest-worker needs exactly one autoscaler"
    );
    for so in by_kind.get("ScaledObject").into_iter().flatten() {
        assert_eq!(so["spec"]["scaleTargetRef"]["name"], "ingest-worker");
        let t = &so["spec"]["triggers"][0];
        assert_eq!(t["type"], "nats-jetstream");
        assert_eq!(t["metadata"]["stream"], streams::READINGS_STREAM);
        assert_eq!(t["metadata"]["consumer"], streams::INGEST_CONSUMER);
        assert!(t["metadata"]["natsServerMonitoringEndpoint"].is_string());
    }
}

#[test]
fn kubernetes_overlays_render_and_validate_offline() {
    let overlays = overlays();
    assert!(overlays.len() >= 2, "{overlays:?}");
    let mut seen = BTreeSet::new();
    for o in &overlays {
        check_kustomization_tree(o, &mut seen);
    }
    for values in files_under(&root().join("deploy/k8s/helm"), "yaml") {
        assert!(!yaml_file(&values).is_empty(), "{}", values.display());
    }
    let Some(kubectl) = tool("kubectl") else {
        eprintln!("SKIPPED: rendering; only the kustomization trees were checked");
        return;
    };
    let validator = tool("kubernetes-validate");
    let dir = tempfile::tempdir().unwrap();
    for o in &overlays {
        let out = run(Command::new(&kubectl).arg("kustomize").arg(o));
        assert!(
            out.status.success(),
            "kubectl kustomize {}: {}",
            o.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        let rendered = String::from_utf8(out.stdout).unwrap();
        let docs = yaml_docs(&rendered);
        check_rendered(o, &docs);
        if let Some(v) = &validator {
            let file = dir
                .path()
                .join(format!("{}.yaml", o.file_name().unwrap().to_string_lossy()));
            std::fs::write(&file, &rendered).unwrap();
            let out = run(Command::new(v).args(["--strict", "--quiet"]).arg(&file));
            let text = String::from_utf8_lossy(&out.stdout).to_string()
                + &String::from_utf8_lossy(&out.stderr);
            assert!(
                out.status.success() && !text.contains("ERROR"),
                "{}: {text}",
                o.display()
            );
            // Custom resources have no built-in schema; they are checked above instead.
            for line in text.lines().filter(|l| l.contains("Couldn't find schema")) {
                assert!(line.contains("ScaledObject"), "{}: {line}", o.display());
            }
        }
    }
}

/// TCP ports a rule list (`ingress` or `egress` of the NetworkPolicies that select pods with
/// `labels`) admits.
fn policy_ports(
    by_kind: &BTreeMap<String, Vec<&Value>>,
    labels: &Value,
    direction: &str,
) -> BTreeSet<u64> {
    let mut ports = BTreeSet::new();
    for p in &by_kind["NetworkPolicy"] {
        let selector = &p["spec"]["podSelector"];
        let selects = match selector["matchLabels"].as_mapping() {
            Some(m) => m.iter().all(|(k, v)| &labels[k] == v),
            None => false,
        } || selector["matchExpressions"]
            .as_sequence()
            .into_iter()
            .flatten()
            .any(|e| {
                e["operator"] == "In"
                    && e["values"]
                        .as_sequence()
                        .unwrap()
                        .contains(&labels[e["key"].as_str().unwrap()])
            });
        if !selects {
            continue;
        }
        for rule in p["spec"][direction].as_sequence().into_iter().flatten() {
            for port in rule["ports"].as_sequence().into_iter().flatten() {
                if port["protocol"] != "UDP" {
                    ports.extend(port["port"].as_u64());
                }
            }
        }
    }
    ports
}

/// edge-mes-archiver on Kubernetes: one replica replaced whole, `run` as a least-privilege login,
/// every directory it writes on a volume (the root filesystem is read-only), the archive on a
/// rendered claim or on S3 with keys from a Secret, and its NetworkPolicies: metrics in,
/// PostgreSQL and the S3 endpoint out.
fn check_rendered_archiver(overlay: &Path, by_kind: &BTreeMap<String, Vec<&Value>>) {
    let label = overlay.display();
    let d = by_kind["Deployment"]
        .iter()
        .find(|d| d["metadata"]["name"] == "archiver")
        .unwrap();
    assert_eq!(d["spec"]["replicas"], 1, "{label}: archiver replicas");
    assert_eq!(
        d["spec"]["strategy"]["type"], "Recreate",
        "{label}: the old archiver must stop before the new one starts"
    );
    let spec = &d["spec"]["template"]["spec"];
    let c = &spec["containers"][0];
    assert_eq!(c["args"][0], "edge-mes-archiver", "{label}");
    assert_eq!(c["args"][1], "run", "{label}");
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
    let env: BTreeMap<&str, &Value> = c["env"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|e| (e["name"].as_str().unwrap(), e))
        .collect();
    let value = |var: &str| -> &str {
        env.get(var)
            .and_then(|e| e["value"].as_str())
            .unwrap_or_else(|| panic!("{label}: archiver has no {var}"))
    };
    assert_eq!(value("DB_MIGRATE"), "never", "{label}");
    assert_eq!(
        env["DATABASE_URL"]["valueFrom"]["secretKeyRef"]["key"], "archiver-url",
        "{label}: the archiver's own login"
    );
    let metrics: u64 = value("ARCHIVER_METRICS_ADDR")
        .rsplit_once(':')
        .unwrap()
        .1
        .parse()
        .unwrap();
    let named_port = c["ports"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|p| p["containerPort"].as_u64() == Some(metrics))
        .and_then(|p| p["name"].as_str())
        .unwrap_or_else(|| panic!("{label}: archiver does not declare port {metrics}"));
    assert_eq!(c["livenessProbe"]["httpGet"]["port"], named_port, "{label}");
    assert_eq!(
        d["spec"]["template"]["metadata"]["annotations"]["prometheus.io/port"],
        metrics.to_string(),
        "{label}"
    );

    let volumes: BTreeMap<&str, &Value> = spec["volumes"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|v| (v["name"].as_str().unwrap(), v))
        .collect();
    let mounted = |path: &str| -> Option<&Value> {
        c["volumeMounts"]
            .as_sequence()
            .into_iter()
            .flatten()
            .find(|m| m["mountPath"] == path)
            .map(|m| volumes[m["name"].as_str().unwrap()])
    };
    assert!(
        mounted(value("ARCHIVER_SPILL_DIR")).is_some(),
        "{label}: the spill directory is not on a volume"
    );
    let target = value("ARCHIVER_TARGET");
    let labels = &d["spec"]["template"]["metadata"]["labels"];
    let egress = policy_ports(by_kind, labels, "egress");
    if let Some(bucket) = target.strip_prefix("s3://") {
        assert!(!bucket.is_empty(), "{label}: {target}");
        for var in ["ARCHIVER_S3_ACCESS_KEY_ID", "ARCHIVER_S3_SECRET_ACCESS_KEY"] {
            assert!(
                env[var]["valueFrom"]["secretKeyRef"]["name"].is_string(),
                "{label}: {var} not from a Secret"
            );
        }
        let endpoint = env
            .get("ARCHIVER_S3_ENDPOINT")
            .and_then(|e| e["value"].as_str());
        let port = endpoint
            .and_then(|e| e.rsplit_once(':'))
            .and_then(|(_, p)| p.trim_end_matches('/').parse().ok())
            .unwrap_or(443);
        if endpoint.is_some_and(|e| e.starts_with("http://")) {
            assert_eq!(value("ARCHIVER_S3_ALLOW_HTTP"), "true", "{label}");
        }
        assert!(
            egress.contains(&port),
            "{label}: no NetworkPolicy lets the archiver reach its S3 endpoint on port {port}"
        );
        assert!(
            !by_kind.contains_key("PersistentVolumeClaim"),
            "{label}: a claim left over with an S3 archive"
        );
    } else {
        let claim = mounted(target)
            .and_then(|v| v["persistentVolumeClaim"]["claimName"].as_str())
            .unwrap_or_else(|| panic!("{label}: the archive {target} is not on a claim"));
        assert!(
            by_kind
                .get("PersistentVolumeClaim")
                .into_iter()
                .flatten()
                .any(|p| p["metadata"]["name"] == claim),
            "{label}: claim {claim} is not rendered"
        );
        assert!(
            spec["securityContext"]["fsGroup"].is_u64(),
            "{label}: the claim's files must be writable by the non-root user"
        );
    }
    assert!(
        egress.contains(&5432) && egress.contains(&53),
        "{label}: the archiver must reach DNS and PostgreSQL: {egress:?}"
    );
    assert!(
        !egress.contains(&4222),
        "{label}: the archiver does not use NATS"
    );
    assert!(
        policy_ports(by_kind, labels, "ingress").contains(&metrics),
        "{label}: no NetworkPolicy admits Prometheus to the archiver's metrics"
    );
}

/// Grafana on Kubernetes mounts ConfigMaps generated from the repository's grafana/ folder: each
/// mounted map exists, and together they hold every dashboard and provisioning file byte for byte
/// (a dashboard added to grafana/dashboards but not to grafana/kustomization.yaml fails here).
fn check_rendered_grafana(overlay: &Path, by_kind: &BTreeMap<String, Vec<&Value>>) {
    let label = overlay.display();
    let maps = &by_kind["ConfigMap"];
    let grafana = by_kind["Deployment"]
        .iter()
        .find(|d| d["metadata"]["name"] == "grafana")
        .unwrap();
    let spec = &grafana["spec"]["template"]["spec"];
    let mut mounted: BTreeMap<String, String> = BTreeMap::new();
    for v in spec["volumes"].as_sequence().unwrap() {
        let Some(map) = v["configMap"]["name"].as_str() else {
            continue;
        };
        let found = maps
            .iter()
            .find(|m| m["metadata"]["name"] == map)
            .unwrap_or_else(|| panic!("{label}: grafana mounts ConfigMap {map}, not rendered"));
        let mount = spec["containers"][0]["volumeMounts"]
            .as_sequence()
            .unwrap()
            .iter()
            .find(|m| m["name"] == v["name"])
            .and_then(|m| m["mountPath"].as_str())
            .unwrap_or_else(|| panic!("{label}: ConfigMap {map} declared, not mounted"));
        for (key, text) in found["data"].as_mapping().unwrap() {
            mounted.insert(
                format!("{mount}/{}", key.as_str().unwrap()),
                text.as_str().unwrap().to_owned(),
            );
        }
    }
    let grafana_dir = root().join("grafana");
    let expected = [
        ("dashboards", "/var/lib/grafana/dashboards/edge-mes", "json"),
        (
            "provisioning/dashboards",
            "/etc/grafana/provisioning/dashboards",
            "yaml",
        ),
        (
            "provisioning/alerting",
            "/etc/grafana/provisioning/alerting",
            "yaml",
        ),
        (
            "provisioning/datasources/timescaledb",
            "/etc/grafana/provisioning/datasources",
            "yaml",
        ),
    ];
    let mut count = 0;
    for (dir, mount, ext) in expected {
        for file in files_under(&grafana_dir.join(dir), ext) {
            let name = file.file_name().unwrap().to_string_lossy();
            let want = std::fs::read_to_string(&file).unwrap();
            let got = mounted
                .get(&format!("{mount}/{name}"))
                .unwrap_or_else(|| panic!("{label}: {} not mounted at {mount}", file.display()));
            assert_eq!(got, &want, "{label}: {} differs", file.display());
            count += 1;
        }
    }
    assert_eq!(
        count,
        mounted.len(),
        "{label}: grafana mounts files that are not in grafana/: {:?}",
        mounted.keys().collect::<Vec<_>>()
    );
    assert!(count >= 8, "{label}: only {count} Grafana files");
}

/// The orchestrators kill a service only after its own shutdown bound (issue 18): Kubernetes'
/// `terminationGracePeriodSeconds`, compose's `stop_grace_period` and systemd's `TimeoutStopSec`
/// exceed the `SHUTDOWN_TIMEOUT_SECS` the service is given, by a few seconds for exit itself.
#[test]
fn kill_timeouts_leave_room_for_the_shutdown_bound() {
    let agrees = |what: &str, bound: u64, kill: u64| {
        assert!(
            kill >= bound + 2 && kill <= bound + 30,
            "{what}: killed after {kill} s, shutdown bound {bound} s"
        );
    };
    for file in [
        "base/ingest-worker.yaml",
        "base/mes-api.yaml",
        "components/archiver/archiver.yaml",
    ] {
        let docs = yaml_file(&root().join("deploy/k8s").join(file));
        let deployment = docs
            .iter()
            .find(|d| d["kind"] == "Deployment")
            .unwrap_or_else(|| panic!("{file}: no Deployment"));
        let spec = &deployment["spec"]["template"]["spec"];
        let kill = spec["terminationGracePeriodSeconds"]
            .as_u64()
            .unwrap_or_else(|| panic!("{file}: terminationGracePeriodSeconds"));
        let env = spec["containers"][0]["env"].as_sequence().expect("env");
        let bound: u64 = env
            .iter()
            .find(|e| e["name"] == "SHUTDOWN_TIMEOUT_SECS")
            .and_then(|e| e["value"].as_str())
            .unwrap_or_else(|| panic!("{file}: SHUTDOWN_TIMEOUT_SECS"))
            .parse()
            .unwrap();
        agrees(file, bound, kill);
    }

    let compose = &yaml_file(&root().join("deploy/compose.yaml"))[0];
    for service in ["mes-api", "ingest-worker", "edge-shipper", "archiver"] {
        let s = &compose["services"][service];
        let grace = s["stop_grace_period"]
            .as_str()
            .unwrap_or_else(|| panic!("compose {service}: stop_grace_period"));
        let kill: u64 = grace.trim_end_matches('s').parse().unwrap();
        let bound: u64 = s["environment"]["SHUTDOWN_TIMEOUT_SECS"]
            .as_str()
            .unwrap_or_else(|| panic!("compose {service}: SHUTDOWN_TIMEOUT_SECS"))
            .parse()
            .unwrap();
        agrees(&format!("compose {service}"), bound, kill);
    }

    for file in [
        "deploy/edge/edge-shipper.service",
        "deploy/systemd/edge-mes-archiver.service",
    ] {
        let unit = std::fs::read_to_string(root().join(file)).unwrap();
        let value = |key: &str| -> u64 {
            unit.lines()
                .find_map(|l| l.strip_prefix(key))
                .unwrap_or_else(|| panic!("{file}: {key}"))
                .trim()
                .parse()
                .unwrap()
        };
        agrees(
            file,
            value("Environment=SHUTDOWN_TIMEOUT_SECS="),
            value("TimeoutStopSec="),
        );
    }
}

/// Prometheus alert rules: valid for promtool, their unit tests pass (each alert fires on the
/// situation it describes), and every metric they use is one the binaries export.
#[test]
fn prometheus_alert_rules_are_valid_tested_and_use_real_metrics() {
    let dir = root().join("deploy/prometheus");
    if let Some(promtool) = tool("promtool") {
        for args in [
            vec!["check", "rules", "alerts.yml"],
            vec!["test", "rules", "alerts_test.yml"],
        ] {
            let out = run(Command::new(&promtool).args(&args).current_dir(&dir));
            assert!(
                out.status.success(),
                "promtool {}: {}{}",
                args.join(" "),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    let rules = std::fs::read_to_string(dir.join("alerts.yml")).unwrap();
    // Metric names as string literals anywhere in the binaries' sources (most are in metrics.rs).
    let exported: String = ["ingest-worker", "api", "edge-shipper", "archiver"]
        .iter()
        .flat_map(|c| files_under(&root().join(c).join("src"), "rs"))
        .map(|f| std::fs::read_to_string(f).unwrap())
        .collect();
    let metric = Regex::new(r"\b(?:ingest|edge_shipper|mes_api|archive)_[a-z_]+").unwrap();
    let mut used = 0;
    for line in rules
        .lines()
        .filter(|l| l.trim_start().starts_with("expr:"))
    {
        for m in metric.find_iter(line) {
            used += 1;
            assert!(
                exported.contains(&format!("\"{}\"", m.as_str())),
                "alerts.yml uses {}, which no binary exports",
                m.as_str()
            );
        }
    }
    assert!(used >= 5, "only {used} metrics used");
    for m in [
        "archive_last_pass_timestamp_seconds",
        "archive_pending_days",
        "ingest_retention_days_waiting_for_archive",
    ] {
        assert!(rules.contains(m), "no alert on {m}");
    }
}
