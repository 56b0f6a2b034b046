-- 000017_add_tenant_references: a reference can only point inside its own tenant.
--
-- Every reference from one tenant-scoped table to another carried the id
-- alone: tenant A's role could link its flow to tenant B's asset group, and
-- the foreign-key error on a random UUID told it whether that id existed in
-- some tenant. Each reference is now a composite foreign key
-- (tenant_id, x_id) -> x (tenant_id, id), onto the unique indexes of
-- 000006-000015, so the database refuses a link across tenants and answers an
-- unknown id and another tenant's id alike. The single-column keys go.
--
-- Online: the new keys are added NOT VALID (new rows are checked at once,
-- existing rows are not scanned under a lock); 000018 validates them.
-- PostgreSQL cannot add a NOT VALID key to a partitioned table, so for alerts,
-- audit_logs and asset_observations it goes on each partition, and 000018
-- puts it on the parent once every partition validated.
--
-- History survives deletes: alerts no longer cascade from their asset or flow
-- pulse, and audit logs keep their actor (NO ACTION, checked at the end of the
-- statement, so deleting a whole tenant still removes everything).
-- `ON DELETE SET NULL (col)` nulls the reference, not tenant_id (PostgreSQL 15).
SET LOCAL lock_timeout = '3s';

DO $$
DECLARE
    ref record;
    part regclass;
BEGIN
    FOR ref IN SELECT * FROM (VALUES
        ('alerts', 'asset_id', 'assets', 'NO ACTION'),
        ('alerts', 'flow_pulse_id', 'flow_pulses', 'NO ACTION'),
        ('anomaly_events', 'acknowledged_by', 'users', 'SET NULL (acknowledged_by)'),
        ('anomaly_events', 'asset_id', 'assets', 'CASCADE'),
        ('anomaly_events', 'flow_pulse_id', 'flow_pulses', 'CASCADE'),
        ('api_keys', 'user_id', 'users', 'CASCADE'),
        ('asset_group_mitre', 'asset_group_id', 'asset_groups', 'CASCADE'),
        ('asset_observation_daily', 'asset_id', 'assets', 'CASCADE'),
        ('asset_observation_daily', 'flow_pulse_id', 'flow_pulses', 'CASCADE'),
        ('asset_observation_hourly', 'asset_id', 'assets', 'CASCADE'),
        ('asset_observation_hourly', 'flow_pulse_id', 'flow_pulses', 'CASCADE'),
        ('asset_observations', 'asset_id', 'assets', 'CASCADE'),
        ('asset_observations', 'flow_pulse_id', 'flow_pulses', 'CASCADE'),
        ('asset_profiles', 'asset_id', 'assets', 'CASCADE'),
        ('asset_profiles', 'flow_pulse_id', 'flow_pulses', 'CASCADE'),
        ('audit_logs', 'user_id', 'users', 'NO ACTION'),
        ('audit_tasks', 'auditor_user_id', 'users', 'CASCADE'),
        ('audit_tasks', 'created_by', 'users', 'SET NULL (created_by)'),
        ('availability_snapshots', 'asset_group_id', 'asset_groups', 'CASCADE'),
        ('compliance_breaches', 'acknowledged_by', 'users', 'SET NULL (acknowledged_by)'),
        ('compliance_breaches', 'asset_group_id', 'asset_groups', 'CASCADE'),
        ('compliance_breaches', 'resolved_by', 'users', 'SET NULL (resolved_by)'),
        ('compliance_breaches', 'snapshot_id', 'availability_snapshots', 'SET NULL (snapshot_id)'),
        ('exclusion_logs', 'asset_id', 'assets', 'CASCADE'),
        ('exclusion_logs', 'exclusion_window_id', 'exclusion_windows', 'CASCADE'),
        ('exclusion_logs', 'flow_pulse_id', 'flow_pulses', 'CASCADE'),
        ('exclusion_windows', 'asset_group_id', 'asset_groups', 'CASCADE'),
        ('exclusion_windows', 'created_by', 'users', 'SET NULL (created_by)'),
        ('feed_profiles', 'flow_pulse_id', 'flow_pulses', 'CASCADE'),
        ('flow_pulses', 'flow_id', 'flows', 'CASCADE'),
        ('flow_pulses', 'integration_point_id', 'integration_points', 'RESTRICT'),
        ('flows', 'asset_group_id', 'asset_groups', 'CASCADE'),
        ('notification_rules', 'notification_channel_id', 'notification_channels', 'CASCADE'),
        ('report_executions', 'report_definition_id', 'report_definitions', 'CASCADE'),
        ('threshold_suggestions', 'asset_id', 'assets', 'CASCADE'),
        ('threshold_suggestions', 'flow_pulse_id', 'flow_pulses', 'CASCADE'),
        ('threshold_suggestions', 'responded_by', 'users', 'SET NULL (responded_by)')
    ) AS r (tbl, col, target, on_delete)
    LOOP
        IF (SELECT relkind FROM pg_class WHERE oid = ref.tbl::regclass) = 'p' THEN
            FOR part IN SELECT inhrelid::regclass FROM pg_inherits
                        WHERE inhparent = ref.tbl::regclass ORDER BY inhrelid
            LOOP
                EXECUTE format(
                    'ALTER TABLE %s ADD CONSTRAINT %I FOREIGN KEY (tenant_id, %I) '
                    'REFERENCES %I (tenant_id, id) ON DELETE %s NOT VALID',
                    part, ref.tbl || '_' || ref.col || '_tenant_fkey', ref.col, ref.target,
                    ref.on_delete);
            END LOOP;
        ELSE
            EXECUTE format(
                'ALTER TABLE %I ADD CONSTRAINT %I FOREIGN KEY (tenant_id, %I) '
                'REFERENCES %I (tenant_id, id) ON DELETE %s NOT VALID',
                ref.tbl, ref.tbl || '_' || ref.col || '_tenant_fkey', ref.col, ref.target,
                ref.on_delete);
        END IF;
        EXECUTE format('ALTER TABLE %I DROP CONSTRAINT %I', ref.tbl, ref.tbl || '_' || ref.col || '_fkey');
    END LOOP;
END
$$;
