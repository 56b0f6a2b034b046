-- 000020_add_alert_created_at: when an alert was created, so that a change read
-- back from the table says whether it was the alert's creation or a status change.
--
-- The alert listener catches up from the table after a reconnect or a restart,
-- and nothing there told an INSERT from an UPDATE: its catch-up events had no
-- operation. A new alert's created_at and status_changed_at are both now() of
-- its transaction; a status change stamps status_changed_at with
-- clock_timestamp() (silentpulse_alert_stamp), so the two differ.
-- Nullable, the default set apart: adding the column rewrites nothing, and the
-- alerts created before this migration keep NULL (their operation is unknown).
SET LOCAL lock_timeout = '3s';
ALTER TABLE alerts ADD COLUMN created_at timestamptz;
ALTER TABLE alerts ALTER COLUMN created_at SET DEFAULT now();
COMMENT ON COLUMN alerts.created_at IS 'When the alert was created (NULL: before migration 000020)';
