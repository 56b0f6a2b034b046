-- 000038_create_index_asset_observation_hourly_tenant_key: UNIQUE (tenant_id, asset_id, flow_pulse_id, hour)
-- on asset_observation_hourly, which 000044 makes asset_observation_hourly_key in place of today's
-- UNIQUE (asset_id, flow_pulse_id, hour): the key leads with
-- tenant_id (Citus distributes by it; docs/tenancy.md). Built CONCURRENTLY (writes go on),
-- alone in its file as that requires; a superset of today's key, so no row can fail it.
-- No IF NOT EXISTS on purpose: after a failed build a rerun must not accept the INVALID
-- index it left (docs/migrations.md, "A failed concurrent index").
-- squawk-ignore prefer-robust-stmts
CREATE UNIQUE INDEX CONCURRENTLY asset_observation_hourly_tenant_key ON asset_observation_hourly (tenant_id, asset_id, flow_pulse_id, hour);
