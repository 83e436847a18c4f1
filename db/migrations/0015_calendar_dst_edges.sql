-- Shift and break times at DST edges. A shift or planned break is calendar data in local
-- wall-clock time; on a DST night some local times do not exist (spring forward) and some occur
-- twice (fall back). 0006 left both to PostgreSQL's `timestamp AT TIME ZONE`, which reads a
-- nonexistent time with the offset before the jump (a later instant) and an ambiguous one as
-- standard time (the second occurrence). A break starting in the gap could then end before it
-- began: tstzrange raised "range lower bound must be less than or equal to range upper bound",
-- and v_oee_shift_real and GET /kpi/oee failed for every site, not only the one whose calendar
-- held the break.
--
-- The rule now, for shift starts and ends and break starts and ends alike:
--   - a local time that occurs once is that instant;
--   - a local time that occurs twice (fall back) is its FIRST occurrence: a break from 02:15 to
--     02:45 on the night clocks go back lasts 30 minutes, taken the first time the clock shows
--     02:15; a shift ending at 02:30 ends the first time the clock shows 02:30;
--   - a local time that does not exist (spring forward) is the first instant after the jump:
--     02:30 in a 02:00→03:00 gap is 03:00 new time. A break from 02:15 to 02:45 in that gap
--     lasts 0 minutes (the clocks skipped it), one from 02:30 to 03:30 lasts 30.
-- The rule is monotone (a later local time is never an earlier instant), so shifts that meet in
-- local time still meet without gap or overlap, and no calendar row can make an empty or
-- inverted range: one site's calendar cannot break another's figures. Zones whose offsets change
-- by other amounts (Australia/Lord_Howe's 30 minutes) follow the same rule.

-- The instant of local wall-clock time `p_local` in `p_zone`, by the rule above.
CREATE FUNCTION edge_mes_local_instant(p_local timestamp, p_zone text) RETURNS timestamptz
LANGUAGE plpgsql STABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    later timestamptz := p_local AT TIME ZONE p_zone;
    earlier_offset interval;
    first timestamptz;
BEGIN
    -- The offset in force a day before (no zone changes its offset twice within a day): an
    -- ambiguous time's first occurrence is read with it.
    earlier_offset := ((later - interval '1 day') AT TIME ZONE p_zone)
                      - ((later - interval '1 day') AT TIME ZONE 'UTC');
    first := (p_local - earlier_offset) AT TIME ZONE 'UTC';
    IF first < later AND (first AT TIME ZONE p_zone) = p_local THEN
        RETURN first;
    END IF;
    IF (later AT TIME ZONE p_zone) = p_local THEN
        RETURN later;
    END IF;
    -- Skipped by the clocks: `later` is at most the gap's length (two hours, historically) after
    -- the jump, and offsets change at whole minutes.
    RETURN (
        SELECT min(t)
        FROM generate_series(date_trunc('minute', later) - interval '3 hours',
                             date_trunc('minute', later) + interval '1 minute',
                             interval '1 minute') AS t
        WHERE (t AT TIME ZONE p_zone) >= p_local
    );
END $$;
COMMENT ON FUNCTION edge_mes_local_instant(timestamp, text) IS
    'Instant of a local wall-clock time: the first occurrence of an ambiguous time, the first instant after the jump for a skipped one (migration 0015).';

CREATE OR REPLACE FUNCTION edge_mes_shift_instances(p_from date, p_to date, p_site text DEFAULT NULL)
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
    SELECT s.site_id, d.shift_name, day::date, sh.starts_at, sh.ends_at,
           edge_mes_mr_seconds(coalesce(b.ranges, '{}'::tstzmultirange)),
           coalesce(b.ranges, '{}'::tstzmultirange)
    FROM sites s
    JOIN shift_definitions d ON d.site_id = s.site_id
    CROSS JOIN LATERAL generate_series(p_from::timestamp, p_to::timestamp, interval '1 day') AS day
    CROSS JOIN LATERAL (
        SELECT edge_mes_local_instant(day::date + d.start_local, s.time_zone) AS starts_at,
               edge_mes_local_instant(day::date + d.start_local + d.duration, s.time_zone) AS ends_at
    ) sh
    LEFT JOIN LATERAL (
        SELECT range_agg(tstzrange(x.lo, greatest(x.lo, x.hi), '[)'))
                   * tstzmultirange(tstzrange(sh.starts_at, greatest(sh.starts_at, sh.ends_at), '[)'))
                   AS ranges
        FROM shift_breaks br
        CROSS JOIN LATERAL (SELECT CASE WHEN br.start_local < d.start_local
                                        THEN day::date + 1 ELSE day::date END AS bd) bd
        CROSS JOIN LATERAL (
            SELECT edge_mes_local_instant(bd.bd + br.start_local, s.time_zone) AS lo,
                   edge_mes_local_instant(bd.bd + br.start_local + br.duration, s.time_zone) AS hi
        ) x
        WHERE br.shift_definition_id = d.id
    ) b ON true
    WHERE (p_site IS NULL OR s.site_id = p_site)
      AND extract(isodow FROM day)::smallint = ANY (d.days_of_week)
      AND day::date BETWEEN d.valid_from AND d.valid_to
$$;

-- A site's zone must be one PostgreSQL knows: an unknown zone would make every site's OEE query
-- fail at `AT TIME ZONE`, so it is refused when written (edge_mes_ensure_site already checks).
CREATE FUNCTION edge_mes_sites_zone_check() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM now() AT TIME ZONE NEW.time_zone;
    RETURN NEW;
EXCEPTION WHEN invalid_parameter_value THEN
    RAISE EXCEPTION 'site %: unknown time zone %', NEW.site_id, NEW.time_zone
        USING ERRCODE = 'invalid_parameter_value',
              HINT = 'an IANA zone name such as Europe/Berlin (SELECT name FROM pg_timezone_names)';
END $$;

CREATE TRIGGER sites_zone_check BEFORE INSERT OR UPDATE OF time_zone ON sites
    FOR EACH ROW EXECUTE FUNCTION edge_mes_sites_zone_check();
