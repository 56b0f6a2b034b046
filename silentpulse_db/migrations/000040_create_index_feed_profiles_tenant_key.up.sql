-- 000040_create_index_feed_profiles_tenant_key: UNIQUE (tenant_id, flow_pulse_id)
-- on feed_profiles, which 000044 makes feed_profiles_flow_pulse_id_key in place of today's
-- UNIQUE (flow_pulse_id): the key leads with
-- tenant_id (Citus distributes by it; docs/tenancy.md). Built CONCURRENTLY (writes go on),
-- alone in its file as that requires; a superset of today's key, so no row can fail it.
-- No IF NOT EXISTS on purpose: after a failed build a rerun must not accept the INVALID
-- index it left (docs/migrations.md, "A failed concurrent index").
-- squawk-ignore prefer-robust-stmts
CREATE UNIQUE INDEX CONCURRENTLY feed_profiles_tenant_key ON feed_profiles (tenant_id, flow_pulse_id);
