DROP INDEX CONCURRENTLY IF EXISTS audit_tasks_tenant_id_id_key;
