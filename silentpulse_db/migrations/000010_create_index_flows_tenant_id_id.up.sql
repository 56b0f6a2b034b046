-- 000010_create_index_flows_tenant_id_id: UNIQUE (tenant_id, id) on flows, the target of the tenant-safe keys (000017).
-- Built CONCURRENTLY (writes go on), alone in its file as that requires. No IF NOT
-- EXISTS on purpose: after a failed build a rerun must not accept the INVALID
-- index it left (docs/migrations.md, "A failed concurrent index").
-- squawk-ignore prefer-robust-stmts
CREATE UNIQUE INDEX CONCURRENTLY flows_tenant_id_id_key ON flows (tenant_id, id);
