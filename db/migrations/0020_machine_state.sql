-- Availability from the machine's own signals. A client that only starts, reports and completes
-- runs (the seed's endpoints) always got A = 1.0, whatever the machine did. Now a resource can
-- have a machine-state rule over one of its sensors; mes-api's detector (api/src/machine_state.rs)
-- turns the readings into stops, stored in machine_stops with reason `unassigned` (or the reason
-- a state code maps to), and an operator assigns the reason later (POST
-- /machine_stops/{stop_id}/reason). The OEE elements read the stops at query time, so figures of
-- every shift a stop touches follow its reason, also after the shift closed.
--
-- The rule (docs/api.md, "Machine state"):
--   threshold: the machine is stopped while the sensor's value is at or below
--              stopped_at_or_below (e.g. speed <= 0.5);
--   codes:     a state sensor; the machine is stopped while its value is one of the codes of
--              stop_codes, an object mapping a code (integer, as text) to a reason code, or to
--              `unassigned` when the code does not say why; any other value means running.
--   A stop starts at the first stopped reading and ends at the first reading that is not (the
--   last reading's state holds until the next one: sample and hold). A stop shorter than
--   min_stop_seconds is not recorded; one still going counts once it has lasted that long (by
--   the readings' own times) and stays open (ended_at NULL) until a running reading arrives.
--   Consecutive stopped readings with different codes are different stops.
-- Detected stops count only while a run is busy on the resource (like every downtime), and an
-- operator's pause wins over a detected stop for the time both cover.

CREATE TABLE machine_state_rules (
    resource_id         text             PRIMARY KEY,
    sensor              text             NOT NULL,
    kind                text             NOT NULL CHECK (kind IN ('threshold', 'codes')),
    stopped_at_or_below double precision CHECK (stopped_at_or_below IS NULL
                                                OR stopped_at_or_below BETWEEN -1e15 AND 1e15),
    stop_codes          jsonb,
    min_stop_seconds    double precision NOT NULL DEFAULT 60
                        CHECK (min_stop_seconds BETWEEN 0 AND 86400),
    updated_at          timestamptz      NOT NULL DEFAULT now(),
    updated_by          text,
    CHECK ((kind = 'threshold' AND stopped_at_or_below IS NOT NULL AND stop_codes IS NULL)
        OR (kind = 'codes' AND stopped_at_or_below IS NULL AND stop_codes IS NOT NULL
            AND jsonb_typeof(stop_codes) = 'object'))
);
COMMENT ON TABLE machine_state_rules IS
    'Per resource, how its readings tell that the machine stands (migration 0020, docs/api.md "Machine state"): kind threshold (stopped while sensor <= stopped_at_or_below) or codes (stopped while the state sensor''s value is a key of stop_codes, which maps it to a reason code or unassigned); stops shorter than min_stop_seconds are ignored. Set through PUT /machine_state/rules/{resource_id} (admin) or here.';

-- The reason of a stop nobody has explained yet: an availability loss of its own code.
INSERT INTO downtime_reasons (reason_code, description, planned, loss_bucket, is_failure) VALUES
    ('unassigned', 'Stop detected from the machine''s signals, reason not yet assigned', false,
     'availability', false)
ON CONFLICT (reason_code) DO NOTHING;

CREATE TABLE machine_stops (
    id              bigserial        PRIMARY KEY,
    resource_id     text             NOT NULL,
    started_at      timestamptz      NOT NULL,
    ended_at        timestamptz,
    reason_code     text             NOT NULL DEFAULT 'unassigned'
                                     REFERENCES downtime_reasons (reason_code),
    -- The state code that started it (codes rules), else NULL.
    state_code      bigint,
    detected_at     timestamptz      NOT NULL DEFAULT now(),
    updated_at      timestamptz      NOT NULL DEFAULT now(),
    assigned_by     text,
    assigned_at     timestamptz,
    note            text CHECK (note IS NULL OR octet_length(note) <= 1024),
    CHECK (ended_at IS NULL OR ended_at > started_at),
    CONSTRAINT machine_stops_no_overlap EXCLUDE USING gist (
        resource_id WITH =,
        tstzrange(started_at, coalesce(ended_at, 'infinity'::timestamptz), '[)') WITH &&
    )
);
CREATE INDEX machine_stops_open ON machine_stops (resource_id) WHERE ended_at IS NULL;
COMMENT ON TABLE machine_stops IS
    'Stops detected from readings by the machine-state rules (migration 0020). reason_code starts as unassigned (or the reason a state code maps to); an operator assigns it later (assigned_by, assigned_at). The OEE elements count a stop like a downtime of its reason while a run is busy on the resource, minus the time an operator''s pause covers.';

-- The OEE elements (0014) with detected stops beside the operators' downtimes; same columns.
CREATE OR REPLACE FUNCTION edge_mes_shift_elements(
    p_from timestamptz, p_to timestamptz, p_site text DEFAULT NULL, p_resource text DEFAULT NULL)
RETURNS TABLE (
    site_id                    text,
    resource_id                text,
    line_id                    text,
    shift_name                 text,
    shift_date                 date,
    starts_at                  timestamptz,
    ends_at                    timestamptz,
    run_count                  integer,
    shift_seconds              double precision,
    busy_seconds               double precision,
    planned_break_seconds      double precision,
    excluded_seconds           double precision,
    pbt_seconds                double precision,
    availability_loss_seconds  double precision,
    apt_seconds                double precision,
    performance_loss_seconds   double precision,
    planned_downtime_seconds   double precision,
    unplanned_downtime_seconds double precision,
    failure_events             integer,
    failure_seconds            double precision,
    pq                         bigint,
    gq                         bigint,
    sq                         bigint,
    pru_pq_seconds             double precision,
    pru_gq_seconds             double precision,
    ideal_cycle_time_missing   boolean
)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $$
WITH runs AS (
    SELECT r.op_run_id, r.resource_id, coalesce(r.site_id, res.site_id) AS site_id, res.line_id,
           r.ideal_cycle_time_s, r.ended_at,
           tstzrange(r.started_at, coalesce(r.ended_at, greatest(now(), r.started_at)), '[)') AS span
    FROM op_run r
    LEFT JOIN resources res ON res.resource_id = r.resource_id
    WHERE tstzrange(r.started_at, coalesce(r.ended_at, 'infinity'::timestamptz), '[)')
          && tstzrange(p_from, p_to, '[)')
      AND (p_resource IS NULL OR r.resource_id = p_resource)
      AND (p_site IS NULL OR coalesce(r.site_id, res.site_id) = p_site)
), site_days AS (
    -- The days whose shifts can meet both a run and the window: a run open for years must not
    -- make every query expand years of shifts (a shift lasts at most 24 h, hence the day before).
    SELECT ru.site_id,
           (greatest(min(lower(ru.span)), p_from) AT TIME ZONE s.time_zone)::date - 1 AS d0,
           (least(max(upper(ru.span)), p_to) AT TIME ZONE s.time_zone)::date AS d1
    FROM runs ru JOIN sites s ON s.site_id = ru.site_id
    GROUP BY ru.site_id, s.time_zone
), shifts AS (
    SELECT si.*, tstzrange(si.starts_at, si.ends_at, '[)') AS shift_range
    FROM site_days sd
    CROSS JOIN LATERAL edge_mes_shift_instances(sd.d0, sd.d1, sd.site_id) si
    WHERE tstzrange(si.starts_at, si.ends_at, '[)') && tstzrange(p_from, p_to, '[)')
), grouped AS (
    SELECT sh.site_id, ru.resource_id, min(ru.line_id) AS line_id, sh.shift_name, sh.shift_date,
           sh.starts_at, sh.ends_at, sh.shift_range,
           (array_agg(sh.breaks))[1] AS breaks,
           count(*)::int AS run_count,
           range_agg(ru.span * sh.shift_range) AS busy,
           array_agg(ru.op_run_id) AS run_ids
    FROM runs ru
    JOIN shifts sh ON sh.site_id = ru.site_id AND ru.span && sh.shift_range
    GROUP BY sh.site_id, ru.resource_id, sh.shift_name, sh.shift_date, sh.starts_at, sh.ends_at,
             sh.shift_range
), timed AS (
    SELECT g.*,
           g.breaks * g.busy AS break_mr,
           coalesce(dt.excluded, '{}') * g.busy AS excluded_mr,
           coalesce(dt.availability, '{}') * g.busy AS availability_mr,
           coalesce(dt.performance, '{}') * g.busy AS performance_mr,
           coalesce(dt.planned, '{}') * g.busy AS planned_mr,
           coalesce(dt.unplanned, '{}') * g.busy AS unplanned_mr,
           coalesce(dt.failure, '{}') * g.busy AS failure_mr,
           coalesce(dt.failure_events, 0) AS failure_events
    FROM grouped g
    LEFT JOIN LATERAL (
        WITH manual AS (
            SELECT od.id, od.reason_code,
                   tstzrange(od.started_at,
                             coalesce(od.ended_at, r.ended_at, greatest(now(), od.started_at)),
                             '[)') AS span
            FROM op_run_downtime od
            JOIN op_run r ON r.op_run_id = od.op_run_id
            WHERE od.op_run_id = ANY (g.run_ids)
              AND od.started_at < g.ends_at
              AND coalesce(od.ended_at, 'infinity'::timestamptz) > g.starts_at
        ), manual_mr AS (
            SELECT coalesce(range_agg(m.span), '{}'::tstzmultirange) AS mr FROM manual m
        ), d AS (
            SELECT 'o' || m.id AS event_key, m.reason_code, m.span, lower(m.span) AS event_at
            FROM manual m
            UNION ALL
            -- Detected stops, minus what an operator's pause already covers (the pause wins).
            SELECT 'm' || ms.id, ms.reason_code, piece.span, ms.started_at
            FROM machine_stops ms
            CROSS JOIN manual_mr
            CROSS JOIN LATERAL unnest(
                tstzmultirange(tstzrange(ms.started_at,
                                         coalesce(ms.ended_at, greatest(now(), ms.started_at)),
                                         '[)'))
                - manual_mr.mr) AS piece(span)
            WHERE ms.resource_id = g.resource_id
              AND ms.started_at < g.ends_at
              AND coalesce(ms.ended_at, 'infinity'::timestamptz) > g.starts_at
        )
        SELECT range_agg(d.span) FILTER (WHERE dr.loss_bucket = 'excluded') AS excluded,
               range_agg(d.span) FILTER (WHERE dr.loss_bucket = 'availability') AS availability,
               range_agg(d.span) FILTER (WHERE dr.loss_bucket = 'performance') AS performance,
               range_agg(d.span) FILTER (WHERE dr.planned) AS planned,
               range_agg(d.span) FILTER (WHERE NOT dr.planned) AS unplanned,
               range_agg(d.span) FILTER (WHERE dr.is_failure) AS failure,
               (count(DISTINCT d.event_key)
                    FILTER (WHERE dr.is_failure AND d.event_at <@ g.shift_range))::int
                   AS failure_events
        FROM d
        JOIN downtime_reasons dr ON dr.reason_code = d.reason_code
    ) dt ON true
), elements AS (
    SELECT t.*,
           t.busy - t.break_mr - t.excluded_mr AS pbt_mr
    FROM timed t
)
SELECT e.site_id, e.resource_id, e.line_id, e.shift_name, e.shift_date, e.starts_at, e.ends_at,
       e.run_count,
       extract(epoch FROM e.ends_at - e.starts_at)::float8,
       edge_mes_mr_seconds(e.busy),
       edge_mes_mr_seconds(e.break_mr),
       edge_mes_mr_seconds(e.excluded_mr - e.break_mr),
       edge_mes_mr_seconds(e.pbt_mr),
       edge_mes_mr_seconds(e.pbt_mr * e.availability_mr),
       edge_mes_mr_seconds(e.pbt_mr - e.availability_mr),
       edge_mes_mr_seconds((e.pbt_mr - e.availability_mr) * e.performance_mr),
       edge_mes_mr_seconds(e.planned_mr),
       edge_mes_mr_seconds(e.unplanned_mr),
       e.failure_events,
       edge_mes_mr_seconds(e.pbt_mr * e.failure_mr),
       coalesce(c.pq, 0), coalesce(c.gq, 0), coalesce(c.sq, 0),
       coalesce(c.pru_pq, 0), coalesce(c.pru_gq, 0),
       coalesce(c.ict_missing, false)
FROM elements e
LEFT JOIN LATERAL (
    SELECT sum(x.good_delta + x.scrap_delta)::bigint AS pq,
           sum(x.good_delta)::bigint AS gq,
           sum(x.scrap_delta)::bigint AS sq,
           sum((x.good_delta + x.scrap_delta) * x.ideal_cycle_time_s)::float8 AS pru_pq,
           sum(x.good_delta * x.ideal_cycle_time_s)::float8 AS pru_gq,
           bool_or(x.ideal_cycle_time_s IS NULL AND x.good_delta + x.scrap_delta > 0) AS ict_missing
    FROM (
        SELECT cnt.good_delta, cnt.scrap_delta, r.ideal_cycle_time_s,
               CASE WHEN cnt.at >= r.ended_at THEN cnt.at - interval '1 microsecond'
                    ELSE cnt.at END AS eff_at
        FROM op_run_count cnt
        JOIN op_run r ON r.op_run_id = cnt.op_run_id
        WHERE cnt.op_run_id = ANY (e.run_ids)
          AND cnt.at >= e.starts_at AND cnt.at <= e.ends_at
    ) x
    WHERE x.eff_at >= e.starts_at AND x.eff_at < e.ends_at
) c ON true
$$;

-- Stops with their reason's classification, for the MES and the dashboards.
CREATE VIEW v_machine_stops AS
SELECT ms.id AS stop_id, coalesce(res.site_id, '') AS site_id, ms.resource_id, ms.started_at,
       ms.ended_at,
       extract(epoch FROM coalesce(ms.ended_at, greatest(now(), ms.started_at)) - ms.started_at)::float8
           AS duration_seconds,
       ms.reason_code, dr.planned, dr.loss_bucket, dr.is_failure, ms.state_code,
       ms.reason_code = 'unassigned' AS unassigned, ms.assigned_by, ms.assigned_at, ms.note
FROM machine_stops ms
JOIN downtime_reasons dr ON dr.reason_code = ms.reason_code
LEFT JOIN resources res ON res.resource_id = ms.resource_id;
COMMENT ON VIEW v_machine_stops IS
    'Stops detected from the machines'' readings (machine_state_rules), open ones with ended_at NULL and duration up to now; reason unassigned until an operator assigns one (POST /machine_stops/{stop_id}/reason).';

-- planned_seconds (the seed's field of POST /op_run/start) is the run's planned duration from
-- the schedule. It does not enter OEE: planned busy time comes from the shift calendar (ISO
-- 22400-2 PBT is per work unit and period), a per-run plan says nothing about how its time falls
-- into shifts, and a run that ends early would count its unused plan as a loss while no order
-- waited. It measures schedule adherence instead.
CREATE VIEW v_run_schedule AS
SELECT r.op_run_id, r.work_order_id, r.operation_id, r.resource_id,
       coalesce(r.site_id, res.site_id) AS site_id, r.status, r.started_at, r.ended_at,
       r.planned_seconds,
       r.started_at + make_interval(secs => r.planned_seconds) AS planned_end_at,
       s.elapsed_seconds,
       r.planned_seconds - s.elapsed_seconds AS remaining_seconds,
       greatest(s.elapsed_seconds - r.planned_seconds, 0) AS overrun_seconds,
       s.elapsed_seconds / nullif(r.planned_seconds, 0) AS schedule_ratio
FROM op_run r
LEFT JOIN resources res ON res.resource_id = r.resource_id
CROSS JOIN LATERAL (
    SELECT extract(epoch FROM coalesce(r.ended_at, greatest(now(), r.started_at)) - r.started_at)::float8
               AS elapsed_seconds
) s;
COMMENT ON VIEW v_run_schedule IS
    'Schedule adherence per run from planned_seconds (the run''s planned duration, POST /op_run/start): planned_end_at, elapsed_seconds (to now for an active run), remaining_seconds (negative: late), overrun_seconds, schedule_ratio = elapsed / planned. planned_seconds does not enter OEE: planned busy time comes from the shift calendar (docs/api.md, "planned_seconds").';

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'edge_mes_api') THEN
        GRANT SELECT, INSERT, UPDATE, DELETE ON machine_state_rules, machine_stops TO edge_mes_api;
        GRANT USAGE ON SEQUENCE machine_stops_id_seq TO edge_mes_api;
        GRANT SELECT ON v_machine_stops, v_run_schedule TO edge_mes_api;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'edge_mes_mes_reader') THEN
        GRANT SELECT ON v_machine_stops, v_run_schedule TO edge_mes_mes_reader;
    END IF;
END $$;

-- Every piece of downtime in [p_from, p_to) by reason, as the OEE elements count it: operators'
-- downtimes and detected stops, clipped to the runs' busy time and the window, a stop minus the
-- time an operator's downtime covers. For loss Paretos (the OEE dashboard) and the MES.
CREATE FUNCTION edge_mes_downtime_pieces(
    p_from timestamptz, p_to timestamptz, p_site text DEFAULT NULL, p_resource text DEFAULT NULL)
RETURNS TABLE (
    site_id     text,
    resource_id text,
    reason_code text,
    source      text,
    source_id   bigint,
    started_at  timestamptz,
    ended_at    timestamptz
)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $$
WITH runs AS (
    SELECT r.op_run_id, r.resource_id, coalesce(r.site_id, res.site_id) AS site_id,
           tstzrange(r.started_at, coalesce(r.ended_at, greatest(now(), r.started_at)), '[)')
               * tstzrange(p_from, p_to, '[)') AS span
    FROM op_run r
    LEFT JOIN resources res ON res.resource_id = r.resource_id
    WHERE tstzrange(r.started_at, coalesce(r.ended_at, 'infinity'::timestamptz), '[)')
          && tstzrange(p_from, p_to, '[)')
      AND (p_resource IS NULL OR r.resource_id = p_resource)
      AND (p_site IS NULL OR coalesce(r.site_id, res.site_id) = p_site)
), busy AS (
    SELECT ru.site_id, ru.resource_id, range_agg(ru.span) AS mr
    FROM runs ru
    GROUP BY ru.site_id, ru.resource_id
), manual AS (
    SELECT ru.site_id, ru.resource_id, od.reason_code, od.id,
           tstzrange(od.started_at,
                     coalesce(od.ended_at, greatest(now(), od.started_at)), '[)') * ru.span AS span
    FROM runs ru
    JOIN op_run_downtime od ON od.op_run_id = ru.op_run_id
    WHERE od.started_at < p_to AND coalesce(od.ended_at, 'infinity'::timestamptz) > p_from
), manual_mr AS (
    SELECT m.resource_id, range_agg(m.span) AS mr FROM manual m GROUP BY m.resource_id
)
SELECT m.site_id, m.resource_id, m.reason_code, 'operator', m.id, lower(m.span), upper(m.span)
FROM manual m
WHERE NOT isempty(m.span)
UNION ALL
SELECT b.site_id, b.resource_id, ms.reason_code, 'detected', ms.id, lower(piece.span),
       upper(piece.span)
FROM machine_stops ms
JOIN busy b ON b.resource_id = ms.resource_id
LEFT JOIN manual_mr mm ON mm.resource_id = ms.resource_id
CROSS JOIN LATERAL unnest(
    tstzmultirange(tstzrange(ms.started_at, coalesce(ms.ended_at, greatest(now(), ms.started_at)),
                             '[)'))
    * b.mr - coalesce(mm.mr, '{}'::tstzmultirange)) AS piece(span)
WHERE ms.started_at < p_to AND coalesce(ms.ended_at, 'infinity'::timestamptz) > p_from
$$;
COMMENT ON FUNCTION edge_mes_downtime_pieces(timestamptz, timestamptz, text, text) IS
    'Downtime in [from, to) as the OEE elements count it (migration 0020): operators'' downtimes (source operator, source_id = op_run_downtime.id) and detected stops (source detected, source_id = machine_stops.id) clipped to the runs and the window; a stop minus what an operator''s downtime covers. Join downtime_reasons for the loss bucket.';
