-- 000061_validate_mitre_technique_reference: validate the key 000060 added NOT VALID
-- (asset_group_mitre.mitre_technique_id -> mitre_techniques, NO ACTION).
--
-- VALIDATE CONSTRAINT scans asset_group_mitre under SHARE UPDATE EXCLUSIVE (and ROW SHARE
-- on mitre_techniques): reads and writes go on. Every row was checked by the key 000060
-- replaced, and every row since by the new one, so nothing can fail here.
SET LOCAL lock_timeout = '3s';

ALTER TABLE asset_group_mitre VALIDATE CONSTRAINT asset_group_mitre_mitre_technique_id_fkey;
