#!/usr/bin/env bash
# Supply-chain check with cargo-deny and deny.toml (docs/fuzzing.md): licenses, bans (duplicate
# versions are warnings) and sources (crates.io only), for the workspace and for the fuzz crate
# (fuzz/, its own lock file). It fetches the locked crates of both graphs, then checks offline
# (--frozen). Run by ./test.sh; by hand:
#   .ci/deny.sh                  licenses, bans, sources
#   .ci/deny.sh --advisories     the same plus RustSec advisories; needs the network (a clone of
#                                github.com/rustsec/advisory-db), so not run by CI here
set -euo pipefail
cd "$(dirname "$0")/.."
checks=(licenses bans sources)
network=--frozen
case "${1:-}" in
  "") ;;
  --advisories) checks+=(advisories); network=--locked ;;
  *) echo "usage: $0 [--advisories]" >&2; exit 2 ;;
esac

want=$(sed -n 's/^cargo_deny_version=//p' .ci/tools.sh)
deny=target/ops-tools/bin/cargo-deny
if [ "$("$deny" --version 2>/dev/null)" != "cargo-deny $want" ]; then
  install="cargo install --locked --root target/ops-tools cargo-deny --version $want"
  if [ "${EDGE_MES_SKIP_MISSING_TOOLS:-}" = 1 ]; then
    echo "deny: SKIPPED, cargo-deny $want is not in target/ops-tools/bin (EDGE_MES_SKIP_MISSING_TOOLS=1); install: .ci/tools.sh or $install"
    exit 0
  fi
  echo "deny: cargo-deny $want is not in target/ops-tools/bin: run .ci/tools.sh (it runs $install)" >&2
  exit 1
fi

mkdir -p target
# The checks run offline, on what cargo has downloaded; on a fresh machine the fuzz crate's
# dependencies (libfuzzer-sys) are not among them before .ci/fuzz.sh builds it. Fetch both graphs
# first: from crates.io, exactly the versions of the lock files (--locked).
for manifest in Cargo.toml fuzz/Cargo.toml; do
  if ! cargo fetch --locked --manifest-path "$manifest" >/dev/null 2>target/deny-fetch.log; then
    echo "deny: cargo fetch --locked --manifest-path $manifest failed:" >&2
    tail -n5 target/deny-fetch.log >&2
    exit 1
  fi
done
failed=0
# graph name, manifest, then cargo-deny's flags for that graph.
check_graph() {
  local name=$1 manifest=$2 log=target/deny-$1.log
  shift 2
  if "$deny" --color never --manifest-path "$manifest" --config deny.toml "$network" \
      check "$@" "${checks[@]}" >"$log" 2>&1; then
    echo "deny: $name ok ($(tail -n1 "$log")), $(grep -c '^warning\[duplicate\]' "$log")" \
      "crates in two or more versions (warnings; full report: $log)"
  else
    failed=1
    echo "deny: $name FAILED:"
    local errors
    errors=$(grep -v '^warning\[duplicate\]' "$log" | sed -n '/^error/,/^$/p')
    if [ -n "$errors" ]; then echo "$errors"; tail -n1 "$log"; else tail -n5 "$log"; fi
    echo "deny: full report: $log; deny.toml says how to decide on a license or a source"
  fi
}
# One deny.toml for both graphs; each lacks something the other has, which is not news:
# libfuzzer-sys's exception is unused in the workspace, some licenses in the fuzz crate.
check_graph workspace Cargo.toml -A license-exception-not-encountered
check_graph fuzz fuzz/Cargo.toml -A license-not-encountered
exit "$failed"
