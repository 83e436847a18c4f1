-- Group roles (NOLOGIN) for least-privilege access; create login users that inherit them, e.g.
--   CREATE ROLE mes_odbc LOGIN PASSWORD '...' IN ROLE edge_mes_mes_reader;
-- Roles are cluster-wide and shared by every database of the cluster, so they are created only
-- if missing (and a concurrent creation elsewhere is tolerated); grants are per database.
-- Without CREATEROLE the roles are skipped with a notice instead of failing the migration.
-- Every grant of the schema so far is here, after all the objects it names; a table or view
-- added by a later migration grants its own rights there.

DO $$
DECLARE
    r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['edge_mes_mes_reader', 'edge_mes_worker', 'edge_mes_api'] LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
            BEGIN
                EXECUTE format('CREATE ROLE %I NOLOGIN', r);
            EXCEPTION
                WHEN duplicate_object OR unique_violation THEN NULL; -- created concurrently
                WHEN insufficient_privilege THEN
                    RAISE NOTICE 'no CREATEROLE privilege: role % not created', r;
            END;
        END IF;
    END LOOP;

    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'edge_mes_mes_reader') THEN
        GRANT USAGE ON SCHEMA public TO edge_mes_mes_reader;
        -- Views only: the KPI function reads the tables as its owner (SECURITY DEFINER).
        GRANT SELECT ON v_runtime_per_shift, v_quality_per_shift, v_oee_shift_real,
                        v_oee_day_real, v_oee_line_shift, v_oee_site_day, v_mtbf_mttr_per_day
              TO edge_mes_mes_reader;
    END IF;

    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'edge_mes_worker') THEN
        GRANT USAGE ON SCHEMA public TO edge_mes_worker;
        GRANT SELECT, INSERT ON readings, rejected_readings, ingest_dead_letters TO edge_mes_worker;
        GRANT SELECT, INSERT, UPDATE, DELETE ON ingest_ledger TO edge_mes_worker;
        GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO edge_mes_worker;
    END IF;

    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'edge_mes_api') THEN
        GRANT USAGE ON SCHEMA public TO edge_mes_api;
        GRANT SELECT, INSERT, UPDATE ON op_run, op_run_count, op_run_downtime, resources,
                                        work_orders, sites TO edge_mes_api;
        GRANT SELECT, INSERT, UPDATE, DELETE ON idempotency_keys, outbox TO edge_mes_api;
        GRANT SELECT ON downtime_reasons, shift_definitions, shift_breaks, readings,
                        v_runtime_per_shift, v_quality_per_shift, v_oee_shift_real,
                        v_oee_day_real, v_oee_line_shift, v_oee_site_day, v_mtbf_mttr_per_day
              TO edge_mes_api;
        GRANT INSERT ON shift_definitions TO edge_mes_api;
        GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO edge_mes_api;
        GRANT SELECT ON spc_spec_limits TO edge_mes_api;
    END IF;
END $$;
