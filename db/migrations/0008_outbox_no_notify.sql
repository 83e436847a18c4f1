-- NOTIFY serializes the commits of notifying transactions (a global queue lock held through the
-- commit), which capped POST /op_run/report far below 1,000/s. The relay is now woken in-process
-- after each commit and polls for events committed by other instances instead.
DROP TRIGGER IF EXISTS outbox_notify ON outbox;
DROP FUNCTION IF EXISTS edge_mes_outbox_notify();
