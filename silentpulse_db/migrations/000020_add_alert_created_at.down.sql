SET LOCAL lock_timeout = '3s';
ALTER TABLE alerts DROP COLUMN created_at;
