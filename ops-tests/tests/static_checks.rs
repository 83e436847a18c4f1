//! Static checks of the deploy files: NATS configs and stream definitions, the compose file and
//! Dockerfile, the systemd unit, the Kubernetes overlays.
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

#[test]
fn dockerfile_builds_all_three_binaries_into_a_small_non_root_image() {
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
    assert!(
        text.contains(
            "cargo build --release --locked -p edge-shipper -p ingest-worker -p mes-api -p edge-mes-sim"
        )
    );
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
}

// ---------------------------------------------------------------------------------------------
// systemd

#[test]
fn edge_shipper_unit_verifies_and_is_hardened() {
    let unit_path = root().join("deploy/edge/edge-shipper.service");
    let unit = std::fs::read_to_string(&unit_path).unwrap();
    for directive in [
        "Restart=always",
        "StateDirectory=edge-shipper",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "ExecStart=/usr/local/bin/edge-shipper",
    ] {
        assert!(unit.contains(directive), "{directive} missing");
    }
    assert!(root().join("deploy/edge/README.md").is_file());
    let Some(analyze) = tool("systemd-analyze") else {
        return;
    };
    // verify checks that ExecStart's binary exists: point it at a built one (or at true).
    let binary =
        testkit::bins::bin_path("edge-shipper").unwrap_or_else(|_| PathBuf::from("/bin/true"));
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("edge-shipper.service");
    std::fs::write(
        &copy,
        unit.replace("/usr/local/bin/edge-shipper", &binary.display().to_string()),
    )
    .unwrap();
    let out = run(Command::new(analyze)
        .args(["verify", "--man=no"])
        .arg(&copy));
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Unknown keys and bad values are only warnings (exit 0): any output fails the check.
    assert!(
        out.status.success() && stderr.trim().is_empty(),
        "systemd-analyze verify: {stderr}"
    );
}

// ---------------------------------------------------------------------------------------------
// Kubernetes

const KNOWN_KINDS: [(&str, &str); 10] = [
    ("v1", "Namespace"),
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
    for d in workloads {
        let name = d["metadata"]["name"].as_str().unwrap();
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
                if var == "DATABASE_URL" || var.contains("PASSWORD") {
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
    for file in ["ingest-worker.yaml", "mes-api.yaml"] {
        let docs = yaml_file(&root().join("deploy/k8s/base").join(file));
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
    for service in ["mes-api", "ingest-worker", "edge-shipper"] {
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

    let unit = std::fs::read_to_string(root().join("deploy/edge/edge-shipper.service")).unwrap();
    let value = |key: &str| -> u64 {
        unit.lines()
            .find_map(|l| l.strip_prefix(key))
            .unwrap_or_else(|| panic!("edge-shipper.service: {key}"))
            .trim()
            .parse()
            .unwrap()
    };
    agrees(
        "edge-shipper.service",
        value("Environment=SHUTDOWN_TIMEOUT_SECS="),
        value("TimeoutStopSec="),
    );
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
    let exported: String = ["ingest-worker", "api", "edge-shipper"]
        .iter()
        .map(|c| std::fs::read_to_string(root().join(c).join("src/metrics.rs")).unwrap())
        .collect();
    let metric = Regex::new(r"\b(?:ingest|edge_shipper|mes_api)_[a-z_]+").unwrap();
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
}
