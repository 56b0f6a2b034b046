-- 000060_alter_reference_tables_owner_written: the two tables shared by every tenant (no
-- tenant_id), mitre_techniques and connector_defs, are readable by every role granted
-- SELECT and writable by their writers only, whatever grant the application's role holds.
--
-- Until now they had no row-level security, so the runbook's default privileges (and the
-- blanket GRANT ... ON ALL TABLES) let any tenant's session write them for every tenant:
-- `DELETE FROM mitre_techniques WHERE technique_id = 'T1059'` as the app role inside
-- tenant_transaction deleted the technique, and its ON DELETE CASCADE (run by the server
-- as the table's owner, which no policy filters) every tenant's asset_group_mitre rows
-- that named it.
--
-- Who may write what now (docs/security.md, "Shared reference tables"):
-- - mitre_techniques: operators' reference data, loaded as the owner (a migration, or psql
--   as the owner) or a role that bypasses row-level security (the jobs role). Row-level
--   security enabled, not forced (the owner and its members, golang-migrate run as the
--   owner included, are not subject to it), with one policy, for SELECT: any other role
--   reads every row and changes none (INSERT refused, UPDATE and DELETE find no row).
-- - connector_defs: the API's connector hub sync, as the application's role, outside any
--   tenant's transaction (app.current_tenant unset). It may write there as before; a
--   session with a tenant set (tenant_transaction) reads it and changes nothing.
-- - TRUNCATE: no policy covers it, and no grant of the runbook gives it (neither its default
--   privileges nor its blanket GRANT ... ON ALL TABLES); `drift` reports a TRUNCATE grant.
--   No guard trigger as on the version tables: Citus refuses to make a table with triggers
--   a reference table, and a role with TRUNCATE on every table (GRANT ALL) empties any
--   tenant table directly anyway (docs/security.md).
--
-- The cascade itself: asset_group_mitre's reference to mitre_techniques becomes NO
-- ACTION. Deleting a technique that a tenant's group still maps is refused (23503)
-- instead of deleting tenants' rows as a side effect, even as the owner: a reload of the
-- reference data upserts (INSERT ... ON CONFLICT (technique_id) DO UPDATE) rather than
-- deleting and inserting again. The key is dropped and added NOT VALID (new rows are
-- checked at once; catalog work, ACCESS EXCLUSIVE on both tables for an instant, under the
-- 3 s lock_timeout); 000061 validates it (SHARE UPDATE EXCLUSIVE: reads and writes go on).
--
-- Nothing a service does legitimately changes: no existing row is touched, no table is
-- rewritten or scanned here.
SET LOCAL lock_timeout = '3s';

ALTER TABLE mitre_techniques ENABLE ROW LEVEL SECURITY;
CREATE POLICY mitre_techniques_readable ON mitre_techniques FOR SELECT USING (true);
COMMENT ON TABLE mitre_techniques
    IS 'MITRE ATT&CK reference data, shared by every tenant: read by all, written by its owner (operators)';

ALTER TABLE connector_defs ENABLE ROW LEVEL SECURITY;
CREATE POLICY connector_defs_readable ON connector_defs FOR SELECT USING (true);
-- The hub sync: any role granted the DML, outside a tenant's transaction.
CREATE POLICY connector_defs_written_outside_a_tenant ON connector_defs FOR ALL
    USING (coalesce(current_setting('app.current_tenant', true), '') = '')
    WITH CHECK (coalesce(current_setting('app.current_tenant', true), '') = '');
COMMENT ON TABLE connector_defs
    IS 'Connector definitions shared by every tenant (no tenant_id): read by all, written by the hub sync outside a tenant''s transaction';

-- Two statements, in this one transaction: Citus refuses an ALTER TABLE that adds a
-- constraint beside other subcommands on a distributed table.
ALTER TABLE asset_group_mitre DROP CONSTRAINT asset_group_mitre_mitre_technique_id_fkey;
ALTER TABLE asset_group_mitre ADD CONSTRAINT asset_group_mitre_mitre_technique_id_fkey
    FOREIGN KEY (mitre_technique_id) REFERENCES mitre_techniques (id) NOT VALID;
