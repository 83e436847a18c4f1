#!/usr/bin/env bash
# Makes sure PostgreSQL (127.0.0.1:5432) and nats-server with JetStream (127.0.0.1:4222) answer.
# A service that already answers is reused; one that does not is started:
#   PostgreSQL through the Debian cluster tools (pg_ctlcluster), nats-server from PATH with
#   nats/nats-local.conf and its store under .state/nats.
set -euo pipefail
cd "$(dirname "$0")/../.."

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() {
  local port=$1 what=$2
  for _ in $(seq 1 100); do
    port_open "$port" && return 0
    sleep 0.2
  done
  echo "services: $what did not come up on 127.0.0.1:$port" >&2
  return 1
}

if port_open 5432; then
  echo "services: PostgreSQL answers on 127.0.0.1:5432 (reused)"
else
  if command -v pg_ctlcluster >/dev/null 2>&1 && [ -d /etc/postgresql ]; then
    version=$(ls /etc/postgresql | sort -n | tail -n 1)
    echo "services: starting PostgreSQL $version (cluster main)"
    pg_ctlcluster --skip-systemctl-redirect "$version" main start
  else
    echo "services: PostgreSQL is not running and pg_ctlcluster is not available; start it yourself" >&2
    exit 1
  fi
  wait_port 5432 PostgreSQL
fi

if port_open 4222; then
  echo "services: NATS answers on 127.0.0.1:4222 (reused)"
else
  command -v nats-server >/dev/null 2>&1 || { echo "services: nats-server not on PATH" >&2; exit 1; }
  mkdir -p .state/nats
  echo "services: starting nats-server (log .state/nats/nats.log)"
  nohup nats-server -c nats/nats-local.conf -sd "$PWD/.state/nats" >>.state/nats/nats.log 2>&1 &
  disown || true
  wait_port 4222 nats-server
fi
