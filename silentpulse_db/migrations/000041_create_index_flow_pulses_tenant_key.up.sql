-- 000041_create_index_flow_pulses_tenant_key: UNIQUE (tenant_id, flow_id, position)
-- on flow_pulses, which 000044 makes flow_pulses_flow_position_key in place of today's
-- UNIQUE (flow_id, position): the key leads with
-- tenant_id (Citus distributes by it; docs/tenancy.md). Built CONCURRENTLY (writes go on),
-- alone in its file as that requires; a superset of today's key, so no row can fail it.
-- No IF NOT EXISTS on purpose: after a failed build a rerun must not accept the INVALID
-- index it left (docs/migrations.md, "A failed concurrent index").
-- squawk-ignore prefer-robust-stmts
CREATE UNIQUE INDEX CONCURRENTLY flow_pulses_tenant_key ON flow_pulses (tenant_id, flow_id, "position");
