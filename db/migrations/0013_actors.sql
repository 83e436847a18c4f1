-- Who made each change (the API token's name, or the identity provider's subject): on the run
-- (who started and who ended it), on each count row and on each downtime (who opened and who
-- closed it). NULL for rows written without authentication (and before this migration).
ALTER TABLE op_run ADD COLUMN started_by text, ADD COLUMN ended_by text;
ALTER TABLE op_run_count ADD COLUMN actor text;
ALTER TABLE op_run_downtime ADD COLUMN opened_by text, ADD COLUMN closed_by text;

COMMENT ON COLUMN op_run.started_by IS 'who started the run (API token name or JWT subject)';
COMMENT ON COLUMN op_run.ended_by IS 'who completed or aborted the run';
COMMENT ON COLUMN op_run_count.actor IS 'who reported these counts (or completed the run, for kind final)';
COMMENT ON COLUMN op_run_downtime.opened_by IS 'who paused the run';
COMMENT ON COLUMN op_run_downtime.closed_by IS 'who resumed, completed or aborted the run';
