-- TimescaleDB refreshes a continuous aggregate only for its owner ("must be owner of view
-- readings_1m"), and the worker's upkeep refreshes the rollups (0023) as the least-privilege
-- login edge_mes_worker. So on TimescaleDB the two aggregates belong to their own role,
-- edge_mes_rollups (NOLOGIN, SELECT on readings), which edge_mes_worker is a member of: the
-- worker may refresh — and alter or drop — the rollups, which are derived data, and nothing
-- else it could not before. Checked on TimescaleDB 2.28.3 with a login in edge_mes_worker. Plain
-- PostgreSQL keeps its rollup tables as they are (the worker writes them through grants).
DO $$
BEGIN
    IF NOT edge_mes_rollups_continuous() THEN
        RETURN;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'edge_mes_rollups') THEN
        BEGIN
            CREATE ROLE edge_mes_rollups NOLOGIN;
        EXCEPTION
            WHEN duplicate_object OR unique_violation THEN NULL; -- created concurrently
            WHEN insufficient_privilege THEN
                RAISE NOTICE 'no CREATEROLE privilege: role edge_mes_rollups not created; the rollups stay with their owner, who must run the refresh';
                RETURN;
        END;
    END IF;
    -- Whoever migrates must be able to hand the views over (PostgreSQL 15: be a member).
    IF NOT pg_has_role(current_user, 'edge_mes_rollups', 'MEMBER') THEN
        EXECUTE format('GRANT edge_mes_rollups TO %I', current_user);
    END IF;
    GRANT SELECT ON readings TO edge_mes_rollups;
    ALTER MATERIALIZED VIEW readings_1m OWNER TO edge_mes_rollups;
    ALTER MATERIALIZED VIEW readings_1h OWNER TO edge_mes_rollups;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'edge_mes_worker') THEN
        GRANT edge_mes_rollups TO edge_mes_worker;
    END IF;
END $$;
