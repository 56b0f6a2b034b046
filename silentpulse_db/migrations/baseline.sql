-- baseline.sql: adopt a database whose SilentPulse tables were created before
-- migrations existed. Creates golang-migrate's version table and records
-- version 1 (000001_initial_schema), clean, exactly as golang-migrate writes it.
-- Refuses a database that already has a version.
-- Use `silentpulse-db baseline`: it first checks that the schema matches what
-- 000001 creates, and records the baseline in schema_migrations_history.

CREATE TABLE IF NOT EXISTS schema_migrations (version bigint NOT NULL PRIMARY KEY, dirty boolean NOT NULL);

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM schema_migrations) THEN
        RAISE EXCEPTION 'schema_migrations already holds a version: this database is not unversioned; baseline refused';
    END IF;
    TRUNCATE schema_migrations;
    INSERT INTO schema_migrations (version, dirty) VALUES (1, false);
END
$$;
