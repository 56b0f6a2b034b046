-- 000046_create_index_asset_observations_tenant_key: reverses 000046_create_index_asset_observations_tenant_key.up.sql
-- exactly: each partition's <partition>_tenant_key goes (catalog work; each partition
-- ACCESS EXCLUSIVE from its DROP to the commit, under the lock_timeout). The name as the
-- runner gives it: <partition>_tenant_key, or for a partition name past 52 bytes its
-- first 43, 8 hex digits of its md5 and _tenant_key.
SET LOCAL lock_timeout = '3s';

DO $$
DECLARE
    part record;
BEGIN
    FOR part IN
        SELECT n.nspname AS schema_name, c.relname AS name
        FROM pg_partition_tree('asset_observations'::regclass) t
        JOIN pg_class c ON c.oid = t.relid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE t.isleaf
        ORDER BY c.relname
    LOOP
        EXECUTE format('DROP INDEX IF EXISTS %I.%I', part.schema_name,
                       CASE WHEN octet_length(part.name) <= 52 THEN part.name || '_tenant_key'
                            ELSE left(part.name, 43) || '_' || left(md5(part.name), 8) || '_tenant_key' END);
    END LOOP;
END
$$;
