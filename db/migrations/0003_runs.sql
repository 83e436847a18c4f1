-- Production master data and runs, as the seed's schema has them, plus what mes-api needs of a
-- run: the site it ran at, bookkeeping times and one run per resource at a time. The rows (sites,
-- resources, work orders) are plant data: mes-api creates its default site at start and the API
-- creates the rest; no migration inserts any.

CREATE TABLE sites (
    site_id    text PRIMARY KEY,
    name       text NOT NULL DEFAULT '',
    -- IANA time zone; shifts are local to it.
    time_zone  text NOT NULL DEFAULT 'Asia/Bangkok',
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE resources (
    resource_id text PRIMARY KEY,
    site_id     text REFERENCES sites (site_id),
    name        text NOT NULL DEFAULT '',
    line_id     text,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE work_orders (
    work_order_id text PRIMARY KEY,
    product_id    text,
    planned_qty   bigint CHECK (planned_qty IS NULL OR planned_qty >= 0),
    created_at    timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE op_run (
    op_run_id          uuid PRIMARY KEY,
    work_order_id      text NOT NULL,
    operation_id       text NOT NULL,
    resource_id        text NOT NULL,
    status             text NOT NULL DEFAULT 'running'
                       CHECK (status IN ('running', 'paused', 'completed', 'aborted')),
    started_at         timestamptz NOT NULL,
    ended_at           timestamptz,
    planned_seconds    double precision CHECK (planned_seconds IS NULL OR planned_seconds >= 0),
    ideal_cycle_time_s double precision CHECK (ideal_cycle_time_s IS NULL OR ideal_cycle_time_s > 0),
    good_units         bigint NOT NULL DEFAULT 0 CHECK (good_units >= 0),
    scrap_units        bigint NOT NULL DEFAULT 0 CHECK (scrap_units >= 0),
    CHECK (ended_at IS NULL OR ended_at >= started_at),
    -- A run's site (resources.site_id may be NULL or change later; the run keeps where it ran).
    site_id            text REFERENCES sites (site_id),
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    -- One run per resource at a time: the database refuses overlapping runs, so planned time is
    -- never counted twice. An open run occupies its resource until it ends.
    CONSTRAINT op_run_no_overlap EXCLUDE USING gist (
        resource_id WITH =,
        tstzrange(started_at, coalesce(ended_at, 'infinity'::timestamptz), '[)') WITH &&
    )
);
CREATE INDEX op_run_resource_started ON op_run (resource_id, started_at);
CREATE INDEX op_run_work_order ON op_run (work_order_id);
CREATE INDEX op_run_active ON op_run (started_at) WHERE status IN ('running', 'paused');
CREATE INDEX op_run_span ON op_run USING gist (
    tstzrange(started_at, coalesce(ended_at, 'infinity'::timestamptz), '[)')
);
