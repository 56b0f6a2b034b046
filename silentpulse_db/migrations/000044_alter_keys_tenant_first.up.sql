-- 000044_alter_keys_tenant_first: every primary and unique key of a plain table that
-- holds tenant rows leads with tenant_id, as Citus requires of a table distributed by it
-- (issue 31; docs/tenancy.md, "Keys that lead with tenant_id"). The partitioned tables
-- follow in 000045-000048.
--
-- Each key takes over a unique index built CONCURRENTLY beforehand: (tenant_id, id) of
-- 000006-000015 (which the tenant-safe foreign keys of 000017 reference, and keep
-- referencing: an index keeps its foreign keys when it becomes the primary key) and of
-- 000024-000035; the tenant-first twins of the other keys, 000036-000042. ADD CONSTRAINT
-- ... USING INDEX builds nothing and renames the index to the key's name, which stays
-- what it was: a service's `ON CONFLICT ON CONSTRAINT <name>` keeps working, an
-- `ON CONFLICT (<columns>)` must name tenant_id first (docs/tenancy.md lists them).
-- The old key's index goes with it: a lookup by id alone (no tenant) has no index left;
-- under row-level security the policy's tenant_id = ... joins it in the index.
--
-- Online: catalog changes only, each table ACCESS EXCLUSIVE for an instant, every
-- statement under the file's lock_timeout (the runner retries the file when one waits
-- longer). Breaking: an older service's `ON CONFLICT (id)` or `ON CONFLICT (flow_pulse_id)`
-- finds no key to match and fails.
-- The platform-wide keys stay as they are: users_email_key, api_keys_key_hash_key (users
-- and api_keys will be Citus reference tables) and tenants_handle_key.
-- silentpulse: breaking
SET LOCAL lock_timeout = '3s';

ALTER TABLE users DROP CONSTRAINT users_pkey,
    ADD CONSTRAINT users_pkey PRIMARY KEY USING INDEX users_tenant_id_id_key;
ALTER TABLE assets DROP CONSTRAINT assets_pkey,
    ADD CONSTRAINT assets_pkey PRIMARY KEY USING INDEX assets_tenant_id_id_key;
ALTER TABLE asset_groups DROP CONSTRAINT asset_groups_pkey,
    ADD CONSTRAINT asset_groups_pkey PRIMARY KEY USING INDEX asset_groups_tenant_id_id_key;
ALTER TABLE integration_points DROP CONSTRAINT integration_points_pkey,
    ADD CONSTRAINT integration_points_pkey PRIMARY KEY USING INDEX integration_points_tenant_id_id_key;
ALTER TABLE flows DROP CONSTRAINT flows_pkey,
    ADD CONSTRAINT flows_pkey PRIMARY KEY USING INDEX flows_tenant_id_id_key;
ALTER TABLE flow_pulses DROP CONSTRAINT flow_pulses_pkey,
    ADD CONSTRAINT flow_pulses_pkey PRIMARY KEY USING INDEX flow_pulses_tenant_id_id_key,
    DROP CONSTRAINT flow_pulses_flow_position_key,
    ADD CONSTRAINT flow_pulses_flow_position_key UNIQUE USING INDEX flow_pulses_tenant_key;
ALTER TABLE notification_channels DROP CONSTRAINT notification_channels_pkey,
    ADD CONSTRAINT notification_channels_pkey PRIMARY KEY USING INDEX notification_channels_tenant_id_id_key;
ALTER TABLE report_definitions DROP CONSTRAINT report_definitions_pkey,
    ADD CONSTRAINT report_definitions_pkey PRIMARY KEY USING INDEX report_definitions_tenant_id_id_key;
ALTER TABLE exclusion_windows DROP CONSTRAINT exclusion_windows_pkey,
    ADD CONSTRAINT exclusion_windows_pkey PRIMARY KEY USING INDEX exclusion_windows_tenant_id_id_key;
ALTER TABLE availability_snapshots DROP CONSTRAINT availability_snapshots_pkey,
    ADD CONSTRAINT availability_snapshots_pkey PRIMARY KEY USING INDEX availability_snapshots_tenant_id_id_key;
ALTER TABLE alert_changes DROP CONSTRAINT alert_changes_pkey,
    ADD CONSTRAINT alert_changes_pkey PRIMARY KEY USING INDEX alert_changes_tenant_key;
ALTER TABLE anomaly_events DROP CONSTRAINT anomaly_events_pkey,
    ADD CONSTRAINT anomaly_events_pkey PRIMARY KEY USING INDEX anomaly_events_tenant_id_id_key;
ALTER TABLE api_keys DROP CONSTRAINT api_keys_pkey,
    ADD CONSTRAINT api_keys_pkey PRIMARY KEY USING INDEX api_keys_tenant_id_id_key;
ALTER TABLE asset_group_mitre DROP CONSTRAINT asset_group_mitre_pkey,
    ADD CONSTRAINT asset_group_mitre_pkey PRIMARY KEY USING INDEX asset_group_mitre_tenant_key;
ALTER TABLE asset_observation_daily DROP CONSTRAINT asset_observation_daily_pkey,
    ADD CONSTRAINT asset_observation_daily_pkey PRIMARY KEY USING INDEX asset_observation_daily_tenant_id_id_key,
    DROP CONSTRAINT asset_observation_daily_key,
    ADD CONSTRAINT asset_observation_daily_key UNIQUE USING INDEX asset_observation_daily_tenant_key;
ALTER TABLE asset_observation_hourly DROP CONSTRAINT asset_observation_hourly_pkey,
    ADD CONSTRAINT asset_observation_hourly_pkey PRIMARY KEY USING INDEX asset_observation_hourly_tenant_id_id_key,
    DROP CONSTRAINT asset_observation_hourly_key,
    ADD CONSTRAINT asset_observation_hourly_key UNIQUE USING INDEX asset_observation_hourly_tenant_key;
ALTER TABLE asset_profiles DROP CONSTRAINT asset_profiles_pkey,
    ADD CONSTRAINT asset_profiles_pkey PRIMARY KEY USING INDEX asset_profiles_tenant_id_id_key,
    DROP CONSTRAINT asset_profiles_asset_flow_pulse_key,
    ADD CONSTRAINT asset_profiles_asset_flow_pulse_key UNIQUE USING INDEX asset_profiles_tenant_key;
ALTER TABLE audit_tasks DROP CONSTRAINT audit_tasks_pkey,
    ADD CONSTRAINT audit_tasks_pkey PRIMARY KEY USING INDEX audit_tasks_tenant_id_id_key;
ALTER TABLE compliance_breaches DROP CONSTRAINT compliance_breaches_pkey,
    ADD CONSTRAINT compliance_breaches_pkey PRIMARY KEY USING INDEX compliance_breaches_tenant_id_id_key;
ALTER TABLE exclusion_logs DROP CONSTRAINT exclusion_logs_pkey,
    ADD CONSTRAINT exclusion_logs_pkey PRIMARY KEY USING INDEX exclusion_logs_tenant_id_id_key;
ALTER TABLE feed_profiles DROP CONSTRAINT feed_profiles_pkey,
    ADD CONSTRAINT feed_profiles_pkey PRIMARY KEY USING INDEX feed_profiles_tenant_id_id_key,
    DROP CONSTRAINT feed_profiles_flow_pulse_id_key,
    ADD CONSTRAINT feed_profiles_flow_pulse_id_key UNIQUE USING INDEX feed_profiles_tenant_key;
ALTER TABLE notification_rules DROP CONSTRAINT notification_rules_pkey,
    ADD CONSTRAINT notification_rules_pkey PRIMARY KEY USING INDEX notification_rules_tenant_id_id_key;
ALTER TABLE report_executions DROP CONSTRAINT report_executions_pkey,
    ADD CONSTRAINT report_executions_pkey PRIMARY KEY USING INDEX report_executions_tenant_id_id_key;
ALTER TABLE threshold_suggestions DROP CONSTRAINT threshold_suggestions_pkey,
    ADD CONSTRAINT threshold_suggestions_pkey PRIMARY KEY USING INDEX threshold_suggestions_tenant_id_id_key;
