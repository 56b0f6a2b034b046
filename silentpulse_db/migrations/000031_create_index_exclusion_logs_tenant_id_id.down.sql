DROP INDEX CONCURRENTLY IF EXISTS exclusion_logs_tenant_id_id_key;
