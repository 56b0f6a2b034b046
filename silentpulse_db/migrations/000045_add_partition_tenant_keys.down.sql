-- 000045_add_partition_tenant_keys: reverses 000045_add_partition_tenant_keys.up.sql exactly:
-- each partition's <partition>_tenant_key goes (catalog work, each partition ACCESS
-- EXCLUSIVE for an instant).
SET LOCAL lock_timeout = '3s';

DO $$
DECLARE
    part record;
BEGIN
    FOR part IN
        SELECT n.nspname AS schema_name, c.relname AS name
        FROM pg_inherits i
        JOIN pg_class c ON c.oid = i.inhrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE i.inhparent IN ('alerts'::regclass, 'asset_observations'::regclass, 'audit_logs'::regclass)
        ORDER BY i.inhparent::regclass::text, c.relname
    LOOP
        EXECUTE format('DROP INDEX IF EXISTS %I.%I', part.schema_name,
                       CASE WHEN octet_length(part.name) <= 52 THEN part.name || '_tenant_key'
                            ELSE left(part.name, 43) || '_' || left(md5(part.name), 8) || '_tenant_key' END);
    END LOOP;
END
$$;
