DROP INDEX CONCURRENTLY IF EXISTS users_tenant_id_id_key;
