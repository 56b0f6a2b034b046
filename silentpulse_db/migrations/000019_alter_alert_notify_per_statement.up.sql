-- 000019_alter_alert_notify_per_statement: one notification per statement, not per row.
--
-- 000003 sent a pg_notify for every inserted alert and every status change: an
-- INSERT of 20,000 alerts sent 20,000 notifications, and a listener that
-- stopped reading filled the server's notification queue until commits
-- failed. Now each INSERT or UPDATE statement sends at most one, built from
-- its transition tables:
--   {"op": "INSERT"|"UPDATE", "count": n, "since": t0, "until": t1,
--    "alerts": [[id, status, status_changed_at], ...]}
-- "alerts" only when n <= 50, so that each alert's status at that moment is
-- kept even if it changes again before the listener reads it; for more, the
-- listener reads the changed alerts from the table by status_changed_at
-- between since and until. At most about 5 kB, whatever the row count. No
-- tenant data: any role that may LISTEN sees the payload.
--
-- An UPDATE notifies only when a status changed; moving an alert to another
-- partition (a changed started_at) is one UPDATE at the parent, no INSERT.
-- status_changed_at of a new alert comes from the column's default, so the
-- stamping trigger now runs on status updates only (not once per inserted row).
SET LOCAL lock_timeout = '3s';

CREATE FUNCTION silentpulse_alert_notify_statement() RETURNS trigger
LANGUAGE plpgsql
AS $$
DECLARE
    changed integer;
    first_at timestamptz;
    last_at timestamptz;
    alerts jsonb;
BEGIN
    IF TG_OP = 'INSERT' THEN
        SELECT count(*), min(status_changed_at), max(status_changed_at)
        INTO changed, first_at, last_at FROM new_rows;
        IF changed BETWEEN 1 AND 50 THEN
            SELECT jsonb_agg(jsonb_build_array(id, status, status_changed_at) ORDER BY id)
            INTO alerts FROM new_rows;
        END IF;
    ELSE
        SELECT count(*), min(n.status_changed_at), max(n.status_changed_at)
        INTO changed, first_at, last_at
        FROM new_rows n JOIN old_rows o ON o.id = n.id
        WHERE n.status IS DISTINCT FROM o.status;
        IF changed BETWEEN 1 AND 50 THEN
            SELECT jsonb_agg(jsonb_build_array(n.id, n.status, n.status_changed_at) ORDER BY n.id)
            INTO alerts
            FROM new_rows n JOIN old_rows o ON o.id = n.id
            WHERE n.status IS DISTINCT FROM o.status;
        END IF;
    END IF;
    IF changed > 0 THEN
        PERFORM pg_notify('silentpulse_alerts', jsonb_strip_nulls(jsonb_build_object(
            'op', TG_OP, 'count', changed, 'since', first_at, 'until', last_at, 'alerts', alerts))::text);
    END IF;
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION silentpulse_alert_notify_statement()
    IS 'One pg_notify on silentpulse_alerts per statement that creates alerts or changes their status';

DROP TRIGGER alerts_notify ON alerts;
DROP FUNCTION silentpulse_alert_notify();
CREATE TRIGGER alerts_notify_insert
    AFTER INSERT ON alerts REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION silentpulse_alert_notify_statement();
-- Transition tables allow no column list: it fires on every UPDATE and looks.
CREATE TRIGGER alerts_notify_update
    AFTER UPDATE ON alerts REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION silentpulse_alert_notify_statement();

DROP TRIGGER alerts_status_stamp ON alerts;
CREATE TRIGGER alerts_status_stamp
    BEFORE UPDATE OF status ON alerts
    FOR EACH ROW EXECUTE FUNCTION silentpulse_alert_stamp();

-- Pinned: a function must not resolve names through the caller's search_path
-- (pg_catalog, not listed, is searched first; pg_temp last).
DO $$
BEGIN
    EXECUTE format('ALTER FUNCTION silentpulse_alert_notify_statement() SET search_path = %I, pg_temp',
                   current_schema());
    EXECUTE format('ALTER FUNCTION silentpulse_alert_stamp() SET search_path = %I, pg_temp',
                   current_schema());
END
$$;
