#!/usr/bin/env bash
# Fuzzes the parsers of untrusted input (fuzz/, docs/fuzzing.md): each target of fuzz/ runs for
# FUZZ_SECONDS (default 60) from its committed seeds, and any crash fails the step with the
# crashing input's path and the command that replays it. Run by ./test.sh; by hand:
#   .ci/fuzz.sh                         every target, 60 s each
#   FUZZ_SECONDS=600 .ci/fuzz.sh jsonl_line     one target, longer
#
# On the stable toolchain: cargo-fuzz wants nightly only for its sanitizers (-Zsanitizer), so
# the targets are built with `--sanitizer none` (libFuzzer's coverage instrumentation and the
# debug assertions and overflow checks are stable rustc flags). Nothing fuzzed here is unsafe
# code, whose memory errors AddressSanitizer would add; panics, overflows, hangs (-timeout) and
# memory blow-ups (-rss_limit_mb) are all caught without it. No RUSTC_BOOTSTRAP is needed.
#
# Everything it writes stays under target/fuzz (never in git): build/ (cargo-fuzz's target dir;
# its first build takes minutes, later ones only rebuild what changed), corpus/<target> (the
# seeds plus what the fuzzer found, kept between runs on one machine; delete it to start over),
# artifacts/<target> (crashing inputs) and <target>.log (libFuzzer's output).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${FUZZ_SECONDS:-60}
targets=("$@")
[ "${#targets[@]}" -gt 0 ] || targets=(jsonl_line readings_message api_bodies)

want=$(sed -n 's/^cargo_fuzz_version=//p' .ci/tools.sh)
if [ "$(target/ops-tools/bin/cargo-fuzz --version 2>/dev/null)" != "cargo-fuzz $want" ]; then
  install="cargo install --locked --root target/ops-tools cargo-fuzz --version $want"
  if [ "${EDGE_MES_SKIP_MISSING_TOOLS:-}" = 1 ]; then
    echo "fuzz: SKIPPED, cargo-fuzz $want is not in target/ops-tools/bin (EDGE_MES_SKIP_MISSING_TOOLS=1); install: .ci/tools.sh or $install"
    exit 0
  fi
  echo "fuzz: cargo-fuzz $want is not in target/ops-tools/bin: run .ci/tools.sh (it runs $install)" >&2
  exit 1
fi
export PATH="$PWD/target/ops-tools/bin:$PATH"

# Not a workspace member, so `cargo fmt --all` does not see it.
cargo fmt --manifest-path fuzz/Cargo.toml -- --check
work=target/fuzz
flags=(--sanitizer none --debug-assertions --target-dir "$work/build")
started=$(date +%s)
cargo fuzz build "${flags[@]}"
echo "fuzz: built the targets in $(( $(date +%s) - started )) s"
# The binaries of that build are run as they are (`cargo fuzz run` would build each again and
# add its own corpus and artifact folders under fuzz/).
bin=$work/build/$(rustc -vV | sed -n 's/^host: //p')/release

stat() { sed -n "s/^stat::$2: *//p" "$1" | tail -n1; } # log name: libFuzzer's final stats
failed=0
for t in "${targets[@]}"; do
  corpus=$work/corpus/$t
  artifacts=$work/artifacts/$t
  log=$work/$t.log
  mkdir -p "$corpus" "$artifacts"
  cp fuzz/seeds/"$t"/* "$corpus"/
  # -timeout: one input taking longer is a hang, reported as a crash (libFuzzer's default is
  # 20 minutes). -rss_limit_mb: libFuzzer's default, stated.
  if "$bin/$t" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
      -artifact_prefix="$artifacts/" -print_final_stats=1 "$corpus" >"$log" 2>&1; then
    echo "fuzz: $t ok: $(stat "$log" number_of_executed_units) runs in $seconds s" \
      "($(stat "$log" average_exec_per_sec)/s), $(stat "$log" new_units_added) new inputs," \
      "corpus $(find "$corpus" -type f | wc -l) files, peak $(stat "$log" peak_rss_mb) MB"
  else
    failed=1
    echo "fuzz: $t FAILED, libFuzzer's report (full log with the stack: $log):"
    grep -m1 -A4 'panicked at' "$log" || true
    sed -n '/ERROR: libFuzzer/,/^Base64/p' "$log" | cut -c1-400
    for crash in $(sed -n 's/.*Test unit written to //p' "$log"); do
      echo "fuzz: $t crashing input: $crash"
      echo "fuzz: replay it: $bin/$t $crash"
      echo "fuzz: or, rebuilding first: PATH=\$PWD/target/ops-tools/bin:\$PATH cargo fuzz run ${flags[*]} $t $crash"
    done
    echo "fuzz: fix the parser, and add the input as a #[test] in the crate that owns it (docs/fuzzing.md)"
  fi
done
echo "fuzz: done in $(( $(date +%s) - started )) s"
exit "$failed"
