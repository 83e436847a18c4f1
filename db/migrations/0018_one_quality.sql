-- One quality number everywhere. v_quality_per_shift fell back to yield / defect_rate readings
-- when a shift had no counts (as the seed does), while v_oee_shift_real, GET /kpi/oee, the board
-- and the OEE dashboard used counts only: a plant that streams `yield` from its inspection
-- machine and never posts counts saw a quality in one screen and NULL in the others. The rule
-- now lives in two functions that every screen uses:
--
--   quality (QR) of a shift, or of a roll-up of shifts:
--     1. counts, when there are any: GQ / PQ (good / produced, from POST /op_run/report);
--     2. otherwise readings of the resource during the shift: the mean of its `yield` readings,
--        else 1 - the mean of its `defect_rate` readings; only values in 0..1 count (a ratio,
--        not a percentage); every reading weighs the same (a time-weighted mean when the sensor
--        samples at a fixed rate). A roll-up without counts takes the mean over all its shifts'
--        readings (Σ per-shift sums / Σ per-shift counts), never a mean of means;
--     3. otherwise NULL, quality_null_reason `no_counts`.
--   quality_source says which: counts, yield_readings, defect_rate_readings (readings for a
--   roll-up that mixes the two).
-- Effectiveness and OEE need produced counts (PRU·PQ, PRU·GQ): with readings only they stay NULL
-- (`no_counts`); availability does not depend on either.

-- Quality of one resource's readings in [p_from, p_to): the sum and number of the per-reading
-- quality values of the source the rule picks.
CREATE FUNCTION edge_mes_readings_quality(p_resource text, p_from timestamptz, p_to timestamptz,
    OUT q_sum double precision, OUT q_n bigint, OUT q_source text)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $$
    SELECT CASE WHEN y_n > 0 THEN y_sum WHEN d_n > 0 THEN d_sum END,
           CASE WHEN y_n > 0 THEN y_n WHEN d_n > 0 THEN d_n ELSE 0 END,
           CASE WHEN y_n > 0 THEN 'yield_readings' WHEN d_n > 0 THEN 'defect_rate_readings' END
    FROM (
        SELECT sum(value) FILTER (WHERE sensor = 'yield') AS y_sum,
               count(*) FILTER (WHERE sensor = 'yield') AS y_n,
               sum(1 - value) FILTER (WHERE sensor = 'defect_rate') AS d_sum,
               count(*) FILTER (WHERE sensor = 'defect_rate') AS d_n
        FROM readings
        WHERE resource_id = p_resource
          AND sensor IN ('yield', 'defect_rate')
          AND ts >= p_from AND ts < p_to
          AND value BETWEEN 0 AND 1
    ) r
$$;

-- The shift elements of edge_mes_shift_elements, with the readings' quality of each shift that
-- has no counts (readings are not read for shifts with counts: counts win).
CREATE FUNCTION edge_mes_shift_elements_q(
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
    ideal_cycle_time_missing   boolean,
    q_readings_sum             double precision,
    q_readings_n               bigint,
    q_readings_source          text
)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $$
    SELECT e.*, rq.q_sum, coalesce(rq.q_n, 0), rq.q_source
    FROM edge_mes_shift_elements(p_from, p_to, p_site, p_resource) e
    LEFT JOIN LATERAL (
        SELECT * FROM edge_mes_readings_quality(e.resource_id, e.starts_at, e.ends_at)
        WHERE e.pq = 0
    ) rq ON true
$$;

-- The KPIs of edge_mes_oee with quality by the rule above; roll-ups pass their summed elements
-- (q_sum, q_n summed over shifts).
CREATE FUNCTION edge_mes_oee_q(
    pbt double precision, apt double precision, pq bigint, gq bigint,
    pru_pq double precision, pru_gq double precision, ict_missing boolean,
    q_sum double precision, q_n bigint, q_source text,
    OUT availability double precision, OUT performance double precision,
    OUT quality double precision, OUT oee double precision,
    OUT performance_over_100 boolean,
    OUT availability_null_reason text, OUT performance_null_reason text,
    OUT quality_null_reason text, OUT oee_null_reason text, OUT quality_source text)
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT k.availability, k.performance,
           CASE WHEN coalesce(pq, 0) > 0 THEN k.quality
                WHEN coalesce(q_n, 0) > 0 THEN q_sum / q_n END,
           k.oee, k.performance_over_100, k.availability_null_reason, k.performance_null_reason,
           CASE WHEN coalesce(pq, 0) = 0 AND coalesce(q_n, 0) = 0 THEN 'no_counts' END,
           k.oee_null_reason,
           CASE WHEN coalesce(pq, 0) > 0 THEN 'counts'
                WHEN coalesce(q_n, 0) > 0 THEN coalesce(q_source, 'readings') END
    FROM edge_mes_oee(pbt, apt, pq, gq, pru_pq, pru_gq, ict_missing) k
$$;
COMMENT ON FUNCTION edge_mes_oee_q(double precision, double precision, bigint, bigint,
    double precision, double precision, boolean, double precision, bigint, text) IS
    'OEE KPIs (ISO 22400-2) with the one quality rule: counts (GQ/PQ) when there are any, else the mean of the resource''s yield readings in 0..1, else 1 - the mean of its defect_rate readings (migration 0018). Every MES view, GET /kpi/oee, the board and the dashboards use it.';

-- The source of a roll-up: the one source of its shifts, or `readings` when they mix.
CREATE FUNCTION edge_mes_q_source(sources text[]) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN count(DISTINCT s) = 1 THEN min(s) WHEN count(DISTINCT s) > 1 THEN 'readings' END
    FROM unnest(sources) AS s
$$;

CREATE OR REPLACE VIEW v_quality_per_shift AS
SELECT e.site_id, e.resource_id, e.line_id, e.shift_name, e.shift_date, e.starts_at, e.ends_at,
       e.pq AS produced_units, e.gq AS good_units, e.sq AS scrap_units,
       k.quality, k.quality_source, k.quality_null_reason
FROM edge_mes_shift_elements_q('-infinity', 'infinity') e
CROSS JOIN LATERAL edge_mes_oee_q(e.pbt_seconds, e.apt_seconds, e.pq, e.gq, e.pru_pq_seconds,
                                  e.pru_gq_seconds, e.ideal_cycle_time_missing,
                                  e.q_readings_sum, e.q_readings_n, e.q_readings_source) k;
COMMENT ON VIEW v_quality_per_shift IS
    'Quality per resource and shift by the one rule (edge_mes_oee_q, migration 0018): good/produced from count reports (source counts); where a shift has none, the mean of the resource''s yield readings in 0..1 in the shift, else 1 - the mean of its defect_rate readings. NULL with quality_null_reason no_counts when neither exists. The same quality as v_oee_shift_real, GET /kpi/oee and the board.';

CREATE OR REPLACE VIEW v_oee_shift_real AS
SELECT e.site_id, e.resource_id, e.line_id, e.shift_name, e.shift_date, e.starts_at, e.ends_at,
       e.pbt_seconds, e.apt_seconds, e.pq, e.gq, e.pru_pq_seconds, e.pru_gq_seconds,
       k.availability, k.performance, k.quality, k.oee, k.performance_over_100,
       k.availability_null_reason, k.performance_null_reason, k.quality_null_reason,
       k.oee_null_reason, k.quality_source
FROM edge_mes_shift_elements_q('-infinity', 'infinity') e
CROSS JOIN LATERAL edge_mes_oee_q(e.pbt_seconds, e.apt_seconds, e.pq, e.gq, e.pru_pq_seconds,
                                  e.pru_gq_seconds, e.ideal_cycle_time_missing,
                                  e.q_readings_sum, e.q_readings_n, e.q_readings_source) k;

CREATE OR REPLACE VIEW v_oee_day_real AS
SELECT s.site_id, s.resource_id, s.shift_date, s.pbt_seconds, s.apt_seconds, s.pq, s.gq,
       k.availability, k.performance, k.quality, k.oee, k.performance_over_100, k.oee_null_reason,
       k.quality_source
FROM (
    SELECT site_id, resource_id, shift_date, sum(pbt_seconds) AS pbt_seconds,
           sum(apt_seconds) AS apt_seconds, sum(pq)::bigint AS pq, sum(gq)::bigint AS gq,
           sum(pru_pq_seconds) AS pru_pq, sum(pru_gq_seconds) AS pru_gq,
           bool_or(ideal_cycle_time_missing) AS ict_missing,
           sum(q_readings_sum) AS q_sum, sum(q_readings_n)::bigint AS q_n,
           edge_mes_q_source(array_agg(q_readings_source)) AS q_source
    FROM edge_mes_shift_elements_q('-infinity', 'infinity')
    GROUP BY site_id, resource_id, shift_date
) s
CROSS JOIN LATERAL edge_mes_oee_q(s.pbt_seconds, s.apt_seconds, s.pq, s.gq, s.pru_pq, s.pru_gq,
                                  s.ict_missing, s.q_sum, s.q_n, s.q_source) k;

CREATE OR REPLACE VIEW v_oee_line_shift AS
SELECT s.site_id, s.line_id, s.shift_name, s.shift_date, s.starts_at, s.ends_at, s.pbt_seconds,
       s.apt_seconds, s.pq, s.gq,
       k.availability, k.performance, k.quality, k.oee, k.performance_over_100, k.oee_null_reason,
       k.quality_source
FROM (
    SELECT site_id, coalesce(line_id, '') AS line_id, shift_name, shift_date, starts_at, ends_at,
           sum(pbt_seconds) AS pbt_seconds, sum(apt_seconds) AS apt_seconds,
           sum(pq)::bigint AS pq, sum(gq)::bigint AS gq, sum(pru_pq_seconds) AS pru_pq,
           sum(pru_gq_seconds) AS pru_gq, bool_or(ideal_cycle_time_missing) AS ict_missing,
           sum(q_readings_sum) AS q_sum, sum(q_readings_n)::bigint AS q_n,
           edge_mes_q_source(array_agg(q_readings_source)) AS q_source
    FROM edge_mes_shift_elements_q('-infinity', 'infinity')
    GROUP BY site_id, coalesce(line_id, ''), shift_name, shift_date, starts_at, ends_at
) s
CROSS JOIN LATERAL edge_mes_oee_q(s.pbt_seconds, s.apt_seconds, s.pq, s.gq, s.pru_pq, s.pru_gq,
                                  s.ict_missing, s.q_sum, s.q_n, s.q_source) k;

CREATE OR REPLACE VIEW v_oee_site_day AS
SELECT s.site_id, s.shift_date, s.pbt_seconds, s.apt_seconds, s.pq, s.gq,
       k.availability, k.performance, k.quality, k.oee, k.performance_over_100, k.oee_null_reason,
       k.quality_source
FROM (
    SELECT site_id, shift_date, sum(pbt_seconds) AS pbt_seconds, sum(apt_seconds) AS apt_seconds,
           sum(pq)::bigint AS pq, sum(gq)::bigint AS gq, sum(pru_pq_seconds) AS pru_pq,
           sum(pru_gq_seconds) AS pru_gq, bool_or(ideal_cycle_time_missing) AS ict_missing,
           sum(q_readings_sum) AS q_sum, sum(q_readings_n)::bigint AS q_n,
           edge_mes_q_source(array_agg(q_readings_source)) AS q_source
    FROM edge_mes_shift_elements_q('-infinity', 'infinity')
    GROUP BY site_id, shift_date
) s
CROSS JOIN LATERAL edge_mes_oee_q(s.pbt_seconds, s.apt_seconds, s.pq, s.gq, s.pru_pq, s.pru_gq,
                                  s.ict_missing, s.q_sum, s.q_n, s.q_source) k;
