-- prerequisites.sql: extensions the SilentPulse schema uses. Run once per
-- database, before the first migration, as a role that may create them: an
-- administrator, or (both required ones are trusted on PostgreSQL 13+) a role
-- with CREATE on the database. `prerequisites` tells any other role the exact
-- statements an administrator runs (exit 3):
--     silentpulse-db prerequisites
-- Safe to run again. Apache AGE (the dependency graph) is optional: it is
-- created where the server has it; elsewhere a NOTICE says it was skipped and
-- migration 000001 leaves the graph out.

CREATE EXTENSION IF NOT EXISTS "uuid-ossp";
CREATE EXTENSION IF NOT EXISTS pgcrypto;

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'age') THEN
        CREATE EXTENSION IF NOT EXISTS age;
    ELSE
        RAISE NOTICE 'optional extension "age" (Apache AGE) is not available on this server: the dependency graph will be skipped';
    END IF;
END
$$;
