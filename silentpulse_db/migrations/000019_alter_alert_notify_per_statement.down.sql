-- 000019_alter_alert_notify_per_statement: reverses 000019_alter_alert_notify_per_statement.up.sql
-- exactly: 000003's per-row notification and stamping triggers.
SET LOCAL lock_timeout = '3s';

ALTER FUNCTION silentpulse_alert_stamp() RESET search_path;

DROP TRIGGER alerts_status_stamp ON alerts;
CREATE TRIGGER alerts_status_stamp
    BEFORE INSERT OR UPDATE OF status ON alerts
    FOR EACH ROW EXECUTE FUNCTION silentpulse_alert_stamp();

DROP TRIGGER alerts_notify_update ON alerts;
DROP TRIGGER alerts_notify_insert ON alerts;
CREATE OR REPLACE FUNCTION silentpulse_alert_notify() RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    IF TG_OP = 'INSERT' OR NEW.status IS DISTINCT FROM OLD.status THEN
        PERFORM pg_notify(
            'silentpulse_alerts',
            json_build_object(
                'alert_id', NEW.id,
                'tenant_id', NEW.tenant_id,
                'status', NEW.status,
                'op', TG_OP,
                'started_at', NEW.started_at,
                'changed_at', NEW.status_changed_at
            )::text
        );
    END IF;
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION silentpulse_alert_notify() IS 'pg_notify on channel silentpulse_alerts for new alerts and status changes';

CREATE TRIGGER alerts_notify
    AFTER INSERT OR UPDATE OF status ON alerts
    FOR EACH ROW EXECUTE FUNCTION silentpulse_alert_notify();

DROP FUNCTION silentpulse_alert_notify_statement();
