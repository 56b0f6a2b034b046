-- 000048_alter_partitioned_keys_tenant_first: reverses
-- 000048_alter_partitioned_keys_tenant_first.up.sql exactly: the primary keys
-- (id, <month column>) come back on the parents and their partitions (named
-- <partition>_pkey, as PostgreSQL names them), and each partition's
-- <partition>_tenant_key of 000045-000047 stands beside its key again.
--
-- Not online: both are built again, in this transaction, under ACCESS EXCLUSIVE on the
-- three tables and their partitions (no reads or writes meanwhile). Revert on a quiet
-- database.
SET LOCAL lock_timeout = '3s';

LOCK TABLE ONLY alerts, asset_observations, audit_logs IN ACCESS EXCLUSIVE MODE;

DO $$
DECLARE
    parent record;
    part record;
BEGIN
    FOR parent IN
        SELECT p.tbl::regclass AS tbl, a.attname AS key
        FROM (VALUES ('alerts'), ('asset_observations'), ('audit_logs')) AS p (tbl)
        JOIN pg_partitioned_table pt ON pt.partrelid = p.tbl::regclass
        JOIN pg_attribute a ON a.attrelid = pt.partrelid AND a.attnum = pt.partattrs[0]
        ORDER BY p.tbl
    LOOP
        EXECUTE format('ALTER TABLE %s DROP CONSTRAINT %I, ADD CONSTRAINT %I PRIMARY KEY (id, %I)',
                       parent.tbl, parent.tbl::text || '_pkey', parent.tbl::text || '_pkey', parent.key);
        FOR part IN
            SELECT n.nspname AS schema_name, c.relname AS name
            FROM pg_inherits i
            JOIN pg_class c ON c.oid = i.inhrelid
            JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE i.inhparent = parent.tbl
            ORDER BY c.relname
        LOOP
            EXECUTE format('CREATE UNIQUE INDEX %I ON %I.%I (tenant_id, id, %I)',
                           CASE WHEN octet_length(part.name) <= 52 THEN part.name || '_tenant_key'
                                ELSE left(part.name, 43) || '_' || left(md5(part.name), 8) || '_tenant_key' END,
                           part.schema_name, part.name, parent.key);
        END LOOP;
    END LOOP;
END
$$;
