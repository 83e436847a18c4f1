-- Documented defaults, not plant data: the downtime reason codes every new database starts with
-- (docs/api.md, "Loss buckets"). A plant may change them: edit descriptions, move a reason to
-- another loss bucket, add or delete reasons (a reason a downtime refers to cannot be deleted).
-- ON CONFLICT DO NOTHING: a reason that already exists keeps the plant's settings.
INSERT INTO downtime_reasons (reason_code, description, planned, loss_bucket, is_failure) VALUES
    ('breakdown',           'Equipment failure',                      false, 'availability', true),
    ('material_shortage',   'Waiting for material',                   false, 'availability', false),
    ('quality_hold',        'Stopped for a quality check',            false, 'availability', false),
    ('minor_stop',          'Short stop (jam, sensor trip)',          false, 'performance',  false),
    ('changeover',          'Product changeover / setup',             true,  'availability', false),
    ('planned_maintenance', 'Scheduled maintenance',                  true,  'excluded',     false),
    ('break',               'Unscheduled break taken during the run', true,  'excluded',     false),
    ('no_order',            'No order to run',                        true,  'excluded',     false)
ON CONFLICT (reason_code) DO NOTHING;
