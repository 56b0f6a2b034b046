DROP INDEX CONCURRENTLY IF EXISTS asset_profiles_tenant_id_id_key;
