#!/bin/sh
# Runs once, when the TimescaleDB container initialises its data directory: the group roles the
# migrations grant to (created here too, so the logins can join them before the first migration;
# the migrations create them only if missing) and the services' least-privilege logins, with the
# passwords from API_DB_PASSWORD, WORKER_DB_PASSWORD and ARCHIVER_DB_PASSWORD. The schema's owner
# (POSTGRES_USER) applies the migrations: the compose service `migrate`.
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
    -v api_password="$API_DB_PASSWORD" -v worker_password="$WORKER_DB_PASSWORD" \
    -v archiver_password="$ARCHIVER_DB_PASSWORD" <<'SQL'
CREATE ROLE edge_mes_api NOLOGIN;
CREATE ROLE edge_mes_worker NOLOGIN;
CREATE ROLE edge_mes_mes_reader NOLOGIN;
CREATE ROLE edge_mes_archiver NOLOGIN;
CREATE ROLE mes_api LOGIN PASSWORD :'api_password' IN ROLE edge_mes_api;
CREATE ROLE ingest_worker LOGIN PASSWORD :'worker_password' IN ROLE edge_mes_worker;
CREATE ROLE archiver LOGIN PASSWORD :'archiver_password' IN ROLE edge_mes_archiver;
SQL
