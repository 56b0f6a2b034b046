-- 000050_validate_released_references: reverses 000050_validate_released_references.up.sql
-- exactly: the keys of 000049 NOT VALID again (dropped and added NOT VALID: catalog work,
-- SHARE ROW EXCLUSIVE on both tables for an instant).
SET LOCAL lock_timeout = '3s';

DO $$
DECLARE
    fk record;
BEGIN
    FOR fk IN
        SELECT con.conrelid::regclass AS tbl, con.conname, pg_get_constraintdef(con.oid) AS def
        FROM pg_constraint con
        WHERE con.contype = 'f' AND con.convalidated AND con.conname IN (
            'anomaly_events_acknowledged_by_tenant_fkey', 'audit_tasks_created_by_tenant_fkey',
            'compliance_breaches_acknowledged_by_tenant_fkey', 'compliance_breaches_resolved_by_tenant_fkey',
            'compliance_breaches_snapshot_id_tenant_fkey', 'exclusion_windows_created_by_tenant_fkey',
            'threshold_suggestions_responded_by_tenant_fkey')
          AND con.connamespace = current_schema()::regnamespace
        ORDER BY 1::text, 2
    LOOP
        EXECUTE format('ALTER TABLE %s DROP CONSTRAINT %I, ADD CONSTRAINT %I %s NOT VALID',
                       fk.tbl, fk.conname, fk.conname, fk.def);
    END LOOP;
END
$$;
