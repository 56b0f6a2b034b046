DROP INDEX CONCURRENTLY IF EXISTS asset_group_mitre_tenant_key;
