-- 000044_alter_keys_tenant_first: reverses 000044_alter_keys_tenant_first.up.sql exactly:
-- the keys on id (and the other keys without tenant_id) come back, and the tenant-first
-- unique indexes they replaced stand beside them again under their names.
--
-- Not online: the keys without tenant_id were dropped by the up, so they are built here
-- again, in this transaction, under ACCESS EXCLUSIVE (no reads or writes of those tables
-- meanwhile), and so are the unique indexes (tenant_id, id). The tables that other tables
-- reference keep their foreign keys on (tenant_id, id): those keys are dropped, and added
-- again once that index stands apart from the primary key, each validated (NOT VALID if it
-- was). Revert on a quiet database.
-- squawk: the keys built in place are the point of this down (see above).
-- squawk-ignore-file adding-serial-primary-key-field, constraint-missing-not-valid, disallowed-unique-constraint
SET LOCAL lock_timeout = '3s';

-- Referenced tables: the foreign keys depend on the index that is the primary key now.
DO $$
DECLARE
    targets regclass[] := ARRAY['users', 'assets', 'asset_groups', 'integration_points', 'flows',
                                'flow_pulses', 'notification_channels', 'report_definitions',
                                'exclusion_windows', 'availability_snapshots']::regclass[];
    target regclass;
    rels text[];
    names text[];
    defs text[];
BEGIN
    SELECT array_agg(con.conrelid::regclass::text ORDER BY con.conrelid::regclass::text, con.conname),
           array_agg(con.conname ORDER BY con.conrelid::regclass::text, con.conname),
           array_agg(pg_get_constraintdef(con.oid) ORDER BY con.conrelid::regclass::text, con.conname)
    INTO rels, names, defs
    FROM pg_constraint con
    WHERE con.contype = 'f' AND con.conparentid = 0 AND con.confrelid = ANY (targets);
    FOR i IN 1 .. coalesce(array_length(names, 1), 0) LOOP
        EXECUTE format('ALTER TABLE %s DROP CONSTRAINT %I', rels[i], names[i]);
    END LOOP;
    FOREACH target IN ARRAY targets LOOP
        EXECUTE format('ALTER TABLE %s DROP CONSTRAINT %I, ADD CONSTRAINT %I PRIMARY KEY (id)',
                       target, target::text || '_pkey', target::text || '_pkey');
        EXECUTE format('CREATE UNIQUE INDEX %I ON %s (tenant_id, id)', target::text || '_tenant_id_id_key', target);
    END LOOP;
    -- Each key finds (tenant_id, id) in the unique index above, the only one on those columns.
    FOR i IN 1 .. coalesce(array_length(names, 1), 0) LOOP
        EXECUTE format('ALTER TABLE %s ADD CONSTRAINT %I %s', rels[i], names[i], defs[i]);
    END LOOP;
END
$$;

ALTER TABLE threshold_suggestions DROP CONSTRAINT threshold_suggestions_pkey,
    ADD CONSTRAINT threshold_suggestions_pkey PRIMARY KEY (id);
CREATE UNIQUE INDEX threshold_suggestions_tenant_id_id_key ON threshold_suggestions (tenant_id, id);
ALTER TABLE report_executions DROP CONSTRAINT report_executions_pkey,
    ADD CONSTRAINT report_executions_pkey PRIMARY KEY (id);
CREATE UNIQUE INDEX report_executions_tenant_id_id_key ON report_executions (tenant_id, id);
ALTER TABLE notification_rules DROP CONSTRAINT notification_rules_pkey,
    ADD CONSTRAINT notification_rules_pkey PRIMARY KEY (id);
CREATE UNIQUE INDEX notification_rules_tenant_id_id_key ON notification_rules (tenant_id, id);
ALTER TABLE flow_pulses DROP CONSTRAINT flow_pulses_flow_position_key,
    ADD CONSTRAINT flow_pulses_flow_position_key UNIQUE (flow_id, "position");
CREATE UNIQUE INDEX flow_pulses_tenant_key ON flow_pulses (tenant_id, flow_id, "position");
ALTER TABLE feed_profiles DROP CONSTRAINT feed_profiles_flow_pulse_id_key,
    ADD CONSTRAINT feed_profiles_flow_pulse_id_key UNIQUE (flow_pulse_id),
    DROP CONSTRAINT feed_profiles_pkey,
    ADD CONSTRAINT feed_profiles_pkey PRIMARY KEY (id);
CREATE UNIQUE INDEX feed_profiles_tenant_key ON feed_profiles (tenant_id, flow_pulse_id);
CREATE UNIQUE INDEX feed_profiles_tenant_id_id_key ON feed_profiles (tenant_id, id);
ALTER TABLE exclusion_logs DROP CONSTRAINT exclusion_logs_pkey,
    ADD CONSTRAINT exclusion_logs_pkey PRIMARY KEY (id);
CREATE UNIQUE INDEX exclusion_logs_tenant_id_id_key ON exclusion_logs (tenant_id, id);
ALTER TABLE compliance_breaches DROP CONSTRAINT compliance_breaches_pkey,
    ADD CONSTRAINT compliance_breaches_pkey PRIMARY KEY (id);
CREATE UNIQUE INDEX compliance_breaches_tenant_id_id_key ON compliance_breaches (tenant_id, id);
ALTER TABLE audit_tasks DROP CONSTRAINT audit_tasks_pkey,
    ADD CONSTRAINT audit_tasks_pkey PRIMARY KEY (id);
CREATE UNIQUE INDEX audit_tasks_tenant_id_id_key ON audit_tasks (tenant_id, id);
ALTER TABLE asset_profiles DROP CONSTRAINT asset_profiles_asset_flow_pulse_key,
    ADD CONSTRAINT asset_profiles_asset_flow_pulse_key UNIQUE (asset_id, flow_pulse_id),
    DROP CONSTRAINT asset_profiles_pkey,
    ADD CONSTRAINT asset_profiles_pkey PRIMARY KEY (id);
CREATE UNIQUE INDEX asset_profiles_tenant_key ON asset_profiles (tenant_id, asset_id, flow_pulse_id);
CREATE UNIQUE INDEX asset_profiles_tenant_id_id_key ON asset_profiles (tenant_id, id);
ALTER TABLE asset_observation_hourly DROP CONSTRAINT asset_observation_hourly_key,
    ADD CONSTRAINT asset_observation_hourly_key UNIQUE (asset_id, flow_pulse_id, hour),
    DROP CONSTRAINT asset_observation_hourly_pkey,
    ADD CONSTRAINT asset_observation_hourly_pkey PRIMARY KEY (id);
CREATE UNIQUE INDEX asset_observation_hourly_tenant_key ON asset_observation_hourly (tenant_id, asset_id, flow_pulse_id, hour);
CREATE UNIQUE INDEX asset_observation_hourly_tenant_id_id_key ON asset_observation_hourly (tenant_id, id);
ALTER TABLE asset_observation_daily DROP CONSTRAINT asset_observation_daily_key,
    ADD CONSTRAINT asset_observation_daily_key UNIQUE (asset_id, flow_pulse_id, date),
    DROP CONSTRAINT asset_observation_daily_pkey,
    ADD CONSTRAINT asset_observation_daily_pkey PRIMARY KEY (id);
CREATE UNIQUE INDEX asset_observation_daily_tenant_key ON asset_observation_daily (tenant_id, asset_id, flow_pulse_id, date);
CREATE UNIQUE INDEX asset_observation_daily_tenant_id_id_key ON asset_observation_daily (tenant_id, id);
ALTER TABLE asset_group_mitre DROP CONSTRAINT asset_group_mitre_pkey,
    ADD CONSTRAINT asset_group_mitre_pkey PRIMARY KEY (asset_group_id, mitre_technique_id);
CREATE UNIQUE INDEX asset_group_mitre_tenant_key ON asset_group_mitre (tenant_id, asset_group_id, mitre_technique_id);
ALTER TABLE api_keys DROP CONSTRAINT api_keys_pkey,
    ADD CONSTRAINT api_keys_pkey PRIMARY KEY (id);
CREATE UNIQUE INDEX api_keys_tenant_id_id_key ON api_keys (tenant_id, id);
ALTER TABLE anomaly_events DROP CONSTRAINT anomaly_events_pkey,
    ADD CONSTRAINT anomaly_events_pkey PRIMARY KEY (id);
CREATE UNIQUE INDEX anomaly_events_tenant_id_id_key ON anomaly_events (tenant_id, id);
ALTER TABLE alert_changes DROP CONSTRAINT alert_changes_pkey,
    ADD CONSTRAINT alert_changes_pkey PRIMARY KEY (xid, seq);
CREATE UNIQUE INDEX alert_changes_tenant_key ON alert_changes (tenant_id, xid, seq);
