-- A statement before BEGIN: PostgreSQL folds it into the same transaction.
CREATE TABLE audit (id bigserial PRIMARY KEY, at timestamptz NOT NULL DEFAULT now());
BEGIN;
CREATE INDEX audit_at ON audit (at);
COMMIT;
