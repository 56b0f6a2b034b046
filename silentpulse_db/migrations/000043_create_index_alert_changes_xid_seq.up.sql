-- 000043_create_index_alert_changes_xid_seq: an index on alert_changes (xid, seq), the order the
-- alert listener reads the log in. Today the primary key serves it; from 000044 on the
-- primary key leads with tenant_id (tenant_id, xid, seq), which a read across tenants in
-- (xid, seq) order cannot use. Not unique: seq is an identity, and a unique key without
-- tenant_id is what Citus refuses. Built CONCURRENTLY (writes go on), alone in its file.
-- No IF NOT EXISTS on purpose: after a failed build a rerun must not accept the INVALID
-- index it left (docs/migrations.md, "A failed concurrent index").
-- squawk-ignore prefer-robust-stmts
CREATE INDEX CONCURRENTLY alert_changes_xid_seq_idx ON alert_changes (xid, seq);
