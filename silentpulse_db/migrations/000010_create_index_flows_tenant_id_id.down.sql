DROP INDEX CONCURRENTLY IF EXISTS flows_tenant_id_id_key;
