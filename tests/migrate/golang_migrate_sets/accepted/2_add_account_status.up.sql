START TRANSACTION;
CREATE TYPE account_status AS ENUM ('active', 'closed');
ALTER TABLE accounts ADD COLUMN status account_status NOT NULL DEFAULT 'active';
END;
