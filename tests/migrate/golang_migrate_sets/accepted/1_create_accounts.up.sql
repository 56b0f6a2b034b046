-- golang-migrate style: the file wraps itself in a transaction.
BEGIN;

CREATE TABLE accounts (
    id   bigserial PRIMARY KEY,
    name text NOT NULL
);

COMMIT;
