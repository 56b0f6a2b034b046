-- 000025_create_index_api_keys_tenant_id_id: UNIQUE (tenant_id, id) on api_keys, its primary key from 000044 on
-- (keys that lead with tenant_id: a table distributed by tenant_id on Citus may have no
-- other; docs/tenancy.md). Built CONCURRENTLY (writes go on), alone in its file as that
-- requires; a superset of the primary key (id), so no row can fail it. No IF NOT EXISTS
-- on purpose: after a failed build a rerun must not accept the INVALID index it left
-- (docs/migrations.md, "A failed concurrent index").
-- squawk-ignore prefer-robust-stmts
CREATE UNIQUE INDEX CONCURRENTLY api_keys_tenant_id_id_key ON api_keys (tenant_id, id);
