DROP INDEX CONCURRENTLY IF EXISTS api_keys_tenant_id_id_key;
