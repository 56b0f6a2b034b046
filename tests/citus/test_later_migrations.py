"""Migrations on a Citus coordinator whose tables are distributed (issue 31): the runner
finds the citus extension in its session's probe and sends each statement of a
migration alone, in the migration's one transaction (Citus forwards a DDL statement's
whole message to its workers, which refuse a message of several: citusdata/citus#6608).
What each migration does reaches every shard, and each down undoes it there."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import pytest

from silentpulse_db import MigrationFailedError, run_migrations
from silentpulse_db.migrate import apply_prerequisites, down, goto, up
from silentpulse_db.migrate import session as migrate_session

from helpers import CITUS_SHARDS, execute, fetch, fetchval, version_rows, write_migrations

# A tenant table (a reference table), two tables distributed by tenant_id and colocated,
# and a global lookup table (a reference table), as docs/scaling.md distributes them.
DISTRIBUTED = f"""
SET citus.shard_count = {CITUS_SHARDS};
CREATE TABLE tenants (id bigint PRIMARY KEY, name text NOT NULL);
CREATE TABLE kinds (id int PRIMARY KEY, label text NOT NULL);
CREATE TABLE things (
    tenant_id bigint NOT NULL REFERENCES tenants (id),
    id bigint NOT NULL,
    kind_id int REFERENCES kinds (id),
    n int,
    legacy text,
    PRIMARY KEY (tenant_id, id)
);
CREATE TABLE events (
    tenant_id bigint NOT NULL REFERENCES tenants (id),
    id bigint NOT NULL,
    thing_id bigint NOT NULL,
    at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id)
);
SELECT create_reference_table('tenants');
SELECT create_reference_table('kinds');
SELECT create_distributed_table('things', 'tenant_id');
SELECT create_distributed_table('events', 'tenant_id', colocate_with => 'things');
INSERT INTO tenants VALUES (1, 'one'), (2, 'two');
INSERT INTO kinds VALUES (1, 'sensor');
INSERT INTO things SELECT 1 + g % 2, g, 1, g, 'x' FROM generate_series(1, 40) g;
INSERT INTO events (tenant_id, id, thing_id) SELECT tenant_id, id, id FROM things;
"""

# What later migrations do to such tables, each with its down.
LATER = {
    1: (
        "add_things_note",
        "ALTER TABLE things ADD COLUMN note text NOT NULL DEFAULT '';\n",
        "ALTER TABLE things DROP COLUMN note;\n",
    ),
    2: (
        "create_index_things_kind",
        "SET LOCAL lock_timeout = '3s';\nCREATE INDEX things_kind ON things (tenant_id, kind_id);\n",
        "DROP INDEX things_kind;\n",
    ),
    3: (
        "create_index_events_at",
        "CREATE INDEX CONCURRENTLY events_at ON events (tenant_id, at);\n",
        "DROP INDEX CONCURRENTLY events_at;\n",
    ),
    4: (
        "add_events_thing_reference",
        "ALTER TABLE events ADD CONSTRAINT events_thing_fkey\n"
        "    FOREIGN KEY (tenant_id, thing_id) REFERENCES things (tenant_id, id) NOT VALID;\n"
        "ALTER TABLE things ADD CONSTRAINT things_n_positive CHECK (n > 0) NOT VALID;\n"
        "ALTER TABLE events VALIDATE CONSTRAINT events_thing_fkey;\n"
        "ALTER TABLE things VALIDATE CONSTRAINT things_n_positive;\n",
        "ALTER TABLE things DROP CONSTRAINT things_n_positive;\n"
        "ALTER TABLE events DROP CONSTRAINT events_thing_fkey;\n",
    ),
    5: (
        "drop_things_legacy",
        "ALTER TABLE things DROP COLUMN legacy;\n",
        "ALTER TABLE things ADD COLUMN legacy text;\n",
    ),
    6: (
        "alter_things_n_default",
        "ALTER TABLE things ALTER COLUMN n SET DEFAULT 1;\n",
        "ALTER TABLE things ALTER COLUMN n DROP DEFAULT;\n",
    ),
    7: (
        "force_things_rls",
        "ALTER TABLE things ENABLE ROW LEVEL SECURITY;\n"
        "ALTER TABLE things FORCE ROW LEVEL SECURITY;\n",
        "ALTER TABLE things NO FORCE ROW LEVEL SECURITY;\n"
        "ALTER TABLE things DISABLE ROW LEVEL SECURITY;\n",
    ),
    8: (
        "create_notes",
        # Distributed before its foreign keys: Citus refuses a local table's key to a
        # reference table that a distributed table's key also reaches. Keys added to a
        # table distributed in the same transaction need one connection per node
        # (Citus's hint; plain PostgreSQL takes the setting as a placeholder).
        "SET LOCAL citus.multi_shard_modify_mode TO 'sequential';\n"
        "CREATE TABLE notes (\n"
        "    tenant_id bigint NOT NULL,\n"
        "    id bigint NOT NULL,\n"
        "    thing_id bigint NOT NULL,\n"
        "    body text NOT NULL,\n"
        "    PRIMARY KEY (tenant_id, id)\n"
        ");\n"
        "SELECT create_distributed_table('notes', 'tenant_id', colocate_with => 'things');\n"
        "ALTER TABLE notes ADD FOREIGN KEY (tenant_id) REFERENCES tenants (id);\n"
        "ALTER TABLE notes ADD FOREIGN KEY (tenant_id, thing_id) REFERENCES things (tenant_id, id);\n"
        "CREATE INDEX notes_thing ON notes (tenant_id, thing_id);\n",
        "DROP TABLE notes;\n",
    ),
}


async def on_shards(dsn: str, table: str, query: str) -> set[str]:
    """``query`` (``%s``: the shard) on every shard of ``table``: the distinct results."""
    rows = await fetch(
        dsn, "SELECT success, result FROM run_command_on_shards($1, $2)", table, query
    )
    assert all(r["success"] for r in rows), rows
    return {r["result"] for r in rows}


def column(name: str) -> str:
    return (
        f"SELECT count(*) FROM pg_attribute WHERE attrelid = '%s'::regclass "
        f"AND attname = '{name}' AND NOT attisdropped"
    )


def constraint(name: str) -> str:
    # A shard's constraint is the coordinator's name with the shard's id appended.
    return (
        f"SELECT coalesce(string_agg(convalidated::text, ','), 'none') FROM pg_constraint "
        f"WHERE conrelid = '%s'::regclass AND conname LIKE '{name}%%'"
    )


def index(name: str) -> str:
    return (
        f"SELECT coalesce(string_agg(i.indisvalid::text, ','), 'none') FROM pg_index i "
        f"JOIN pg_class c ON c.oid = i.indexrelid "
        f"WHERE i.indrelid = '%s'::regclass AND c.relname LIKE '{name}%%'"
    )


RLS = "SELECT relrowsecurity::text || ',' || relforcerowsecurity::text FROM pg_class WHERE oid = '%s'::regclass"
DEFAULT = (
    "SELECT coalesce(pg_get_expr(d.adbin, d.adrelid), 'none') FROM pg_attribute a "
    "LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum "
    "WHERE a.attrelid = '%s'::regclass AND a.attname = 'n'"
)


async def shards_say(dsn: str) -> dict[str, set[str]]:
    """What every migration of LATER changes, as the shards have it."""
    notes = await fetchval(dsn, "SELECT to_regclass('notes') IS NOT NULL")
    return {
        "note": await on_shards(dsn, "things", column("note")),
        "things_kind": await on_shards(dsn, "things", index("things_kind")),
        "events_at": await on_shards(dsn, "events", index("events_at")),
        "events_thing_fkey": await on_shards(dsn, "events", constraint("events_thing_fkey")),
        "things_n_positive": await on_shards(dsn, "things", constraint("things_n_positive")),
        "legacy": await on_shards(dsn, "things", column("legacy")),
        "n default": await on_shards(dsn, "things", DEFAULT),
        "rls": await on_shards(dsn, "things", RLS),
        "notes": await on_shards(dsn, "notes", index("notes_thing")) if notes else {"none"},
    }


BEFORE = {
    "note": {"0"},
    "things_kind": {"none"},
    "events_at": {"none"},
    "events_thing_fkey": {"none"},
    "things_n_positive": {"none"},
    "legacy": {"1"},
    "n default": {"none"},
    "rls": {"false,false"},
    "notes": {"none"},
}
AFTER = {
    "note": {"1"},
    "things_kind": {"true"},
    "events_at": {"true"},
    "events_thing_fkey": {"true"},
    "things_n_positive": {"true"},
    "legacy": {"0"},
    "n default": {"1"},
    "rls": {"true,true"},
    "notes": {"true"},
}


@pytest.fixture
async def distributed(silentpulse_citus_database: str) -> str:
    """A database across the cluster with DISTRIBUTED's tables."""
    await execute(silentpulse_citus_database, DISTRIBUTED)
    return silentpulse_citus_database


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every simple-query message the runner's connections send."""
    messages: list[str] = []
    original = asyncpg.Connection.execute

    async def spy(self: asyncpg.Connection, query: str, *args: Any, **kwargs: Any) -> Any:
        messages.append(query)
        return await original(self, query, *args, **kwargs)

    monkeypatch.setattr(asyncpg.Connection, "execute", spy)
    return messages


async def test_later_migrations_reach_every_shard_and_their_downs_undo_them(
    distributed: str, tmp_path: Path, sent: list[str]
) -> None:
    dsn = distributed
    source = write_migrations(tmp_path, LATER)
    assert await shards_say(dsn) == BEFORE
    result = await up(dsn, source=source)
    assert [m.version for m in result.applied] == list(LATER)
    assert await shards_say(dsn) == AFTER
    assert await version_rows(dsn) == [(8, False)]
    # Each statement a message of its own: no migration's statement shares one.
    for _, sql, _ in LATER.values():
        for statement in (s.strip() for s in sql.split(";\n") if s.strip()):
            assert any(m.strip().rstrip(";").strip() == statement for m in sent), statement
    # The new table is distributed, colocated with the others, its rows on its shards.
    colocated = await fetch(
        dsn,
        "SELECT logicalrelid::text AS name, colocationid FROM pg_dist_partition "
        "WHERE partmethod = 'h' ORDER BY 1",
    )
    assert [r["name"] for r in colocated] == ["events", "notes", "things"]
    assert len({r["colocationid"] for r in colocated}) == 1
    await execute(dsn, "INSERT INTO notes VALUES (1, 1, 2, 'on the shard of tenant 1')")
    with pytest.raises(asyncpg.ForeignKeyViolationError):  # the composite key holds there
        await execute(dsn, "INSERT INTO notes VALUES (2, 2, 2, 'thing 2 is tenant 1''s')")
    with pytest.raises(asyncpg.CheckViolationError):  # validated on the shards
        await execute(dsn, "INSERT INTO things (tenant_id, id, n) VALUES (1, 100, -1)")

    result = await down(dsn, "all", source=source)
    assert [m.version for m in result.applied] == list(reversed(LATER))
    assert await shards_say(dsn) == BEFORE
    assert await version_rows(dsn) == []  # no version, as golang-migrate leaves it
    assert await fetchval(dsn, "SELECT count(*) FROM pg_dist_partition") == 4

    await up(dsn, source=source)  # and again, after the downs
    assert await shards_say(dsn) == AFTER


# alerts distributed by tenant at 000023, as issue 31 did by hand before the tenant-first
# keys: its key led by tenant_id, its keys to tables left local dropped, and the settings
# distributing it needs (its triggers; one connection per node for the partition jobs and
# for 000022's down, which replaces a function after touching alerts).
ALERTS_DISTRIBUTED = f"""
SET citus.shard_count = {CITUS_SHARDS};
SET citus.enable_local_reference_table_foreign_keys = off;
SELECT create_reference_table('tenants');
DO $$
DECLARE
    fk record;
BEGIN
    FOR fk IN SELECT conname FROM pg_constraint
               WHERE conrelid = 'alerts'::regclass AND contype = 'f' AND conparentid = 0
                 AND confrelid <> 'tenants'::regclass
    LOOP
        EXECUTE format('ALTER TABLE alerts DROP CONSTRAINT %I', fk.conname);
    END LOOP;
END
$$;
ALTER TABLE alerts DROP CONSTRAINT alerts_pkey;
ALTER TABLE alerts ADD CONSTRAINT alerts_pkey PRIMARY KEY (tenant_id, id, started_at);
SELECT create_distributed_table('alerts', 'tenant_id');
"""


async def test_the_packaged_000020_goes_down_and_up_again_on_distributed_alerts(
    silentpulse_citus_database: str,
) -> None:
    """000020's down (its SET LOCAL, then DROP COLUMN on alerts) was one message, which
    Citus refused once alerts was distributed."""
    dsn = silentpulse_citus_database
    name = urlsplit(dsn).path.lstrip("/")
    await apply_prerequisites(dsn)
    await run_migrations(dsn, target=23)
    for setting in (
        "citus.enable_unsafe_triggers = on",
        "citus.multi_shard_modify_mode = sequential",
    ):
        await execute(dsn, f'ALTER DATABASE "{name}" SET {setting}')
    await execute(dsn, ALERTS_DISTRIBUTED)
    created_at = column("created_at")
    assert await on_shards(dsn, "alerts", created_at) == {"1"}

    result = await goto(dsn, 19)
    assert [m.version for m in result.applied] == [23, 22, 21, 20]
    assert await on_shards(dsn, "alerts", created_at) == {"0"}
    result = await up(dsn, target=23)
    assert [m.version for m in result.applied] == [20, 21, 22, 23]
    assert await on_shards(dsn, "alerts", created_at) == {"1"}
    assert await version_rows(dsn) == [(23, False)]


async def test_a_statement_a_worker_refuses_is_named_with_its_line(
    distributed: str, tmp_path: Path
) -> None:
    dsn = distributed
    await execute(dsn, "UPDATE things SET n = -1 WHERE id = 7")
    source = write_migrations(
        tmp_path,
        {
            1: ("local", "CREATE TABLE local_one (id int);\n", "DROP TABLE local_one;\n"),
            2: (
                "check_n",
                "-- n is counted from 1\n"
                "ALTER TABLE things ADD CONSTRAINT things_n_positive CHECK (n > 0) NOT VALID;\n"
                "ALTER TABLE things VALIDATE CONSTRAINT things_n_positive;\n",
                "ALTER TABLE things DROP CONSTRAINT things_n_positive;\n",
            ),
        },
    )
    with pytest.raises(MigrationFailedError) as failure:
        await up(dsn, source=source)
    text = str(failure.value)
    assert failure.value.line == 3 and failure.value.sqlstate == "23514"
    assert "line 3 (the statement starting there)" in text
    assert "ALTER TABLE things VALIDATE CONSTRAINT things_n_positive;" in text
    assert "while executing command on 127.0.0.1:" in text  # a worker's, Citus says
    assert "another session" not in text
    assert await version_rows(dsn) == [(1, False)]
    assert await on_shards(dsn, "things", constraint("things_n_positive")) == {"none"}


async def test_a_statement_citus_refused_for_its_company_is_named_as_such(
    distributed: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run that did not find the extension (created after its probe) sends migrations
    as on plain PostgreSQL: the statement Citus refused is found, its line and Citus's
    reason given, never another session's doing."""
    monkeypatch.setattr(migrate_session, "_CITUS", "false")
    dsn = distributed
    source = write_migrations(
        tmp_path,
        {
            1: ("local", "CREATE TABLE local_one (id int);\n", "DROP TABLE local_one;\n"),
            2: (
                "index_and_default",
                "CREATE TABLE local_two (id int);\n"
                "-- the distributed table's\n"
                "CREATE INDEX things_kind\n    ON things (tenant_id, kind_id);\n"
                "ALTER TABLE things ALTER COLUMN n SET DEFAULT 1;\n",
                "SELECT 1;\n",
            ),
        },
    )
    with pytest.raises(MigrationFailedError) as failure:
        await up(dsn, source=source)  # the two sent together
    text = str(failure.value)
    assert failure.value.line == 3 and failure.value.sqlstate == "42601"
    assert (
        "000002_index_and_default.up.sql line 3 (the statement starting there), refused by Citus"
        in text
    )
    assert "CREATE INDEX things_kind" in text
    assert "citusdata/citus#6608" in text and "run again" in text
    assert "another session" not in text
    assert await version_rows(dsn) == [(1, False)]

    monkeypatch.undo()  # the next run finds the extension
    await up(dsn, source=source)
    assert await on_shards(dsn, "things", index("things_kind")) == {"true"}
    assert await on_shards(dsn, "things", DEFAULT) == {"1"}
