-- Storage lifecycle (docs/operations.md, "Storage lifecycle"): the engine a database was created
-- with, checked by every pooled connection; retention and compression run by the worker's upkeep
-- day by day (never by TimescaleDB background jobs); one index on readings on both engines.

-- The engine readings was created on. A database created with TimescaleDB holds readings as a
-- hypertable; opened on a server without the TimescaleDB preload, an insert lands in the
-- hypertable's parent table (invisible once the preload is back) and a count reads only
-- uncompressed chunks. Every service's pooled connection reads this row when it opens and
-- refuses to work in that state (service::db, "storage check").
CREATE TABLE edge_mes_storage (
    singleton   boolean     PRIMARY KEY DEFAULT true CHECK (singleton),
    engine      text        NOT NULL CHECK (engine IN ('postgresql', 'timescaledb')),
    recorded_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO edge_mes_storage (engine)
SELECT CASE WHEN edge_mes_readings_partitioned() THEN 'postgresql' ELSE 'timescaledb' END;
COMMENT ON TABLE edge_mes_storage IS
    'The storage engine readings was created on (postgresql: daily partitions; timescaledb: a hypertable). Connections refuse to work on a timescaledb database when the server runs without the TimescaleDB preload.';

-- What a connection checks: the recorded engine and whether TimescaleDB is loaded in this
-- server. shared_preload_libraries is readable by superusers only, so the check looks for a
-- setting the preloaded TimescaleDB loader registers: timescaledb.max_background_workers as an
-- integer (a line for it in postgresql.conf without the library is only a text placeholder).
CREATE FUNCTION edge_mes_storage_state(OUT engine text, OUT timescaledb_loaded boolean)
LANGUAGE sql STABLE AS $$
    SELECT s.engine,
           EXISTS (SELECT 1 FROM pg_settings
                   WHERE name = 'timescaledb.max_background_workers' AND vartype = 'integer')
    FROM edge_mes_storage s
$$;
GRANT SELECT ON edge_mes_storage TO PUBLIC;

-- One index on readings on both engines: create_hypertable adds one on ts beside
-- readings_series_ts (about 13 % more disk and a slower COPY), which no query needs (the
-- chunks' own constraints bound time).
DROP INDEX IF EXISTS readings_ts_idx;

-- Retention and compression are the worker's upkeep (edge_mes_expire_day, edge_mes_compress_one);
-- a policy an earlier release added would keep its old value and fail its runs upstream.
DO $$
BEGIN
    IF (SELECT engine FROM edge_mes_storage) = 'timescaledb' THEN
        EXECUTE 'SELECT remove_retention_policy(''readings'', if_exists => true)';
    END IF;
END $$;

-- The UTC days before `cutoff` that still hold readings, oldest first, at most `max_days`:
-- partitions (or chunks) of such days, and days of rows in readings_default.
CREATE FUNCTION edge_mes_expired_days(cutoff date, max_days integer)
RETURNS SETOF date
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $$
BEGIN
    IF edge_mes_readings_partitioned() THEN
        RETURN QUERY
        SELECT d FROM (
            SELECT to_date(substr(c.relname, 11), 'YYYYMMDD') AS d
            FROM pg_inherits i
            JOIN pg_class c ON c.oid = i.inhrelid
            WHERE i.inhparent = 'readings'::regclass
              AND c.relname ~ '^readings_p[0-9]{8}$'
            UNION
            SELECT DISTINCT (r.ts AT TIME ZONE 'UTC')::date
            FROM readings_default r
            WHERE r.ts < (cutoff::timestamp AT TIME ZONE 'UTC')
        ) days
        WHERE d < cutoff
        ORDER BY d
        LIMIT max_days;
    ELSE
        RETURN QUERY EXECUTE
            'SELECT DISTINCT (range_start AT TIME ZONE ''UTC'')::date AS d
             FROM timescaledb_information.chunks
             WHERE hypertable_schema = ''public'' AND hypertable_name = ''readings''
               AND range_end <= ($1::timestamp AT TIME ZONE ''UTC'')
             ORDER BY d LIMIT $2'
            USING cutoff, max_days;
    END IF;
END $$;

-- Removes the readings of one UTC day: drops its partition (plain PostgreSQL; and deletes its
-- rows in readings_default) or its chunks (TimescaleDB). With require_archive, only when the
-- archive holds the day, verified (edge_mes_archive_release_day, which also seals the day's
-- archive parts in this transaction); the day's partition or chunks are locked first, so no row
-- commits between the check and the removal. Returns 'dropped', 'not_archived' or 'empty'.
CREATE FUNCTION edge_mes_expire_day(d date, require_archive boolean)
RETURNS text
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    day_start timestamptz := d::timestamp AT TIME ZONE 'UTC';
    day_end   timestamptz := (d + 1)::timestamp AT TIME ZONE 'UTC';
    part      text := 'readings_p' || to_char(d, 'YYYYMMDD');
    chunk     regclass;
    found     boolean := false;
    removed   bigint;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('edge_mes_partitions'));
    IF edge_mes_readings_partitioned() THEN
        IF to_regclass(part) IS NOT NULL THEN
            EXECUTE format('LOCK TABLE %I IN ACCESS EXCLUSIVE MODE', part);
            found := true;
        END IF;
        -- Rows of the day in the default partition: locked against concurrent loads the same way.
        LOCK TABLE readings_default IN SHARE ROW EXCLUSIVE MODE;
        found := found OR EXISTS (SELECT 1 FROM readings_default
                                  WHERE ts >= day_start AND ts < day_end);
        IF NOT found THEN
            RETURN 'empty';
        END IF;
        IF require_archive AND NOT edge_mes_archive_release_day(d) THEN
            RETURN 'not_archived';
        END IF;
        IF to_regclass(part) IS NOT NULL THEN
            EXECUTE format('DROP TABLE %I', part);
        END IF;
        DELETE FROM readings_default WHERE ts >= day_start AND ts < day_end;
        GET DIAGNOSTICS removed = ROW_COUNT;
        IF removed > 0 THEN
            RAISE NOTICE 'retention: % rows of % deleted from readings_default', removed, d;
        END IF;
        RETURN 'dropped';
    END IF;
    FOR chunk IN EXECUTE
        'SELECT format(''%I.%I'', chunk_schema, chunk_name)::regclass
         FROM timescaledb_information.chunks
         WHERE hypertable_schema = ''public'' AND hypertable_name = ''readings''
           AND range_start >= $1 AND range_end <= $2'
        USING day_start, day_end
    LOOP
        EXECUTE format('LOCK TABLE %s IN ACCESS EXCLUSIVE MODE', chunk);
        found := true;
    END LOOP;
    IF NOT found THEN
        RETURN 'empty';
    END IF;
    IF require_archive AND NOT edge_mes_archive_release_day(d) THEN
        RETURN 'not_archived';
    END IF;
    EXECUTE 'SELECT count(*) FROM drop_chunks(''readings'', older_than => $2, newer_than => $1)'
        USING day_start, day_end;
    RETURN 'dropped';
END $$;

-- TimescaleDB: compresses the oldest uncompressed chunk that ended before `before`, segmented
-- by resource and sensor (the series the queries read), newest first within a segment. One
-- chunk per call, so the worker's upkeep holds each chunk's lock briefly. Returns the chunk's
-- name, or NULL when none is left (always NULL on plain PostgreSQL).
CREATE FUNCTION edge_mes_compress_one(before timestamptz)
RETURNS text
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    chunk regclass;
BEGIN
    IF edge_mes_readings_partitioned() THEN
        RETURN NULL;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM timescaledb_information.compression_settings
                   WHERE hypertable_schema = 'public' AND hypertable_name = 'readings') THEN
        EXECUTE 'ALTER TABLE readings SET (timescaledb.compress,
                     timescaledb.compress_segmentby = ''resource_id, sensor'',
                     timescaledb.compress_orderby = ''ts DESC'')';
    END IF;
    EXECUTE
        'SELECT format(''%I.%I'', chunk_schema, chunk_name)::regclass
         FROM timescaledb_information.chunks
         WHERE hypertable_schema = ''public'' AND hypertable_name = ''readings''
           AND NOT is_compressed AND range_end <= $1
         ORDER BY range_start LIMIT 1'
        INTO chunk USING before;
    IF chunk IS NULL THEN
        RETURN NULL;
    END IF;
    EXECUTE 'SELECT compress_chunk($1, if_not_compressed => true)' USING chunk;
    RETURN chunk::text;
END $$;

-- Days before which the archive gates retention: true once an archiver has written anything
-- into this database (retention --retention-wait-for-archive auto).
CREATE FUNCTION edge_mes_archive_in_use() RETURNS boolean
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $$
    SELECT EXISTS (SELECT 1 FROM archive_parts) OR EXISTS (SELECT 1 FROM archive_replays)
$$;

REVOKE EXECUTE ON FUNCTION edge_mes_expired_days(date, integer), edge_mes_expire_day(date, boolean),
                           edge_mes_compress_one(timestamptz)
    FROM PUBLIC;
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'edge_mes_worker') THEN
        GRANT EXECUTE ON FUNCTION edge_mes_expired_days(date, integer),
                                  edge_mes_expire_day(date, boolean),
                                  edge_mes_compress_one(timestamptz)
            TO edge_mes_worker;
    END IF;
END $$;
