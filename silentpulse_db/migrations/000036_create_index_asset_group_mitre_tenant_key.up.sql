-- 000036_create_index_asset_group_mitre_tenant_key: UNIQUE (tenant_id, asset_group_id, mitre_technique_id)
-- on asset_group_mitre, which 000044 makes asset_group_mitre_pkey in place of today's
-- PRIMARY KEY (asset_group_id, mitre_technique_id): the key leads with
-- tenant_id (Citus distributes by it; docs/tenancy.md). Built CONCURRENTLY (writes go on),
-- alone in its file as that requires; a superset of today's key, so no row can fail it.
-- No IF NOT EXISTS on purpose: after a failed build a rerun must not accept the INVALID
-- index it left (docs/migrations.md, "A failed concurrent index").
-- squawk-ignore prefer-robust-stmts
CREATE UNIQUE INDEX CONCURRENTLY asset_group_mitre_tenant_key ON asset_group_mitre (tenant_id, asset_group_id, mitre_technique_id);
