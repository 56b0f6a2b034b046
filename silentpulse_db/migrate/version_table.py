"""The version table, exactly as golang-migrate keeps it, and our history beside it.

``schema_migrations`` holds at most one row ``(version, dirty)``; no row means
no version. golang-migrate writes a version with ``TRUNCATE`` then ``INSERT``;
we leave exactly the same rows with one DELETE + upsert statement (see
:meth:`VersionStore.write`). The table is never altered; what golang-migrate has no
room for (checksums, durations, who ran what) goes into
``schema_migrations_history``.

A service's own set of migrations keeps its version in a table of its own (as
golang-migrate's ``x-migrations-table`` does): a :class:`VersionTable` names it.
The history is shared: each row records the version table it belongs to.

The engine reads and writes both through :class:`VersionStore`, as golang-migrate's
engine goes through its ``database.Driver``; all of the library's SQL on them is here.
The driver's methods, and where each is in this engine:

==================== ===============================================================
golang-migrate       silentpulse-db
==================== ===============================================================
``Open``/``Close``   session.py's ``open_session`` (one pass: connect, settle, probe)
``Lock``/``Unlock``  session.py's ``MigrationLock`` (``Session.lock``), the same keys
``Run``              run/ (``Applier.apply``), each migration with its version write
``Version``          ``version``; ``state``: with the history (checksums)
``SetVersion``       ``write``; in a migration's own transaction
                     ``record_sql`` (``prepare_sql`` for several a message)
``ensureVersion-     ``ensure``: both tables, or an older release's history
Table``              brought to this layout (once), under the migration lock
``Drop``             none (``down --all`` reverts; nothing drops every table)
==================== ===============================================================
"""

from __future__ import annotations

import asyncio
import functools
import getpass
import logging
import os
import re
import socket
from collections.abc import Awaitable
from typing import Any, NamedTuple, TypeVar

from .._version import __version__
from ..defaults import MIGRATION_LOCK_TIMEOUT, VERSION_TABLES_MIN_WAIT
from ..errors import ConfigurationError, LockTimeoutError, MigrationStateError
from ..postgres.dsn import (
    LOCK_STRATEGY_PARAMETER,
    MIGRATIONS_TABLE_PARAMETER,
    TABLE_QUOTED_PARAMETER,
    split_options,
    warn_unknown,
)
from ..results.migrations import VersionState
from .plan import NIL_VERSION, HistoryEntry

logger = logging.getLogger("silentpulse_db.migrate")
T = TypeVar("T")

VERSION_TABLE = "schema_migrations"
HISTORY_TABLE = "schema_migrations_history"
# A table name golang-migrate and PostgreSQL both take unquoted: safe to inline.
_TABLE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


def check_table_name(name: str, *, setting: str = "table") -> str:
    """``name`` if it can name a version table; ConfigurationError naming ``setting``."""
    if not _TABLE_NAME.match(name) or name == HISTORY_TABLE:
        raise ConfigurationError(
            f"{setting}={name[:80]!r}: a version table is a plain table name (letters, "
            f"digits, '_', at most 63; no schema, no quotes) other than {HISTORY_TABLE}"
        )
    return name


class Resolved(NamedTuple):
    """What the migration engine takes from a DSN: the DSN to connect with (golang-migrate's
    ``x-`` options out), the set's version table, and the DSN's x-statement-timeout
    (seconds; None: none) for the migrations' statements."""

    dsn: str
    table: str
    statement_timeout: float | None = None


# A lock table is golang-migrate's pgx driver's other way to exclude a second runner: it
# takes no advisory lock then, so it and this engine would run side by side.
_NO_LOCK_TABLE = (
    f"the DSN's ?{LOCK_STRATEGY_PARAMETER}=table: golang-migrate's pgx driver then takes a "
    "row in a lock table (x-lock-table, default schema_lock) instead of the advisory lock, "
    "and this engine takes only the advisory lock, so the two tools would not exclude each "
    "other and could migrate the database at the same time. Remove the option (golang-"
    "migrate's postgres:// driver ignores it) or give x-lock-strategy=advisory, and "
    "use the advisory lock with golang-migrate too"
)


def resolve(dsn: str, table: str | None) -> Resolved:
    """The engine's reading of ``dsn`` (see :class:`Resolved`): ``table``, or the DSN's
    golang-migrate ``?x-migrations-table=``, or schema_migrations. A golang-migrate option
    with no meaning here is warned about once; one this engine cannot honour
    (x-lock-strategy=table, a table in another schema) is a ConfigurationError."""
    dsn, options = split_options(dsn)
    if options.lock_strategy == "table":
        raise ConfigurationError(_NO_LOCK_TABLE)
    warn_unknown(options)
    from_dsn = options.migrations_table
    if from_dsn is not None and options.table_quoted:
        from_dsn = _unquoted_table(from_dsn)
    if table is not None and from_dsn is not None and table != from_dsn:
        raise ConfigurationError(
            f"two version tables: table={table!r} and the DSN's "
            f"?{MIGRATIONS_TABLE_PARAMETER}={from_dsn!r}; give one"
        )
    if table is not None:
        name = check_table_name(table)
    elif from_dsn is not None:
        name = check_table_name(from_dsn, setting=f"?{MIGRATIONS_TABLE_PARAMETER}")
    else:
        name = VERSION_TABLE
    return Resolved(dsn, name, options.statement_timeout)


def resolve_table(dsn: str, table: str | None) -> tuple[str, str]:
    """:func:`resolve`'s DSN and version table."""
    resolved = resolve(dsn, table)
    return resolved.dsn, resolved.table


_QUOTED_PART = re.compile(r'"(.*?)"')


def _unquoted_table(written: str) -> str:
    """x-migrations-table under x-migrations-table-quoted=true, read as golang-migrate
    reads it (``"table"`` or ``"schema"."table"``), for a plain name in the schema the
    migrations run in; a schema is refused: this engine keeps a set's version table beside
    the migrations' objects, in current_schema()."""
    setting = f"?{MIGRATIONS_TABLE_PARAMETER}"
    if len(written) < 2 or written[0] != '"' or written[-1] != '"':
        raise ConfigurationError(
            f"{setting}={written[:80]!r}: with {TABLE_QUOTED_PARAMETER}=true it must be "
            f'quoted, as golang-migrate requires ("schema_migrations")'
        )
    parts = _QUOTED_PART.findall(written)
    if len(parts) > 2:
        raise ConfigurationError(f"{setting}={written[:80]!r}: more than schema and table")
    if len(parts) == 2:
        raise ConfigurationError(
            f"{setting}={written[:80]!r}: a version table in schema {parts[0][:63]!r} is not "
            f"supported here: this engine keeps a set's version table in the schema its "
            f"migrations run in (current_schema(), as golang-migrate does without a schema). "
            f'Give the table alone ("{parts[-1][:63]}") if that is the schema'
        )
    return check_table_name(parts[-1], setting=setting)


class VersionTable(NamedTuple):
    """Where a set of migrations keeps its version: golang-migrate's table ``name`` in
    ``schema`` (None: the search_path's), with the shared history beside it."""

    name: str = VERSION_TABLE
    schema: str | None = None

    def qualified(self, table: str | None = None) -> str:
        return qualified(table or self.name, self.schema)


CORE = VersionTable()


def qualified(table: str, schema: str | None) -> str:
    """``"schema"."table"``, or ``"table"`` (the search_path's) for no schema."""
    name = '"' + table.replace('"', '""') + '"'
    return '"' + schema.replace('"', '""') + '".' + name if schema else name


class HistoryRecord(NamedTuple):
    """A row to add to schema_migrations_history."""

    version: int
    name: str
    direction: str
    checksum: str | None = None
    duration: float | None = None  # seconds (stored as duration_ms)
    breaking: bool = False


class State(NamedTuple):
    """The version row and, per version, its latest 'up' or 'baseline' history record."""

    version: VersionState
    history: dict[int, HistoryEntry]


class Recorded(NamedTuple):
    """A history row as the engine reads it back: what it recorded, in how long (s)."""

    version: int
    direction: str
    duration: float | None


class Found(NamedTuple):
    """What of the bookkeeping a database holds: golang-migrate's version table, our
    history, and whether the history has every column this release reads (not so for a
    table an older release created, until :meth:`VersionStore.ensure`)."""

    versioned: bool = True
    history: bool = True
    current: bool = True

    @property
    def migrated(self) -> bool:
        """Both tables: this engine has run here."""
        return self.versioned and self.history


# Both tables, as ensure() leaves them.
THIS_RELEASE = Found()

# --- the tables, and ensure() ----------------------------------------------------------

_CREATE_HISTORY_TABLE = f"""
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
# Columns the history gained after its first release: their type, and what the rows from
# before stand for in them (no breaking mark; every row schema_migrations'). ensure()
# adds them once (constant defaults: no table rewrite); until then _history() reads an
# older table with the same values.
_ADDED_SINCE = {
    "breaking": ("boolean", "false"),
    "migrations_table": ("text", f"'{VERSION_TABLE}'"),
}
_ADD_NEWER_COLUMNS = f'ALTER TABLE "{HISTORY_TABLE}" ' + ", ".join(
    f"ADD COLUMN IF NOT EXISTS {column} {kind} NOT NULL DEFAULT {before}"
    for column, (kind, before) in _ADDED_SINCE.items()
)
# SQL: the history has them all.
_HISTORY_CURRENT = (
    f"(SELECT count(*) = {len(_ADDED_SINCE)} FROM pg_attribute "
    f"WHERE attrelid = to_regclass('\"{HISTORY_TABLE}\"') "
    f"AND attname IN ({', '.join(repr(c) for c in _ADDED_SINCE)}) AND NOT attisdropped)"
)
_COMMENT_HISTORY_TABLE = (
    f'COMMENT ON TABLE "{HISTORY_TABLE}" IS '
    "'silentpulse-db: one row per migration applied, reverted or forced, naming its "
    "version table; schema_migrations stays golang-migrate''s own'"
)

# Whatever a default privilege or a blanket GRANT gives an application role on the
# bookkeeping, it may read it and change nothing: row-level security (not forced: the
# owner and its members, golang-migrate's CLI run as the owner included, are not
# subject to it) with one policy, for SELECT; TRUNCATE, which no policy covers, is
# refused to any other role by a trigger.
GUARD_FUNCTION = "silentpulse_version_table_guard"
_REFUSE_TRUNCATE = f"""
CREATE OR REPLACE FUNCTION {GUARD_FUNCTION}() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $guard$
BEGIN
    IF NOT pg_has_role((SELECT c.relowner FROM pg_class c WHERE c.oid = TG_RELID), 'USAGE')
       AND NOT (SELECT r.rolbypassrls FROM pg_roles r WHERE r.rolname = current_user) THEN
        RAISE EXCEPTION 'role % may not TRUNCATE %: the migrations keep it (its owner)',
            current_user, TG_TABLE_NAME USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NULL;
END
$guard$"""


def _protect(table: str) -> str:
    """``table`` readable by whoever has SELECT, written by its owner only."""
    return (
        f'ALTER TABLE "{table}" ENABLE ROW LEVEL SECURITY; '
        f'DROP POLICY IF EXISTS silentpulse_readable ON "{table}"; '
        f'CREATE POLICY silentpulse_readable ON "{table}" FOR SELECT USING (true); '
        f'DROP TRIGGER IF EXISTS silentpulse_no_truncate ON "{table}"; '
        f'CREATE TRIGGER silentpulse_no_truncate BEFORE TRUNCATE ON "{table}" '
        f"FOR EACH STATEMENT EXECUTE FUNCTION {GUARD_FUNCTION}()"
    )


@functools.cache
def _tables_current(name: str) -> str:
    """SQL: both tables exist, protected, and the history has every column this version
    writes."""
    protected = " AND ".join(
        f"(SELECT relrowsecurity FROM pg_class WHERE oid = to_regclass('\"{t}\"'))"
        for t in (name, HISTORY_TABLE)
    )
    return f"to_regclass('\"{name}\"') IS NOT NULL AND {_HISTORY_CURRENT} AND {protected}"


@functools.cache
def _create_tables(name: str) -> str:
    """One message, one transaction: a fresh database gets both tables in one round trip
    (an older one, the history's newer columns and the protection)."""
    version_table = (
        f'CREATE TABLE IF NOT EXISTS "{name}" '
        "(version bigint not null primary key, dirty boolean not null)"
    )
    return (
        f"BEGIN; {version_table}; {_CREATE_HISTORY_TABLE}; {_COMMENT_HISTORY_TABLE}; "
        f"{_ADD_NEWER_COLUMNS}; {_REFUSE_TRUNCATE}; {_protect(name)}; "
        f"{_protect(HISTORY_TABLE)}; COMMIT;"
    )


# The history's id sequence put back above its rows when it has fallen behind them, which
# a crash or failover can do to a database made with CREATE DATABASE ... TEMPLATE
# (PostgreSQL 15 copies a template's sequences without WAL-logging their first values
# in the copy): every history write would then fail on its primary key, run after run.
_HISTORY_IDS = f"pg_get_serial_sequence('\"{HISTORY_TABLE}\"', 'id')"
# Its last value (0 before the first; NULL for a role that may not read it: no setval).
_HISTORY_LAST_ID = f"""CASE WHEN has_sequence_privilege({_HISTORY_IDS}, 'SELECT,USAGE')
    THEN coalesce(pg_sequence_last_value({_HISTORY_IDS}::regclass), 0) END"""
_HISTORY_IDS_AHEAD = f"""
SELECT setval({_HISTORY_IDS}, max(id)) FROM "{HISTORY_TABLE}" HAVING max(id) > ({_HISTORY_LAST_ID})
"""
_IDS_PUT_BACK = (
    "%s's id sequence was behind its rows (a crash or failover of a database made from a "
    "template can leave it so): set to %d, its highest id"
)

# --- reading ---------------------------------------------------------------------------


@functools.cache
def found_columns(name: str = VERSION_TABLE, *, layout: bool = True) -> str:
    """Select-list items for a caller's own query (the session's probe) saying what
    :meth:`VersionStore.look` says: ``versioned``, ``history`` and, with ``layout``,
    ``current`` (without: a query that also reads the state proves it)."""
    items = (
        f"to_regclass('\"{name}\"') IS NOT NULL AS versioned, "
        f"to_regclass('\"{HISTORY_TABLE}\"') IS NOT NULL AS history"
    )
    return f"{items}, {_HISTORY_CURRENT} AS current" if layout else items


def found_in(row: Any) -> Found:
    """What a row with :func:`found_columns`' items says."""
    current = row.get("current")
    return Found(row["versioned"], row["history"], True if current is None else current)


_READ_COLUMNS = "id, version, name, direction, checksum, applied_at, duration_ms, applied_by"


@functools.cache
def _history(table: VersionTable, current: bool) -> str:
    """The history, aliased ``h``, with this release's columns.

    An older release's table lacks the newer ones until ensure() adds them, under the
    migration lock. What reads without that lock reads it as it is, and must not write
    to it: the verbs that only read (version, status, drift, the dry run, run as roles
    that may not write), and a start-up with nothing to do (it takes no lock). For them,
    and only until ensure() has run, this view: each newer column read from the row as
    jsonb, which holds it once it exists (another runner may add it meanwhile), else the
    value the rows before it stand for (_ADDED_SINCE). The one fallback over layouts.
    """
    name = table.qualified(HISTORY_TABLE)
    if current:
        return f"{name} AS h"
    newer = ", ".join(
        f"coalesce((to_jsonb(h) ->> '{column}')::{kind}, {before}) AS {column}"
        for column, (kind, before) in _ADDED_SINCE.items()
    )
    return f"(SELECT {_READ_COLUMNS}, {newer} FROM {name} AS h) AS h"


@functools.cache
def _state_sql(table: VersionTable, current: bool) -> str:
    """The version row and every 'up'/'baseline' history row of ``table``'s set, in one
    round trip; the latest per version is picked in Python (no sort on the server: a cold
    backend plans and runs this in about half the time). The directions are two
    equalities, not an IN list: a fresh backend analyses the list's array and operator
    in ~0.35 ms, about as long as it takes to read the rows, where the equalities reuse
    the text = of the set's filter (log_parser_stats and log_planner_stats, 60 fresh
    sessions: 1.90 ms against 1.53 ms of server time for the history's query)."""
    return f"""
    SELECT s.version AS current_version, s.dirty AS current_dirty, s.version_rows, h.*
    FROM (SELECT 1) AS one
    LEFT JOIN (
        SELECT version, dirty, count(*) OVER () AS version_rows FROM {table.qualified()} LIMIT 1
    ) AS s ON true
    LEFT JOIN (
        SELECT {_READ_COLUMNS}, breaking FROM {_history(table, current)}
        WHERE migrations_table = '{table.name}' AND (direction = 'up' OR direction = 'baseline')
    ) AS h ON true
"""


def _state_from(rows: Any, table: str, *, several: bool = False) -> State:
    """The State in the rows of _state_sql (or a query joining it); MigrationStateError
    where ``table`` holds more than one row, unless ``several`` (force, which fixes it)."""
    if (rows[0]["version_rows"] or 0) > 1 and not several:
        raise several_versions(table, rows[0]["version_rows"])
    version, dirty = rows[0]["current_version"], rows[0]["current_dirty"]
    if version is None:
        state = VersionState(None, False)
    else:
        state = VersionState(None if version == NIL_VERSION else version, dirty)
    newest: dict[int, Any] = {}
    for row in rows:
        seen = newest.get(row["version"])
        if row["version"] is not None and (seen is None or row["id"] > seen["id"]):
            newest[row["version"]] = row
    return State(state, {number: _entry(row) for number, row in sorted(newest.items())})


def several_versions(table: str, count: int) -> MigrationStateError:
    """golang-migrate keeps one row; with more, which one `LIMIT 1` reads is chance, and
    a `down` would revert a migration the schema may not be at."""
    return MigrationStateError(
        f"{table} holds {count} rows where golang-migrate keeps one: the version is "
        f"ambiguous (SELECT * FROM {table}; what was applied last: SELECT version, "
        f"direction, applied_at FROM {HISTORY_TABLE} WHERE migrations_table = '{table}' "
        f"ORDER BY id DESC LIMIT 5). Record the right one with `silentpulse-db force V`, "
        f"which leaves that row alone; nothing else runs until then"
    )


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


# --- writing ---------------------------------------------------------------------------

# golang-migrate's SetVersion is TRUNCATE + INSERT. We leave the same rows with
# DELETE + upsert in one statement: no ACCESS EXCLUSIVE lock (a `migrate
# version` reading the table during a long migration is not blocked), no new
# relation files per migration, and one round trip that also writes history.
_HISTORY_COLUMNS = (
    "version, name, direction, checksum, duration_ms, applied_by, breaking, migrations_table"
)


class _Writes(NamedTuple):
    set_version: str
    set_version_and_history: str
    clear_version: str
    clear_version_and_history: str


@functools.cache
def _writes(name: str) -> _Writes:
    remove_others = f'DELETE FROM "{name}" WHERE version IS DISTINCT FROM $1'
    upsert = (
        f'INSERT INTO "{name}" (version, dirty) VALUES ($1, $2) '
        "ON CONFLICT (version) DO UPDATE SET dirty = EXCLUDED.dirty"
    )
    insert_history = (
        f'INSERT INTO "{HISTORY_TABLE}" ({_HISTORY_COLUMNS}) '
        f"VALUES ($3, $4, $5, $6, $7, $8 || ' as role ' || current_user, $9, '{name}')"
    )
    return _Writes(
        set_version=f"WITH gone AS ({remove_others}) {upsert}",
        set_version_and_history=(
            f"WITH gone AS ({remove_others}), kept AS ({upsert}) {insert_history}"
        ),
        clear_version=f'DELETE FROM "{name}"',
        clear_version_and_history=(
            f'WITH gone AS (DELETE FROM "{name}" WHERE $1::bigint IS NULL AND $2::bool IS NULL) '
            f"{insert_history}"
        ),
    )


def _set_version(
    name: str, version: int | None, dirty: bool, history: HistoryRecord | None
) -> tuple[str, tuple[Any, ...]]:
    """VersionStore.write()'s statement and its arguments."""
    keep = version is not None or dirty
    row = (NIL_VERSION if version is None else version, dirty) if keep else (None, None)
    writes = _writes(name)
    if history is None:
        return (writes.set_version, row) if keep else (writes.clear_version, ())
    duration = None if history.duration is None else round(history.duration * 1000, 3)
    return (
        writes.set_version_and_history if keep else writes.clear_version_and_history,
        (
            *row,
            history.version,
            history.name,
            history.direction,
            history.checksum,
            duration,
            _runner_identity(),
            history.breaking,
        ),
    )


def _pin_schema(schema: str | None) -> str:
    """``SET LOCAL search_path`` to the schema the version tables belong to: a migration
    may have moved the session's search_path (golang-migrate qualifies the table with
    the schema it read on connecting, for the same reason). Empty for None."""
    if not schema:
        return ""
    return 'SET LOCAL search_path TO "' + schema.replace('"', '""') + '";'


# The version write sent in a migration's own message, prepared once per run for
# migrations sent several to a message (run/sent_together.py): parsing and planning it
# again for each of them cost about as much as the small DDL they record. The server
# re-plans it if a migration alters the tables.
RECORD_STATEMENT = "silentpulse_record_version"


def _shared_start(name: str) -> str:
    """now() is when the MESSAGE arrived, for every transaction in it: a migration sent
    with others started when the one before it wrote its row (applied_at), if later."""
    return (
        f'GREATEST(now(), (SELECT applied_at FROM "{HISTORY_TABLE}" '
        f"WHERE migrations_table = '{name}' ORDER BY id DESC LIMIT 1))"
    )


def _literals(history: HistoryRecord) -> tuple[str, ...]:
    """The history row's values as SQL literals, in _record()'s order."""
    return (
        str(history.version),
        _quote_literal(history.name),
        _quote_literal(history.direction),
        "NULL" if history.checksum is None else _quote_literal(history.checksum),
        _quote_literal(_runner_identity()),
        "true" if history.breaking else "false",
    )


def _record(
    table: str,
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
    values += f"{runner} || ' as role ' || current_user, {breaking}, '{table}'"
    insert = f'INSERT INTO "{HISTORY_TABLE}" ({_HISTORY_COLUMNS}) VALUES ({values})'
    if stored is None:
        return f'WITH gone AS (DELETE FROM "{table}" RETURNING 1) {insert}'
    return (
        f'WITH gone AS (DELETE FROM "{table}" WHERE version IS DISTINCT FROM {stored}), '
        f'kept AS (INSERT INTO "{table}" (version, dirty) VALUES ({stored}, false) '
        f"ON CONFLICT (version) DO UPDATE SET dirty = EXCLUDED.dirty) {insert}"
    )


@functools.cache
def _identity(pid: int) -> str:
    """Who ran a migration: OS user, host and pid, and this library's version."""
    try:
        user = getpass.getuser()
    except Exception:  # no passwd entry in some containers
        user = str(os.getuid())
    return f"{user}@{socket.gethostname()} pid {pid} (silentpulse-db {__version__})"


def _runner_identity() -> str:
    return _identity(os.getpid())


def _quote_literal(text: str) -> str:
    """A SQL string literal that does not depend on standard_conforming_strings."""
    tag = "q"
    while f"${tag}$" in text:
        tag += "q"
    return f"${tag}${text}${tag}$"


# --- the store -------------------------------------------------------------------------


class VersionStore:
    """A set's version table and the history beside it, on one connection: the part of
    golang-migrate's ``database.Driver`` that keeps the version (mapped in the module's
    docstring). :meth:`ensure` makes the tables, or brings an older history to this
    layout, under the migration lock; :meth:`version` and :meth:`state` read;
    :meth:`write` writes (:meth:`record_sql`, :meth:`prepare_sql`: in a migration's own
    transaction). This engine's own reads: :meth:`look`, :meth:`state_beside` (the
    probe), :meth:`recent`, :meth:`latest`; other sets': :func:`version_if_there`,
    :func:`recorded_sets`.

    ``found``: what the store reads, as :meth:`look` (or the probe) found it; by default
    both tables in this release's layout. ``wait``: how long each statement waits for
    another session's lock on the tables, in seconds (at least VERSION_TABLES_MIN_WAIT;
    a run's: its migration lock's wait, :func:`_within_wait`).
    """

    __slots__ = ("conn", "found", "table", "wait")

    def __init__(
        self,
        conn: Any,
        table: VersionTable = CORE,
        found: Found = THIS_RELEASE,
        *,
        wait: float = MIGRATION_LOCK_TIMEOUT,
    ):
        self.conn = conn
        self.table = table
        self.found = found
        self.wait = max(wait, VERSION_TABLES_MIN_WAIT)

    def _read(self, query: str, *args: Any) -> Awaitable[list[Any]]:
        """The rows of ``query``, waiting for a lock on the tables at most ``wait``."""
        return _within_wait(self, "ACCESS SHARE", self.conn.fetch(query, *args, timeout=self.wait))

    async def ensure(self) -> None:
        """Create both tables if missing, or add the history's newer columns (and the
        protection) to an older release's; keep the history's ids ahead of its rows.
        Call with the migration lock held."""
        name = self.table.name
        if not await self.conn.fetchval(f"SELECT {_tables_current(name)}"):
            create = self.conn.execute(_create_tables(name), timeout=self.wait)
            await _within_wait(self, "ACCESS EXCLUSIVE", create, rollback=True)
        self.found = THIS_RELEASE
        ids = self.conn.fetchval(_HISTORY_IDS_AHEAD, timeout=self.wait)
        put_back = await _within_wait(self, "ROW EXCLUSIVE", ids)
        if put_back is not None:
            logger.warning(_IDS_PUT_BACK, HISTORY_TABLE, put_back)

    async def look(self) -> Found:
        """What of the two tables the database holds, and in which layout; the store
        reads them so from then on."""
        row = await self.conn.fetchrow(f"SELECT {found_columns(self.table.name)}")
        self.found = found_in(row)
        return self.found

    async def version(self) -> VersionState:
        """golang-migrate's Version() (its table must exist)."""
        read = f"SELECT version, dirty FROM {self.table.qualified()} LIMIT 1"
        row = await _within_wait(self, "ACCESS SHARE", self.conn.fetchrow(read, timeout=self.wait))
        if row is None:
            return VersionState(None, False)
        version = row["version"]
        return VersionState(None if version == NIL_VERSION else version, row["dirty"])

    async def state(self, *, several: bool = False) -> State:
        """The version and history of whatever is there, creating nothing: golang-migrate's
        table alone is enough (no history: every row unknown), none is no version.
        ``several``: a version table of several rows is no error (force leaves one)."""
        if not self.found.versioned:
            return State(VersionState(None, False), {})
        if not self.found.history:
            return State(await self.version(), {})
        rows = await self._read(_state_sql(self.table, self.found.current))
        return _state_from(rows, self.table.name, several=several)

    async def state_beside(self, select: str) -> tuple[State, Any]:
        """The state (both tables must exist) and the one row of ``select``, in one round
        trip: a start-up's probe; a waiter's question whether the work after applying is due."""
        rows = await self._read(
            f"SELECT b.*, st.* FROM ({select}) AS b "
            f"CROSS JOIN ({_state_sql(self.table, self.found.current)}) AS st"
        )
        return _state_from(rows, self.table.name), rows[0]

    async def recent(self, count: int) -> list[Recorded]:
        """The table's last ``count`` history rows, newest first (none: no history)."""
        if not self.found.history:
            return []
        rows = await self._read(
            f"SELECT version, direction, duration_ms "
            f"FROM {_history(self.table, self.found.current)} "
            "WHERE migrations_table = $2 ORDER BY id DESC LIMIT $1",
            count,
            self.table.name,
        )
        return [Recorded(r[0], r[1], None if r[2] is None else r[2] / 1000) for r in rows]

    async def latest(self, up_to: int) -> list[Any]:
        """Each version's last history row up to ``up_to`` (version, name, direction,
        checksum), whatever its direction: how the version got there."""
        if not self.found.history:
            return []
        return await self._read(
            "SELECT DISTINCT ON (version) version, name, direction, checksum "
            f"FROM {_history(self.table, self.found.current)} "
            "WHERE migrations_table = $1 AND version BETWEEN 0 AND $2 "
            "ORDER BY version, id DESC",
            self.table.name,
            up_to,
        )

    async def write(
        self, version: int | None, dirty: bool, history: HistoryRecord | None = None
    ) -> None:
        """golang-migrate's SetVersion (and our history row) in a transaction of its own:
        a row for any real version; ``(-1, true)`` for a failed down of the first
        migration; no row for a clean "no version"."""
        statement, args = _set_version(self.table.name, version, dirty, history)
        try:
            async with self.conn.transaction():
                if self.table.schema:
                    await self.conn.execute(_pin_schema(self.table.schema))
                await self.conn.execute(statement, *args, timeout=self.wait)
        except asyncio.TimeoutError:  # the transaction rolled back: asking who is in the way
            raise await _tables_locked(self, "ROW EXCLUSIVE") from None

    def record_sql(
        self, version: int | None, history: HistoryRecord, *, prepared: bool = False
    ) -> str:
        """write(version, clean, history) as SQL, for the message that also carries the
        migration and its COMMIT. The duration is measured by the server: from the
        transaction's start (BEGIN, in the first message) to this statement.
        ``prepared``: as an EXECUTE of :meth:`prepare_sql`'s statement (a real version)."""
        pin = _pin_schema(self.table.schema)
        if prepared and version is not None:
            args = ", ".join((str(version), *_literals(history)))
            return f"{pin}EXECUTE {RECORD_STATEMENT}({args});"
        stored = None if version is None else str(version)
        return pin + _record(self.table.name, stored, *_literals(history), started="now()") + ";"

    def prepare_sql(self) -> str:
        """PREPARE of the version + history write, in a transaction pinned to the schema as
        each EXECUTE is (a different search_path would make every EXECUTE re-parse it)."""
        name = self.table.name
        body = _record(name, "$1", "$2", "$3", "$4", "$5", "$6", "$7", started=_shared_start(name))
        return (
            f"BEGIN;{_pin_schema(self.table.schema)}PREPARE {RECORD_STATEMENT} "
            f"(bigint, bigint, text, text, text, text, boolean) AS {body};COMMIT;"
        )


async def _within_wait(
    store: VersionStore, mode: str, query: Awaitable[T], *, rollback: bool = False
) -> T:
    """``query``'s result; its timeout (sent with ``timeout=store.wait``) as the
    LockTimeoutError naming who holds a lock on the tables that ``mode`` conflicts with.
    Only a runner should lock them, but any role with UPDATE on them may (`LOCK TABLE`),
    and the runbook's default privileges give the application's roles UPDATE on every
    table: without a limit, one such session held every start-up for ever. ``rollback``:
    ``query`` is a message of its own with BEGIN (its transaction is left aborted; the
    connection cannot tell so yet when the timeout fires)."""
    try:
        return await query
    except asyncio.TimeoutError:
        if rollback:
            await store.conn.execute("ROLLBACK")
        raise await _tables_locked(store, mode) from None


async def _tables_locked(store: VersionStore, mode: str) -> LockTimeoutError:
    # Loaded when it happens: postgres/blockers.py imports tenacity, ~5 ms of every
    # start-up (bench_startup_tricks), for a wait that should never run out.
    from ..postgres.blockers import table_lock_holders

    conn, table = store.conn, store.table
    tables = (table.qualified(), table.qualified(HISTORY_TABLE))
    try:
        holders = await table_lock_holders(conn, dict.fromkeys(tables, mode))
        who = "; ".join(map(str, holders)) or "no session holds one now (it was released)"
    except Exception as exc:  # a caller's transaction, aborted by the cancel (25P02)
        if getattr(exc, "sqlstate", None) != "25P02":
            raise
        holders, who = [], "pg_locks names it (this transaction can no longer ask)"
    return LockTimeoutError(
        f"gave up after {store.wait:g}s waiting for a lock on {table.name} or "
        f"{HISTORY_TABLE} that another session holds: {who}. Nothing but the migrations' "
        f"runner should lock the version tables (every role may read them): end that "
        f"session's transaction, or the session (SELECT pg_terminate_backend(pid)), then "
        f"run again",
        blockers=holders,
    )


# --- other sets' versions ---------------------------------------------------------------


async def version_if_there(
    conn: Any, table: VersionTable, wait: float = MIGRATION_LOCK_TIMEOUT
) -> VersionState | None:
    """``table``'s version, or None where the table is not there (another set's, not
    migrated yet; a name the database gave is a parameter, never inlined)."""
    there = await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", table.qualified())
    return await VersionStore(conn, table, wait=wait).version() if there else None


async def recorded_sets(store: VersionStore) -> dict[str, VersionState]:
    """Every set other than ``store``'s that the history names whose version table is
    there, and its version (a database only golang-migrate migrated names none)."""
    if not (await store.look()).history:
        return {}
    names = await store._read(
        f"SELECT DISTINCT migrations_table FROM {_history(store.table, store.found.current)} "
        "WHERE migrations_table <> $1 ORDER BY 1",
        store.table.name,
    )
    found: dict[str, VersionState] = {}
    for (name,) in names:
        table = VersionTable(name, store.table.schema)
        if (version := await version_if_there(store.conn, table, store.wait)) is not None:
            found[name] = version
    return found
