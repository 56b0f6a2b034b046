DROP INDEX CONCURRENTLY IF EXISTS assets_tenant_id_id_key;
