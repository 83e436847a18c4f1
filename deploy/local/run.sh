#!/usr/bin/env bash
# Runs the pipeline once on the sample data, without Docker:
#   local PostgreSQL and nats-server (started if missing) → ingest-worker (creates the database,
#   applies migrations, creates the streams) → edge-shipper ships hotdata/*.jsonl until caught up →
#   the worker loads everything and exits when idle → a summary of what landed.
# Environment: NATS_URL, DATABASE_URL (defaults: the local services, database edge_mes),
# EDGE_WATCH (default ./hotdata/*.jsonl).
set -euo pipefail
cd "$(dirname "$0")/../.."

deploy/local/services.sh
cargo build --release -p edge-shipper -p ingest-worker

export NATS_URL="${NATS_URL:-nats://127.0.0.1:4222}"
export DATABASE_URL="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/edge_mes}"
watch="${EDGE_WATCH:-./hotdata/*.jsonl}"
mkdir -p .state

target/release/ingest-worker --until-idle 5 &
worker=$!
trap 'kill "$worker" 2>/dev/null || true' EXIT

target/release/edge-shipper --watch "$watch" --state-dir .state/edge-shipper \
  --site BKK --box-id edge-01 --until-caught-up
wait "$worker"
trap - EXIT

psql "$DATABASE_URL" -X -q -c "
  SELECT resource_id, sensor, count(*) AS readings, min(ts) AS first, max(ts) AS last
  FROM readings GROUP BY 1, 2 ORDER BY 1, 2;" \
  -c "SELECT reason, count(*) AS rejected_lines FROM rejected_readings GROUP BY 1 ORDER BY 1;"

cat <<TXT
Done. The rows are in $DATABASE_URL:
  psql "$DATABASE_URL" -c "SELECT * FROM readings ORDER BY ts DESC LIMIT 10"
  psql "$DATABASE_URL" -c "SELECT reason, detail, line FROM rejected_readings LIMIT 10"
Run it again: nothing is loaded twice (the shipper resumes from .state/edge-shipper; the worker's
ledger drops anything already loaded). Drop more JSONL into hotdata/ and rerun, or run the two
binaries without --until-caught-up / --until-idle to keep tailing.
TXT
