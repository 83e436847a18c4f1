-- Readings, the ingest ledger and rejected lines.
--
-- One migration path for plain PostgreSQL 15+ and TimescaleDB: the extension is used only when it
-- is both available and preloaded. Without preload, CREATE EXTENSION timescaledb is FATAL and drops
-- the connection, so shared_preload_libraries is probed first.

-- btree_gist lets one exclusion constraint combine text equality with range overlap (a trusted
-- extension since PostgreSQL 13, so no superuser is needed).
CREATE EXTENSION IF NOT EXISTS btree_gist;

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb')
       AND coalesce(current_setting('shared_preload_libraries', true), '') LIKE '%timescaledb%' THEN
        CREATE EXTENSION IF NOT EXISTS timescaledb;
        CREATE TABLE readings (
            ts            timestamptz      NOT NULL,
            site          text             NOT NULL,
            resource_id   text             NOT NULL,
            work_order_id text,
            operation_id  text,
            sensor        text             NOT NULL,
            value         double precision NOT NULL,
            unit          text,
            meta          jsonb
        );
        PERFORM create_hypertable('readings', 'ts', chunk_time_interval => INTERVAL '1 day');
    ELSE
        CREATE TABLE readings (
            ts            timestamptz      NOT NULL,
            site          text             NOT NULL,
            resource_id   text             NOT NULL,
            work_order_id text,
            operation_id  text,
            sensor        text             NOT NULL,
            value         double precision NOT NULL,
            unit          text,
            meta          jsonb
        ) PARTITION BY RANGE (ts);
        -- Rows for days without a partition (late or far-future data) land here instead of failing.
        CREATE TABLE readings_default PARTITION OF readings DEFAULT;
    END IF;
END $$;

COMMENT ON TABLE readings IS
    'Sensor readings from edge JSONL, loaded exactly once by ingest-worker. ts is the reading time; site is the shipper''s --site; meta holds the line''s meta object plus unknown top-level fields.';

-- The one index readings carry: series lookups by time (trends, SPC, traceability). Every extra
-- index costs ingest speed, so add one only for a query that needs it.
CREATE INDEX readings_series_ts ON readings (resource_id, sensor, ts DESC);

-- What has been ingested: byte ranges per source. The exclusion constraint is the database's own
-- guarantee that no byte of a source is loaded twice, whatever the workers do.
CREATE TABLE ingest_ledger (
    id          bigserial   PRIMARY KEY,
    source      text        NOT NULL,
    byte_range  int8range   NOT NULL CHECK (NOT isempty(byte_range) AND lower(byte_range) >= 0),
    site        text        NOT NULL,
    box_id      text        NOT NULL,
    path        text        NOT NULL,
    lines       bigint      NOT NULL,
    rows_loaded bigint      NOT NULL,
    rejected    bigint      NOT NULL,
    first_at    timestamptz NOT NULL DEFAULT now(),
    last_at     timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT ingest_ledger_no_overlap EXCLUDE USING gist (source WITH =, byte_range WITH &&)
);

COMMENT ON TABLE ingest_ledger IS
    'Byte ranges [start,end) of each source (content-named file) already loaded; adjacent ranges are merged by edge_mes_compact_ledger().';

CREATE TABLE rejected_readings (
    id          bigserial   PRIMARY KEY,
    received_at timestamptz NOT NULL DEFAULT now(),
    site        text        NOT NULL,
    box_id      text        NOT NULL,
    source      text        NOT NULL,
    path        text        NOT NULL,
    byte_offset bigint      NOT NULL,
    line_bytes  bigint      NOT NULL,
    reason      text        NOT NULL,
    detail      text        NOT NULL,
    line        text        NOT NULL
);

COMMENT ON TABLE rejected_readings IS
    'Lines that failed validation: reason is a stable code (see README), line is the first 4 KiB with invalid UTF-8 replaced.';
CREATE INDEX rejected_readings_received_at ON rejected_readings (received_at);
CREATE INDEX rejected_readings_source ON rejected_readings (source, byte_offset);

-- Messages the worker could never process (bad framing). They also go to the READINGS_DLQ stream;
-- this table makes them visible to dashboards.
CREATE TABLE ingest_dead_letters (
    id              bigserial   PRIMARY KEY,
    received_at     timestamptz NOT NULL DEFAULT now(),
    stream_sequence bigint      NOT NULL,
    subject         text        NOT NULL,
    reason          text        NOT NULL,
    headers         jsonb       NOT NULL,
    payload_bytes   bigint      NOT NULL,
    payload_prefix  text        NOT NULL
);
CREATE INDEX ingest_dead_letters_received_at ON ingest_dead_letters (received_at);
