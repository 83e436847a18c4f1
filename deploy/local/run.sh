#!/usr/bin/env bash
# Runs the whole live system in the foreground, without Docker, until Ctrl-C:
#   local PostgreSQL and nats-server (reused, or started: deploy/local/services.sh)
#   ingest-worker   creates the database, applies migrations, creates the streams, loads readings
#   mes-api         REST, the board, OpenAPI on http://127.0.0.1:8000 (bearer tokens required:
#                   it prints a viewer token for the board and an admin token for curl; the
#                   simulator gets an operator token), metrics on http://127.0.0.1:9103/metrics
#   edge-shipper    ships the seed's sample (hotdata/*.jsonl) once, then tails the simulated line
#   edge-mes-sim    a simulated line: live readings of SMT01, SMT02, AOI01 and production runs
#                   driven through mes-api (counts every few seconds, breakdowns, shift changes)
# Ctrl-C (or SIGTERM) stops everything it started, each within its shutdown bound. A second start
# reuses the database, the shippers' checkpoints, the active runs and the demo tokens (kept in
# $EDGE_MES_STATE/tokens, readable only by you): nothing is loaded twice.
# Environment: NATS_URL, DATABASE_URL (default: the local services, database edge_mes),
# API_LISTEN (default 127.0.0.1:8000), EDGE_MES_STATE (default ./.state).
set -euo pipefail
cd "$(dirname "$0")/../.."

export NATS_URL="${NATS_URL:-nats://127.0.0.1:4222}"
export DATABASE_URL="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/edge_mes}"
export API_LISTEN="${API_LISTEN:-127.0.0.1:8000}"
export API_AUTH=tokens
state="${EDGE_MES_STATE:-./.state}"
logs="$state/logs"
mkdir -p "$logs"

deploy/local/services.sh
echo "run: building (release; the first build takes a few minutes)"
cargo build --release -q -p ingest-worker -p mes-api -p edge-shipper -p edge-mes-sim

pids=()
stop_all() {
  trap - INT TERM EXIT
  echo
  echo "run: stopping"
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  echo "run: stopped; logs in $logs"
}
trap 'stop_all; exit 130' INT
trap 'stop_all; exit 143' TERM
trap stop_all EXIT

start() { # name, then the command; its log goes to $logs/<name>.log (plain text)
  local name=$1
  shift
  "$@" >>"$logs/$name.log" 2>&1 &
  pids+=("$!")
}

wait_http() { # url, what
  for _ in $(seq 1 300); do
    if (exec 3<>"/dev/tcp/${1%:*}/${1##*:}") 2>/dev/null; then return 0; fi
    sleep 0.2
  done
  echo "run: $2 did not come up; see $logs" >&2
  exit 1
}

demo_token() { # role: a token with that role, reused from $state/tokens/<role> while it is valid
  local role=$1 file="$state/tokens/$1" name token
  if [[ -s $file ]]; then
    read -r name token <"$file"
    # Still listed and not revoked (a new database knows none of the old tokens).
    if target/release/mes-api token list 2>>"$logs/tokens.log" |
      awk -F'\t' -v n="$name" '$1 == n && $5 == "-" { found = 1 } END { exit !found }'; then
      echo "$token"
      return
    fi
  fi
  name="demo-$role-$(date +%Y%m%d-%H%M%S)"
  token=$(target/release/mes-api token create --role "$role" --name "$name" 2>>"$logs/tokens.log" |
    tail -n 1)
  (umask 077 && mkdir -p "$state/tokens" && printf '%s %s\n' "$name" "$token" >"$file")
  echo "$token"
}
# Before the services start: `token create` also creates the database and applies migrations.
viewer_token=$(demo_token viewer)
operator_token=$(demo_token operator)
admin_token=$(demo_token admin)

# The seed's sample is from 2025: keep it (the default 90-day retention would remove it at once;
# production keeps the default, docs/operations.md "Storage lifecycle").
start ingest-worker env READINGS_RETENTION_DAYS="${READINGS_RETENTION_DAYS:-0}" target/release/ingest-worker
start mes-api target/release/mes-api
wait_http "$API_LISTEN" "mes-api"
# The seed's sample once (10 minutes of SMT01 in 2025; same box and state as earlier versions of
# this script, so it is never loaded twice), then the live line.
target/release/edge-shipper --watch './hotdata/*.jsonl' --state-dir "$state/edge-shipper" \
  --site BKK --box-id edge-01 --until-caught-up >>"$logs/edge-shipper-sample.log" 2>&1
SIM_API_TOKEN="$operator_token" start edge-mes-sim target/release/edge-mes-sim \
  --hot-dir "$state/sim/hotdata" --api-addr "$API_LISTEN"
start edge-shipper target/release/edge-shipper --watch "$state/sim/hotdata/*.jsonl" \
  --state-dir "$state/edge-shipper-line" --site BKK --box-id line-1

cat <<TXT

edge-mes is running (Ctrl-C stops it):
  board     http://$API_LISTEN/board   sign in with the viewer token:
              $viewer_token
  API       http://$API_LISTEN/openapi.json   with the admin token, e.g.
              curl -H "Authorization: Bearer $admin_token" http://$API_LISTEN/op_run/active
  tokens    kept in $state/tokens/ (viewer, operator for the simulator, admin);
            more: target/release/mes-api token create --role viewer --name <who>
  metrics   http://127.0.0.1:9103/metrics (mes-api; loopback only)
  database  psql "$DATABASE_URL"
            e.g. SELECT resource_id, shift_name, availability, performance, quality, oee
                 FROM v_oee_shift_real ORDER BY starts_at DESC, resource_id LIMIT 6;
  logs      $logs/
The simulated line writes to $state/sim/hotdata; within a minute the board shows live readings,
three running runs with counts and the current shift's OEE.
TXT

# Until Ctrl-C, or until one of the services stops by itself.
while true; do
  for pid in "${pids[@]}"; do
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "run: a service stopped (pid $pid); see $logs" >&2
      exit 1
    fi
  done
  sleep 1
done
