"""The version table, exactly as golang-migrate keeps it, and our history beside it.

``schema_migrations`` holds at most one row ``(version, dirty)``; no row means
no version. golang-migrate writes a version with ``TRUNCATE`` then ``INSERT``;
we leave exactly the same rows with one DELETE + upsert statement (see
:func:`write_version`). The table is never altered; what golang-migrate has no
room for (checksums, durations, who ran what) goes into
``schema_migrations_history``.
"""

from __future__ import annotations

import functools
import getpass
import os
import socket
from typing import Any, NamedTuple

import asyncpg

from .._version import __version__
from ..results import VersionState
from .plan import NIL_VERSION, HistoryEntry

VERSION_TABLE = "schema_migrations"
HISTORY_TABLE = "schema_migrations_history"

CREATE_VERSION_TABLE = (
    f'CREATE TABLE IF NOT EXISTS "{VERSION_TABLE}" '
    "(version bigint not null primary key, dirty boolean not null)"
)
CREATE_HISTORY_TABLE = f"""
CREATE TABLE IF NOT EXISTS "{HISTORY_TABLE}" (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    version     bigint NOT NULL,
    name        text NOT NULL,
    direction   text NOT NULL CHECK (direction IN ('up', 'down', 'force', 'baseline')),
    checksum    text,
    applied_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    duration_ms double precision,
    applied_by  text NOT NULL,
    breaking    boolean NOT NULL DEFAULT false
)"""
# Tables created before the breaking mark (a constant default: no table rewrite).
ADD_BREAKING_COLUMN = (
    f'ALTER TABLE "{HISTORY_TABLE}" '
    "ADD COLUMN IF NOT EXISTS breaking boolean NOT NULL DEFAULT false"
)
# Both tables exist; and the history has every column this version writes.
TABLES_EXIST = (
    f"to_regclass('\"{VERSION_TABLE}\"') IS NOT NULL "
    f"AND to_regclass('\"{HISTORY_TABLE}\"') IS NOT NULL"
)
TABLES_CURRENT = (
    f"EXISTS (SELECT FROM pg_attribute WHERE attrelid = to_regclass('\"{HISTORY_TABLE}\"') "
    f"AND attname = 'breaking' AND NOT attisdropped)"
)
COMMENT_HISTORY_TABLE = (
    f'COMMENT ON TABLE "{HISTORY_TABLE}" IS '
    "'silentpulse-db: one row per migration applied, reverted or forced; "
    "schema_migrations stays golang-migrate''s own'"
)

# One message, one transaction: a fresh database gets both tables in one round trip.
_CREATE_TABLES = (
    f"BEGIN; {CREATE_VERSION_TABLE}; {CREATE_HISTORY_TABLE}; {COMMENT_HISTORY_TABLE}; "
    f"{ADD_BREAKING_COLUMN}; COMMIT;"
)


@functools.cache
def _identity(pid: int) -> str:
    """Who ran a migration: OS user, host and pid, and this library's version."""
    try:
        user = getpass.getuser()
    except Exception:  # no passwd entry in some containers
        user = str(os.getuid())
    return f"{user}@{socket.gethostname()} pid {pid} (silentpulse-db {__version__})"


def runner_identity() -> str:
    return _identity(os.getpid())


async def ensure_tables(conn: Any) -> None:
    """Create both tables if missing (or add the history's newer columns). Call with the
    migration lock held."""
    if await conn.fetchval(f"SELECT {TABLES_CURRENT}"):
        return
    await conn.execute(_CREATE_TABLES)


def qualified(table: str, schema: str | None) -> str:
    """``"schema"."table"``, or ``"table"`` (the search_path's) for no schema."""
    name = '"' + table.replace('"', '""') + '"'
    return '"' + schema.replace('"', '""') + '".' + name if schema else name


async def read_version(conn: Any, schema: str | None = None) -> VersionState:
    table = qualified(VERSION_TABLE, schema)
    row = await conn.fetchrow(f"SELECT version, dirty FROM {table} LIMIT 1")
    if row is None:
        return VersionState(None, False)
    version = row["version"]
    return VersionState(None if version == NIL_VERSION else version, row["dirty"])


class HistoryRecord(NamedTuple):
    """A row to add to schema_migrations_history."""

    version: int
    name: str
    direction: str
    checksum: str | None = None
    duration: float | None = None  # seconds (stored as duration_ms)
    breaking: bool = False


# golang-migrate's SetVersion is TRUNCATE + INSERT. We leave the same rows with
# DELETE + upsert in one statement: no ACCESS EXCLUSIVE lock (a `migrate
# version` reading the table during a long migration is not blocked), no new
# relation files per migration, and one round trip that also writes history.
_REMOVE_OTHERS = f'DELETE FROM "{VERSION_TABLE}" WHERE version IS DISTINCT FROM $1'
_UPSERT = (
    f'INSERT INTO "{VERSION_TABLE}" (version, dirty) VALUES ($1, $2) '
    "ON CONFLICT (version) DO UPDATE SET dirty = EXCLUDED.dirty"
)
_HISTORY_COLUMNS = "version, name, direction, checksum, duration_ms, applied_by, breaking"
_INSERT_HISTORY = (
    f'INSERT INTO "{HISTORY_TABLE}" ({_HISTORY_COLUMNS}) '
    "VALUES ($3, $4, $5, $6, $7, $8 || ' as role ' || current_user, $9)"
)
_SET_VERSION = f"WITH gone AS ({_REMOVE_OTHERS}) {_UPSERT}"
_SET_VERSION_AND_HISTORY = f"WITH gone AS ({_REMOVE_OTHERS}), kept AS ({_UPSERT}) {_INSERT_HISTORY}"
_CLEAR_VERSION = f'DELETE FROM "{VERSION_TABLE}"'
_CLEAR_VERSION_AND_HISTORY = (
    f'WITH gone AS (DELETE FROM "{VERSION_TABLE}" WHERE $1::bigint IS NULL AND $2::bool IS NULL) '
    f"{_INSERT_HISTORY}"
)


def pin_schema(schema: str | None) -> str:
    """``SET LOCAL search_path`` to the schema the version tables belong to: a migration
    may have moved the session's search_path (golang-migrate qualifies the table with
    the schema it read on connecting, for the same reason). Empty for None."""
    if not schema:
        return ""
    return 'SET LOCAL search_path TO "' + schema.replace('"', '""') + '";'


async def write_version(
    conn: Any,
    version: int | None,
    dirty: bool,
    history: HistoryRecord | None = None,
    *,
    schema: str | None = None,
) -> None:
    """golang-migrate's SetVersion (and our history row), inside the caller's transaction.

    A row for any real version; ``(-1, true)`` for a failed down of the first
    migration; no row for a clean "no version". ``schema``: see pin_schema.
    """
    if schema:
        await conn.execute(pin_schema(schema))
    keep = version is not None or dirty
    row = (NIL_VERSION if version is None else version, dirty) if keep else (None, None)
    if history is None:
        if keep:
            await conn.execute(_SET_VERSION, *row)
        else:
            await conn.execute(_CLEAR_VERSION)
        return
    await conn.execute(
        _SET_VERSION_AND_HISTORY if keep else _CLEAR_VERSION_AND_HISTORY,
        *row,
        history.version,
        history.name,
        history.direction,
        history.checksum,
        None if history.duration is None else round(history.duration * 1000, 3),
        runner_identity(),
        history.breaking,
    )


def version_sql(version: int | None, history: HistoryRecord) -> str:
    """write_version(version, clean, history) as literal SQL, for the message that also
    carries the migration and its COMMIT. The duration is measured by the server:
    from the transaction's start (BEGIN, in the first message) to this statement."""
    stored = None if version is None else str(version)
    return _record(stored, *_literals(history), started="now()") + ";"


# The same write, prepared once per run for migrations sent several to a message
# (run/sent_together.py): parsing and planning it again for each of them cost about as much
# as the small DDL they record. The server re-plans it if a migration alters the tables.
RECORD_STATEMENT = "silentpulse_record_version"

# now() is when the MESSAGE arrived, for every transaction in it: a migration sent
# with others started when the one before it wrote its row (applied_at), if later.
_SHARED_START = (
    f'GREATEST(now(), (SELECT applied_at FROM "{HISTORY_TABLE}" ORDER BY id DESC LIMIT 1))'
)


def prepare_record_sql(schema: str | None) -> str:
    """PREPARE of the version + history write, in a transaction pinned to ``schema`` as
    each EXECUTE is (a different search_path would make every EXECUTE re-parse it)."""
    body = _record("$1", "$2", "$3", "$4", "$5", "$6", "$7", started=_SHARED_START)
    return (
        f"BEGIN;{pin_schema(schema)}PREPARE {RECORD_STATEMENT} "
        f"(bigint, bigint, text, text, text, text, boolean) AS {body};COMMIT;"
    )


def record_sql(version: int, history: HistoryRecord) -> str:
    """version_sql() for a real version, as an EXECUTE of prepare_record_sql()."""
    return f"EXECUTE {RECORD_STATEMENT}({', '.join((str(version), *_literals(history)))});"


def _literals(history: HistoryRecord) -> tuple[str, ...]:
    """The history row's values as SQL literals, in _record()'s order."""
    return (
        str(history.version),
        quote_literal(history.name),
        quote_literal(history.direction),
        "NULL" if history.checksum is None else quote_literal(history.checksum),
        quote_literal(runner_identity()),
        "true" if history.breaking else "false",
    )


def _record(
    stored: str | None,
    version: str,
    name: str,
    direction: str,
    checksum: str,
    runner: str,
    breaking: str,
    *,
    started: str,
) -> str:
    """The version row (``stored``; None: no version) and the history row, one statement
    of SQL expressions; the duration is the server's, from ``started``."""
    duration = f"round(extract(epoch FROM clock_timestamp() - {started}) * 1000, 3)"
    values = f"{version}, {name}, {direction}, {checksum}, {duration}, "
    values += f"{runner} || ' as role ' || current_user, {breaking}"
    insert = f'INSERT INTO "{HISTORY_TABLE}" ({_HISTORY_COLUMNS}) VALUES ({values})'
    if stored is None:
        return f'WITH gone AS (DELETE FROM "{VERSION_TABLE}" RETURNING 1) {insert}'
    return (
        f'WITH gone AS (DELETE FROM "{VERSION_TABLE}" WHERE version IS DISTINCT FROM {stored}), '
        f'kept AS (INSERT INTO "{VERSION_TABLE}" (version, dirty) VALUES ({stored}, false) '
        f"ON CONFLICT (version) DO UPDATE SET dirty = EXCLUDED.dirty) {insert}"
    )


async def recent_durations(conn: Any, count: int, schema: str | None) -> list[float | None]:
    """The durations (seconds) of the last ``count`` history rows, oldest first."""
    table = qualified(HISTORY_TABLE, schema)
    rows = await conn.fetch(f"SELECT duration_ms FROM {table} ORDER BY id DESC LIMIT $1", count)
    return [None if r[0] is None else r[0] / 1000 for r in reversed(rows)]


async def set_version(
    conn: Any, version: int | None, dirty: bool, *, schema: str | None = None
) -> None:
    """SetVersion in a transaction of its own."""
    async with conn.transaction():
        await write_version(conn, version, dirty, schema=schema)


# Every 'up'/'baseline' row; the latest per version is picked in Python (no sort on
# the server: a cold backend plans and runs this in about half the time).
_HISTORY_ROWS = f"""
    SELECT id, version, name, direction, checksum, applied_at, duration_ms, applied_by, {{breaking}}
    FROM "{HISTORY_TABLE}" WHERE direction IN ('up', 'baseline')
"""
_LATEST_HISTORY = _HISTORY_ROWS.format(breaking="breaking")
# A history table from before the breaking mark (read-only paths do not add it).
_LATEST_HISTORY_OLD = _HISTORY_ROWS.format(breaking="false AS breaking")


def _state_sql(history: str) -> str:
    """The version row and the history in one round trip: what start-up needs."""
    return f"""
    SELECT s.version AS current_version, s.dirty AS current_dirty, h.*
    FROM (SELECT 1) AS one
    LEFT JOIN (SELECT version, dirty FROM "{VERSION_TABLE}" LIMIT 1) AS s ON true
    LEFT JOIN ({history}) AS h ON true
"""


STATE_AND_HISTORY = _state_sql(_LATEST_HISTORY)
_STATE_AND_HISTORY_OLD = _state_sql(_LATEST_HISTORY_OLD)


async def read_state(conn: Any) -> tuple[VersionState, dict[int, HistoryEntry]]:
    """The version row and, per version, its latest 'up' or 'baseline' history record
    (tables must exist)."""
    return state_from_rows(await _fetch_either(conn, STATE_AND_HISTORY, _STATE_AND_HISTORY_OLD))


async def read_state_and(
    conn: Any, expression: str | None
) -> tuple[VersionState, dict[int, HistoryEntry], bool | None]:
    """read_state(), and a boolean SQL ``expression`` asked in the same round trip
    (None: nothing asked)."""
    if expression is None:
        return (*await read_state(conn), None)

    def asking(query: str) -> str:
        extra = f"(SELECT {expression} AS extra) AS x"
        return f"SELECT st.*, x.extra FROM ({query}) AS st CROSS JOIN {extra}"

    rows = await _fetch_either(conn, asking(STATE_AND_HISTORY), asking(_STATE_AND_HISTORY_OLD))
    state, history = state_from_rows(rows)
    return state, history, rows[0]["extra"]


async def _fetch_either(conn: Any, query: str, older: str) -> Any:
    """``query``, or ``older`` on a history table from before the breaking mark. Inside
    a transaction (the dry run's) the first try runs in a savepoint, so that its
    failure does not abort the transaction."""
    try:
        if conn.is_in_transaction():
            async with conn.transaction():
                return await conn.fetch(query)
        return await conn.fetch(query)
    except asyncpg.UndefinedColumnError:
        return await conn.fetch(older)


def state_from_rows(rows: Any) -> tuple[VersionState, dict[int, HistoryEntry]]:
    """read_state's answer from the rows of STATE_AND_HISTORY (or a query joining it)."""
    version, dirty = rows[0]["current_version"], rows[0]["current_dirty"]
    if version is None:
        state = VersionState(None, False)
    else:
        state = VersionState(None if version == NIL_VERSION else version, dirty)
    return state, _latest(r for r in rows if r["version"] is not None)


def _latest(rows: Any) -> dict[int, HistoryEntry]:
    newest: dict[int, Any] = {}
    for row in rows:
        seen = newest.get(row["version"])
        if seen is None or row["id"] > seen["id"]:
            newest[row["version"]] = row
    return {version: _entry(row) for version, row in sorted(newest.items())}


def _entry(row: Any) -> HistoryEntry:
    return HistoryEntry(
        version=row["version"],
        name=row["name"],
        direction=row["direction"],
        checksum=row["checksum"],
        applied_at=row["applied_at"],
        duration=None if row["duration_ms"] is None else row["duration_ms"] / 1000,
        applied_by=row["applied_by"],
        breaking=bool(row["breaking"]),
    )


def quote_literal(text: str) -> str:
    """A SQL string literal that does not depend on standard_conforming_strings."""
    tag = "q"
    while f"${tag}$" in text:
        tag += "q"
    return f"${tag}${text}${tag}$"
