"""Issue 31, item 1: every key of a table that holds tenant rows leads with tenant_id
(000024-000058), on parents and partitions alike, on a database populated in several
tenants and months; PostgreSQL takes the indexes built beforehand instead of building
them again; down then up is exact; another tenant's row is no duplicate any more."""

from __future__ import annotations

import re
import uuid
from datetime import timedelta
from typing import Any

import asyncpg
import pytest

from silentpulse_db import tenant_transaction
from silentpulse_db.migrate import goto, up
from silentpulse_db.migrate.proofs.snapshot import snapshot

from .populated import PARTITIONED, counts, populate
from .seed import seed_tenant

# Every unique index of a table or partition with a tenant_id column, with the key
# (primary or unique constraint) it backs, if any, and whether it is a partition of the
# parent's index.
KEYS = """
    SELECT c.oid::regclass::text AS relation, c.relispartition AS partition,
           i.indexrelid::regclass::text AS index, x.contype::text AS contype, i.indisvalid AS valid,
           (SELECT a.attname FROM pg_attribute a
            WHERE a.attrelid = c.oid AND a.attnum = i.indkey[0]) AS first,
           EXISTS (SELECT 1 FROM pg_inherits h WHERE h.inhrelid = i.indexrelid) AS attached,
           i.indexrelid::oid AS oid
    FROM pg_index i
    JOIN pg_class c ON c.oid = i.indrelid
    LEFT JOIN pg_constraint x ON x.conindid = i.indexrelid AND x.conrelid = c.oid
                              AND x.contype IN ('p', 'u')
    WHERE i.indisunique AND c.relnamespace = current_schema()::regnamespace
      AND EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attname = 'tenant_id')
    ORDER BY 1, 3
"""
TENANT_RELATIONS = """
    SELECT c.oid::regclass::text AS relation FROM pg_class c
    WHERE c.relnamespace = current_schema()::regnamespace AND c.relkind IN ('r', 'p')
      AND EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attname = 'tenant_id')
"""
PARTITIONS = """
    SELECT i.inhrelid::regclass::text AS partition, i.inhparent::regclass::text AS parent
    FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
    WHERE i.inhparent = ANY ($1::regclass[]) AND c.relkind = 'r'
"""
# The keys that stay platform-wide (docs/tenancy.md): users and api_keys will be Citus
# reference tables.
PLATFORM_WIDE = {"users_email_key", "api_keys_key_hash_key"}
MINUTE = timedelta(minutes=1)


@pytest.fixture
async def conn(silentpulse_database: str) -> Any:
    connection = await asyncpg.connect(silentpulse_database)
    try:
        yield connection
    finally:
        await connection.close()


async def assert_keys_lead_with_tenant_id(conn: asyncpg.Connection) -> None:
    """The catalog: every unique index of a table with tenant rows leads with tenant_id
    but the platform-wide ones; every such table and partition has a primary key; each
    partition's is attached to its parent's."""
    keys = await conn.fetch(KEYS)
    assert {k["index"] for k in keys if k["first"] != "tenant_id"} == PLATFORM_WIDE
    assert all(k["valid"] for k in keys)
    with_key = {k["relation"] for k in keys if k["contype"] == "p"}
    assert with_key == {r["relation"] for r in await conn.fetch(TENANT_RELATIONS)}
    partitions = await conn.fetch(PARTITIONS, list(PARTITIONED))
    assert len(partitions) >= 3 * 5  # four months and the default one each
    for part in partitions:
        own = [k for k in keys if k["relation"] == part["partition"]]
        assert [(k["contype"], k["first"], k["attached"]) for k in own] == [
            ("p", "tenant_id", True)
        ]


async def test_every_key_leads_with_tenant_id_on_parents_and_partitions(
    silentpulse_database: str, conn: asyncpg.Connection
) -> None:
    await populate(silentpulse_database, 23)
    rows = await counts(conn)
    before = {k["index"]: k["first"] for k in await conn.fetch(KEYS)}
    assert (
        before["alerts_pkey"] == "id"
        and before["feed_profiles_flow_pulse_id_key"] == "flow_pulse_id"
    )
    await up(silentpulse_database)
    await assert_keys_lead_with_tenant_id(conn)
    defs = dict(
        await conn.fetch(
            "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint WHERE conname = ANY ($1)",
            ["alerts_pkey", "feed_profiles_flow_pulse_id_key", "flow_pulses_flow_position_key"],
        )
    )
    assert defs == {
        "alerts_pkey": "PRIMARY KEY (tenant_id, id, started_at)",
        "feed_profiles_flow_pulse_id_key": "UNIQUE (tenant_id, flow_pulse_id)",
        "flow_pulses_flow_position_key": 'UNIQUE (tenant_id, flow_id, "position")',
    }
    assert await counts(conn) == rows
    # The tenant-safe foreign keys reference the primary keys now, all validated.
    targets = await conn.fetch(
        "SELECT DISTINCT con.conindid::regclass::text AS target, con.convalidated FROM pg_constraint con "
        "WHERE con.contype = 'f' AND con.conname LIKE '%\\_tenant\\_fkey'"
    )
    assert {(t["target"], t["convalidated"]) for t in targets} == {
        (f"{table}_pkey", True)
        for table in (
            "assets",
            "asset_groups",
            "availability_snapshots",
            "exclusion_windows",
            "flow_pulses",
            "flows",
            "integration_points",
            "notification_channels",
            "report_definitions",
            "users",
        )
    }


async def test_partitions_made_later_inherit_the_keys(
    silentpulse_database: str, conn: asyncpg.Connection
) -> None:
    await populate(silentpulse_database, 23)
    await up(silentpulse_database)
    # A month whose rows sit in the default partition: made with LIKE, the rows moved, attached.
    moved = await conn.fetchval(
        "SELECT silentpulse_create_monthly_partition('alerts', (now() - interval '40 days')::date)"
    )
    assert moved == 3 * 20
    # Months ahead, as the partition job makes them, and one made by hand.
    assert await conn.fetchval("SELECT silentpulse_ensure_monthly_partitions('audit_logs', 6)") == 3
    await conn.execute(
        "CREATE TABLE asset_observations_p2099_01 PARTITION OF asset_observations "
        "FOR VALUES FROM ('2099-01-01 00:00:00+00') TO ('2099-02-01 00:00:00+00')"
    )
    await assert_keys_lead_with_tenant_id(conn)
    assert (
        await conn.fetchval(
            "SELECT pg_get_constraintdef(oid) FROM pg_constraint "
            "WHERE conrelid = 'asset_observations_p2099_01'::regclass AND contype = 'p'"
        )
        == "PRIMARY KEY (tenant_id, id, observed_at)"
    )


# An operator's build of alerts' partitions' indexes ahead of the deploy, by hand.
PREBUILD = """
    SELECT format('CREATE UNIQUE INDEX CONCURRENTLY %I ON %I.%I (tenant_id, id, started_at)',
                  c.relname || '_tenant_key', n.nspname, c.relname)
    FROM pg_inherits i
    JOIN pg_class c ON c.oid = i.inhrelid
    JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE i.inhparent = 'alerts'::regclass
    ORDER BY 1
"""


async def test_the_partition_keys_are_the_indexes_built_before(
    silentpulse_database: str, conn: asyncpg.Connection
) -> None:
    """000048 takes each partition's index of 000045-000047 as its key: the same index, no
    build; 000045-000047 keep an index built CONCURRENTLY beforehand under its name (by an
    operator, or a run that stopped) and build the others; a partition the partition job
    makes between 000047 and 000048 gets its key from 000048."""
    await populate(silentpulse_database, 44)
    prebuilt = [r[0] for r in await conn.fetch(PREBUILD)]
    assert len(prebuilt) >= 5
    for statement in prebuilt:
        await conn.execute(statement)
    index_oid = "SELECT to_regclass($1)::oid"
    names = [re.search(r"CONCURRENTLY (\S+) ON", s).group(1) for s in prebuilt]  # type: ignore[union-attr]
    ours = {name: await conn.fetchval(index_oid, name) for name in names}
    await up(silentpulse_database, target=47)
    built = {
        r["partition"]: await conn.fetchval(index_oid, f"{r['partition']}_tenant_key")
        for r in await conn.fetch(PARTITIONS, list(PARTITIONED))
    }
    assert all(built.values())
    assert {f"{p}_tenant_key": oid for p, oid in built.items() if p.startswith("alerts_")} == ours
    assert await conn.fetchval("SELECT silentpulse_ensure_monthly_partitions('audit_logs', 6)") == 3
    await up(silentpulse_database, target=48)
    keys = {
        r["partition"]: await conn.fetchval(
            "SELECT conindid FROM pg_constraint WHERE conrelid = $1::regclass AND contype = 'p'",
            r["partition"],
        )
        for r in await conn.fetch(PARTITIONS, list(PARTITIONED))
    }
    assert {p: oid for p, oid in keys.items() if p in built} == built
    assert len(keys) == len(built) + 3
    await assert_keys_lead_with_tenant_id(conn)


async def test_postgresql_takes_a_partition_index_for_the_parents_key_only_behind_a_constraint(
    conn: asyncpg.Connection,
) -> None:
    """Why 000048 adds each partition's key from its index before the parent's: a plain
    unique index of the partition is not taken (a new one is built), one that backs the
    partition's own key is."""
    await conn.execute(
        "CREATE TABLE t (tenant_id int NOT NULL, id int NOT NULL, at date NOT NULL) "
        "PARTITION BY RANGE (at); "
        "CREATE TABLE t_p1 PARTITION OF t FOR VALUES FROM ('2026-01-01') TO ('2026-02-01'); "
        "INSERT INTO t SELECT g % 3, g, '2026-01-15' FROM generate_series(1, 100) g; "
        "CREATE UNIQUE INDEX t_p1_key ON t_p1 (tenant_id, id, at)"
    )
    built = await conn.fetchval("SELECT 't_p1_key'::regclass::oid")
    index_of_key = (
        "SELECT conindid FROM pg_constraint WHERE conrelid = 't_p1'::regclass AND contype = 'p'"
    )
    await conn.execute("ALTER TABLE t ADD CONSTRAINT t_pkey PRIMARY KEY (tenant_id, id, at)")
    assert await conn.fetchval(index_of_key) != built  # a new index, built beside it
    await conn.execute("ALTER TABLE t DROP CONSTRAINT t_pkey")
    await conn.execute("ALTER TABLE t_p1 ADD CONSTRAINT t_p1_pkey PRIMARY KEY USING INDEX t_p1_key")
    await conn.execute("ALTER TABLE t ADD CONSTRAINT t_pkey PRIMARY KEY (tenant_id, id, at)")
    assert await conn.fetchval(index_of_key) == built
    assert (
        await conn.fetchval("SELECT count(*) FROM pg_index WHERE indrelid = 't_p1'::regclass") == 1
    )


async def test_down_then_up_is_exact_on_a_populated_database(
    silentpulse_database: str, conn: asyncpg.Connection
) -> None:
    await populate(silentpulse_database, 23)
    before, rows = await snapshot(conn), await counts(conn)
    await up(silentpulse_database)
    after = await snapshot(conn)
    assert before.diff(after)  # the keys changed
    await goto(silentpulse_database, 23)
    assert before.diff(await snapshot(conn)) == []
    assert await counts(conn) == rows
    await up(silentpulse_database)
    assert after.diff(await snapshot(conn)) == []
    assert await counts(conn) == rows


async def test_on_conflict_names_tenant_id_or_the_constraint(
    silentpulse_database: str, conn: asyncpg.Connection
) -> None:
    tenants = await populate(silentpulse_database, 23)
    a = tenants["tenant-a"]
    upsert = (
        "INSERT INTO feed_profiles (tenant_id, flow_pulse_id) VALUES ($1, $2) "
        "ON CONFLICT {target} DO UPDATE SET status = 'active' RETURNING status"
    )
    by_name = "ON CONSTRAINT feed_profiles_flow_pulse_id_key"
    for target in (by_name, "(flow_pulse_id)"):
        assert (
            await conn.fetchval(upsert.format(target=target), a["tenants"], a["flow_pulses"])
            == "active"
        )
    await up(silentpulse_database)
    for target in (by_name, "(tenant_id, flow_pulse_id)"):
        assert (
            await conn.fetchval(upsert.format(target=target), a["tenants"], a["flow_pulses"])
            == "active"
        )
    with pytest.raises(
        asyncpg.InvalidColumnReferenceError, match="no unique or exclusion constraint"
    ):
        await conn.fetchval(upsert.format(target="(flow_pulse_id)"), a["tenants"], a["flow_pulses"])
    assert (
        await conn.fetchval(
            "INSERT INTO alerts (id, tenant_id, flow_pulse_id, asset_id, alert_type, severity, started_at) "
            "SELECT id, tenant_id, flow_pulse_id, asset_id, alert_type, severity, started_at "
            "FROM alerts WHERE tenant_id = $1 LIMIT 1 "
            "ON CONFLICT (tenant_id, id, started_at) DO NOTHING RETURNING id",
            a["tenants"],
        )
        is None
    )


# A row of tenant A pointing at tenant B's row where B has one already: each key that
# did not hold tenant_id answered 23505 (docs/tenancy.md, "Closed: unique constraints as
# an oracle"). Columns: table, its reference columns (B's ids), other columns.
ORACLES: list[tuple[str, dict[str, str | None], dict[str, Any]]] = [
    ("feed_profiles", {"flow_pulse_id": "flow_pulses"}, {}),
    ("asset_profiles", {"asset_id": "assets", "flow_pulse_id": "flow_pulses"}, {}),
    (
        "asset_observation_hourly",
        {"asset_id": "assets", "flow_pulse_id": "flow_pulses"},
        {"hour": "hour"},
    ),
    (
        "asset_observation_daily",
        {"asset_id": "assets", "flow_pulse_id": "flow_pulses"},
        {"date": "date"},
    ),
    ("flow_pulses", {"flow_id": "flows", "integration_point_id": None}, {"position": 0}),
    ("asset_group_mitre", {"asset_group_id": "asset_groups", "mitre_technique_id": None}, {}),
]


async def test_another_tenants_row_is_no_duplicate(
    silentpulse_migrated_database: str, silentpulse_app_database: str
) -> None:
    admin = await asyncpg.connect(silentpulse_migrated_database)
    app = await asyncpg.connect(silentpulse_app_database)
    try:
        a = await seed_tenant(admin, "tenant-a")
        b = await seed_tenant(admin, "tenant-b")
        technique = await admin.fetchval("SELECT id FROM mitre_techniques LIMIT 1")
        for table, references, others in ORACLES:
            b_row = await admin.fetchrow(
                f"SELECT * FROM {table} WHERE tenant_id = $1", b["tenants"]
            )
            answers = []
            for whose in ("tenant B's", "nobody's"):
                values: dict[str, Any] = {"tenant_id": a["tenants"]}
                for column, target in references.items():
                    if target is None:  # not the one probed: A's own, or the shared one
                        values[column] = (
                            technique if column == "mitre_technique_id" else a["integration_points"]
                        )
                    else:
                        values[column] = b_row[column] if whose == "tenant B's" else uuid.uuid4()
                for column, value in others.items():
                    values[column] = b_row[value] if isinstance(value, str) else value
                if table == "flow_pulses":
                    values.update(scheduler_interval=MINUTE, time_window=5 * MINUTE)
                names = ", ".join(values)
                params = ", ".join(f"${n}" for n in range(1, len(values) + 1))
                with pytest.raises(asyncpg.PostgresError) as info:
                    async with tenant_transaction(app, a["tenants"]):
                        await app.execute(
                            f"INSERT INTO {table} ({names}) VALUES ({params})", *values.values()
                        )
                answers.append((info.value.sqlstate, info.value.constraint_name))
            assert answers[0] == answers[1], (table, answers)
            assert answers[0][0] == "23503", (table, answers)
    finally:
        await app.close()
        await admin.close()
