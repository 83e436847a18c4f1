-- Specification limits for SPC capability (Cp/Cpk) per resource and sensor. resource_id '*'
-- applies to every resource without its own row.
CREATE TABLE spc_spec_limits (
    resource_id text             NOT NULL DEFAULT '*',
    sensor      text             NOT NULL,
    lsl         double precision,
    usl         double precision,
    target      double precision,
    updated_at  timestamptz      NOT NULL DEFAULT now(),
    PRIMARY KEY (resource_id, sensor),
    CHECK (lsl IS NOT NULL OR usl IS NOT NULL),
    CHECK (lsl IS NULL OR usl IS NULL OR lsl < usl)
);
COMMENT ON TABLE spc_spec_limits IS
    'Lower/upper specification limits per resource (or * for all) and sensor; GET /spc reports Cp and Cpk where they exist.';
