-- Shift calendar per site: rules in local wall-clock time, planned breaks, the concrete shift
-- instances they yield, and the seed's default calendar for a new site. The rules are plant data:
-- edge_mes_ensure_site gives a site created through it (mes-api's default site, for one) the
-- default calendar; no migration creates a site.
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

CREATE INDEX shift_definitions_site ON shift_definitions (site_id);
CREATE INDEX shift_breaks_definition ON shift_breaks (shift_definition_id);

-- Total seconds covered by a multirange (bounded ranges only).
CREATE FUNCTION edge_mes_mr_seconds(m tstzmultirange) RETURNS double precision
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT coalesce(sum(extract(epoch FROM upper(r) - lower(r))), 0)::float8 FROM unnest(m) AS r
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

-- Creates a site with its time zone if missing (an existing site keeps its zone and calendar); a
-- site created here gets the default calendar.
CREATE FUNCTION edge_mes_ensure_site(p_site text, p_time_zone text) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM now() AT TIME ZONE p_time_zone; -- refuses an unknown zone
    INSERT INTO sites (site_id, time_zone) VALUES (p_site, p_time_zone)
    ON CONFLICT (site_id) DO NOTHING;
    IF FOUND THEN
        PERFORM edge_mes_default_shifts(p_site);
    END IF;
END $$;
