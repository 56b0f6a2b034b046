DROP INDEX CONCURRENTLY IF EXISTS asset_groups_tenant_id_id_key;
