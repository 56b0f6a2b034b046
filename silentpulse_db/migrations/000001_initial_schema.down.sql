-- 000001_initial_schema (down): removes everything 000001 created, in reverse
-- dependency order. Dropping a partitioned table drops its partitions and
-- dropping a table drops its indexes, constraints and policies.

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'age') THEN
        EXECUTE 'LOAD ''age''';
        IF EXISTS (SELECT 1 FROM ag_catalog.ag_graph WHERE name = 'silentpulse_dependencies') THEN
            PERFORM ag_catalog.drop_graph('silentpulse_dependencies', true);
        END IF;
    END IF;
END
$$;

DROP TABLE IF EXISTS anomaly_events;
DROP TABLE IF EXISTS threshold_suggestions;
DROP TABLE IF EXISTS asset_profiles;
DROP TABLE IF EXISTS feed_profiles;
DROP TABLE IF EXISTS asset_observation_daily;
DROP TABLE IF EXISTS asset_observation_hourly;
DROP TABLE IF EXISTS asset_observations;
DROP TABLE IF EXISTS asset_group_mitre;
DROP TABLE IF EXISTS mitre_techniques;
DROP TABLE IF EXISTS connector_defs;
DROP TABLE IF EXISTS compliance_breaches;
DROP TABLE IF EXISTS availability_snapshots;
DROP TABLE IF EXISTS exclusion_logs;
DROP TABLE IF EXISTS exclusion_windows;
DROP TABLE IF EXISTS ai_configs;
DROP TABLE IF EXISTS audit_logs;
DROP TABLE IF EXISTS audit_tasks;
DROP TABLE IF EXISTS api_keys;
DROP TABLE IF EXISTS report_executions;
DROP TABLE IF EXISTS report_definitions;
DROP TABLE IF EXISTS notification_rules;
DROP TABLE IF EXISTS notification_channels;
DROP TABLE IF EXISTS alerts;
DROP FUNCTION IF EXISTS silentpulse_ensure_monthly_partitions(regclass, integer);
DROP TABLE IF EXISTS flow_pulses;
DROP TABLE IF EXISTS flows;
DROP TABLE IF EXISTS integration_points;
DROP TABLE IF EXISTS asset_groups;
DROP TABLE IF EXISTS assets;
DROP TABLE IF EXISTS users;
DROP TABLE IF EXISTS tenants;
