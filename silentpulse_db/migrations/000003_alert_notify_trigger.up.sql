-- 000003_alert_notify_trigger: tell listeners about alert changes.
--
-- Channel: silentpulse_alerts. Whenever an alert is created, or its status
-- changes, the trigger sends pg_notify('silentpulse_alerts', payload) with
--   {"alert_id": uuid, "tenant_id": uuid, "status": text, "op": "INSERT"|"UPDATE",
--    "started_at": timestamptz, "changed_at": timestamptz}
-- A fixed set of short fields: about 250 bytes, far below PostgreSQL's
-- 8000-byte payload limit. Notifications are delivered when the transaction
-- commits, and not at all if it rolls back.
--
-- alerts.status_changed_at records when the status last changed, so that a
-- listener that was disconnected can catch up from the table
-- (silentpulse_db.listen_alerts).

ALTER TABLE alerts ADD COLUMN IF NOT EXISTS status_changed_at timestamptz NOT NULL DEFAULT now();
COMMENT ON COLUMN alerts.status_changed_at IS 'When status last changed (set by silentpulse_alert_stamp)';
CREATE INDEX IF NOT EXISTS alerts_status_changed_at_idx ON alerts (status_changed_at);

CREATE OR REPLACE FUNCTION silentpulse_alert_stamp() RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    IF TG_OP = 'INSERT' OR NEW.status IS DISTINCT FROM OLD.status THEN
        NEW.status_changed_at := clock_timestamp();
    END IF;
    RETURN NEW;
END
$$;
COMMENT ON FUNCTION silentpulse_alert_stamp() IS 'Keeps alerts.status_changed_at current';

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

DROP TRIGGER IF EXISTS alerts_status_stamp ON alerts;
CREATE TRIGGER alerts_status_stamp
    BEFORE INSERT OR UPDATE OF status ON alerts
    FOR EACH ROW EXECUTE FUNCTION silentpulse_alert_stamp();

DROP TRIGGER IF EXISTS alerts_notify ON alerts;
CREATE TRIGGER alerts_notify
    AFTER INSERT OR UPDATE OF status ON alerts
    FOR EACH ROW EXECUTE FUNCTION silentpulse_alert_notify();
