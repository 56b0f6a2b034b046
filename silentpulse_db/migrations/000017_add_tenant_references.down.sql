-- 000017_add_tenant_references: reverses 000017_add_tenant_references.up.sql exactly:
-- the single-column keys come back (validated, as 000001 made them; on a
-- partitioned table each partition's first, so that they keep their names).
SET LOCAL lock_timeout = '3s';

DO $$
DECLARE
    ref record;
    part regclass;
BEGIN
    FOR ref IN SELECT * FROM (VALUES
        ('alerts', 'asset_id', 'assets', 'CASCADE'),
        ('alerts', 'flow_pulse_id', 'flow_pulses', 'CASCADE'),
        ('anomaly_events', 'acknowledged_by', 'users', 'SET NULL'),
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
        ('audit_logs', 'user_id', 'users', 'SET NULL'),
        ('audit_tasks', 'auditor_user_id', 'users', 'CASCADE'),
        ('audit_tasks', 'created_by', 'users', 'SET NULL'),
        ('availability_snapshots', 'asset_group_id', 'asset_groups', 'CASCADE'),
        ('compliance_breaches', 'acknowledged_by', 'users', 'SET NULL'),
        ('compliance_breaches', 'asset_group_id', 'asset_groups', 'CASCADE'),
        ('compliance_breaches', 'resolved_by', 'users', 'SET NULL'),
        ('compliance_breaches', 'snapshot_id', 'availability_snapshots', 'SET NULL'),
        ('exclusion_logs', 'asset_id', 'assets', 'CASCADE'),
        ('exclusion_logs', 'exclusion_window_id', 'exclusion_windows', 'CASCADE'),
        ('exclusion_logs', 'flow_pulse_id', 'flow_pulses', 'CASCADE'),
        ('exclusion_windows', 'asset_group_id', 'asset_groups', 'CASCADE'),
        ('exclusion_windows', 'created_by', 'users', 'SET NULL'),
        ('feed_profiles', 'flow_pulse_id', 'flow_pulses', 'CASCADE'),
        ('flow_pulses', 'flow_id', 'flows', 'CASCADE'),
        ('flow_pulses', 'integration_point_id', 'integration_points', 'RESTRICT'),
        ('flows', 'asset_group_id', 'asset_groups', 'CASCADE'),
        ('notification_rules', 'notification_channel_id', 'notification_channels', 'CASCADE'),
        ('report_executions', 'report_definition_id', 'report_definitions', 'CASCADE'),
        ('threshold_suggestions', 'asset_id', 'assets', 'CASCADE'),
        ('threshold_suggestions', 'flow_pulse_id', 'flow_pulses', 'CASCADE'),
        ('threshold_suggestions', 'responded_by', 'users', 'SET NULL')
    ) AS r (tbl, col, target, on_delete)
    LOOP
        IF (SELECT relkind FROM pg_class WHERE oid = ref.tbl::regclass) = 'p' THEN
            FOR part IN SELECT inhrelid::regclass FROM pg_inherits
                        WHERE inhparent = ref.tbl::regclass ORDER BY inhrelid
            LOOP
                EXECUTE format('ALTER TABLE %s DROP CONSTRAINT IF EXISTS %I',
                               part, ref.tbl || '_' || ref.col || '_tenant_fkey');
                EXECUTE format(
                    'ALTER TABLE %s ADD CONSTRAINT %I FOREIGN KEY (%I) REFERENCES %I (id) ON DELETE %s',
                    part, ref.tbl || '_' || ref.col || '_fkey', ref.col, ref.target, ref.on_delete);
            END LOOP;
        END IF;
        EXECUTE format('ALTER TABLE %I DROP CONSTRAINT IF EXISTS %I',
                       ref.tbl, ref.tbl || '_' || ref.col || '_tenant_fkey');
        EXECUTE format(
            'ALTER TABLE %I ADD CONSTRAINT %I FOREIGN KEY (%I) REFERENCES %I (id) ON DELETE %s',
            ref.tbl, ref.tbl || '_' || ref.col || '_fkey', ref.col, ref.target, ref.on_delete);
    END LOOP;
END
$$;
