-- 000056_drop_index_report_definitions_tenant_id: reverses 000056_drop_index_report_definitions_tenant_id.up.sql exactly.
-- Built CONCURRENTLY (writes go on), alone in its file. No IF NOT EXISTS on purpose: after
-- a failed build a rerun must not accept the INVALID index it left (docs/migrations.md,
-- "A concurrent index build or drop that stopped partway").
-- squawk-ignore prefer-robust-stmts
CREATE INDEX CONCURRENTLY report_definitions_tenant_id_idx ON report_definitions (tenant_id);
