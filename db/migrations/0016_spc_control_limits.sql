-- Stored control limits (issue 14.3): limits computed from a baseline window of one resource's
-- sensor (phase I, `POST /spc/limits`) and then applied to new readings (phase II, `GET /spc`),
-- so a drift cannot widen its own limits. One row per version: setting limits again adds
-- version + 1 for the same (resource, sensor, chart, subgroup size); the highest version is in
-- force, older ones stay as the record of what was in force when. mes-api may read and add
-- rows, never change or delete them.
CREATE TABLE spc_control_limits (
    resource_id        text             NOT NULL,
    sensor             text             NOT NULL,
    chart              text             NOT NULL CHECK (chart IN ('i_mr', 'xbar_r', 'xbar_s')),
    subgroup_size      smallint         NOT NULL,
    version            integer          NOT NULL CHECK (version >= 1),
    center_line        double precision NOT NULL,
    ucl                double precision NOT NULL,
    lcl                double precision NOT NULL,
    dispersion_center  double precision NOT NULL,
    dispersion_ucl     double precision NOT NULL,
    dispersion_lcl     double precision NOT NULL,
    sigma_within       double precision NOT NULL,
    baseline_from      timestamptz      NOT NULL,
    baseline_to        timestamptz      NOT NULL,
    baseline_points    integer          NOT NULL CHECK (baseline_points >= 1),
    baseline_subgroups integer          NOT NULL CHECK (baseline_subgroups >= 1),
    set_by             text,
    set_at             timestamptz      NOT NULL DEFAULT now(),
    PRIMARY KEY (resource_id, sensor, chart, subgroup_size, version),
    -- Individuals are subgroups of one; subgroup charts take the sizes the constants cover.
    CHECK ((chart = 'i_mr' AND subgroup_size = 1)
           OR (chart <> 'i_mr' AND subgroup_size BETWEEN 2 AND 25)),
    CHECK (baseline_from < baseline_to),
    -- Finite numbers ('NaN' sorts above 'Infinity'), ordered lines, a positive σ.
    CHECK (sigma_within > 0 AND sigma_within < 'Infinity'),
    CHECK (lcl > '-Infinity' AND lcl <= center_line AND center_line <= ucl AND ucl < 'Infinity'),
    CHECK (dispersion_lcl >= 0 AND dispersion_lcl <= dispersion_center
           AND dispersion_center <= dispersion_ucl AND dispersion_ucl < 'Infinity')
);
CREATE INDEX spc_control_limits_latest
    ON spc_control_limits (resource_id, sensor, set_at DESC, version DESC);

COMMENT ON TABLE spc_control_limits IS
    'Control limits per resource, sensor, chart and subgroup size, versioned: set from a baseline window by POST /spc/limits; the highest version is in force for GET /spc.';
COMMENT ON COLUMN spc_control_limits.center_line IS 'center line of the individuals or subgroup means';
COMMENT ON COLUMN spc_control_limits.ucl IS 'upper control limit of the individuals or subgroup means';
COMMENT ON COLUMN spc_control_limits.lcl IS 'lower control limit of the individuals or subgroup means';
COMMENT ON COLUMN spc_control_limits.dispersion_center IS 'MR-bar, R-bar or S-bar of the baseline';
COMMENT ON COLUMN spc_control_limits.dispersion_ucl IS 'upper limit of the MR, R or S chart';
COMMENT ON COLUMN spc_control_limits.dispersion_lcl IS 'lower limit of the MR, R or S chart';
COMMENT ON COLUMN spc_control_limits.sigma_within IS 'sigma of individual readings: MR-bar/d2, R-bar/d2 or S-bar/c4';
COMMENT ON COLUMN spc_control_limits.baseline_points IS 'readings of the baseline used (an incomplete last subgroup is not)';
COMMENT ON COLUMN spc_control_limits.baseline_subgroups IS 'plotted points of the baseline: readings (i_mr) or complete subgroups';
COMMENT ON COLUMN spc_control_limits.set_by IS 'who set the limits (API token name or JWT subject); NULL without authentication';

-- Every version with whether it is the one in force, for MES and dashboards.
CREATE VIEW v_spc_control_limits AS
SELECT l.*,
       l.version = max(l.version) OVER (PARTITION BY l.resource_id, l.sensor, l.chart,
                                                     l.subgroup_size) AS in_force
FROM spc_control_limits l;
COMMENT ON VIEW v_spc_control_limits IS
    'Every version of the stored SPC control limits; in_force marks the highest version of each resource, sensor, chart and subgroup size.';

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'edge_mes_api') THEN
        GRANT SELECT, INSERT ON spc_control_limits TO edge_mes_api;
        GRANT SELECT ON v_spc_control_limits TO edge_mes_api;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'edge_mes_mes_reader') THEN
        GRANT SELECT ON v_spc_control_limits TO edge_mes_mes_reader;
    END IF;
END $$;
