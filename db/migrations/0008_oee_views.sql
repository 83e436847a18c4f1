-- The MES-facing views (names kept from the seed for MES over ODBC/JDBC): runtime, quality and
-- OEE per resource and shift, the OEE roll-ups, and MTBF/MTTR per day. Grants are in the roles
-- migration.

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
