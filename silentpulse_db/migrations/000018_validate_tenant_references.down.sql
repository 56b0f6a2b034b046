-- 000018_validate_tenant_references: reverses 000018_validate_tenant_references.up.sql
-- exactly: every tenant-safe key back to NOT VALID (on each partition for a
-- partitioned table, none on the parent), 000002's checks NOT VALID again.
SET LOCAL lock_timeout = '3s';

DO $$
DECLARE
    fk record;
    part regclass;
BEGIN
    -- Keys on partitioned parents: dropping one drops its partitions' copies.
    FOR fk IN
        SELECT con.conrelid::regclass AS tbl, con.conname, pg_get_constraintdef(con.oid) AS def
        FROM pg_constraint con JOIN pg_class c ON c.oid = con.conrelid
        WHERE con.contype = 'f' AND con.conname LIKE '%\_tenant\_fkey' AND c.relkind = 'p'
          AND c.relnamespace = current_schema()::regnamespace
    LOOP
        EXECUTE format('ALTER TABLE %s DROP CONSTRAINT %I', fk.tbl, fk.conname);
        FOR part IN SELECT inhrelid::regclass FROM pg_inherits WHERE inhparent = fk.tbl ORDER BY inhrelid LOOP
            EXECUTE format('ALTER TABLE %s ADD CONSTRAINT %I %s NOT VALID', part, fk.conname, fk.def);
        END LOOP;
    END LOOP;
    FOR fk IN
        SELECT con.conrelid::regclass AS tbl, con.conname, pg_get_constraintdef(con.oid) AS def
        FROM pg_constraint con JOIN pg_class c ON c.oid = con.conrelid
        WHERE con.contype = 'f' AND con.conname LIKE '%\_tenant\_fkey' AND con.convalidated
          AND c.relkind = 'r' AND con.conparentid = 0
          AND c.relnamespace = current_schema()::regnamespace
    LOOP
        EXECUTE format('ALTER TABLE %s DROP CONSTRAINT %I', fk.tbl, fk.conname);
        EXECUTE format('ALTER TABLE %s ADD CONSTRAINT %I %s NOT VALID', fk.tbl, fk.conname, fk.def);
    END LOOP;
END
$$;

DROP FUNCTION IF EXISTS silentpulse_validate_tenant_references();

ALTER TABLE audit_logs DROP CONSTRAINT audit_logs_actor_api_key_check;
ALTER TABLE audit_logs ADD CONSTRAINT audit_logs_actor_api_key_check
    CHECK (actor_type IS DISTINCT FROM 'api_key' OR actor_api_key_id IS NOT NULL) NOT VALID;
ALTER TABLE audit_logs DROP CONSTRAINT audit_logs_actor_type_check;
ALTER TABLE audit_logs ADD CONSTRAINT audit_logs_actor_type_check
    CHECK (actor_type IN ('user', 'api_key', 'system', 'auditor', 'support')) NOT VALID;
