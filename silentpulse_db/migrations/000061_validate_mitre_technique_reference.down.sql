-- 000061_validate_mitre_technique_reference: reverses
-- 000061_validate_mitre_technique_reference.up.sql exactly: the key NOT VALID again, as
-- 000060 added it (dropped and added NOT VALID: catalog work, ACCESS EXCLUSIVE on both
-- tables for an instant).
SET LOCAL lock_timeout = '3s';

-- Two statements (Citus refuses an ALTER TABLE adding a constraint beside others).
ALTER TABLE asset_group_mitre DROP CONSTRAINT asset_group_mitre_mitre_technique_id_fkey;
ALTER TABLE asset_group_mitre ADD CONSTRAINT asset_group_mitre_mitre_technique_id_fkey
    FOREIGN KEY (mitre_technique_id) REFERENCES mitre_techniques (id) NOT VALID;
