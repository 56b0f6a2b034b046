-- 000060_alter_reference_tables_owner_written: reverses
-- 000060_alter_reference_tables_owner_written.up.sql exactly: no row-level security
-- or policies on mitre_techniques and connector_defs, their 000001 comments, and
-- asset_group_mitre's reference ON DELETE CASCADE again, validated.
--
-- Not fully online: the key is validated in this transaction, which holds the ACCESS
-- EXCLUSIVE lock that dropping the old one takes on both tables to the commit (reads and
-- writes of the two wait for the scan of asset_group_mitre). Revert on a quiet database.
SET LOCAL lock_timeout = '3s';

ALTER TABLE asset_group_mitre DROP CONSTRAINT asset_group_mitre_mitre_technique_id_fkey;
-- squawk-ignore adding-foreign-key-constraint, constraint-missing-not-valid
ALTER TABLE asset_group_mitre ADD CONSTRAINT asset_group_mitre_mitre_technique_id_fkey FOREIGN KEY (mitre_technique_id) REFERENCES mitre_techniques (id) ON DELETE CASCADE;

DROP POLICY connector_defs_written_outside_a_tenant ON connector_defs;
DROP POLICY connector_defs_readable ON connector_defs;
ALTER TABLE connector_defs DISABLE ROW LEVEL SECURITY;
COMMENT ON TABLE connector_defs IS 'Connector definitions shared by every tenant (no tenant_id, no RLS)';

DROP POLICY mitre_techniques_readable ON mitre_techniques;
ALTER TABLE mitre_techniques DISABLE ROW LEVEL SECURITY;
COMMENT ON TABLE mitre_techniques IS 'MITRE ATT&CK reference data, shared by every tenant';
