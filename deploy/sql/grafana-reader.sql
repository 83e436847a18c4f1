-- Read-only group role for Grafana (and other dashboards): SELECT on every table and view of
-- schema public, now and in the future. Run it as the role that applies the migrations (the
-- database owner), in the edge-mes database, after or before the first migration: ALTER DEFAULT
-- PRIVILEGES covers tables and daily partitions that role creates later, and the rollups
-- readings_1m and readings_1h (tables, or continuous aggregates on TimescaleDB; migration 0023
-- also grants them to this role when it exists). The KPI functions the dashboards call
-- (edge_mes_shift_elements, edge_mes_shift_instances, edge_mes_oee) are executable by PUBLIC.
-- Then give a login to it, e.g.
--   CREATE ROLE grafana LOGIN PASSWORD '...' IN ROLE edge_mes_grafana;
-- deploy/compose/initdb/10-grafana-reader.sh does both for compose; ops-tests runs every
-- dashboard query with only this role's rights.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'edge_mes_grafana') THEN
        BEGIN
            CREATE ROLE edge_mes_grafana NOLOGIN;
        EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; -- created concurrently
        END;
    END IF;
END $$;

GRANT USAGE ON SCHEMA public TO edge_mes_grafana;
GRANT SELECT ON ALL TABLES IN SCHEMA public TO edge_mes_grafana;
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO edge_mes_grafana;
