-- The services run as least-privilege logins (IN ROLE edge_mes_worker / edge_mes_api, see
-- 0010_roles.sql); only the schema's owner applies migrations. Partition upkeep, retention and
-- ledger compaction create and drop tables, which a run-time login may not: they run as the
-- functions' owner (SECURITY DEFINER, with a fixed search_path so a caller cannot substitute
-- objects), and only the worker may call them.

ALTER FUNCTION edge_mes_ensure_partitions(date, date)
    SECURITY DEFINER SET search_path = public, pg_temp;
ALTER FUNCTION edge_mes_drop_partitions_before(date)
    SECURITY DEFINER SET search_path = public, pg_temp;
ALTER FUNCTION edge_mes_compact_ledger(integer)
    SECURITY DEFINER SET search_path = public, pg_temp;

REVOKE EXECUTE ON FUNCTION edge_mes_ensure_partitions(date, date),
                           edge_mes_drop_partitions_before(date),
                           edge_mes_compact_ledger(integer)
    FROM PUBLIC;

-- A run-time login checks at start that the owner applied every migration of its release.
DO $$
DECLARE
    r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['edge_mes_worker', 'edge_mes_api'] LOOP
        IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
            EXECUTE format('GRANT SELECT ON _sqlx_migrations TO %I', r);
        END IF;
    END LOOP;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'edge_mes_worker') THEN
        GRANT EXECUTE ON FUNCTION edge_mes_ensure_partitions(date, date),
                                  edge_mes_drop_partitions_before(date),
                                  edge_mes_compact_ledger(integer)
            TO edge_mes_worker;
    END IF;
END $$;
