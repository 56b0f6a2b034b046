-- 000062_alter_alert_listener_positions_holder: reverses
-- 000062_alter_alert_listener_positions_holder.up.sql. Listeners of the version that
-- claims the row fall back to the advisory lock of the versions before it.
SET LOCAL lock_timeout = '3s';

DROP TRIGGER alert_listener_positions_truncate_guard ON alert_listener_positions;
DROP FUNCTION silentpulse_alert_listener_positions_guard();

ALTER TABLE alert_listener_positions
    DROP COLUMN holder_since,
    DROP COLUMN holder_lock,
    DROP COLUMN holder_pid;
