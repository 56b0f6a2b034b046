DROP INDEX CONCURRENTLY IF EXISTS flow_pulses_tenant_key;
