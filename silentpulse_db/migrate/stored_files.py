"""A service set's up files (and its prerequisites.sql), kept in the database that
applied them, so that drift can build every set the database records without being
told where each set's folder is.

The packaged set's files ship with the library: they are not stored. A service's own
set (a version table of its own) has its up files stored when the runner applies them,
before they run (a run cut short has stored what it meant to run), keyed by set,
version and checksum: the history's latest 'up' row of each version names the
checksum that ran. Only this runner stores them, and only since FILES_TABLE exists: a
set golang-migrate or an older runner applied still needs its folder (``--set
DIR:TABLE``).

Secrets: a migration file may hold one (``CREATE ROLE ... PASSWORD``). The history is
readable by any role granted SELECT on it (its row-level security has a SELECT policy
for everyone, and a blanket ``GRANT SELECT ON ALL TABLES`` reaches it), and a column
privilege cannot narrow a table-level grant. So the texts live in a table of their
own, FILES_TABLE, with row-level security enabled and no policy: its owner (the role
that migrates), superusers and BYPASSRLS roles read it; a SELECT granted to another
role returns no row. TRUNCATE by another role is refused, as on the version tables.
It is owned by the history's owner (a superuser applying a set's first file by hand
leaves it to the role that migrates). A role that may not write it applies its
migrations all the same, with a warning: drift then needs that set's folder.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import asyncpg

from .files.source import Migration, MigrationFile, MigrationSource
from .version_table import GUARD_FUNCTION, HISTORY_TABLE, VERSION_TABLE, VersionStore

logger = logging.getLogger("silentpulse_db.migrate")

# The history's prefix keeps it out of drift's and check's catalogs, as the history is.
FILES_TABLE = f"{HISTORY_TABLE}_files"
# The set's prerequisites.sql is stored as this version (no migration's: golang-migrate
# takes none below 0); the one stored last is the one drift runs.
PREREQUISITES = -1

_CREATE = f"""
BEGIN;
CREATE TABLE IF NOT EXISTS "{FILES_TABLE}" (
    migrations_table text NOT NULL,
    version     bigint NOT NULL,
    previous    bigint,  -- the set's version below it in its folder; NULL: its first
    checksum    text NOT NULL,
    filename    text NOT NULL,
    sql         text NOT NULL,
    stored_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (migrations_table, version, checksum)
);
COMMENT ON TABLE "{FILES_TABLE}" IS 'silentpulse-db: the up files of each service set as '
    'applied, for drift; readable by its owner only (a file may hold a secret)';
ALTER TABLE "{FILES_TABLE}" ENABLE ROW LEVEL SECURITY;
REVOKE ALL ON "{FILES_TABLE}" FROM PUBLIC;
DROP TRIGGER IF EXISTS silentpulse_no_truncate ON "{FILES_TABLE}";
CREATE TRIGGER silentpulse_no_truncate BEFORE TRUNCATE ON "{FILES_TABLE}"
    FOR EACH STATEMENT EXECUTE FUNCTION {GUARD_FUNCTION}();
-- Owned as the history is: an administrator running a set's first file by hand must
-- not leave a table the role that migrates afterwards may not write.
DO $owner$ BEGIN
    EXECUTE format('ALTER TABLE %I OWNER TO %s', '{FILES_TABLE}',
        (SELECT relowner::regrole FROM pg_class WHERE oid = to_regclass('"{HISTORY_TABLE}"')));
EXCEPTION WHEN insufficient_privilege THEN NULL;  -- not a member of that role: kept
END $owner$;
COMMIT;
"""

_STORE = f"""
INSERT INTO "{FILES_TABLE}" (migrations_table, version, previous, checksum, filename, sql)
SELECT $1, * FROM unnest($2::bigint[], $3::bigint[], $4::text[], $5::text[], $6::text[])
ON CONFLICT (migrations_table, version, checksum) DO UPDATE SET stored_at = EXCLUDED.stored_at
"""


async def store_files(
    conn: Any, table: str, source: MigrationSource, ups: Iterable[tuple[int, MigrationFile]]
) -> None:
    """Keep the up files about to run for service set ``table`` (none for the packaged
    set), each with the version below it in ``source``. Called with the migration lock
    held, the version tables made sure of (their TRUNCATE guard is this table's)."""
    files = list(ups)
    if table == VERSION_TABLE or not files:
        return
    if source.prerequisites is not None:  # the extensions its files need, as of this run
        files.append((PREREQUISITES, source.prerequisites))
    try:
        if not await conn.fetchval(f"SELECT to_regclass('\"{FILES_TABLE}\"') IS NOT NULL"):
            await conn.execute(_CREATE)
        await _store(conn, table, source, files)
    except asyncpg.InsufficientPrivilegeError as exc:
        # A convenience for drift, not worth failing a deploy for: drift then needs the
        # set's folder, and says so.
        if conn.is_in_transaction():
            await conn.execute("ROLLBACK")
        logger.warning(
            "%s's files are not stored for drift (%s): drift will need that set's folder, "
            "--set DIR:%s",
            table,
            exc,
            table,
        )


async def _store(
    conn: Any, table: str, source: MigrationSource, files: list[tuple[int, MigrationFile]]
) -> None:
    await conn.execute(
        _STORE,
        table,
        [version for version, _file in files],
        [
            source.previous_version(version) if version != PREREQUISITES else None
            for version, _file in files
        ],
        [file.checksum for _version, file in files],
        [file.filename for _version, file in files],
        [file.sql for _version, file in files],
    )


_READABLE = f"""
    SELECT CASE WHEN to_regclass('"{FILES_TABLE}"') IS NOT NULL
                THEN has_table_privilege(to_regclass('"{FILES_TABLE}"'), 'SELECT') END
"""
_STORED = f"""
    SELECT version, previous, checksum, filename, sql FROM "{FILES_TABLE}"
    WHERE migrations_table = $1 ORDER BY stored_at
"""


async def stored_source(store: VersionStore, version: int | None) -> MigrationSource | str:
    """The service set of ``store``'s table at ``version`` as the database stored its up
    files: the source drift builds; or why it cannot be (a sentence: what is missing)."""
    conn, table = store.conn, store.table.name
    if version is None:
        return MigrationSource(f"{table}'s files as stored in the database", ())
    # Each version's last record: the up that put it there, or what else came last.
    latest = [r for r in await store.latest(version) if r["direction"] != "down"]
    other = [r for r in latest if r["direction"] != "up" or r["checksum"] is None]
    if other:
        first = other[0]
        return (
            f"its version {first['version']} was recorded by {first['direction']}, not by "
            f"running a file"
        )
    readable = await conn.fetchval(_READABLE)
    if readable is None:
        return "its files were applied before this engine stored them (or by golang-migrate)"
    if not readable:
        return f"this role may not read {FILES_TABLE} (its owner may: a file can hold secrets)"
    rows = await conn.fetch(_STORED, table)
    stored = {(r["version"], r["checksum"]): r for r in rows}
    prerequisites = [r for r in rows if r["version"] == PREREQUISITES][-1:]
    migrations: list[Migration] = []
    for row in latest:
        found = stored.get((row["version"], row["checksum"]))
        if found is None:
            return (
                f"the file of its version {row['version']} is not stored (applied before this "
                f"engine stored files, or by golang-migrate), or this role may not read "
                f"{FILES_TABLE} (its owner may: it can hold secrets)"
            )
        below = migrations[-1].version if migrations else None
        if found["previous"] != below:
            # golang-migrate (or an older runner) applied the versions before it
            return (
                f"the versions below {row['version']} were applied without their files "
                f"stored (by golang-migrate, or an older runner)"
            )
        migrations.append(Migration(row["version"], row["name"], _file(table, found), None))
    return MigrationSource(
        f"{table}'s files as stored in the database",
        tuple(migrations),
        prerequisites=next((_file(table, r) for r in prerequisites), None),
    )


def _file(table: str, row: Any) -> MigrationFile:
    location = f"{FILES_TABLE}: {table} {row['filename']}"
    return MigrationFile(row["filename"], location, row["sql"], row["checksum"])
