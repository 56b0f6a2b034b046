-- 000050_validate_released_references: validate the keys 000049 added NOT VALID.
--
-- VALIDATE CONSTRAINT scans the table under SHARE UPDATE EXCLUSIVE: reads and writes go
-- on. As in 000018, a key whose table holds rows linking across tenants is not a failed
-- deploy: it stays NOT VALID (new rows are still checked) and a WARNING names it; the
-- clean-up in docs/tenancy.md, then SELECT silentpulse_validate_tenant_references(),
-- finishes it.
SET LOCAL lock_timeout = '3s';

DO $$
DECLARE
    fk record;
BEGIN
    FOR fk IN
        SELECT con.conrelid::regclass AS tbl, con.conname
        FROM pg_constraint con
        WHERE con.contype = 'f' AND NOT con.convalidated AND con.conname IN (
            'anomaly_events_acknowledged_by_tenant_fkey', 'audit_tasks_created_by_tenant_fkey',
            'compliance_breaches_acknowledged_by_tenant_fkey', 'compliance_breaches_resolved_by_tenant_fkey',
            'compliance_breaches_snapshot_id_tenant_fkey', 'exclusion_windows_created_by_tenant_fkey',
            'threshold_suggestions_responded_by_tenant_fkey')
          AND con.connamespace = current_schema()::regnamespace
        ORDER BY 1::text, 2
    LOOP
        BEGIN
            EXECUTE format('ALTER TABLE %s VALIDATE CONSTRAINT %I', fk.tbl, fk.conname);
        EXCEPTION WHEN foreign_key_violation THEN
            RAISE WARNING 'rows of % link across tenants: % left NOT VALID; clean up as docs/tenancy.md says, then run SELECT silentpulse_validate_tenant_references()',
                fk.tbl, fk.conname;
        END;
    END LOOP;
END
$$;
