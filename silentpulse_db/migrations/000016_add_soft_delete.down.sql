-- 000016_add_soft_delete: reverses 000016_add_soft_delete.up.sql exactly.
SET LOCAL lock_timeout = '3s';
ALTER TABLE flow_pulses DROP COLUMN IF EXISTS deleted_at;
ALTER TABLE flows DROP COLUMN IF EXISTS deleted_at;
ALTER TABLE assets DROP COLUMN IF EXISTS deleted_at;
ALTER TABLE users DROP COLUMN IF EXISTS deleted_at;
