#!/bin/sh
# Runs once, when the TimescaleDB container initialises its data directory: the read-only group
# role for Grafana (deploy/sql/grafana-reader.sql, mounted at /edge-mes-sql) and a login for it
# with the password from GRAFANA_DB_PASSWORD. The application's migrations run later (workers and
# mes-api apply them at start, as the same owner), and the default privileges cover their tables.
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
    -f /edge-mes-sql/grafana-reader.sql
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
    -v password="$GRAFANA_DB_PASSWORD" <<'SQL'
CREATE ROLE grafana LOGIN PASSWORD :'password' IN ROLE edge_mes_grafana;
SQL
