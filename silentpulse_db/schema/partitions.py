"""The partition lifecycle pg_partman would give, for a deployment that cannot install it.

- :func:`ensure_partitions`: the partitions for this month and the next
  ``ahead`` months of every table partitioned by range on a timestamp,
  created with the parent's row-level security; rows already sitting in the
  default partition for such a month move into it in the same transaction
  (migration 000005's ``silentpulse_create_monthly_partition``), so a stray row
  never blocks. With ``stray_months`` also every month that has rows in a
  default partition gets its partition, emptying it, up to ``max_ahead`` months
  ahead; rows past it, or dated where no partition can be (before year 1, after
  9999, +-infinity), stay there and are reported by table and month.
- :func:`apply_retention`: SilentPulse's retention rules, by dropping whole
  expired partitions; never a partition that still holds a not-closed alert.
- :func:`partition_coverage`: what `status` shows: months covered ahead and
  rows left in each default partition.
- :func:`partitions_at_startup`: run_migrations' hook after migrating
  (:class:`PartitionsAtStartup`): the months ahead when the session's probe
  (:func:`partitions_due`, name lookups only) finds one missing; never fatal.

Each change runs in its own transaction under a short lock_timeout: a busy
table makes it skip (and say so) rather than stall the application.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from typing import Any, NamedTuple

import asyncpg

from ..defaults import PARTITION_LOCK_TIMEOUT, PARTITIONS_AHEAD, PARTITIONS_MAX_AHEAD
from ..errors import (
    ConfigurationError,
    InvalidArgumentError,
    PermissionDeniedError,
    SilentPulseDBError,
)
from ..postgres.translate import permission_denied, translate
from ..results.schema_jobs import PartitionChange, PartitionCoverage, PartitionReport
from ..settings import milliseconds
from .tenancy import rls_filters, seeing_every_row

logger = logging.getLogger("silentpulse_db.partitions")

# The tables the packaged schema partitions by month (000001).
PARTITIONED = ("alerts", "audit_logs", "asset_observations")

# SilentPulse's retention (shared/reference/silentpulse-data-model.md): a
# partition goes once everything in it is older than this.
RETENTION = {
    "alerts": timedelta(days=365),  # after the alert closed; never while open
    "audit_logs": timedelta(days=730),
    "asset_observations": timedelta(days=90),
}

# What Python's datetime holds (asyncpg cannot return a timestamptz outside it).
_FIRST = "'0001-01-01 00:00:00+00'::timestamptz"
_LAST = "'9999-12-31 23:59:59.999999+00'::timestamptz"


def _clamped(bound: str) -> str:
    return (
        f"CASE WHEN {bound} < {_FIRST} THEN {_FIRST} "
        f"WHEN {bound} > {_LAST} THEN {_LAST} ELSE {bound} END"
    )


# Every table of this schema partitioned by range on one timestamp column,
# with its partitions' bounds (NULL bounds: the default partition). A bound
# outside Python's datetime (a partition of 9999-12, made by hand or by a job
# before PARTITIONS_MAX_AHEAD) is clamped to it: it still covers its month.
_TABLES = rf"""
    SELECT c.oid::regclass::text AS parent, c.relname AS name, a.attname AS key,
           p.oid::regclass::text AS partition, p.relname AS partition_name,
           pg_get_expr(p.relpartbound, p.oid) = 'DEFAULT' AS is_default,
           {_clamped("b.lo")} AS lo, {_clamped("b.hi")} AS hi,
           p.relrowsecurity AND p.relforcerowsecurity
             AND EXISTS (SELECT 1 FROM pg_policy q WHERE q.polrelid = p.oid) AS secured,
           c.relrowsecurity AS parent_rls
    FROM pg_partitioned_table pt
    JOIN pg_class c ON c.oid = pt.partrelid
    JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = pt.partattrs[0]
    LEFT JOIN pg_inherits i ON i.inhparent = c.oid
    LEFT JOIN pg_class p ON p.oid = i.inhrelid
    LEFT JOIN LATERAL (
        SELECT (regexp_match(pg_get_expr(p.relpartbound, p.oid),
                             'FROM \(''([^'']+)''\)'))[1]::timestamptz AS lo,
               (regexp_match(pg_get_expr(p.relpartbound, p.oid),
                             'TO \(''([^'']+)''\)'))[1]::timestamptz AS hi
    ) b ON true
    WHERE c.relnamespace = current_schema()::regnamespace AND pt.partstrat = 'r'
      AND pt.partnatts = 1 AND a.atttypid = 'timestamptz'::regtype
    ORDER BY c.relname, lo NULLS FIRST
"""
# Can this database make months (000005), and is it a Citus one (its tables may be
# distributed)? One question either way.
_PREFLIGHT = """
    SELECT to_regprocedure('silentpulse_create_monthly_partition(regclass,date)') IS NOT NULL
             AS can_create,
           EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'citus') AS citus
"""
_CREATE = "SELECT silentpulse_create_monthly_partition($1::regclass, $2::date)"
_SECURE = "SELECT silentpulse_secure_partition($1::regclass)"
# The months of the rows in a default partition ({key}, {default}), each with its rows
# and its verdict: make (its partition comes now), far (past $1 + $2 months: stays) or
# never (no partition can hold it: before year 1, after 9999, infinite). Only "make"
# months come back as dates: asyncpg cannot return the others.
_STRAY = """
    SELECT verdict, CASE WHEN verdict = 'make' THEN m::date END AS month, label, rows
    FROM (
        SELECT m, count(*) AS rows,
               CASE WHEN NOT (m >= '0001-01-01' AND m < '10000-01-01') OR m IS NULL
                         THEN 'never'
                    WHEN m < $1::date + make_interval(months => $2) THEN 'make'
                    ELSE 'far' END AS verdict,
               CASE WHEN m IS NULL THEN 'NULL' WHEN NOT isfinite(m) THEN m::text
                    ELSE to_char(m, 'YYYY-MM')
                         || CASE WHEN m < '0001-01-01' THEN ' BC' ELSE '' END END AS label
        FROM (SELECT date_trunc('month', {key} AT TIME ZONE 'UTC') AS m
              FROM ONLY {default}) s
        GROUP BY m
    ) v
    ORDER BY m NULLS LAST
"""
# A warning lists at most this many months of rows left in a default partition.
_LISTED = 6


@dataclass(frozen=True)
class Partition:
    name: str  # schema-qualified as regclass prints it
    lo: datetime | None  # None: the default partition
    hi: datetime | None
    secured: bool


@dataclass(frozen=True)
class PartitionedTable:
    parent: str
    name: str
    key: str
    rls: bool
    partitions: tuple[Partition, ...]

    @property
    def default(self) -> Partition | None:
        return next((p for p in self.partitions if p.lo is None and p.hi is None), None)

    def covers(self, month: date) -> bool:
        start = _utc(month)
        return any(
            p.lo is not None and p.hi is not None and p.lo <= start < p.hi for p in self.partitions
        )


def month_of(moment: datetime) -> date:
    moment = moment.astimezone(timezone.utc)
    return date(moment.year, moment.month, 1)


def add_months(month: date, count: int) -> date:
    index = month.year * 12 + month.month - 1 + count
    return date(index // 12, index % 12 + 1, 1)


def _utc(month: date) -> datetime:
    return datetime(month.year, month.month, 1, tzinfo=timezone.utc)


def partition_name(table: str, month: date) -> str:
    """``<table>_pYYYY_MM``, as migration 000005 names it (year 1 too: ``_p0001_01``)."""
    return f"{table}_p{month.year:04d}_{month.month:02d}"


@dataclass(frozen=True)
class _Strays:
    """The months of the rows in one default partition, with their rows by label."""

    months: tuple[date, ...] = ()  # to create now
    far: tuple[tuple[str, int], ...] = ()  # past max_ahead: they stay
    never: tuple[tuple[str, int], ...] = ()  # no partition can hold them


async def partitioned_tables(conn: Any) -> list[PartitionedTable]:
    tables: dict[str, tuple[Any, list[Partition]]] = {}
    for r in await conn.fetch(_TABLES):
        _, parts = tables.setdefault(r["parent"], (r, []))
        if r["partition"] is not None:
            parts.append(Partition(r["partition"], r["lo"], r["hi"], r["secured"]))
    return [
        PartitionedTable(r["parent"], r["name"], r["key"], r["parent_rls"], tuple(parts))
        for r, parts in tables.values()
    ]


async def ensure_partitions(
    conn: Any,
    *,
    ahead: int = PARTITIONS_AHEAD,
    now: datetime | None = None,
    stray_months: bool = False,
    lock_timeout: float = PARTITION_LOCK_TIMEOUT,
    max_ahead: int = PARTITIONS_MAX_AHEAD,
) -> PartitionReport:
    """Create this month's and the next ``ahead`` months' partitions; secure unguarded ones.

    ``stray_months``: also create the month of every row sitting in a default
    partition (this needs a role that row-level security does not filter), up to
    ``max_ahead`` months after the current one. Rows past it, and rows dated where
    no partition can be (before year 1, after 9999, infinity), stay in the default
    partition and are reported in ``skipped``, by table and month.
    ``now`` moves the clock (tests, and a job catching up on a date).
    Idempotent; a partition that cannot get its lock in ``lock_timeout``
    seconds is skipped and reported.
    """
    months = months_ahead(now, ahead, max_ahead)
    preflight = await conn.fetchrow(_PREFLIGHT)
    if not preflight["can_create"]:
        return PartitionReport(skipped=("migration 000005 (partition lifecycle) is not applied",))
    citus = bool(preflight["citus"])
    created: list[PartitionChange] = []
    secured: list[str] = []
    skipped: list[str] = []
    for table in await partitioned_tables(conn):
        stray: tuple[date, ...] = ()
        if stray_months and table.default is not None:
            strays = await _stray_months(conn, table, skipped, lock_timeout, months[0], max_ahead)
            skipped += _left_in_default(table, strays, months[0], max_ahead)
            stray = strays.months
        lift = await _lifted_for_moves(conn, table) if stray else []
        for month in sorted({*months, *stray}):
            if table.covers(month):
                continue
            moved = await _guarded(
                conn,
                lock_timeout,
                skipped,
                _CREATE,
                table.parent,
                month,
                lift=lift if month in stray else [],
                citus=citus,
            )
            if moved is not None:
                change = PartitionChange(table.name, partition_name(table.name, month), int(moved))
                logger.info("%s", change)
                created.append(change)
        for partition in table.partitions:
            if not table.rls or partition.secured:
                continue
            done = await _guarded(conn, lock_timeout, skipped, _SECURE, partition.name, citus=citus)
            if done is not None:
                logger.warning("%s had no RLS: secured like %s", partition.name, table.name)
                secured.append(partition.name)
    return PartitionReport(tuple(created), tuple(secured), tuple(skipped))


def months_ahead(now: datetime | None, ahead: int, max_ahead: int) -> list[date]:
    """This month and the next ``ahead`` (UTC), or a ConfigurationError saying what is wrong."""
    if ahead < 0:
        raise ConfigurationError(f"ahead (months of partitions) must be >= 0, got {ahead}")
    if max_ahead < ahead:
        raise ConfigurationError(
            f"ahead ({ahead} months of partitions) is more than max_ahead ({max_ahead}), the "
            "furthest month the partition job creates (PARTITIONS_MAX_AHEAD): raise "
            "max_ahead too, or ask for fewer months"
        )
    current = month_of(now or datetime.now(timezone.utc))
    try:
        return [add_months(current, i) for i in range(ahead + 1)]
    except ValueError:  # past year 9999
        raise ConfigurationError(
            f"{ahead} months after {current:%Y-%m} is past year 9999: no partition can be made"
        ) from None


async def _stray_months(
    conn: Any,
    table: PartitionedTable,
    skipped: list[str],
    lock_timeout: float,
    current: date,
    max_ahead: int,
) -> _Strays:
    assert table.default is not None
    default = table.default.name
    query = _STRAY.format(key=_ident(table.key), default=default)
    # No month past 9999 is ever made: a larger cap changes nothing (and fits an int4).
    args = (current, min(max_ahead, 12 * 10_000) + 1)
    filtered = await rls_filters(conn, default)
    if filtered is None:
        return _strays(await conn.fetch(query, *args))
    if not filtered.owner:
        skipped.append(
            f"{default}: row-level security hides its rows from this role; run the partition "
            "job as the tables' owner (or a role with BYPASSRLS) to move them"
        )
        return _Strays()
    # The owner, under FORCE ROW LEVEL SECURITY: it lifts FORCE for a rolled-back
    # transaction of its own (the creation function does the same for the move).
    try:
        async with seeing_every_row(conn, [default], lock_timeout):
            rows = await conn.fetch(query, *args)
    except asyncpg.LockNotAvailableError:
        skipped.append(f"{default}: busy (no lock within {lock_timeout:g} s); will be retried")
        logger.warning("%s", skipped[-1])
        return _Strays()
    return _strays(rows)


def _strays(rows: Sequence[Any]) -> _Strays:
    def labelled(verdict: str) -> tuple[tuple[str, int], ...]:
        return tuple((r["label"], r["rows"]) for r in rows if r["verdict"] == verdict)

    months = tuple(r["month"] for r in rows if r["verdict"] == "make")
    return _Strays(months, labelled("far"), labelled("never"))


def _left_in_default(
    table: PartitionedTable, strays: _Strays, current: date, max_ahead: int
) -> list[str]:
    """The warnings for the rows of ``table``'s default partition that no month is made for."""
    default = table.default.name if table.default is not None else f"{table.name}'s default"
    notes = []
    if strays.never:
        notes.append(
            f"{table.name}: {sum(n for _, n in strays.never)} row(s) stay in {default}, "
            "dated where no monthly partition can be (before year 1, after 9999, or "
            f"infinity), month(s) (rows): {_listing(strays.never)}; correct their {table.key}"
        )
    if strays.far:
        last = add_months(current, max_ahead)  # a far month exists: last is before 10000
        notes.append(
            f"{table.name}: {sum(n for _, n in strays.far)} row(s) stay in {default}, "
            f"dated more than {max_ahead} month(s) ahead (max_ahead, PARTITIONS_MAX_AHEAD; "
            f"the last month made is {last.year:04d}-{last.month:02d}), month(s) (rows): "
            f"{_listing(strays.far)}; they move once their month comes in reach, or "
            f"correct their {table.key}"
        )
    for note in notes:
        logger.warning("%s", note)
    return notes


def _listing(months: Sequence[tuple[str, int]]) -> str:
    shown = ", ".join(f"{label} ({rows})" for label, rows in months[:_LISTED])
    if len(months) > _LISTED:
        shown += f", and {len(months) - _LISTED} more month(s) up to {months[-1][0]}"
    return shown


async def _lifted_for_moves(conn: Any, table: PartitionedTable) -> list[str]:
    """The tables whose FORCE ROW LEVEL SECURITY hides rows from this role, their owner,
    when it moves rows out of ``table``'s default partition: ATTACH PARTITION checks the
    moved rows' foreign keys with a query run as this role (not as the referenced
    table's owner, as row-by-row checks are), which FORCE would leave seeing no
    referenced row. Empty for a role that bypasses RLS or owns none of them."""
    rows = await conn.fetch(
        "SELECT DISTINCT r.oid::regclass::text AS name FROM pg_constraint k "
        "JOIN pg_class r ON r.oid = k.confrelid "
        "WHERE k.conrelid = $1::regclass AND k.contype = 'f' AND r.relforcerowsecurity "
        "AND pg_has_role(r.relowner, 'USAGE') "
        "AND NOT (SELECT rolsuper OR rolbypassrls FROM pg_roles WHERE rolname = current_user) "
        "ORDER BY 1",
        table.parent,
    )
    return [r["name"] for r in rows]


def _local_settings(lock_timeout: float, *, citus: bool) -> str:
    """What each change's transaction sets first, in one message.

    On Citus, the months of a distributed table that references a reference table (as
    every tenant table references ``tenants``) must be made over one connection per
    worker: the creation function's CREATE, row move and ATTACH in one transaction
    otherwise fail ("cannot modify table ... because there was a parallel operation on a
    distributed table"); a month is made once, and can afford one connection per worker
    where a parallel query would open one per shard. Set in the job's own transaction, for
    any role, with no migration and no database default (which would make every other
    transaction sequential as well); plain PostgreSQL gets the one statement it always did.
    """
    timeout = f"SET LOCAL lock_timeout = {milliseconds(lock_timeout)}"
    if not citus:
        return timeout
    # Sequential: a month's ATTACH failed after a parallel operation on a distributed
    # table. Unsafe triggers: alerts' log triggers run on its shards (citus_alerts.py),
    # and Citus refuses a new month of a table with triggers without it.
    return (
        f"{timeout}; SET LOCAL citus.multi_shard_modify_mode = 'sequential'; "
        "SET LOCAL citus.enable_unsafe_triggers = on"
    )


async def _guarded(
    conn: Any,
    lock_timeout: float,
    skipped: list[str],
    query: str,
    *args: Any,
    lift: Sequence[str] = (),
    citus: bool = False,
) -> Any:
    """Run ``query`` in a transaction under lock_timeout; on a lock wait, note it and go on.

    ``lift``: tables whose FORCE ROW LEVEL SECURITY is lifted for this transaction only
    and put back before it commits (no other session ever sees them without it).
    ``citus``: the database has the extension (:func:`_local_settings`).
    """
    try:
        async with conn.transaction():
            await conn.execute(_local_settings(lock_timeout, citus=citus))
            for name in lift:
                await conn.execute(f"ALTER TABLE {name} NO FORCE ROW LEVEL SECURITY")
            result = await conn.fetchval(query, *args)
            for name in lift:
                await conn.execute(f"ALTER TABLE {name} FORCE ROW LEVEL SECURITY")
            return 0 if result is None and query is _SECURE else result
    except asyncpg.LockNotAvailableError:
        skipped.append(f"{args[0]}: busy (no lock within {lock_timeout:g} s); will be retried")
        logger.warning("%s", skipped[-1])
        return None
    except asyncpg.DuplicateTableError:  # another replica created it a moment ago
        return None
    except asyncpg.InsufficientPrivilegeError as exc:
        role = await conn.fetchval("SELECT current_user")
        denied = permission_denied(
            exc.args[0] if exc.args else str(exc), role=role, doing=f"change {args[0]}"
        )
        skipped.append(str(denied))
        logger.warning("%s", denied)
        return None


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


async def partition_coverage(conn: Any, *, now: datetime | None = None) -> list[PartitionCoverage]:
    """Per partitioned table: months covered from this one on, and rows in its default."""
    current = month_of(now or datetime.now(timezone.utc))
    result = []
    for table in await partitioned_tables(conn):
        month, ahead = current, -1
        while table.covers(month):
            month, ahead = add_months(month, 1), ahead + 1
        rows: int | None = 0
        if table.default is not None:
            if await rls_filters(conn, table.default.name):
                rows = None
            else:
                rows = await conn.fetchval(f"SELECT count(*) FROM ONLY {table.default.name}")
        result.append(
            PartitionCoverage(table.name, month if ahead >= 0 else None, max(ahead, 0), rows)
        )
    return result


async def require_unfiltered(conn: Any, tables: list[PartitionedTable], doing: str) -> set[str]:
    """Refuse a job that must see every row when row-level security filters this role.

    Returns the tables it sees only by lifting FORCE ROW LEVEL SECURITY as their owner
    (:func:`seeing_every_row`): the owner of a table and of all its partitions.
    """
    lifted = set()
    for table in tables:
        filtered = await rls_filters(conn, table.parent) if table.rls else None
        if filtered is None:
            continue
        if filtered.owner and await _owns(conn, [p.name for p in table.partitions]):
            lifted.add(table.name)
            continue
        role = filtered.role
        raise PermissionDeniedError(
            f"role {role!r} may not {doing}: row-level security hides rows of {table.name} "
            f"from it, so it would judge partitions by what it cannot see. Run it as the "
            f"owner of {table.name} and its partitions, or as the jobs role, which has "
            f"BYPASSRLS (docs/operations.md).",
            role=role,
            privilege="BYPASSRLS",
            object=f"table {table.name}",
        )
    return lifted


async def _owns(conn: Any, relations: list[str]) -> bool:
    """Does this role own (or inherit the owner's privileges on) every one of ``relations``?"""
    return bool(
        await conn.fetchval(
            "SELECT coalesce(bool_and(pg_has_role(c.relowner, 'USAGE')), true) "
            "FROM pg_class c WHERE c.oid = ANY($1::regclass[])",
            relations,
        )
    )


# --- at start-up: run_migrations' hook after migrating -------------------------------


def partitions_due(ahead: int, now: datetime | None = None) -> str:
    """A boolean SQL expression: is a partition of this month or of the furthest one
    missing for a table the packaged schema partitions?

    Name lookups only (syscache): a no-op start-up pays about 0.1 ms for it, where
    reading pg_class or pg_inherits in a fresh backend cost 1-2 ms. Partitions
    without row-level security are the daily job's and `status`'s to find.
    """
    current = month_of(now or datetime.now(timezone.utc))
    months = (current, add_months(current, ahead))
    checks = [
        f"(to_regclass('{table}') IS NOT NULL AND ("
        + " OR ".join(f"to_regclass('{table}_p{m:%Y_%m}') IS NULL" for m in months)
        + "))"
        for table in PARTITIONED
    ]
    return "(" + " OR ".join(checks) + ")"


class PartitionsAtStartup(NamedTuple):
    """What run_migrations does after migrating (the engine's AfterApply): this month's
    partitions and ``ahead`` more, cheap when nothing is due, never fatal."""

    ahead: int

    @property
    def probe(self) -> str:
        return partitions_due(self.ahead)

    async def __call__(self, conn: Any, dsn: str, *, due: bool | None) -> None:
        """``due``: what the session's query found (None: ask now). A busy table, a
        missing privilege or any other failure is a warning: the service starts, and
        the daily job (or the next start) tries again."""
        try:
            if due is None:
                due = await conn.fetchval(f"SELECT {self.probe}")
            if due:
                await ensure_partitions(conn, ahead=self.ahead)
        except Exception as exc:
            typed = exc if isinstance(exc, SilentPulseDBError) else None
            typed = typed or translate(
                exc, role=await _role(conn), doing="create partitions", dsn=dsn
            )
            if typed is None:
                raise
            logger.warning("partitions not maintained at start-up: %s", typed)


def partitions_at_startup(ahead: int) -> PartitionsAtStartup:
    """run_migrations' ``partitions_ahead``, checked before connecting: a number the job
    would refuse (over PARTITIONS_MAX_AHEAD) or cannot make (past year 9999) would
    otherwise be a warning at every start, with no month ever made."""
    if (
        isinstance(ahead, bool)
        or not isinstance(ahead, int)
        or not 0 <= ahead <= PARTITIONS_MAX_AHEAD
    ):
        raise InvalidArgumentError(
            f"run_migrations(partitions_ahead={ahead!r}): a whole number of months from 0 "
            f"to {PARTITIONS_MAX_AHEAD} (PARTITIONS_MAX_AHEAD), or None for no partition "
            "work at start-up"
        )
    return PartitionsAtStartup(ahead)


async def _role(conn: Any) -> str:
    try:
        return str(await conn.fetchval("SELECT current_user"))
    except Exception:
        return "<unknown>"
