-- 000054_drop_index_flow_pulses_tenant_id: flow_pulses_tenant_id_idx (000001) goes. The primary key
-- (tenant_id, id) leads with the same column since 000044 and serves every lookup it served
-- (a tenant's rows under row-level security, the cascade from tenants); the index only
-- cost each write its upkeep. Dropped CONCURRENTLY (reads and writes go on), alone in
-- its file as that requires.
DROP INDEX CONCURRENTLY IF EXISTS flow_pulses_tenant_id_idx;
