DROP INDEX CONCURRENTLY IF EXISTS alert_changes_tenant_key;
