DROP INDEX CONCURRENTLY IF EXISTS asset_profiles_tenant_key;
