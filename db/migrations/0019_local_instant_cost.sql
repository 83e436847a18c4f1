-- edge_mes_local_instant (0015) is a few microseconds per call, but a plpgsql function is
-- costed at 100 operators by default: with the planner's guess of hundreds of sites, a query
-- that expands the current shift of each site looked expensive enough for JIT compilation, which
-- took ~300 ms for a statement that runs in a few. The services connect without JIT; this keeps
-- the estimate honest for the MES, Grafana and ad-hoc queries too.
ALTER FUNCTION edge_mes_local_instant(timestamp, text) COST 1;
