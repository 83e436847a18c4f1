-- edge_mes_shift_elements expanded the shift calendar from the earliest start of the runs it
-- found to the latest end, and only then kept the shifts inside the asked window: one run left
-- open for years made every OEE query and the board build years of shifts (seconds each). The
-- calendar is now expanded over the window only (clamped to the runs); results are unchanged.

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
