#!/usr/bin/env bash
# The one test command: installs or checks what the tests need (.ci/tools.sh: nats-server,
# PostgreSQL's server binaries, the deploy-file checkers, Chromium for the board test, the newer
# nats-server for the site-gateway tests), then runs every check and test: rustfmt, clippy with
# warnings as errors, and `cargo test --workspace` (each test starts its own nats-server and
# PostgreSQL). Nothing is skipped in silence: a missing tool fails its check and names the
# install command. `.ci/run` (CI) calls this, then the benchmark's smoke run.
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
stamp "tests"
cargo test --workspace
stamp "all checks and tests passed"
