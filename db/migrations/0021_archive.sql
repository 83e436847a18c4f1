-- The Parquet archive (issue 16, edge-mes-archiver; docs/archive.md): what each ledger entry's
-- rows span in time, which parts of which day are archived, verified and sealed, and what was
-- replayed from the archive.
--
-- Readings rows carry no ingest id, so the archive is tied to ingestion through the ledger: a
-- day's archive part records the ledger ranges (source + byte range) that touched the day in the
-- snapshot it read the rows from. A ledger range that touches a day and is not inside what the
-- day's parts recorded was loaded after the day was archived: the day must be archived again.

-- Time span of the readings each ledger entry loaded: the worker fills them from the rows it
-- loads (ingest-worker ledger.rs), compaction keeps least/greatest. NULL (entries written before
-- this migration, or by an older worker during a rolling upgrade) means unknown: such an entry
-- is taken to touch every day.
ALTER TABLE ingest_ledger ADD COLUMN min_ts timestamptz, ADD COLUMN max_ts timestamptz;
COMMENT ON COLUMN ingest_ledger.min_ts IS
    'Earliest ts of the rows this entry loaded (NULL: unknown, taken to touch every day).';
COMMENT ON COLUMN ingest_ledger.max_ts IS
    'Latest ts of the rows this entry loaded (NULL: unknown, taken to touch every day).';

-- One archive part of one UTC day: a manifest and its Parquet files. While the day's rows are in
-- the database (hot), the day's one unsealed part holds all of them and is rewritten
-- deterministically when late rows arrive. Once the rows are removed by retention (through
-- edge_mes_archive_release_day below) the part is sealed and never changes again; rows that
-- arrive later for that day go to a new part.
CREATE TABLE archive_parts (
    day             date        NOT NULL,
    part            integer     NOT NULL CHECK (part >= 0),
    manifest_path   text        NOT NULL,
    manifest_sha256 text        NOT NULL CHECK (manifest_sha256 ~ '^[0-9a-f]{64}$'),
    rows            bigint      NOT NULL CHECK (rows >= 0),
    files           integer     NOT NULL CHECK (files >= 0),
    bytes           bigint      NOT NULL CHECK (bytes >= 0),
    archived_at     timestamptz NOT NULL DEFAULT now(),
    -- Set by a verify of exactly this manifest (same SHA-256); cleared when the part is rewritten.
    verified_at     timestamptz,
    sealed_at       timestamptz,
    PRIMARY KEY (day, part)
);
COMMENT ON TABLE archive_parts IS
    'Parquet archive parts per UTC day (edge-mes-archiver): manifest, rows, verification and seal.';

-- The ingest positions a part covers: the ledger ranges (merged per source) that touched the day
-- in the snapshot the part's rows were read from.
CREATE TABLE archive_part_positions (
    day        date      NOT NULL,
    part       integer   NOT NULL,
    source     text      NOT NULL,
    byte_range int8range NOT NULL,
    FOREIGN KEY (day, part) REFERENCES archive_parts (day, part) ON DELETE CASCADE
);
CREATE INDEX archive_part_positions_day_source ON archive_part_positions (day, source);

-- Parts replayed into this database (edge-mes-archiver replay), recorded in the transaction
-- that loaded their rows: a second replay, or one after a kill, skips them.
CREATE TABLE archive_replays (
    day             date        NOT NULL,
    part            integer     NOT NULL,
    manifest_sha256 text        NOT NULL,
    rows            bigint      NOT NULL,
    replayed_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (day, part)
);
COMMENT ON TABLE archive_replays IS
    'Archive parts whose rows were loaded back into readings by edge-mes-archiver replay.';

-- True when a ledger entry touching UTC day `d` is not inside the ranges the day's archive parts
-- recorded: rows may have been loaded for the day since it was archived.
CREATE FUNCTION edge_mes_archive_day_pending(d date) RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT EXISTS (
        SELECT 1
        FROM ingest_ledger l
        WHERE (l.min_ts IS NULL OR l.max_ts IS NULL
               OR (l.min_ts < ((d + 1)::timestamp AT TIME ZONE 'UTC')
                   AND l.max_ts >= (d::timestamp AT TIME ZONE 'UTC')))
          AND NOT coalesce((SELECT l.byte_range <@ range_agg(p.byte_range)
                            FROM archive_part_positions p
                            WHERE p.day = d AND p.source = l.source), false)
    )
$$;

-- Contract for retention (ingest-worker): a UTC day's readings may be removed only when this
-- returns true. True when the day has no rows, or when every row of it is in a verified archive
-- part: no ledger entry touching the day is outside what its parts recorded, every part of the
-- day is verified (verified_at set for its current manifest), and the day has a part or was
-- replayed from the archive. It reads committed state (READ COMMITTED): call it after taking the
-- lock that stops loads into the day (e.g. LOCK TABLE readings_pYYYYMMDD IN ACCESS EXCLUSIVE
-- MODE, or DROP it in the same transaction after the check under that lock), so that no row
-- commits between the check and the removal. Prefer edge_mes_archive_release_day, which also
-- seals the day's parts in the removing transaction.
CREATE FUNCTION edge_mes_day_archived(d date) RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT NOT EXISTS (SELECT 1 FROM readings
                       WHERE ts >= (d::timestamp AT TIME ZONE 'UTC')
                         AND ts < ((d + 1)::timestamp AT TIME ZONE 'UTC'))
        OR (NOT edge_mes_archive_day_pending(d)
            AND NOT EXISTS (SELECT 1 FROM archive_parts WHERE day = d AND verified_at IS NULL)
            AND (EXISTS (SELECT 1 FROM archive_parts WHERE day = d)
                 OR EXISTS (SELECT 1 FROM archive_replays WHERE day = d)))
$$;

-- For retention that removes a UTC day's readings: call it in the transaction that removes them,
-- under the lock described at edge_mes_day_archived. Returns edge_mes_day_archived(d); when true
-- it also seals the day's parts in the caller's transaction (committed with the removal, rolled
-- back with it), so rows that arrive for the day later go to a new part and the sealed ones are
-- never rewritten with fewer rows. When false, the caller must not remove the day.
CREATE FUNCTION edge_mes_archive_release_day(d date) RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
    IF NOT edge_mes_day_archived(d) THEN
        RETURN false;
    END IF;
    UPDATE archive_parts SET sealed_at = now() WHERE day = d AND sealed_at IS NULL;
    RETURN true;
END $$;

-- The first UTC day from which on some day is not archived and verified, looking back from
-- `through` over at most `days_back` days: retention may remove every day before it (a summary
-- for dashboards and /ready; retention itself checks day by day).
CREATE FUNCTION edge_mes_archive_verified_through(through date, days_back integer)
RETURNS date
LANGUAGE sql STABLE AS $$
    SELECT coalesce(min(d)::date, through + 1)
    FROM generate_series(through - days_back, through, INTERVAL '1 day') AS g(d)
    WHERE NOT edge_mes_day_archived(d::date)
$$;

-- Ledger compaction (0002) keeps the entries' time span: least of min_ts, greatest of max_ts,
-- NULL (unknown) when any merged entry's is unknown.
CREATE OR REPLACE FUNCTION edge_mes_compact_ledger(max_sources integer) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
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
                                   rejected, first_at, last_at, min_ts, max_ts)
        SELECT src, int8range(min(lo), max(hi)),
               (array_agg(site ORDER BY lo DESC))[1], (array_agg(box_id ORDER BY lo DESC))[1],
               (array_agg(path ORDER BY lo DESC))[1],
               sum(lines), sum(rows_loaded), sum(rejected), min(first_at), max(last_at),
               CASE WHEN bool_and(min_ts IS NOT NULL) THEN min(min_ts) END,
               CASE WHEN bool_and(max_ts IS NOT NULL) THEN max(max_ts) END
        FROM gone GROUP BY grp;
        merged := merged + 1;
    END LOOP;
    RETURN merged;
END $$;

-- Retention (the worker) calls the archive's functions as their owner; the archiver runs as a
-- login in edge_mes_archiver: it reads readings and the ledger and writes its own tables only.
ALTER FUNCTION edge_mes_day_archived(date) SECURITY DEFINER SET search_path = public, pg_temp;
ALTER FUNCTION edge_mes_archive_release_day(date)
    SECURITY DEFINER SET search_path = public, pg_temp;
ALTER FUNCTION edge_mes_archive_verified_through(date, integer)
    SECURITY DEFINER SET search_path = public, pg_temp;
REVOKE EXECUTE ON FUNCTION edge_mes_day_archived(date), edge_mes_archive_release_day(date),
                           edge_mes_archive_verified_through(date, integer)
    FROM PUBLIC;

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'edge_mes_archiver') THEN
        BEGIN
            CREATE ROLE edge_mes_archiver NOLOGIN;
        EXCEPTION
            WHEN duplicate_object OR unique_violation THEN NULL; -- created concurrently
            WHEN insufficient_privilege THEN
                RAISE NOTICE 'no CREATEROLE privilege: role edge_mes_archiver not created';
        END;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'edge_mes_archiver') THEN
        GRANT USAGE ON SCHEMA public TO edge_mes_archiver;
        GRANT SELECT ON readings, ingest_ledger, _sqlx_migrations TO edge_mes_archiver;
        GRANT SELECT, INSERT, UPDATE, DELETE ON archive_parts, archive_part_positions
            TO edge_mes_archiver;
        -- replay loads rows back into readings and records them.
        GRANT INSERT ON readings TO edge_mes_archiver;
        GRANT SELECT, INSERT ON archive_replays TO edge_mes_archiver;
        GRANT EXECUTE ON FUNCTION edge_mes_day_archived(date),
                                  edge_mes_archive_verified_through(date, integer)
            TO edge_mes_archiver;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'edge_mes_worker') THEN
        GRANT EXECUTE ON FUNCTION edge_mes_day_archived(date), edge_mes_archive_release_day(date),
                                  edge_mes_archive_verified_through(date, integer)
            TO edge_mes_worker;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'edge_mes_api') THEN
        GRANT EXECUTE ON FUNCTION edge_mes_archive_verified_through(date, integer)
            TO edge_mes_api;
    END IF;
END $$;
