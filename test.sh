#!/usr/bin/env bash
# The one test command: installs or checks what the tests need (.ci/tools.sh: nats-server,
# PostgreSQL's server binaries, the deploy-file checkers, Chromium for the board test, the newer
# nats-server for the site-gateway tests, cargo-fuzz and cargo-deny), then runs every check and
# test: rustfmt, clippy with warnings as errors, the supply-chain check (.ci/deny.sh: licenses,
# bans, sources), `cargo test --workspace` (each test starts its own nats-server and
# PostgreSQL), and the fuzz targets of the untrusted-input parsers (.ci/fuzz.sh: FUZZ_SECONDS,
# default 60, per target). Nothing is skipped in silence: a missing tool fails its check and
# names the install command. `.ci/run` (CI) calls this, then the benchmark's smoke run.
set -euo pipefail
cd "$(dirname "$0")"
started=$(date +%s)
stamp() { echo "== $1 ($(( $(date +%s) - started )) s)"; }

stamp "tools"
.ci/tools.sh
stamp "rustfmt"
cargo fmt --all -- --check
stamp "clippy"
cargo clippy --workspace --all-targets -- -D warnings
stamp "supply chain: cargo deny (licenses, bans, sources)"
.ci/deny.sh
stamp "tests"
cargo test --workspace
stamp "fuzz: each target of fuzz/ for ${FUZZ_SECONDS:-60} s"
.ci/fuzz.sh
stamp "all checks and tests passed"
