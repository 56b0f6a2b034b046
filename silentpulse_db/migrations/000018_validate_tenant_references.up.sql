-- 000018_validate_tenant_references: validate the tenant-safe keys of 000017,
-- and 000002's two NOT VALID checks on audit_logs.
--
-- VALIDATE CONSTRAINT scans a table under SHARE UPDATE EXCLUSIVE, which lets
-- reads and writes go on. A key whose table already holds rows linking across
-- tenants is not a failed deploy: it stays NOT VALID (new rows are still
-- checked), and a WARNING names the table, the key and how many rows; the
-- clean-up is in docs/tenancy.md, after which
--     SELECT silentpulse_validate_tenant_references();
-- finishes the job. A partitioned table gets its key on the parent (so that
-- partitions created later inherit it) once every partition validated.
SET LOCAL lock_timeout = '3s';

CREATE FUNCTION silentpulse_validate_tenant_references() RETURNS integer
LANGUAGE plpgsql
AS $$
DECLARE
    fk record;
    parent record;
    bad bigint;
    left_invalid integer := 0;
BEGIN
    FOR fk IN
        SELECT con.conrelid::regclass AS tbl, con.conname, a.attname AS col,
               con.confrelid::regclass AS target
        FROM pg_constraint con
        JOIN pg_class c ON c.oid = con.conrelid
        JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = con.conkey[2]
        WHERE con.contype = 'f' AND NOT con.convalidated AND con.conname LIKE '%\_tenant\_fkey'
          AND c.relnamespace = current_schema()::regnamespace
        ORDER BY c.relname, con.conname
    LOOP
        BEGIN
            EXECUTE format('ALTER TABLE %s VALIDATE CONSTRAINT %I', fk.tbl, fk.conname);
        EXCEPTION WHEN foreign_key_violation THEN
            -- Counted as this role sees them: row-level security may hide some.
            EXECUTE format(
                'SELECT count(*) FROM %s x WHERE x.%I IS NOT NULL AND NOT EXISTS '
                '(SELECT 1 FROM %s r WHERE r.tenant_id = x.tenant_id AND r.id = x.%I)',
                fk.tbl, fk.col, fk.target, fk.col) INTO bad;
            RAISE WARNING '% row(s) of % link to % across tenants (% visible to role %): % left NOT VALID; clean up as docs/tenancy.md says, then run SELECT silentpulse_validate_tenant_references()',
                CASE WHEN bad > 0 THEN bad::text ELSE 'some' END, fk.tbl, fk.target, bad, current_user, fk.conname;
            left_invalid := left_invalid + 1;
        END;
    END LOOP;

    -- Partitioned tables: the key goes on the parent once every partition has it, valid.
    FOR parent IN
        SELECT p.oid::regclass AS tbl, con.conname, pg_get_constraintdef(min(con.oid::text)::oid) AS def
        FROM pg_class p
        JOIN pg_inherits i ON i.inhparent = p.oid
        JOIN pg_constraint con ON con.conrelid = i.inhrelid AND con.contype = 'f'
        WHERE p.relkind = 'p' AND p.relnamespace = current_schema()::regnamespace
          AND con.conname LIKE '%\_tenant\_fkey' AND con.conparentid = 0
          AND NOT EXISTS (SELECT 1 FROM pg_constraint pc
                          WHERE pc.conrelid = p.oid AND pc.conname = con.conname)
        GROUP BY p.oid, con.conname
        HAVING bool_and(con.convalidated)
           AND count(*) = (SELECT count(*) FROM pg_inherits i2 WHERE i2.inhparent = p.oid)
        ORDER BY 1::text, 2
    LOOP
        EXECUTE format('ALTER TABLE %s ADD CONSTRAINT %I %s', parent.tbl, parent.conname, parent.def);
    END LOOP;
    RETURN left_invalid;
END
$$;
COMMENT ON FUNCTION silentpulse_validate_tenant_references()
    IS 'Validates the tenant-safe foreign keys; warns about and leaves NOT VALID those with cross-tenant rows; returns how many are left';
DO $$
BEGIN
    EXECUTE format('ALTER FUNCTION silentpulse_validate_tenant_references() '
                   'SET search_path = %I, pg_temp', current_schema());
END
$$;

SELECT silentpulse_validate_tenant_references();

-- 000002 added these NOT VALID; new rows have been checked since.
ALTER TABLE audit_logs VALIDATE CONSTRAINT audit_logs_actor_type_check;
ALTER TABLE audit_logs VALIDATE CONSTRAINT audit_logs_actor_api_key_check;
