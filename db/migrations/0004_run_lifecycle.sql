-- Run lifecycle for mes-api: time-stamped count reports, downtime with reason codes, idempotent
-- POSTs and the transactional outbox of run events. The default reason codes are in the next
-- migration (documented defaults a plant may edit).

-- Count reports: each POST /op_run/report is one row at its own time `at`, so counts belong to the
-- shift they were reported in. kind 'final' rows are the adjustment a complete with final
-- counters makes (final minus already reported).
CREATE TABLE op_run_count (
    id          bigserial   PRIMARY KEY,
    op_run_id   uuid        NOT NULL REFERENCES op_run (op_run_id),
    at          timestamptz NOT NULL,
    good_delta  bigint      NOT NULL CHECK (good_delta >= 0),
    scrap_delta bigint      NOT NULL CHECK (scrap_delta >= 0),
    kind        text        NOT NULL DEFAULT 'report' CHECK (kind IN ('report', 'final')),
    recorded_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX op_run_count_run_at ON op_run_count (op_run_id, at);
CREATE INDEX op_run_count_at ON op_run_count (at);
COMMENT ON TABLE op_run_count IS
    'Time-stamped count reports of a run (good and scrap units since the previous report). op_run.good_units/scrap_units are their running totals, kept in the same transaction.';

-- Downtime reasons and the OEE loss bucket each falls into (configurable; see docs/api.md):
--   availability: the time is lost from actual production time (ISO 22400-2: ADET, setup).
--   performance:  the time stays in operating time; its lost output shows in effectiveness.
--   excluded:     the time is removed from planned busy time (not a loss; e.g. planned
--                 maintenance, no order).
CREATE TABLE downtime_reasons (
    reason_code text    PRIMARY KEY CHECK (reason_code ~ '^[A-Za-z0-9_.-]{1,64}$'),
    description text    NOT NULL DEFAULT '',
    planned     boolean NOT NULL,
    loss_bucket text    NOT NULL CHECK (loss_bucket IN ('availability', 'performance', 'excluded')),
    -- Counts as a failure event for MTBF/MTTR.
    is_failure  boolean NOT NULL DEFAULT false
);
COMMENT ON TABLE downtime_reasons IS
    'Reason codes for POST /op_run/pause: planned or unplanned, and the OEE loss bucket (availability, performance, excluded from planned time). Edit freely; views read it at query time.';

CREATE TABLE op_run_downtime (
    id          bigserial   PRIMARY KEY,
    op_run_id   uuid        NOT NULL REFERENCES op_run (op_run_id),
    reason_code text        NOT NULL REFERENCES downtime_reasons (reason_code),
    started_at  timestamptz NOT NULL,
    ended_at    timestamptz,
    note        text,
    CHECK (ended_at IS NULL OR ended_at >= started_at),
    -- Downtimes of one run never overlap.
    CONSTRAINT op_run_downtime_no_overlap EXCLUDE USING gist (
        op_run_id WITH =,
        tstzrange(started_at, coalesce(ended_at, 'infinity'::timestamptz), '[)') WITH &&
    )
);
CREATE INDEX op_run_downtime_run ON op_run_downtime (op_run_id, started_at);
-- At most one open downtime per run.
CREATE UNIQUE INDEX op_run_downtime_one_open ON op_run_downtime (op_run_id) WHERE ended_at IS NULL;
-- A run's downtimes by time span, for the OEE elements.
CREATE INDEX op_run_downtime_span ON op_run_downtime USING gist (
    op_run_id, tstzrange(started_at, coalesce(ended_at, 'infinity'::timestamptz), '[)'));

-- Idempotency-Key answers: stored in the same transaction as the change they answer.
CREATE TABLE idempotency_keys (
    idempotency_key text        PRIMARY KEY,
    route           text        NOT NULL,
    request_hash    bytea       NOT NULL,
    response_status smallint,
    response_body   jsonb,
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX idempotency_keys_created_at ON idempotency_keys (created_at);

-- The outbox of run events, written in the same transaction as the state change; the relay in
-- mes-api publishes unsent rows in id order with Nats-Msg-Id = id and then sets sent_at.
CREATE TABLE outbox (
    id          bigserial   PRIMARY KEY,
    created_at  timestamptz NOT NULL DEFAULT now(),
    op_run_id   uuid        NOT NULL,
    event_type  text        NOT NULL,
    site_id     text        NOT NULL,
    resource_id text        NOT NULL,
    payload     jsonb       NOT NULL,
    sent_at     timestamptz
);
CREATE INDEX outbox_unsent ON outbox (id) WHERE sent_at IS NULL;
CREATE INDEX outbox_sent_at ON outbox (sent_at) WHERE sent_at IS NOT NULL;
COMMENT ON TABLE outbox IS
    'Run events (protocol::RunEvent JSON, schema_version 1) waiting for or already published to JetStream stream OP_RUN.';
