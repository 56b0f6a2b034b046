-- 000042_create_index_alert_changes_tenant_key: UNIQUE (tenant_id, xid, seq)
-- on alert_changes, which 000044 makes alert_changes_pkey in place of today's
-- PRIMARY KEY (xid, seq): the key leads with
-- tenant_id (Citus distributes by it; docs/tenancy.md). Built CONCURRENTLY (writes go on),
-- alone in its file as that requires; a superset of today's key, so no row can fail it.
-- No IF NOT EXISTS on purpose: after a failed build a rerun must not accept the INVALID
-- index it left (docs/migrations.md, "A failed concurrent index").
-- squawk-ignore prefer-robust-stmts
CREATE UNIQUE INDEX CONCURRENTLY alert_changes_tenant_key ON alert_changes (tenant_id, xid, seq);
