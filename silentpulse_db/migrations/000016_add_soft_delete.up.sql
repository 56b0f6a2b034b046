-- 000016_add_soft_delete: rows that history names are deleted softly.
--
-- Alerts and audit logs must outlive what they describe (an asset, a flow,
-- a user): from 000017 on, deleting such a row while history still names it
-- is refused instead of cascading history away or blanking the actor. The
-- application sets deleted_at instead, hides those rows, and the purge job
-- deletes them for good 90 days later once nothing names them
-- (docs/tenancy.md). Nullable, no default: adding the column rewrites nothing.
SET LOCAL lock_timeout = '3s';
ALTER TABLE users ADD COLUMN deleted_at timestamptz;
COMMENT ON COLUMN users.deleted_at IS 'Soft delete: set instead of deleting; purged 90 days later once no history names the row';
ALTER TABLE assets ADD COLUMN deleted_at timestamptz;
COMMENT ON COLUMN assets.deleted_at IS 'Soft delete: set instead of deleting; purged 90 days later once no history names the row';
ALTER TABLE flows ADD COLUMN deleted_at timestamptz;
COMMENT ON COLUMN flows.deleted_at IS 'Soft delete: set instead of deleting; purged 90 days later once no history names the row';
ALTER TABLE flow_pulses ADD COLUMN deleted_at timestamptz;
COMMENT ON COLUMN flow_pulses.deleted_at IS 'Soft delete: set instead of deleting; purged 90 days later once no history names the row';
