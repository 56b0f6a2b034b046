-- 000049_alter_released_references_no_action: reverses
-- 000049_alter_released_references_no_action.up.sql exactly: the keys are
-- ON DELETE SET NULL (column) again, validated as 000018 left them (NOT VALID where rows
-- link across tenants), and silentpulse_release_references() goes.
--
-- Not fully online: each key is validated in this transaction, which holds SHARE ROW
-- EXCLUSIVE on its table from the ADD on (writes wait for the scan). Revert on a quiet
-- database.
SET LOCAL lock_timeout = '3s';

DROP FUNCTION silentpulse_release_references(regclass, uuid, uuid[]);

DO $$
DECLARE
    ref record;
BEGIN
    FOR ref IN SELECT * FROM (VALUES
        ('anomaly_events', 'acknowledged_by', 'users'),
        ('audit_tasks', 'created_by', 'users'),
        ('compliance_breaches', 'acknowledged_by', 'users'),
        ('compliance_breaches', 'resolved_by', 'users'),
        ('compliance_breaches', 'snapshot_id', 'availability_snapshots'),
        ('exclusion_windows', 'created_by', 'users'),
        ('threshold_suggestions', 'responded_by', 'users')
    ) AS r (tbl, col, target)
    LOOP
        EXECUTE format('ALTER TABLE %I DROP CONSTRAINT %I', ref.tbl, ref.tbl || '_' || ref.col || '_tenant_fkey');
        BEGIN
            EXECUTE format(
                'ALTER TABLE %I ADD CONSTRAINT %I FOREIGN KEY (tenant_id, %I) '
                'REFERENCES %I (tenant_id, id) ON DELETE SET NULL (%I)',
                ref.tbl, ref.tbl || '_' || ref.col || '_tenant_fkey', ref.col, ref.target, ref.col);
        EXCEPTION WHEN foreign_key_violation THEN
            -- Rows link across tenants (docs/tenancy.md): 000018 left this key NOT VALID.
            EXECUTE format(
                'ALTER TABLE %I ADD CONSTRAINT %I FOREIGN KEY (tenant_id, %I) '
                'REFERENCES %I (tenant_id, id) ON DELETE SET NULL (%I) NOT VALID',
                ref.tbl, ref.tbl || '_' || ref.col || '_tenant_fkey', ref.col, ref.target, ref.col);
        END;
    END LOOP;
END
$$;
