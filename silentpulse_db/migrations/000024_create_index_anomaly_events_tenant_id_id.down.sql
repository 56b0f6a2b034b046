DROP INDEX CONCURRENTLY IF EXISTS anomaly_events_tenant_id_id_key;
