BEGIN;
ALTER TABLE accounts DROP COLUMN status;
DROP TYPE account_status;
END;
