"""How migrations 000006-000018 (issue 8 parts 1 and 5) were first written: one explicit list.

Kept out of the package: the SQL files are what ships and what is reviewed.
"""

from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "silentpulse_db" / "migrations"
REFERENCED = [
    "users",
    "assets",
    "asset_groups",
    "integration_points",
    "flows",
    "flow_pulses",
    "notification_channels",
    "report_definitions",
    "exclusion_windows",
    "availability_snapshots",
]
PARTITIONED = {"alerts", "audit_logs", "asset_observations"}
# (table, column, referenced table, ON DELETE before, ON DELETE now)
# History survives deletes (part 5): alerts and audit logs no longer cascade or null out.
REFS = [
    ("alerts", "asset_id", "assets", "CASCADE", "NO ACTION"),
    ("alerts", "flow_pulse_id", "flow_pulses", "CASCADE", "NO ACTION"),
    ("anomaly_events", "acknowledged_by", "users", "SET NULL", "SET NULL"),
    ("anomaly_events", "asset_id", "assets", "CASCADE", "CASCADE"),
    ("anomaly_events", "flow_pulse_id", "flow_pulses", "CASCADE", "CASCADE"),
    ("api_keys", "user_id", "users", "CASCADE", "CASCADE"),
    ("asset_group_mitre", "asset_group_id", "asset_groups", "CASCADE", "CASCADE"),
    ("asset_observation_daily", "asset_id", "assets", "CASCADE", "CASCADE"),
    ("asset_observation_daily", "flow_pulse_id", "flow_pulses", "CASCADE", "CASCADE"),
    ("asset_observation_hourly", "asset_id", "assets", "CASCADE", "CASCADE"),
    ("asset_observation_hourly", "flow_pulse_id", "flow_pulses", "CASCADE", "CASCADE"),
    ("asset_observations", "asset_id", "assets", "CASCADE", "CASCADE"),
    ("asset_observations", "flow_pulse_id", "flow_pulses", "CASCADE", "CASCADE"),
    ("asset_profiles", "asset_id", "assets", "CASCADE", "CASCADE"),
    ("asset_profiles", "flow_pulse_id", "flow_pulses", "CASCADE", "CASCADE"),
    ("audit_logs", "user_id", "users", "SET NULL", "NO ACTION"),
    ("audit_tasks", "auditor_user_id", "users", "CASCADE", "CASCADE"),
    ("audit_tasks", "created_by", "users", "SET NULL", "SET NULL"),
    ("availability_snapshots", "asset_group_id", "asset_groups", "CASCADE", "CASCADE"),
    ("compliance_breaches", "acknowledged_by", "users", "SET NULL", "SET NULL"),
    ("compliance_breaches", "asset_group_id", "asset_groups", "CASCADE", "CASCADE"),
    ("compliance_breaches", "resolved_by", "users", "SET NULL", "SET NULL"),
    ("compliance_breaches", "snapshot_id", "availability_snapshots", "SET NULL", "SET NULL"),
    ("exclusion_logs", "asset_id", "assets", "CASCADE", "CASCADE"),
    ("exclusion_logs", "exclusion_window_id", "exclusion_windows", "CASCADE", "CASCADE"),
    ("exclusion_logs", "flow_pulse_id", "flow_pulses", "CASCADE", "CASCADE"),
    ("exclusion_windows", "asset_group_id", "asset_groups", "CASCADE", "CASCADE"),
    ("exclusion_windows", "created_by", "users", "SET NULL", "SET NULL"),
    ("feed_profiles", "flow_pulse_id", "flow_pulses", "CASCADE", "CASCADE"),
    ("flow_pulses", "flow_id", "flows", "CASCADE", "CASCADE"),
    ("flow_pulses", "integration_point_id", "integration_points", "RESTRICT", "RESTRICT"),
    ("flows", "asset_group_id", "asset_groups", "CASCADE", "CASCADE"),
    (
        "notification_rules",
        "notification_channel_id",
        "notification_channels",
        "CASCADE",
        "CASCADE",
    ),
    ("report_executions", "report_definition_id", "report_definitions", "CASCADE", "CASCADE"),
    ("threshold_suggestions", "asset_id", "assets", "CASCADE", "CASCADE"),
    ("threshold_suggestions", "flow_pulse_id", "flow_pulses", "CASCADE", "CASCADE"),
    ("threshold_suggestions", "responded_by", "users", "SET NULL", "SET NULL"),
]
assert len(REFS) == 37
SOFT_DELETE = ["users", "assets", "flows", "flow_pulses"]


def write(version: int, name: str, up: str, down: str) -> None:
    stem = f"{version:06d}_{name}"
    (OUT / f"{stem}.up.sql").write_text(up)
    (OUT / f"{stem}.down.sql").write_text(down)


def on_delete(action: str, column: str) -> str:
    # A composite key set to NULL would null tenant_id too: null only the reference (PG 15).
    return f"SET NULL ({column})" if action == "SET NULL" else action


def fk(table: str, column: str, ref: str, action: str) -> str:
    return (
        f"FOREIGN KEY (tenant_id, {column}) REFERENCES {ref} (tenant_id, id) "
        f"ON DELETE {on_delete(action, column)}"
    )


version = 6
for ref in REFERENCED:
    index = f"{ref}_tenant_id_id_key"
    write(
        version,
        f"create_index_{ref}_tenant_id_id",
        f"CREATE UNIQUE INDEX CONCURRENTLY {index} ON {ref} (tenant_id, id);\n",
        f"DROP INDEX CONCURRENTLY IF EXISTS {index};\n",
    )
    version += 1
assert version == 16

soft_up = [
    """-- 000016_add_soft_delete: rows that history names are deleted softly.
--
-- Alerts and audit logs must outlive what they describe (an asset, a flow,
-- a user): from 000017 on, deleting such a row while history still names it
-- is refused instead of cascading history away or blanking the actor. The
-- application sets deleted_at instead, hides those rows, and the purge job
-- deletes them for good 90 days later once nothing names them
-- (docs/tenancy.md). Nullable, no default: adding the column rewrites nothing.
SET LOCAL lock_timeout = '3s';
"""
]
soft_down = [
    "-- 000016_add_soft_delete: reverses 000016_add_soft_delete.up.sql exactly.\nSET LOCAL lock_timeout = '3s';\n"
]
for t in SOFT_DELETE:
    soft_up.append(
        f"ALTER TABLE {t} ADD COLUMN deleted_at timestamptz;\n"
        f"COMMENT ON COLUMN {t}.deleted_at IS 'Soft delete: set instead of deleting; "
        f"purged 90 days later once no history names the row';\n"
    )
for t in reversed(SOFT_DELETE):
    soft_down.append(f"ALTER TABLE {t} DROP COLUMN IF EXISTS deleted_at;\n")
write(16, "add_soft_delete", "".join(soft_up), "".join(soft_down))

rows = ",\n".join(
    f"        ('{t}', '{c}', '{r}', '{on_delete(new, c)}')" for t, c, r, _, new in REFS
)
old_rows = ",\n".join(f"        ('{t}', '{c}', '{r}', '{old}')" for t, c, r, old, _ in REFS)
refs_up = f"""-- 000017_add_tenant_references: a reference can only point inside its own tenant.
--
-- Every reference from one tenant-scoped table to another carried the id
-- alone: tenant A's role could link its flow to tenant B's asset group, and
-- the foreign-key error on a random UUID told it whether that id existed in
-- some tenant. Each reference is now a composite foreign key
-- (tenant_id, x_id) -> x (tenant_id, id), onto the unique indexes of
-- 000006-000015, so the database refuses a link across tenants and answers an
-- unknown id and another tenant's id alike. The single-column keys go.
--
-- Online: the new keys are added NOT VALID (new rows are checked at once,
-- existing rows are not scanned under a lock); 000018 validates them.
-- PostgreSQL cannot add a NOT VALID key to a partitioned table, so for alerts,
-- audit_logs and asset_observations it goes on each partition, and 000018
-- puts it on the parent once every partition validated.
--
-- History survives deletes: alerts no longer cascade from their asset or flow
-- pulse, and audit logs keep their actor (NO ACTION, checked at the end of the
-- statement, so deleting a whole tenant still removes everything).
-- `ON DELETE SET NULL (col)` nulls the reference, not tenant_id (PostgreSQL 15).
SET LOCAL lock_timeout = '3s';

DO $$
DECLARE
    ref record;
    part regclass;
BEGIN
    FOR ref IN SELECT * FROM (VALUES
{rows}
    ) AS r (tbl, col, target, on_delete)
    LOOP
        IF (SELECT relkind FROM pg_class WHERE oid = ref.tbl::regclass) = 'p' THEN
            FOR part IN SELECT inhrelid::regclass FROM pg_inherits
                        WHERE inhparent = ref.tbl::regclass ORDER BY inhrelid
            LOOP
                EXECUTE format(
                    'ALTER TABLE %s ADD CONSTRAINT %I FOREIGN KEY (tenant_id, %I) '
                    'REFERENCES %I (tenant_id, id) ON DELETE %s NOT VALID',
                    part, ref.tbl || '_' || ref.col || '_tenant_fkey', ref.col, ref.target,
                    ref.on_delete);
            END LOOP;
        ELSE
            EXECUTE format(
                'ALTER TABLE %I ADD CONSTRAINT %I FOREIGN KEY (tenant_id, %I) '
                'REFERENCES %I (tenant_id, id) ON DELETE %s NOT VALID',
                ref.tbl, ref.tbl || '_' || ref.col || '_tenant_fkey', ref.col, ref.target,
                ref.on_delete);
        END IF;
        EXECUTE format('ALTER TABLE %I DROP CONSTRAINT %I', ref.tbl, ref.tbl || '_' || ref.col || '_fkey');
    END LOOP;
END
$$;
"""
refs_down = f"""-- 000017_add_tenant_references: reverses 000017_add_tenant_references.up.sql exactly:
-- the single-column keys come back (validated, as 000001 made them; on a
-- partitioned table each partition's first, so that they keep their names).
SET LOCAL lock_timeout = '3s';

DO $$
DECLARE
    ref record;
    part regclass;
BEGIN
    FOR ref IN SELECT * FROM (VALUES
{old_rows}
    ) AS r (tbl, col, target, on_delete)
    LOOP
        IF (SELECT relkind FROM pg_class WHERE oid = ref.tbl::regclass) = 'p' THEN
            FOR part IN SELECT inhrelid::regclass FROM pg_inherits
                        WHERE inhparent = ref.tbl::regclass ORDER BY inhrelid
            LOOP
                EXECUTE format('ALTER TABLE %s DROP CONSTRAINT IF EXISTS %I',
                               part, ref.tbl || '_' || ref.col || '_tenant_fkey');
                EXECUTE format(
                    'ALTER TABLE %s ADD CONSTRAINT %I FOREIGN KEY (%I) REFERENCES %I (id) ON DELETE %s',
                    part, ref.tbl || '_' || ref.col || '_fkey', ref.col, ref.target, ref.on_delete);
            END LOOP;
        END IF;
        EXECUTE format('ALTER TABLE %I DROP CONSTRAINT IF EXISTS %I',
                       ref.tbl, ref.tbl || '_' || ref.col || '_tenant_fkey');
        EXECUTE format(
            'ALTER TABLE %I ADD CONSTRAINT %I FOREIGN KEY (%I) REFERENCES %I (id) ON DELETE %s',
            ref.tbl, ref.tbl || '_' || ref.col || '_fkey', ref.col, ref.target, ref.on_delete);
    END LOOP;
END
$$;
"""
write(17, "add_tenant_references", refs_up, refs_down)
print("written")
