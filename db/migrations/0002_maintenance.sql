-- Maintenance functions the worker calls: daily partitions ahead (plain PostgreSQL), retention by
-- dropping whole partitions, and ledger compaction.

-- True when readings is a natively partitioned table (plain PostgreSQL path).
CREATE FUNCTION edge_mes_readings_partitioned() RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT EXISTS (SELECT 1 FROM pg_partitioned_table WHERE partrelid = 'readings'::regclass)
$$;

-- Creates the UTC-day partitions readings_pYYYYMMDD for [from_day, to_day]. A day whose rows
-- already sit in readings_default is skipped with a notice (its rows stay there). Returns the
-- number of partitions created.
CREATE FUNCTION edge_mes_ensure_partitions(from_day date, to_day date) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    d       date;
    part    text;
    created integer := 0;
BEGIN
    IF NOT edge_mes_readings_partitioned() THEN
        RETURN 0;
    END IF;
    -- Serialises workers starting together; creation takes a short exclusive lock on readings.
    PERFORM pg_advisory_xact_lock(hashtext('edge_mes_partitions'));
    FOR d IN SELECT generate_series(from_day, to_day, INTERVAL '1 day')::date LOOP
        part := 'readings_p' || to_char(d, 'YYYYMMDD');
        IF to_regclass(part) IS NULL THEN
            BEGIN
                EXECUTE format(
                    'CREATE TABLE %I PARTITION OF readings FOR VALUES FROM (%L) TO (%L)',
                    part,
                    (d::timestamp AT TIME ZONE 'UTC'),
                    ((d + 1)::timestamp AT TIME ZONE 'UTC'));
                created := created + 1;
            EXCEPTION WHEN check_violation THEN
                RAISE NOTICE 'rows for % are already in readings_default; no partition created', d;
            END;
        END IF;
    END LOOP;
    RETURN created;
END $$;

-- Drops daily partitions that end on or before cutoff_day. Never deletes rows one by one.
-- Returns the number of partitions dropped.
CREATE FUNCTION edge_mes_drop_partitions_before(cutoff_day date) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    part    record;
    dropped integer := 0;
BEGIN
    IF NOT edge_mes_readings_partitioned() THEN
        RETURN 0;
    END IF;
    PERFORM pg_advisory_xact_lock(hashtext('edge_mes_partitions'));
    FOR part IN
        SELECT c.relname
        FROM pg_inherits i
        JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = 'readings'::regclass
          AND c.relname ~ '^readings_p[0-9]{8}$'
          AND to_date(substr(c.relname, 11), 'YYYYMMDD') < cutoff_day
    LOOP
        EXECUTE format('DROP TABLE %I', part.relname);
        dropped := dropped + 1;
    END LOOP;
    RETURN dropped;
END $$;

-- Merges adjacent ledger ranges of up to max_sources sources, so the ledger holds about one row
-- per source instead of one per batch. Safe beside running workers: it locks only the rows it
-- merges, and merging never changes which bytes are covered.
CREATE FUNCTION edge_mes_compact_ledger(max_sources integer) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    src    text;
    merged integer := 0;
BEGIN
    FOR src IN
        SELECT source FROM ingest_ledger GROUP BY source HAVING count(*) > 1 LIMIT max_sources
    LOOP
        WITH locked AS (
            SELECT * FROM ingest_ledger WHERE source = src FOR UPDATE SKIP LOCKED
        ), ordered AS (
            SELECT *, lower(byte_range) AS lo, upper(byte_range) AS hi,
                   lag(upper(byte_range)) OVER (ORDER BY lower(byte_range)) AS prev_hi
            FROM locked
        ), grouped AS (
            SELECT *, sum(CASE WHEN prev_hi = lo THEN 0 ELSE 1 END)
                          OVER (ORDER BY lo) AS grp
            FROM ordered
        ), multi AS (
            SELECT grp FROM grouped GROUP BY grp HAVING count(*) > 1
        ), gone AS (
            DELETE FROM ingest_ledger l
            USING grouped g
            WHERE l.id = g.id AND g.grp IN (SELECT grp FROM multi)
            RETURNING g.*
        )
        INSERT INTO ingest_ledger (source, byte_range, site, box_id, path, lines, rows_loaded,
                                   rejected, first_at, last_at)
        SELECT src, int8range(min(lo), max(hi)),
               (array_agg(site ORDER BY lo DESC))[1], (array_agg(box_id ORDER BY lo DESC))[1],
               (array_agg(path ORDER BY lo DESC))[1],
               sum(lines), sum(rows_loaded), sum(rejected), min(first_at), max(last_at)
        FROM gone GROUP BY grp;
        merged := merged + 1;
    END LOOP;
    RETURN merged;
END $$;
