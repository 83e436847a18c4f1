-- Shift calendar per site and OEE per resource and shift (ISO 22400-2), in SQL.
--
-- Shift instances are built from local wall-clock rules in the site's IANA zone:
--   starts_at = (shift_date + start_local)            AT TIME ZONE site.time_zone
--   ends_at   = (shift_date + start_local + duration) AT TIME ZONE site.time_zone
-- so an 8-hour Night shift really lasts 7 h or 9 h on a DST change night, and planned time is the
-- real interval. Local times that do not exist (spring forward) or occur twice (fall back) follow
-- PostgreSQL's rule for `timestamp AT TIME ZONE`: a nonexistent time is read with the offset in
-- force before the transition (02:30 in a 02:00→03:00 gap becomes 03:30 new time, i.e. later);
-- an ambiguous time is read as standard time (the later of the two instants). shift_date is the
-- local date on which the shift starts.

CREATE TABLE shift_definitions (
    id           serial   PRIMARY KEY,
    site_id      text     NOT NULL REFERENCES sites (site_id) ON DELETE CASCADE,
    shift_name   text     NOT NULL,
    start_local  time     NOT NULL,
    duration     interval NOT NULL CHECK (duration > interval '0' AND duration <= interval '24 hours'),
    -- ISO day of week of shift_date (1 = Monday .. 7 = Sunday).
    days_of_week smallint[] NOT NULL DEFAULT '{1,2,3,4,5,6,7}'
                 CHECK (days_of_week <@ '{1,2,3,4,5,6,7}'::smallint[] AND cardinality(days_of_week) > 0),
    valid_from   date     NOT NULL DEFAULT '-infinity',
    valid_to     date     NOT NULL DEFAULT 'infinity',
    CHECK (valid_to >= valid_from),
    UNIQUE (site_id, shift_name, valid_from)
);
COMMENT ON TABLE shift_definitions IS
    'Shift rules per site in local wall-clock time: start_local plus duration on the listed ISO weekdays between valid_from and valid_to. edge_mes_shift_instances() turns them into real intervals.';

CREATE TABLE shift_breaks (
    id                  serial   PRIMARY KEY,
    shift_definition_id integer  NOT NULL REFERENCES shift_definitions (id) ON DELETE CASCADE,
    break_name          text     NOT NULL DEFAULT 'break',
    -- Local wall-clock start; a time before the shift's start_local falls on the next day.
    start_local         time     NOT NULL,
    duration            interval NOT NULL CHECK (duration > interval '0' AND duration < interval '24 hours')
);
COMMENT ON TABLE shift_breaks IS
    'Planned breaks of a shift: removed from planned busy time (PBT) where a run covers them.';

-- Total seconds covered by a multirange (bounded ranges only).
CREATE FUNCTION edge_mes_mr_seconds(m tstzmultirange) RETURNS double precision
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT coalesce(sum(extract(epoch FROM upper(r) - lower(r))), 0)::float8 FROM unnest(m) AS r
$$;

-- num / den, NULL when den is 0 or NULL (never a division error).
CREATE FUNCTION edge_mes_ratio(num double precision, den double precision) RETURNS double precision
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN den IS NULL OR den = 0 THEN NULL ELSE num / den END
$$;

-- Concrete shift instances of [p_from, p_to] (local dates) for one site or all.
CREATE FUNCTION edge_mes_shift_instances(p_from date, p_to date, p_site text DEFAULT NULL)
RETURNS TABLE (
    site_id               text,
    shift_name            text,
    shift_date            date,
    starts_at             timestamptz,
    ends_at               timestamptz,
    planned_break_seconds double precision,
    breaks                tstzmultirange
)
LANGUAGE sql STABLE AS $$
    SELECT s.site_id, d.shift_name, day::date,
           (day::date + d.start_local) AT TIME ZONE s.time_zone,
           (day::date + d.start_local + d.duration) AT TIME ZONE s.time_zone,
           edge_mes_mr_seconds(coalesce(b.ranges, '{}'::tstzmultirange)),
           coalesce(b.ranges, '{}'::tstzmultirange)
    FROM sites s
    JOIN shift_definitions d ON d.site_id = s.site_id
    CROSS JOIN LATERAL generate_series(p_from::timestamp, p_to::timestamp, interval '1 day') AS day
    LEFT JOIN LATERAL (
        SELECT range_agg(
                   tstzrange(
                       (bd + br.start_local) AT TIME ZONE s.time_zone,
                       (bd + br.start_local + br.duration) AT TIME ZONE s.time_zone, '[)')
               ) * tstzmultirange(tstzrange(
                       (day::date + d.start_local) AT TIME ZONE s.time_zone,
                       (day::date + d.start_local + d.duration) AT TIME ZONE s.time_zone, '[)')) AS ranges
        FROM shift_breaks br
        CROSS JOIN LATERAL (SELECT CASE WHEN br.start_local < d.start_local
                                        THEN day::date + 1 ELSE day::date END AS bd) x
        WHERE br.shift_definition_id = d.id
    ) b ON true
    WHERE (p_site IS NULL OR s.site_id = p_site)
      AND extract(isodow FROM day)::smallint = ANY (d.days_of_week)
      AND day::date BETWEEN d.valid_from AND d.valid_to
$$;

-- The seed's three shifts for a site that has none.
CREATE FUNCTION edge_mes_default_shifts(p_site text) RETURNS void
LANGUAGE sql AS $$
    INSERT INTO shift_definitions (site_id, shift_name, start_local, duration)
    SELECT p_site, v.name, v.start_local, interval '8 hours'
    FROM (VALUES ('Night', time '00:00'), ('Day', time '08:00'), ('Evening', time '16:00'))
         AS v (name, start_local)
    WHERE NOT EXISTS (SELECT 1 FROM shift_definitions WHERE site_id = p_site)
$$;

CREATE OR REPLACE FUNCTION edge_mes_ensure_site(p_site text, p_time_zone text) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM now() AT TIME ZONE p_time_zone; -- refuses an unknown zone
    INSERT INTO sites (site_id, time_zone) VALUES (p_site, p_time_zone)
    ON CONFLICT (site_id) DO NOTHING;
    IF FOUND THEN
        PERFORM edge_mes_default_shifts(p_site);
    END IF;
END $$;

-- The seed's default site: Asia/Bangkok, Night 00–08, Day 08–16, Evening 16–24.
INSERT INTO sites (site_id, name, time_zone) VALUES ('BKK', 'Bangkok', 'Asia/Bangkok')
ON CONFLICT (site_id) DO NOTHING;
SELECT edge_mes_default_shifts(site_id) FROM sites;

-- Time and count elements per site, resource and shift instance, for runs overlapping
-- [p_from, p_to). The one place the OEE arithmetic's inputs are computed; views and the API
-- call it. All durations in seconds.
--
--   busy        union of the resource's runs clipped to the shift (an active run ends at now())
--   PBT         busy − planned breaks − downtime whose reason is in bucket 'excluded'
--   APT         PBT − downtime in bucket 'availability'
--   performance-bucket downtime stays inside APT (its lost output lowers effectiveness)
--   PQ, GQ, SQ  units from count reports whose time falls in the shift (a count at the run's
--               very end belongs to the shift the run ends in)
--   PRU·PQ      Σ over runs of ideal_cycle_time_s × units (PRU per run)
CREATE FUNCTION edge_mes_shift_elements(
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
    SELECT ru.site_id,
           min((lower(ru.span) AT TIME ZONE s.time_zone)::date) - 1 AS d0,
           max((upper(ru.span) AT TIME ZONE s.time_zone)::date) AS d1
    FROM runs ru JOIN sites s ON s.site_id = ru.site_id
    GROUP BY ru.site_id
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
        SELECT range_agg(d.span) FILTER (WHERE dr.loss_bucket = 'excluded') AS excluded,
               range_agg(d.span) FILTER (WHERE dr.loss_bucket = 'availability') AS availability,
               range_agg(d.span) FILTER (WHERE dr.loss_bucket = 'performance') AS performance,
               range_agg(d.span) FILTER (WHERE dr.planned) AS planned,
               range_agg(d.span) FILTER (WHERE NOT dr.planned) AS unplanned,
               range_agg(d.span) FILTER (WHERE dr.is_failure) AS failure,
               (count(*) FILTER (WHERE dr.is_failure AND lower(d.span) <@ g.shift_range))::int
                   AS failure_events
        FROM (
            SELECT od.reason_code,
                   tstzrange(od.started_at,
                             coalesce(od.ended_at, r.ended_at, greatest(now(), od.started_at)),
                             '[)') AS span
            FROM op_run_downtime od
            JOIN op_run r ON r.op_run_id = od.op_run_id
            WHERE od.op_run_id = ANY (g.run_ids)
              AND od.started_at < g.ends_at
              AND coalesce(od.ended_at, 'infinity'::timestamptz) > g.starts_at
        ) d
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

-- KPIs from summed elements; shared by the per-shift view and every roll-up so ratios are always
-- computed as Σparts / Σparts, never as averages of percentages.
CREATE FUNCTION edge_mes_oee(
    pbt double precision, apt double precision, pq bigint, gq bigint,
    pru_pq double precision, pru_gq double precision, ict_missing boolean,
    OUT availability double precision, OUT performance double precision,
    OUT quality double precision, OUT oee double precision,
    OUT performance_over_100 boolean,
    OUT availability_null_reason text, OUT performance_null_reason text,
    OUT quality_null_reason text, OUT oee_null_reason text)
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT
        edge_mes_ratio(apt, pbt),
        CASE WHEN pbt > 0 AND apt > 0 AND pq > 0 AND NOT ict_missing
             THEN pru_pq / apt END,
        edge_mes_ratio(gq, pq),
        CASE WHEN pbt > 0 AND pq > 0 AND NOT ict_missing THEN pru_gq / pbt END,
        CASE WHEN pbt > 0 AND apt > 0 AND pq > 0 AND NOT ict_missing
             THEN pru_pq / apt > 1 ELSE false END,
        CASE WHEN coalesce(pbt, 0) = 0 THEN 'no_planned_time' END,
        CASE WHEN coalesce(pbt, 0) = 0 THEN 'no_planned_time'
             WHEN coalesce(apt, 0) = 0 THEN 'no_operating_time'
             WHEN coalesce(pq, 0) = 0 THEN 'no_counts'
             WHEN ict_missing THEN 'no_ideal_cycle_time' END,
        CASE WHEN coalesce(pq, 0) = 0 THEN 'no_counts' END,
        CASE WHEN coalesce(pbt, 0) = 0 THEN 'no_planned_time'
             WHEN coalesce(pq, 0) = 0 THEN 'no_counts'
             WHEN ict_missing THEN 'no_ideal_cycle_time' END
$$;

CREATE VIEW v_runtime_per_shift AS
SELECT site_id, resource_id, line_id, shift_name, shift_date, starts_at, ends_at, run_count,
       shift_seconds, busy_seconds, planned_break_seconds, excluded_seconds,
       pbt_seconds AS planned_busy_seconds,
       apt_seconds AS run_seconds,
       availability_loss_seconds, performance_loss_seconds,
       planned_downtime_seconds, unplanned_downtime_seconds,
       edge_mes_ratio(apt_seconds, pbt_seconds) AS availability,
       CASE WHEN pbt_seconds = 0 THEN 'no_planned_time' END AS availability_null_reason
FROM edge_mes_shift_elements('-infinity', 'infinity');
COMMENT ON VIEW v_runtime_per_shift IS
    'Time per resource and shift instance (seconds). busy = runs clipped to the shift (active runs end at now()); planned_busy (ISO PBT) = busy - planned breaks - downtime in bucket excluded; run (ISO APT) = PBT - downtime in bucket availability. Downtime by kind: planned/unplanned per reason. Loss buckets come from table downtime_reasons: availability (lost from APT; ISO puts setup and minor stops here), performance (stays in APT, lowers effectiveness), excluded (removed from PBT).';

-- Quality from counts; where a shift has no counts, from the resource''s yield (else
-- defect_rate) readings taken during its runs in that shift, as the seed does.
CREATE VIEW v_quality_per_shift AS
SELECT e.site_id, e.resource_id, e.line_id, e.shift_name, e.shift_date, e.starts_at, e.ends_at,
       e.pq AS produced_units, e.gq AS good_units, e.sq AS scrap_units,
       CASE WHEN e.pq > 0 THEN e.gq::float8 / e.pq
            WHEN rd.yield_avg IS NOT NULL THEN rd.yield_avg
            WHEN rd.defect_avg IS NOT NULL THEN 1 - rd.defect_avg END AS quality,
       CASE WHEN e.pq > 0 THEN 'counts'
            WHEN rd.yield_avg IS NOT NULL THEN 'yield_readings'
            WHEN rd.defect_avg IS NOT NULL THEN 'defect_rate_readings' END AS quality_source,
       CASE WHEN e.pq = 0 AND rd.yield_avg IS NULL AND rd.defect_avg IS NULL
            THEN 'no_counts' END AS quality_null_reason
FROM edge_mes_shift_elements('-infinity', 'infinity') e
LEFT JOIN LATERAL (
    SELECT avg(value) FILTER (WHERE sensor = 'yield') AS yield_avg,
           avg(value) FILTER (WHERE sensor = 'defect_rate') AS defect_avg
    FROM readings
    WHERE e.pq = 0
      AND resource_id = e.resource_id
      AND sensor IN ('yield', 'defect_rate')
      AND ts >= e.starts_at AND ts < e.ends_at
) rd ON true;
COMMENT ON VIEW v_quality_per_shift IS
    'Quality per resource and shift: good/produced from count reports (source counts); where a shift has none, avg(yield) or 1 - avg(defect_rate) of that resource''s readings in the shift (ratios 0..1). NULL with quality_null_reason no_counts when neither exists.';

CREATE VIEW v_oee_shift_real AS
SELECT e.site_id, e.resource_id, e.line_id, e.shift_name, e.shift_date, e.starts_at, e.ends_at,
       e.pbt_seconds, e.apt_seconds, e.pq, e.gq, e.pru_pq_seconds, e.pru_gq_seconds,
       k.availability, k.performance, k.quality, k.oee, k.performance_over_100,
       k.availability_null_reason, k.performance_null_reason, k.quality_null_reason,
       k.oee_null_reason
FROM edge_mes_shift_elements('-infinity', 'infinity') e
CROSS JOIN LATERAL edge_mes_oee(e.pbt_seconds, e.apt_seconds, e.pq, e.gq, e.pru_pq_seconds,
                                e.pru_gq_seconds, e.ideal_cycle_time_missing) k;
COMMENT ON VIEW v_oee_shift_real IS
    'OEE per resource and shift, ISO 22400-2: availability A = APT/PBT, performance (effectiveness) E = PRU*PQ/APT, quality QR = GQ/PQ, OEE = PRU*GQ/PBT (= A*E*QR). PRU is each run''s ideal_cycle_time_s. Loss-bucket convention: downtime reasons in bucket availability reduce APT (ISO: setup and minor stops are availability losses), performance keeps the time in APT so lost output lowers E, excluded removes the time from PBT; see downtime_reasons. performance > 1 is flagged (performance_over_100), never clamped. A ratio whose denominator is 0 is NULL with a *_null_reason (no_planned_time, no_operating_time, no_counts, no_ideal_cycle_time). Roll-ups (v_oee_day_real, v_oee_line_shift, v_oee_site_day) sum the elements, then divide.';

CREATE VIEW v_oee_day_real AS
SELECT s.site_id, s.resource_id, s.shift_date, s.pbt_seconds, s.apt_seconds, s.pq, s.gq,
       k.availability, k.performance, k.quality, k.oee, k.performance_over_100, k.oee_null_reason
FROM (
    SELECT site_id, resource_id, shift_date, sum(pbt_seconds) AS pbt_seconds,
           sum(apt_seconds) AS apt_seconds, sum(pq)::bigint AS pq, sum(gq)::bigint AS gq,
           sum(pru_pq_seconds) AS pru_pq, sum(pru_gq_seconds) AS pru_gq,
           bool_or(ideal_cycle_time_missing) AS ict_missing
    FROM edge_mes_shift_elements('-infinity', 'infinity')
    GROUP BY site_id, resource_id, shift_date
) s
CROSS JOIN LATERAL edge_mes_oee(s.pbt_seconds, s.apt_seconds, s.pq, s.gq, s.pru_pq, s.pru_gq,
                                s.ict_missing) k;
COMMENT ON VIEW v_oee_day_real IS
    'OEE per resource and production day (local shift_date): elements summed over the day''s shifts, then divided (never an average of percentages).';

CREATE VIEW v_oee_line_shift AS
SELECT s.site_id, s.line_id, s.shift_name, s.shift_date, s.starts_at, s.ends_at, s.pbt_seconds,
       s.apt_seconds, s.pq, s.gq,
       k.availability, k.performance, k.quality, k.oee, k.performance_over_100, k.oee_null_reason
FROM (
    SELECT site_id, coalesce(line_id, '') AS line_id, shift_name, shift_date, starts_at, ends_at,
           sum(pbt_seconds) AS pbt_seconds, sum(apt_seconds) AS apt_seconds,
           sum(pq)::bigint AS pq, sum(gq)::bigint AS gq, sum(pru_pq_seconds) AS pru_pq,
           sum(pru_gq_seconds) AS pru_gq, bool_or(ideal_cycle_time_missing) AS ict_missing
    FROM edge_mes_shift_elements('-infinity', 'infinity')
    GROUP BY site_id, coalesce(line_id, ''), shift_name, shift_date, starts_at, ends_at
) s
CROSS JOIN LATERAL edge_mes_oee(s.pbt_seconds, s.apt_seconds, s.pq, s.gq, s.pru_pq, s.pru_gq,
                                s.ict_missing) k;
COMMENT ON VIEW v_oee_line_shift IS
    'OEE per line (resources.line_id; empty when unset) and shift: ΣPRU·GQ / ΣPBT and so on.';

CREATE VIEW v_oee_site_day AS
SELECT s.site_id, s.shift_date, s.pbt_seconds, s.apt_seconds, s.pq, s.gq,
       k.availability, k.performance, k.quality, k.oee, k.performance_over_100, k.oee_null_reason
FROM (
    SELECT site_id, shift_date, sum(pbt_seconds) AS pbt_seconds, sum(apt_seconds) AS apt_seconds,
           sum(pq)::bigint AS pq, sum(gq)::bigint AS gq, sum(pru_pq_seconds) AS pru_pq,
           sum(pru_gq_seconds) AS pru_gq, bool_or(ideal_cycle_time_missing) AS ict_missing
    FROM edge_mes_shift_elements('-infinity', 'infinity')
    GROUP BY site_id, shift_date
) s
CROSS JOIN LATERAL edge_mes_oee(s.pbt_seconds, s.apt_seconds, s.pq, s.gq, s.pru_pq, s.pru_gq,
                                s.ict_missing) k;
COMMENT ON VIEW v_oee_site_day IS
    'OEE per site and production day, summing all resources'' elements, then dividing.';

-- MTBF and MTTR per resource and production day (ISO 22400-2: MTBF = ΣTBF/FE, MTTR = ΣTTR/FE).
-- A failure event is a downtime whose reason has is_failure, counted in the shift it starts in;
-- TBF is operating time (APT), TTR the failure downtime inside planned time.
CREATE VIEW v_mtbf_mttr_per_day AS
SELECT site_id, resource_id, shift_date,
       sum(failure_events)::int AS failure_events,
       sum(apt_seconds) AS operating_seconds,
       sum(failure_seconds) AS repair_seconds,
       edge_mes_ratio(sum(apt_seconds), sum(failure_events)) AS mtbf_seconds,
       edge_mes_ratio(sum(failure_seconds), sum(failure_events)) AS mttr_seconds,
       CASE WHEN sum(failure_events) = 0 THEN 'no_failures' END AS null_reason
FROM edge_mes_shift_elements('-infinity', 'infinity')
GROUP BY site_id, resource_id, shift_date;
COMMENT ON VIEW v_mtbf_mttr_per_day IS
    'MTBF = operating time (APT) / failure events, MTTR = failure downtime / failure events, per resource and local production day; NULL with null_reason no_failures when there were none. For any other period, sum the columns of edge_mes_shift_elements(from, to) the same way.';

-- Indexes the KPI queries filter on (op_run ranges and counts are indexed in 0004).
CREATE INDEX shift_definitions_site ON shift_definitions (site_id);
CREATE INDEX shift_breaks_definition ON shift_breaks (shift_definition_id);
CREATE INDEX op_run_downtime_span ON op_run_downtime USING gist (
    op_run_id, tstzrange(started_at, coalesce(ended_at, 'infinity'::timestamptz), '[)'));
