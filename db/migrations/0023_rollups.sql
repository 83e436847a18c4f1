-- Rollups (issue 16): per-minute and per-hour aggregates of readings per (site, resource_id,
-- sensor), for dashboard panels over long ranges. Same names and columns on both engines:
--
--   readings_1m, readings_1h (bucket timestamptz, site text, resource_id text, sensor text,
--                             n bigint, sum, min, max, mean, m2 double precision)
--
-- bucket is the start of the UTC minute or hour (date_bin / time_bucket from the epoch). m2 is the
-- sum of squared deviations from the bucket's mean (n * var_pop): buckets combine exactly into
-- longer ones (Chan et al.: m2 = Σ m2_i + Σ n_i (mean_i - mean)²) and keep their precision where
-- the mean is large beside the spread, which sum-of-squares (Σx² - (Σx)²/n) loses. Standard
-- deviation of a bucket: sqrt(m2 / (n - 1)) (sample) or sqrt(m2 / n) (population).
--
-- TimescaleDB (readings is a hypertable): continuous aggregates WITH NO DATA, real-time
-- (materialized_only = false) and WITHOUT a refresh policy: background jobs record failures on
-- PostgreSQL 15.20 (issue 16), so the worker's upkeep refreshes them itself (below).
-- Plain PostgreSQL: ordinary tables kept by edge_mes_rollup_apply.
--
-- What to refresh: a statement trigger on ingest_ledger queues, in the loading transaction, the
-- minutes each new ledger entry's rows span (min_ts .. max_ts; an entry with rows and an unknown
-- span queues "everything", resolved to the extent of readings when next read). The queue row
-- commits with the rows or not at all, so no load is missed whatever the timing. (A watermark on
-- ingest_ledger.last_at would miss loads: last_at is the loading transaction's start time, so a
-- load that commits after a refresh can carry a last_at before it.) Ledger compaction deletes and
-- re-inserts entries whose rows were queued when first inserted: a transaction that deletes from
-- ingest_ledger is taken to be compaction and its inserts queue nothing.
--
-- The upkeep protocol, the same calls on both engines (the worker's upkeep, every cycle):
--   SELECT from_ts, to_ts, queued FROM edge_mes_rollup_pending(max_ranges, retention_days);
--   for each row:
--     SELECT edge_mes_rollup_apply(from_ts, to_ts);          -- plain: recomputes, returns true
--     -- when it returned false (TimescaleDB), outside any transaction block:
--     --   CALL refresh_continuous_aggregate('readings_1m', from_ts, to_ts);
--     --   CALL refresh_continuous_aggregate('readings_1h', from_ts, to_ts);
--     SELECT edge_mes_rollup_done(from_ts, to_ts, queued);   -- only after the refresh committed
-- On plain PostgreSQL edge_mes_refresh_rollups(max_ranges) does all of it in one transaction.
--
-- Exactly once: a rollup row is never incremented. A bucket is recomputed from every raw row of
-- the bucket, so a redelivered batch (refused by the ledger: no rows, no queue entry), late rows
-- for an old bucket (queued with their load, recomputed from all of the bucket's rows) and two
-- refreshers at once can never count a reading twice or leave one out. A queue entry is removed
-- (edge_mes_rollup_done) only after a recompute of its range that started after the entry — and
-- so its rows — had committed; a refresher that dies before that leaves the entry to the next.
-- Concurrent refreshers serialize on an advisory lock (edge_mes_rollup_apply), and a recompute
-- replaces a stored bucket only when it counts more rows (below), so an older recompute can never
-- overwrite a newer one.
--
-- Retention: readings are append-only except for retention, which drops whole days. A recompute
-- therefore replaces a stored bucket only with one of more rows (n greater): when raw rows were
-- dropped, the rollup keeps what it had (a late row for a dropped day reaches readings but not
-- the rollups, which keep the complete figures of that day). Rollups outlive raw data: intended
-- is readings_1h kept for good and readings_1m kept as long as raw readings; removing them is
-- retention's business, not this migration's. On TimescaleDB a refresh recomputes the buckets
-- where rows changed from the raw rows present, so ranges older than the days retention keeps
-- (edge_mes_rollup_pending's raw_days) are never refreshed: a late row for a dropped day
-- reaches readings (until retention's next pass) but not the rollups.

CREATE TABLE rollup_queue (
    id        bigserial      PRIMARY KEY,
    -- Minutes whose buckets must be recomputed; unbounded = unknown (everything).
    span      tstzmultirange NOT NULL,
    queued_at timestamptz    NOT NULL DEFAULT now()
);
COMMENT ON TABLE rollup_queue IS
    'Minutes loaded into readings whose rollups (readings_1m, readings_1h) are not recomputed yet; filled by a trigger on ingest_ledger, emptied by edge_mes_rollup_done.';

-- A numeric as double precision, ±Infinity beyond its range (a sum of valid readings, each at
-- most 1.7976931348623157e308, may exceed it).
CREATE FUNCTION edge_mes_rollup_float8(x numeric) RETURNS double precision
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN x > 1.7976931348623157e308 THEN 'Infinity'::float8
                WHEN x < -1.7976931348623157e308 THEN '-Infinity'::float8
                ELSE x::float8 END
$$;

-- The mean of n readings summing to s (numeric), as double precision: s / n in double precision
-- when s fits, as PostgreSQL's avg(double precision) divides, else the numeric quotient.
CREATE FUNCTION edge_mes_rollup_mean(s numeric, n bigint) RETURNS double precision
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN abs(s) <= 1.7976931348623157e308 THEN s::float8 / n
                ELSE (s / n)::float8 END
$$;

-- TimescaleDB: sums, means and m2 in numeric, so that a refresh over readings near ±1.8e308
-- cannot fail on a double-precision overflow (it would fail at every upkeep); measured on
-- TimescaleDB 2.28.3, a refresh costs the same as in double precision.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb')
       AND NOT edge_mes_readings_partitioned() THEN
        EXECUTE $cagg$
            CREATE MATERIALIZED VIEW readings_1m
            WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
            SELECT time_bucket(INTERVAL '1 minute', ts) AS bucket, site, resource_id, sensor,
                   count(*) AS n, edge_mes_rollup_float8(sum(value::numeric)) AS sum,
                   min(value) AS min, max(value) AS max,
                   edge_mes_rollup_mean(sum(value::numeric), count(*)) AS mean,
                   edge_mes_rollup_float8(var_pop(value::numeric) * count(*)) AS m2
            FROM readings
            GROUP BY time_bucket(INTERVAL '1 minute', ts), site, resource_id, sensor
            WITH NO DATA
        $cagg$;
        EXECUTE $cagg$
            CREATE MATERIALIZED VIEW readings_1h
            WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
            SELECT time_bucket(INTERVAL '1 hour', ts) AS bucket, site, resource_id, sensor,
                   count(*) AS n, edge_mes_rollup_float8(sum(value::numeric)) AS sum,
                   min(value) AS min, max(value) AS max,
                   edge_mes_rollup_mean(sum(value::numeric), count(*)) AS mean,
                   edge_mes_rollup_float8(var_pop(value::numeric) * count(*)) AS m2
            FROM readings
            GROUP BY time_bucket(INTERVAL '1 hour', ts), site, resource_id, sensor
            WITH NO DATA
        $cagg$;
    ELSE
        CREATE TABLE readings_1m (
            bucket      timestamptz      NOT NULL,
            site        text             NOT NULL,
            resource_id text             NOT NULL,
            sensor      text             NOT NULL,
            n           bigint           NOT NULL,
            sum         double precision NOT NULL,
            min         double precision NOT NULL,
            max         double precision NOT NULL,
            mean        double precision NOT NULL,
            m2          double precision NOT NULL,
            PRIMARY KEY (bucket, resource_id, sensor, site)
        );
        CREATE TABLE readings_1h (LIKE readings_1m INCLUDING ALL);
        -- Panels read one series over a range; the primary key serves the recompute's ranges.
        CREATE INDEX readings_1m_series ON readings_1m (resource_id, sensor, bucket);
        CREATE INDEX readings_1h_series ON readings_1h (resource_id, sensor, bucket);
    END IF;
END $$;

-- A table on plain PostgreSQL, a view on TimescaleDB (a continuous aggregate's user view).
DO $$
DECLARE
    kind text := CASE (SELECT relkind FROM pg_class WHERE oid = 'readings_1m'::regclass)
                     WHEN 'r' THEN 'TABLE' WHEN 'm' THEN 'MATERIALIZED VIEW' ELSE 'VIEW' END;
BEGIN
    EXECUTE format('COMMENT ON %s readings_1m IS %L', kind,
        'Per-minute rollup of readings per site, resource and sensor (UTC minutes): n, sum, min, max, mean, m2 = sum of squared deviations from mean. Kept by edge_mes_rollup_apply (plain PostgreSQL) or a continuous aggregate (TimescaleDB).');
    EXECUTE format('COMMENT ON %s readings_1h IS %L', kind,
        'Per-hour rollup of readings per site, resource and sensor (UTC hours), columns as readings_1m.');
END $$;

-- True when the rollups are TimescaleDB continuous aggregates (refreshed by CALL
-- refresh_continuous_aggregate), false when they are tables kept by edge_mes_rollup_apply.
CREATE FUNCTION edge_mes_rollups_continuous() RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT EXISTS (SELECT 1 FROM pg_class
                   WHERE oid = to_regclass('readings_1m') AND relkind = 'v')
$$;

-- Loads queue the minutes they touched (see the header). Runs in the loading transaction.
CREATE FUNCTION edge_mes_rollup_queue_loads() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
BEGIN
    IF coalesce(current_setting('edge_mes.ledger_merging', true), '') = 'on' THEN
        RETURN NULL; -- compaction re-inserting merged entries (already queued)
    END IF;
    INSERT INTO rollup_queue (span)
    SELECT range_agg(CASE WHEN min_ts IS NULL OR max_ts IS NULL THEN tstzrange(NULL, NULL)
                          ELSE tstzrange(date_bin(INTERVAL '1 minute', min_ts, timestamptz 'epoch'),
                                         date_bin(INTERVAL '1 minute', max_ts, timestamptz 'epoch')
                                             + INTERVAL '1 minute')
                     END)
    FROM loaded
    WHERE rows_loaded > 0
    HAVING count(*) > 0;
    RETURN NULL;
END $$;

CREATE FUNCTION edge_mes_rollup_mark_merging() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM set_config('edge_mes.ledger_merging', 'on', true);
    RETURN NULL;
END $$;

CREATE TRIGGER ingest_ledger_rollup_queue AFTER INSERT ON ingest_ledger
    REFERENCING NEW TABLE AS loaded
    FOR EACH STATEMENT EXECUTE FUNCTION edge_mes_rollup_queue_loads();
CREATE TRIGGER ingest_ledger_rollup_merging BEFORE DELETE ON ingest_ledger
    FOR EACH STATEMENT EXECUTE FUNCTION edge_mes_rollup_mark_merging();

-- The oldest instant the rollups may be recomputed from, when retention keeps raw readings for
-- raw_days UTC days (0: keeps all). Plain PostgreSQL: no limit (a recompute never replaces a
-- bucket with fewer rows). TimescaleDB: the start of the oldest UTC day retention keeps (a
-- refresh of a bucket whose raw rows were dropped would replace its figures with what is left,
-- e.g. one late row).
CREATE FUNCTION edge_mes_rollup_horizon(raw_days integer) RETURNS timestamptz
LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN NOT edge_mes_rollups_continuous() OR coalesce(raw_days, 0) <= 0
                THEN '-infinity'::timestamptz
                ELSE ((now() AT TIME ZONE 'UTC')::date - raw_days)::timestamp AT TIME ZONE 'UTC'
           END
$$;

-- The ranges to recompute: the queue's minutes merged, resolved (unknown → the extent of
-- readings), clipped to the horizon (raw_days: the worker's --retention-days, 0 when it keeps
-- all), cut into pieces of at most one day, oldest first, at most max_ranges of them; with the
-- queue entries each piece covers. On TimescaleDB the pieces are
-- widened to whole hours (refresh_continuous_aggregate materializes only whole buckets inside its
-- window, and only where rows changed). Pending work that is never applied stays queued.
CREATE FUNCTION edge_mes_rollup_pending(max_ranges integer, raw_days integer DEFAULT 0)
RETURNS TABLE (from_ts timestamptz, to_ts timestamptz, queued bigint[])
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    horizon    timestamptz := edge_mes_rollup_horizon(raw_days);
    continuous boolean := edge_mes_rollups_continuous();
    lo         timestamptz;
    hi         timestamptz;
BEGIN
    IF EXISTS (SELECT 1 FROM rollup_queue q WHERE lower_inf(q.span) OR upper_inf(q.span)) THEN
        SELECT min(r.ts), max(r.ts) INTO lo, hi FROM readings r;
        IF lo IS NULL THEN
            DELETE FROM rollup_queue q WHERE lower_inf(q.span) OR upper_inf(q.span);
        ELSE
            UPDATE rollup_queue q
            SET span = q.span * tstzmultirange(tstzrange(
                    date_bin(INTERVAL '1 minute', lo, timestamptz 'epoch'),
                    date_bin(INTERVAL '1 minute', hi, timestamptz 'epoch') + INTERVAL '1 minute'))
            WHERE lower_inf(q.span) OR upper_inf(q.span);
        END IF;
    END IF;
    IF horizon > '-infinity' THEN
        UPDATE rollup_queue q SET span = q.span - tstzmultirange(tstzrange(NULL, horizon))
        WHERE q.span && tstzmultirange(tstzrange(NULL, horizon));
    END IF;
    DELETE FROM rollup_queue q WHERE isempty(q.span);

    RETURN QUERY
    WITH merged AS (
        SELECT unnest(range_agg(q.span)) AS r FROM rollup_queue q
    ), aligned AS (
        SELECT CASE WHEN continuous THEN date_bin(INTERVAL '1 hour', lower(m.r), timestamptz 'epoch')
                    ELSE lower(m.r) END AS lo,
               CASE WHEN continuous
                    THEN date_bin(INTERVAL '1 hour', upper(m.r) - INTERVAL '1 microsecond',
                                  timestamptz 'epoch') + INTERVAL '1 hour'
                    ELSE upper(m.r) END AS hi
        FROM merged m
    ), pieces AS (
        SELECT p AS lo, least(p + INTERVAL '1 day', a.hi) AS hi
        FROM aligned a,
             generate_series(a.lo, a.hi - INTERVAL '1 microsecond', INTERVAL '1 day') AS p
    )
    SELECT pc.lo, pc.hi,
           (SELECT array_agg(q.id ORDER BY q.id) FROM rollup_queue q
            WHERE q.span && tstzmultirange(tstzrange(pc.lo, pc.hi)))
    FROM pieces pc
    ORDER BY pc.lo
    LIMIT greatest(max_ranges, 0);
END $$;

-- Recomputes the buckets of [from_ts, to_ts) (widened to whole minutes, and to whole hours for
-- readings_1h) from readings: readings_1m from the raw rows, readings_1h from readings_1m. A
-- stored bucket is replaced only by one of more rows (see the header). In double precision, as
-- TimescaleDB's aggregates; where a sum overflows it (readings near ±1.8e308), the range is
-- recomputed in numeric from the raw rows, with sums and m2 beyond double precision stored as
-- ±Infinity and means exact. Returns true. On TimescaleDB it does nothing and returns false:
-- the caller refreshes the continuous aggregates (CALL refresh_continuous_aggregate cannot run
-- inside a function or transaction block).
CREATE FUNCTION edge_mes_rollup_apply(from_ts timestamptz, to_ts timestamptz) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    m_lo timestamptz := date_bin(INTERVAL '1 minute', from_ts, timestamptz 'epoch');
    m_hi timestamptz := date_bin(INTERVAL '1 minute', to_ts - INTERVAL '1 microsecond',
                                 timestamptz 'epoch') + INTERVAL '1 minute';
    h_lo timestamptz := date_bin(INTERVAL '1 hour', from_ts, timestamptz 'epoch');
    h_hi timestamptz := date_bin(INTERVAL '1 hour', to_ts - INTERVAL '1 microsecond',
                                 timestamptz 'epoch') + INTERVAL '1 hour';
BEGIN
    IF edge_mes_rollups_continuous() THEN
        RETURN false;
    END IF;
    IF from_ts IS NULL OR to_ts IS NULL OR to_ts <= from_ts THEN
        RETURN true;
    END IF;
    -- One recompute at a time: concurrent upserts of the same buckets could deadlock.
    PERFORM pg_advisory_xact_lock(hashtext('edge_mes_rollups'));
    BEGIN
        INSERT INTO readings_1m AS t (bucket, site, resource_id, sensor, n, sum, min, max, mean,
                                      m2)
        SELECT date_bin(INTERVAL '1 minute', r.ts, timestamptz 'epoch'), r.site, r.resource_id,
               r.sensor, count(*), sum(r.value), min(r.value), max(r.value), avg(r.value),
               var_pop(r.value) * count(*)
        FROM readings r
        WHERE r.ts >= m_lo AND r.ts < m_hi
        GROUP BY 1, 2, 3, 4
        ON CONFLICT (bucket, resource_id, sensor, site) DO UPDATE
            SET n = excluded.n, sum = excluded.sum, min = excluded.min, max = excluded.max,
                mean = excluded.mean, m2 = excluded.m2
            WHERE excluded.n > t.n;
        IF EXISTS (SELECT 1 FROM readings_1m m
                   WHERE m.bucket >= h_lo AND m.bucket < h_hi
                     AND (m.sum IN ('Infinity', '-Infinity') OR m.m2 = 'Infinity')) THEN
            RAISE EXCEPTION USING ERRCODE = 'numeric_value_out_of_range';
        END IF;
        INSERT INTO readings_1h AS t (bucket, site, resource_id, sensor, n, sum, min, max, mean,
                                      m2)
        SELECT x.hour, x.site, x.resource_id, x.sensor, sum(x.n), sum(x.sum), min(x.min),
               max(x.max), sum(x.sum) / sum(x.n),
               sum(x.m2) + sum(x.n * (x.mean - x.hour_mean) ^ 2)
        FROM (SELECT date_bin(INTERVAL '1 hour', m.bucket, timestamptz 'epoch') AS hour, m.*,
                     sum(m.sum) OVER w / sum(m.n) OVER w AS hour_mean
              FROM readings_1m m
              WHERE m.bucket >= h_lo AND m.bucket < h_hi
              WINDOW w AS (PARTITION BY date_bin(INTERVAL '1 hour', m.bucket,
                                                 timestamptz 'epoch'),
                                        m.site, m.resource_id, m.sensor)) x
        GROUP BY x.hour, x.site, x.resource_id, x.sensor
        ON CONFLICT (bucket, resource_id, sensor, site) DO UPDATE
            SET n = excluded.n, sum = excluded.sum, min = excluded.min, max = excluded.max,
                mean = excluded.mean, m2 = excluded.m2
            WHERE excluded.n > t.n;
    EXCEPTION WHEN numeric_value_out_of_range THEN
        INSERT INTO readings_1m AS t (bucket, site, resource_id, sensor, n, sum, min, max, mean,
                                      m2)
        SELECT date_bin(INTERVAL '1 minute', r.ts, timestamptz 'epoch'), r.site, r.resource_id,
               r.sensor, count(*), edge_mes_rollup_float8(sum(r.value::numeric)), min(r.value),
               max(r.value), edge_mes_rollup_mean(sum(r.value::numeric), count(*)),
               edge_mes_rollup_float8(var_pop(r.value::numeric) * count(*))
        FROM readings r
        WHERE r.ts >= m_lo AND r.ts < m_hi
        GROUP BY 1, 2, 3, 4
        ON CONFLICT (bucket, resource_id, sensor, site) DO UPDATE
            SET n = excluded.n, sum = excluded.sum, min = excluded.min, max = excluded.max,
                mean = excluded.mean, m2 = excluded.m2
            WHERE excluded.n > t.n;
        INSERT INTO readings_1h AS t (bucket, site, resource_id, sensor, n, sum, min, max, mean,
                                      m2)
        SELECT date_bin(INTERVAL '1 hour', r.ts, timestamptz 'epoch'), r.site, r.resource_id,
               r.sensor, count(*), edge_mes_rollup_float8(sum(r.value::numeric)), min(r.value),
               max(r.value), edge_mes_rollup_mean(sum(r.value::numeric), count(*)),
               edge_mes_rollup_float8(var_pop(r.value::numeric) * count(*))
        FROM readings r
        WHERE r.ts >= h_lo AND r.ts < h_hi
        GROUP BY 1, 2, 3, 4
        ON CONFLICT (bucket, resource_id, sensor, site) DO UPDATE
            SET n = excluded.n, sum = excluded.sum, min = excluded.min, max = excluded.max,
                mean = excluded.mean, m2 = excluded.m2
            WHERE excluded.n > t.n;
    END;
    RETURN true;
END $$;

-- Removes [from_ts, to_ts) from the queue entries `queued` (as edge_mes_rollup_pending returned
-- them) once that range was recomputed or refreshed; entries left empty are deleted. Entries
-- queued after the pending call are not in `queued` and stay. Returns the entries deleted.
CREATE FUNCTION edge_mes_rollup_done(from_ts timestamptz, to_ts timestamptz, queued bigint[])
RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    deleted integer;
BEGIN
    UPDATE rollup_queue q SET span = q.span - tstzmultirange(tstzrange(from_ts, to_ts))
    WHERE q.id = ANY (queued);
    DELETE FROM rollup_queue q WHERE q.id = ANY (queued) AND isempty(q.span);
    GET DIAGNOSTICS deleted = ROW_COUNT;
    RETURN deleted;
END $$;

-- Plain PostgreSQL, in one transaction: pending, apply and done for up to max_ranges ranges.
-- Returns the ranges recomputed; 0 when another refresher holds the lock (what it did not see
-- stays queued for the next call). On TimescaleDB it raises feature_not_supported: use the
-- protocol in the header, which refreshes outside a transaction block.
CREATE FUNCTION edge_mes_refresh_rollups(max_ranges integer) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    r    record;
    done integer := 0;
BEGIN
    IF edge_mes_rollups_continuous() THEN
        RAISE EXCEPTION 'readings_1m and readings_1h are continuous aggregates'
            USING ERRCODE = 'feature_not_supported',
                  HINT = 'call edge_mes_rollup_pending, CALL refresh_continuous_aggregate outside a transaction block, then edge_mes_rollup_done';
    END IF;
    IF NOT pg_try_advisory_xact_lock(hashtext('edge_mes_rollups')) THEN
        RETURN 0;
    END IF;
    FOR r IN SELECT * FROM edge_mes_rollup_pending(max_ranges) LOOP
        PERFORM edge_mes_rollup_apply(r.from_ts, r.to_ts);
        PERFORM edge_mes_rollup_done(r.from_ts, r.to_ts, r.queued);
        done := done + 1;
    END LOOP;
    RETURN done;
END $$;

-- Rows already in readings when this migration runs: queue them once (unknown span: resolved to
-- the extent of readings by the first pending call).
INSERT INTO rollup_queue (span)
SELECT tstzmultirange(tstzrange(NULL, NULL)) WHERE EXISTS (SELECT 1 FROM readings);

REVOKE EXECUTE ON FUNCTION edge_mes_rollup_pending(integer, integer),
                           edge_mes_rollup_apply(timestamptz, timestamptz),
                           edge_mes_rollup_done(timestamptz, timestamptz, bigint[]),
                           edge_mes_refresh_rollups(integer)
    FROM PUBLIC;

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'edge_mes_worker') THEN
        GRANT SELECT, INSERT, UPDATE, DELETE ON readings_1m, readings_1h TO edge_mes_worker;
        GRANT EXECUTE ON FUNCTION edge_mes_rollup_pending(integer, integer),
                                  edge_mes_rollup_apply(timestamptz, timestamptz),
                                  edge_mes_rollup_done(timestamptz, timestamptz, bigint[]),
                                  edge_mes_refresh_rollups(integer)
            TO edge_mes_worker;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'edge_mes_api') THEN
        GRANT SELECT ON readings_1m, readings_1h TO edge_mes_api;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'edge_mes_mes_reader') THEN
        GRANT SELECT ON readings_1m, readings_1h TO edge_mes_mes_reader;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'edge_mes_grafana') THEN
        GRANT SELECT ON readings_1m, readings_1h TO edge_mes_grafana;
    END IF;
END $$;
