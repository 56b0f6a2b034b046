DROP INDEX CONCURRENTLY IF EXISTS feed_profiles_tenant_id_id_key;
