-- 000003_alert_notify_trigger (down): removes the triggers, their functions
-- and alerts.status_changed_at, in reverse order.

DROP TRIGGER IF EXISTS alerts_notify ON alerts;
DROP TRIGGER IF EXISTS alerts_status_stamp ON alerts;
DROP FUNCTION IF EXISTS silentpulse_alert_notify();
DROP FUNCTION IF EXISTS silentpulse_alert_stamp();
DROP INDEX IF EXISTS alerts_status_changed_at_idx;
ALTER TABLE alerts DROP COLUMN IF EXISTS status_changed_at;
