"""The migrated schema distributed by tenant on a Citus coordinator (issue 31).

What goes where is read from the catalog, not from a list:

- **reference tables** (a copy on every node): every table without ``tenant_id``
  (``tenants``, and the lookups shared by every tenant: ``mitre_techniques``,
  ``connector_defs``) but the bookkeeping kept on the coordinator; and every tenant
  table with a unique key that does not include ``tenant_id`` (``users``, ``api_keys``:
  keys unique across the platform on purpose, docs/tenancy.md), which a distributed
  table cannot have;
- **distributed tables**: every other table with ``tenant_id``, by it, all in one
  colocation group: one tenant's rows of every table on one shard, so that its joins
  and its foreign keys stay on one node;
- **kept on the coordinator**: the version tables and the alert listener's bookkeeping,
  which the runner, the listener and retention read and write there alone.

Order: the reference tables, then the distributed ones, each after the tables it
references (Citus checks a foreign key when it places the referencing table); last,
the coordinator's own copy of the rows it copied to the shards is freed. Each step is a
transaction of its own: a run killed mid-way leaves the steps before it done, and the
next run, which reads the catalog again, goes on from there; one with nothing left to
do does nothing.

The alert stream's two tables (``alerts`` and its log ``alert_changes``) are placed by
:func:`~silentpulse_db.schema.citus_alerts.prepare_alert_stream_for_citus`, one step
after the other tenant tables.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import asyncpg
from tenacity import retry_if_exception_type

from ..errors import (
    CitusRequiredError,
    ConfigurationError,
    DirtyDatabaseError,
    DistributionError,
    InvalidArgumentError,
    PermissionDeniedError,
    SchemaVersionError,
)
from ..postgres.blockers import lock_backoff, table_lock_holders
from ..postgres.literals import quote_literal
from ..postgres.translate import connection_closed
from ..results.migrations import VersionState
from ..results.placement import (
    COORDINATOR,
    DISTRIBUTED,
    REFERENCE,
    DistributionReport,
    DistributionSetting,
    DistributionStep,
    TablePlacement,
)
from ..settings import DDLLimits, milliseconds
from .citus_alerts import prepare_alert_stream_for_citus

logger = logging.getLogger("silentpulse_db.distribute")

# The migration after which every key of a tenant table leads with tenant_id and no
# foreign key nulls the distribution column (000044-000048, docs/tenancy.md).
TENANT_FIRST_VERSION = 59  # 000044-000050 the keys, 000059 the alert log on Citus
COLUMN = "tenant_id"
TENANTS = "tenants"

# Tables without tenant_id that stay plain tables on the coordinator, besides the
# version tables (the caller names those: a service's set has its own).
ALERT_BOOKKEEPING = {
    "alert_listener_positions": "the alert listeners' positions, read and written by "
    "listen_alerts on the coordinator alone",
    "alert_changes_pruned": "retention's mark in the alert change log (one row), read "
    "by the listener and written by retention on the coordinator alone",
}

# Actions, as DistributionStep.action says them.
MAKE_REFERENCE = "reference"
DISTRIBUTE = "distribute"
FREE = "free local copy"

LOCAL_REFERENCE_KEYS = DistributionSetting(
    "citus.enable_local_reference_table_foreign_keys",
    "off",
    "with it on, making tenants a reference table first turns every local table in its "
    "foreign-key graph into a Citus local table, which fails on the partitioned tables "
    "('child table is missing constraint ...') and which distributing them undoes the "
    "next moment",
)
UNSAFE_TRIGGERS = DistributionSetting(
    "citus.enable_unsafe_triggers",
    "on",
    "Citus refuses a table with triggers unless told, and then runs them on the shards: "
    "for alerts and alert_changes alone, whose triggers left (a row's own status "
    "timestamp; the log's TRUNCATE guard) touch nothing but their own row or shard",
)


def shard_count_setting(count: int, given: bool) -> DistributionSetting:
    source = "as asked" if given else "Citus's citus.shard_count"
    return DistributionSetting(
        "shard_count",
        str(count),
        f"{source}: colocated tables share their shards, so the first table distributed "
        f"fixes the count for all; more nodes later take shards by rebalancing",
    )


class Table(NamedTuple):
    """A table (partitioned or not, not a partition) as the catalog describes it."""

    name: str
    qualified: str  # schema.name, quoted where needed
    tenant: bool  # has tenant_id
    refs: tuple[str, ...]  # tables its foreign keys reference (not itself)
    platform_keys: tuple[str, ...]  # unique indexes without tenant_id: "name (columns)"
    owned: bool  # the role may run DDL on it (owner or a member of its owner)
    method: str | None  # pg_dist_partition.partmethod: h (hash), n (none), None: local
    replication: str | None  # repmodel: t (reference), s
    colocation: int  # colocationid (0: none)
    column: str | None  # the distribution column of a hash-distributed table
    shards: int | None  # its colocation group's shard count
    local_bytes: int  # its own storage on the coordinator (partitions included)

    @property
    def citus(self) -> str:
        """What Citus makes of it now, in words."""
        if self.method == "h":
            return f"distributed by {self.column}"
        if self.method == "n" and self.replication == "t":
            return "a reference table"
        if self.method == "n" and self.colocation:
            return "a single-shard distributed table"
        return "local" if self.method is None else "a Citus local table"


# Each table of the schema, its Citus state and what the plan needs to know of it.
_CATALOG = f"""
SELECT c.relname AS name, format('%I.%I', n.nspname, c.relname) AS qualified,
       a.attnum IS NOT NULL AS tenant,
       pg_has_role(c.relowner, 'USAGE') AS owned,
       array(SELECT DISTINCT r.relname::text
               FROM pg_constraint k JOIN pg_class r ON r.oid = k.confrelid
              WHERE k.conrelid = c.oid AND k.contype = 'f' AND k.confrelid <> c.oid
                AND k.conparentid = 0 ORDER BY 1) AS refs,
       array(SELECT format('%s %s', i.indexrelid::regclass,
                           substring(pg_get_indexdef(i.indexrelid) FROM ' USING \\w+ (.*)$'))
               FROM pg_index i
              WHERE i.indrelid = c.oid AND i.indisunique AND a.attnum IS NOT NULL
                AND NOT (a.attnum = ANY (i.indkey::int2[])) ORDER BY 1) AS platform_keys,
       p.partmethod::text AS method, p.repmodel::text AS replication,
       coalesce(p.colocationid, 0) AS colocation,
       CASE WHEN p.partmethod = 'h'
            THEN column_to_column_name(p.logicalrelid, p.partkey) END AS column,
       g.shardcount AS shards,
       pg_relation_size(c.oid) + (SELECT coalesce(sum(pg_relation_size(t.relid)), 0)::bigint
          FROM pg_partition_tree(c.oid) t WHERE t.relid <> c.oid) AS local_bytes
  FROM pg_class c
  JOIN pg_namespace n ON n.oid = c.relnamespace
  LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = '{COLUMN}' AND NOT a.attisdropped
  LEFT JOIN pg_dist_partition p ON p.logicalrelid = c.oid
  LEFT JOIN pg_dist_colocation g ON g.colocationid = p.colocationid AND p.partmethod = 'h'
 WHERE n.nspname = $1 AND c.relkind IN ('r', 'p') AND NOT c.relispartition
 ORDER BY c.relname
"""

_EXTENSION = """
SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'citus') AS created,
       EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'citus') AS available
"""
_COORDINATOR = """
SELECT citus_is_coordinator() AS coordinator,
       (SELECT count(*) FROM pg_dist_node
         WHERE noderole = 'primary' AND isactive AND shouldhaveshards)::int AS nodes,
       current_setting('citus.shard_count')::int AS shard_count
"""

NEEDS_A_COORDINATOR = "distribute runs on a Citus coordinator (docs/scaling.md)"


async def coordinator_nodes(conn: Any, where: str) -> tuple[int, int]:
    """The nodes that take shards and the server's citus.shard_count, or
    CitusRequiredError saying what ``where`` (the database, in words) is instead."""
    row = await conn.fetchrow(_EXTENSION)
    if not row["created"]:
        if not row["available"]:
            raise CitusRequiredError(
                f"{where} is plain PostgreSQL: the server has no citus extension. "
                f"{NEEDS_A_COORDINATOR}: point the DSN at one.",
                found="plain PostgreSQL",
            )
        raise CitusRequiredError(
            f"{where} has no citus extension: with citus in shared_preload_libraries, "
            f"run CREATE EXTENSION citus in this database on the coordinator and every "
            f"worker, and add the workers (SELECT citus_add_node('host', port)); "
            f"{NEEDS_A_COORDINATOR}.",
            found="PostgreSQL without the citus extension in this database",
        )
    row = await conn.fetchrow(_COORDINATOR)
    if not row["coordinator"]:
        raise CitusRequiredError(
            f"{where} is a Citus worker: {NEEDS_A_COORDINATOR}; point the DSN at it.",
            found="a Citus worker",
        )
    if not row["nodes"]:
        raise CitusRequiredError(
            f"{where} is a Citus coordinator with no node to place shards on: add the "
            f"workers (SELECT citus_add_node('host', port)), or let the coordinator hold "
            f"shards itself (SELECT citus_set_node_property('host', port, "
            f"'shouldhaveshards', true)); then distribute again.",
            found="a Citus coordinator without nodes for shards",
        )
    return int(row["nodes"]), int(row["shard_count"])


def check_version(state: VersionState | None, where: str) -> int:
    """The schema's version, or the error that says why distribute may not run at it."""
    found = None if state is None else state.version
    if state is not None and state.dirty and found is not None:
        raise DirtyDatabaseError(
            f"{where} is dirty at version {found}: a migration stopped partway. Finish it "
            f"(`silentpulse-db up`, or `force` as docs/migrations.md says) before "
            f"distributing.",
            version=found,
        )
    if found is None or found < TENANT_FIRST_VERSION:
        at = "was never migrated" if found is None else f"is at version {found}"
        raise SchemaVersionError(
            f"{where} {at}: distribute needs version {TENANT_FIRST_VERSION} or later, "
            f"where every key of a tenant table leads with tenant_id and no foreign key "
            f"nulls it (000044-000050, docs/tenancy.md), as Citus requires of a table "
            f"distributed by tenant_id, and the alert log is written beside each shard "
            f"(000059). Run `silentpulse-db up` first.",
            required=TENANT_FIRST_VERSION,
            found=found,
        )
    return found


async def read_tables(conn: Any, schema: str) -> list[Table]:
    rows = await conn.fetch(_CATALOG, schema)
    return [
        Table(
            name=r["name"],
            qualified=r["qualified"],
            tenant=r["tenant"],
            refs=tuple(r["refs"]),
            platform_keys=tuple(r["platform_keys"]),
            owned=r["owned"],
            method=r["method"],
            replication=r["replication"],
            colocation=r["colocation"],
            column=r["column"],
            shards=r["shards"],
            local_bytes=r["local_bytes"],
        )
        for r in rows
    ]


def referenced_first(refs: Mapping[str, Sequence[str]], names: Sequence[str]) -> list[str]:
    """``names``, each after those of them it references, directly or through others of
    them; by name otherwise (a cycle stays where it is)."""
    order: list[str] = []
    among = set(names)

    def place(name: str, path: tuple[str, ...]) -> None:
        if name in order or name in path:
            return
        for ref in sorted(refs.get(name, ())):
            if ref in among:
                place(ref, (*path, name))
        order.append(name)

    for name in sorted(names):
        place(name, ())
    return order


class DistributionPlan(NamedTuple):
    """What distribute will do: where each table goes, the steps, their settings."""

    tables: tuple[TablePlacement, ...]
    steps: tuple[DistributionStep, ...]
    settings: tuple[DistributionSetting, ...]
    anchor: str | None
    shard_count: int


def placement_of(
    table: Table, keep: Mapping[str, str], referencing: Sequence[str]
) -> tuple[str, str]:
    """Where ``table`` goes, and why. ``keep``: the tables kept on the coordinator (and
    why); ``referencing``: the tenant tables whose foreign keys reference it."""
    if table.name in keep:
        return COORDINATOR, keep[table.name]
    if table.tenant and table.platform_keys:
        return REFERENCE, (
            f"its unique key {', '.join(table.platform_keys)} does not include tenant_id: "
            f"unique across tenants on purpose (docs/tenancy.md, 'Left open: platform-wide "
            f"unique keys'), which a distributed table cannot be and a reference table keeps"
        )
    if table.tenant:
        return DISTRIBUTED, "by tenant_id"
    if table.name == TENANTS:
        return REFERENCE, (
            "the tenants themselves, which every tenant table references: a copy on every "
            "node keeps those foreign keys on the node"
        )
    if referencing:
        shown = ", ".join(referencing[:3]) + (", ..." if len(referencing) > 3 else "")
        return REFERENCE, (
            f"shared by every tenant (no tenant_id), referenced by {shown}: a copy on every "
            f"node keeps those foreign keys on the node"
        )
    return REFERENCE, (
        "shared by every tenant (no tenant_id): a copy on every node, so that a tenant's "
        "query joins it on the tenant's own shard"
    )


def _misplaced(table: Table, planned: str, why: str) -> DistributionError:
    """A placement distribute does not make, and how to undo it first."""
    undo = f"SELECT undistribute_table({quote_literal(table.qualified)})"
    return DistributionError(
        f"{table.name} is {table.citus}, and distribute makes it a {planned} table ({why}): "
        f"undo it first ({undo}), then distribute again. Nothing was changed.",
        table=table.name,
        step="plan",
    )


def _placed(table: Table, planned: str, why: str) -> bool:
    """Whether ``table`` is already as planned (else it is to do), or the error for a
    placement distribute does not make."""
    if planned == COORDINATOR:
        return True
    reference = table.method == "n" and table.replication == "t"
    if planned == REFERENCE and reference:
        return True
    if planned == DISTRIBUTED and table.method == "h":
        if table.column != COLUMN:
            raise _misplaced(table, f"distributed by {COLUMN}", why)
        return True
    if table.method == "h" or reference or table.colocation:
        raise _misplaced(table, planned, why)
    return False  # local, or a Citus local table (which either call takes as it is)


def _colocation(tables: Sequence[Table]) -> Table | None:
    """The distributed table the others colocate with: the first placed (in foreign-key
    order), or None; DistributionError when those placed are in different groups."""
    groups: dict[int, list[str]] = {}
    for table in tables:
        groups.setdefault(table.colocation, []).append(table.name)
    if len(groups) > 1:
        listed = "; ".join(", ".join(names) for names in groups.values())
        first = tables[0]
        raise DistributionError(
            f"the tenant tables already distributed are in {len(groups)} colocation groups "
            f"({listed}): one tenant's rows would not share a node. Colocate them first "
            f"(SELECT alter_distributed_table('<table>', colocate_with => "
            f"{quote_literal(first.qualified)})), then distribute again. Nothing was changed.",
            table=first.name,
            step="plan",
        )
    return tables[0] if tables else None


def build_plan(
    tables: Sequence[Table],
    keep: Mapping[str, str],
    *,
    shard_count: int | None,
    server_shards: int,
) -> DistributionPlan:
    """What goes where (every table), and the steps still to do, in order. ``keep``: the
    tables kept on the coordinator, with why. alerts and alert_changes are one step, after
    the other distributed tables (:data:`STREAM`)."""
    by_name = {t.name: t for t in tables}
    refs = {t.name: t.refs for t in tables}
    placements: dict[str, tuple[str, str, bool]] = {}
    for table in tables:
        referencing = [t.name for t in tables if table.name in t.refs and t.tenant]
        planned, why = placement_of(table, keep, referencing)
        placed = _placed(table, planned, why)
        if planned == COORDINATOR and table.method is not None:
            why += f" ({table.citus} already: left as it is)"
        placements[table.name] = (planned, why, placed)

    def ordered(kind: str) -> list[str]:
        return referenced_first(refs, [n for n, p in placements.items() if p[0] == kind])

    distributed = ordered(DISTRIBUTED)
    anchor_table = _colocation([by_name[n] for n in distributed if placements[n][2]])
    shards = server_shards if shard_count is None else shard_count
    if anchor_table is not None and anchor_table.shards is not None:
        if shard_count is not None and shard_count != anchor_table.shards:
            raise ConfigurationError(
                f"shard_count {shard_count} asked, but the tenant tables already distributed "
                f"have {anchor_table.shards} shards: change theirs first (SELECT "
                f"alter_distributed_table({quote_literal(anchor_table.qualified)}, shard_count => "
                f"{shard_count}, cascade_to_colocated => true)), or leave the count out"
            )
        shards = anchor_table.shards
    anchor = None if anchor_table is None else anchor_table.name

    steps: list[DistributionStep] = []
    settings: list[DistributionSetting] = []
    for name in ordered(REFERENCE):
        _, why, placed = placements[name]
        if not placed:
            steps.append(_reference_step(by_name[name], why))
            _add(settings, LOCAL_REFERENCE_KEYS)
    stream = [n for n in distributed if n in ALERT_STREAM and not placements[n][2]]
    for name in distributed:
        if placements[name][2] or name in ALERT_STREAM:
            continue
        table = by_name[name]
        if anchor is None:
            anchor = name
            _add(settings, shard_count_setting(shards, shard_count is not None))
            steps.append(_distribute_step(table, (), shards=shards))
        else:
            steps.append(_distribute_step(table, (), colocate_with=by_name[anchor]))
    if stream:
        # Its own statements are prepare_alert_stream_for_citus's (distribute_on).
        steps.append(DistributionStep(ALERTS, STREAM, (), STREAM_WHY))
        _add(settings, UNSAFE_TRIGGERS)
    placed_somewhere = [*ordered(REFERENCE), *distributed]
    for name in reversed(placed_somewhere):
        if by_name[name].local_bytes > 0:
            steps.append(_free_step(by_name[name]))

    shown = []
    for name, (planned, why, placed) in placements.items():
        if planned == DISTRIBUTED:
            why += (
                f", colocated with {anchor} ({shards} shards)"
                if name != anchor
                else (f", {shards} shards: the others are colocated with it")
            )
        shown.append(TablePlacement(name, planned, why, placed))
    order = {kind: i for i, kind in enumerate((REFERENCE, DISTRIBUTED, COORDINATOR))}
    rank = {n: i for i, n in enumerate(placed_somewhere)}
    shown.sort(key=lambda p: (order[p.placement], rank.get(p.table, 0), p.table))
    return DistributionPlan(tuple(shown), tuple(steps), tuple(settings), anchor, shards)


def _add(settings: list[DistributionSetting], setting: DistributionSetting) -> None:
    if setting not in settings:
        settings.append(setting)


def _set_local(setting: DistributionSetting) -> str:
    return f"SET LOCAL {setting.name} = {setting.value}"


def _reference_step(table: Table, why: str) -> DistributionStep:
    return DistributionStep(
        table.name,
        MAKE_REFERENCE,
        (
            _set_local(LOCAL_REFERENCE_KEYS),
            f"SELECT create_reference_table({quote_literal(table.qualified)})",
        ),
        why,
    )


def _distribute_step(
    table: Table,
    prefix: tuple[str, ...],
    *,
    shards: int | None = None,
    colocate_with: Table | None = None,
) -> DistributionStep:
    if colocate_with is None:
        # A group of its own: 'default' would join any group of the same shard count
        # that another table made before.
        where = f"shard_count => {shards}, colocate_with => 'none'"
        why = f"by {COLUMN}, {shards} shards: the first, the others colocate with it"
    else:
        where = f"colocate_with => {quote_literal(colocate_with.qualified)}"
        why = f"by {COLUMN}, colocated with {colocate_with.name}"
    call = f"SELECT create_distributed_table({quote_literal(table.qualified)}, '{COLUMN}', {where})"
    return DistributionStep(table.name, DISTRIBUTE, (*prefix, call), why)


def _free_step(table: Table) -> DistributionStep:
    name = quote_literal(table.qualified)
    return DistributionStep(
        table.name,
        FREE,
        (
            f"SELECT truncate_local_data_after_distributing_table({name}) "
            f"WHERE pg_relation_size({name}) > 0 OR EXISTS (SELECT 1 FROM "
            f"pg_partition_tree({name}) t WHERE pg_relation_size(t.relid) > 0)",
        ),
        f"the coordinator keeps the rows it copied to the shards in the table's own "
        f"storage, invisible and still on disk ({table.local_bytes // 1024} kB): freed",
    )


# --- the alert stream ----------------------------------------------------------------
# alerts and its log alert_changes are placed by prepare_alert_stream_for_citus
# (citus_alerts.py; docs/notifications.md, "On Citus"): the log beside each shard of
# alerts, written there by the shards' trigger, and the index and policy that needs. One
# step, after every other distributed table (it colocates with them), run outside a
# transaction (it builds an index CONCURRENTLY).
ALERTS = "alerts"
ALERT_LOG = "alert_changes"
ALERT_STREAM = (ALERTS, ALERT_LOG)
STREAM = "prepare the alert stream"
STREAM_WHY = (
    "by tenant_id, colocated, with the change log beside each shard of alerts "
    "(prepare_alert_stream_for_citus; docs/notifications.md, 'On Citus')"
)


# --- running it ---------------------------------------------------------------------

# What a step waits out and tries again, as a migration does (run/lock_retries.py).
LOCK_CONFLICTS = (asyncpg.LockNotAvailableError, asyncpg.DeadlockDetectedError)


async def distribute_on(
    conn: Any,
    state: VersionState | None,
    *,
    schema: str,
    keep: Mapping[str, str],
    where: str,
    dry_run: bool,
    shard_count: int | None,
    limits: DDLLimits,
) -> DistributionReport:
    """Plan on ``conn`` (a session on the coordinator, holding the migration lock unless
    ``dry_run``) and run the steps; ``state``: the schema's version (None: not migrated);
    ``schema``: where its tables are; ``where``: the database, in words, for errors."""
    if shard_count is not None and (
        isinstance(shard_count, bool) or not isinstance(shard_count, int) or shard_count < 1
    ):
        raise InvalidArgumentError(f"shard_count={shard_count!r}: a whole number, 1 or more")
    nodes, server_shards = await coordinator_nodes(conn, where)
    version = check_version(state, where)
    tables = await read_tables(conn, schema)
    plan = build_plan(
        tables,
        {**keep, **ALERT_BOOKKEEPING},
        shard_count=shard_count,
        server_shards=server_shards,
    )
    role = await conn.fetchval("SELECT current_user")
    _check_owner(role, tables, plan.steps)
    by_name = {t.name: t for t in tables}
    anchor = None if plan.anchor is None else by_name[plan.anchor].qualified
    steps: tuple[DistributionStep, ...] = ()
    for step in plan.steps:
        if step.action == STREAM:  # its statements: what prepare_alert_stream_for_citus runs
            shown = tuple(await prepare_stream(conn, anchor, True))
            step = dataclasses.replace(step, statements=shown)
        steps += (step,)
    if not dry_run:
        steps = await _run_steps(conn, steps, by_name, limits, (role, anchor))
    return DistributionReport(
        dry_run=dry_run,
        version=version,
        shard_count=plan.shard_count,
        colocated_with=plan.anchor,
        nodes=nodes,
        tables=plan.tables,
        steps=steps,
        settings=plan.settings,
    )


def _check_owner(role: str, tables: Sequence[Table], steps: Sequence[DistributionStep]) -> None:
    """Citus places a table as its owner only: refuse before the first step."""
    touched = {s.table for s in steps}
    foreign = [t.name for t in tables if t.name in touched and not t.owned]
    if foreign:
        shown = ", ".join(foreign[:5]) + (
            f" and {len(foreign) - 5} more" if len(foreign) > 5 else ""
        )
        raise PermissionDeniedError(
            f"role {role!r} may not distribute {shown}: Citus places a table as its owner "
            f"only. Run distribute as the role that owns the tables (the one that runs "
            f"the migrations), or a member of it. Nothing was changed.",
            role=role,
            privilege="ownership",
            object=f"table {foreign[0]}",
        )


async def prepare_stream(conn: Any, anchor: str | None, dry_run: bool) -> list[str]:
    """The alert stream's step: prepare_alert_stream_for_citus, colocated with ``anchor``
    (the tenant tables' first, qualified); its steps, in words."""
    colocate_with = "default" if anchor is None else anchor
    return await prepare_alert_stream_for_citus(conn, colocate_with=colocate_with, dry_run=dry_run)


async def _run_steps(
    conn: Any,
    steps: Sequence[DistributionStep],
    tables: Mapping[str, Table],
    limits: DDLLimits,
    who: tuple[str, str | None],
) -> tuple[DistributionStep, ...]:
    """Run ``steps`` in order; ``who``: the role running them, and the anchor of the
    colocation (qualified) the alert stream joins."""
    role, anchor = who
    done: list[DistributionStep] = []
    for number, step in enumerate(steps, 1):
        logger.info("step %d/%d: %s %s", number, len(steps), step.action, step.table)
        if step.action == STREAM:  # outside a transaction: its index is built CONCURRENTLY
            started = time.monotonic()
            await prepare_stream(conn, anchor, False)
            done.append(dataclasses.replace(step, duration=time.monotonic() - started))
            continue
        duration = await _run_step(conn, step, tables[step.table], limits, (role, done))
        done.append(dataclasses.replace(step, duration=duration))
    return tuple(done)


async def _run_step(
    conn: Any,
    step: DistributionStep,
    table: Table,
    limits: DDLLimits,
    context: tuple[str, Sequence[DistributionStep]],
) -> float:
    """One step in a transaction of its own, each statement a message of its own (Citus
    refuses some DDL sent together, citusdata/citus#6608); a table lock waited for past
    ``limits.table_lock_timeout`` rolls it back, and it is tried again with backoff.
    ``context``: the role running it, and the steps done before it (for the errors)."""
    role, done = context
    started = time.monotonic()
    retrying = lock_backoff(
        limits.retry_for,
        started,
        retry=retry_if_exception_type(LOCK_CONFLICTS),
        before_sleep=lambda state: logger.info(
            "%s %s waited for a table lock; again in %.1f s",
            step.action,
            step.table,
            state.upcoming_sleep,
        ),
    )
    try:
        async for attempt in retrying:
            with attempt:
                await _attempt_step(conn, step, limits.table_lock_timeout)
    except LOCK_CONFLICTS as exc:
        raise await _lock_error(conn, step, table, done, exc) from None
    except asyncpg.PostgresError as exc:
        # A lost connection is ours only if ours is closed: Citus reports a node it
        # could not reach with a connection SQLSTATE (08...) on a live session.
        if isinstance(exc, asyncpg.InsufficientPrivilegeError) or connection_closed(conn):
            raise  # typed_errors: the privilege it needs, or the lost connection
        raise _refused(step, done, exc, role) from None
    return time.monotonic() - started


async def _attempt_step(conn: Any, step: DistributionStep, lock_timeout: float | None) -> None:
    async with conn.transaction():
        if lock_timeout is not None:
            await conn.execute(f"SET LOCAL lock_timeout = {milliseconds(lock_timeout)}")
        for statement in step.statements:
            await conn.execute(statement)


# Citus's words when the coordinator cannot open a connection to a worker, and the fix
# when it is the role's login there (the nodes' own logins are the cluster's to set up).
REMOTE_LOGIN = "connection to the remote node"
REMOTE_LOGIN_FIX = (
    "The coordinator logs in to the workers as the role that runs distribute: give that "
    "role a way in on every node (its password in pg_dist_authinfo: INSERT INTO "
    "pg_dist_authinfo (nodeid, rolename, authinfo) VALUES (0, '{role}', "
    "'password=...'), or the nodes' .pgpass, or a certificate: docs/scaling.md)"
)


def _refused(
    step: DistributionStep,
    done: Sequence[DistributionStep],
    exc: asyncpg.PostgresError,
    role: str,
) -> DistributionError:
    said = [str(getattr(exc, "message", None) or exc).rstrip(". ")]
    for part in ("detail", "hint"):
        if text := getattr(exc, part, None):
            said.append(f"{part.upper()}: {str(text).rstrip('. ')}")
    if REMOTE_LOGIN in said[0]:
        said.append(REMOTE_LOGIN_FIX.format(role=role))
    return DistributionError(
        f"Citus refused to {step.action} {step.table}: {'; '.join(said)}. "
        f"{_progress(done)} Fix what it names, then run distribute again: it goes on "
        f"from there.",
        table=step.table,
        step=step.action,
        sqlstate=getattr(exc, "sqlstate", None),
        done=[f"{s.action} {s.table}" for s in done],
    )


async def _lock_error(
    conn: Any,
    step: DistributionStep,
    table: Table,
    done: Sequence[DistributionStep],
    exc: asyncpg.PostgresError,
) -> DistributionError:
    holders = await table_lock_holders(conn, {table.qualified: "ACCESS EXCLUSIVE"})
    who = "; ".join(str(h) for h in holders) or "no one any more"
    return DistributionError(
        f"could not {step.action} {step.table}: other sessions held its lock past the "
        f"retries (held by: {who}). {_progress(done)} Run distribute again once they are "
        f"done.",
        table=step.table,
        step=step.action,
        sqlstate=getattr(exc, "sqlstate", None) or "55P03",
        done=[f"{s.action} {s.table}" for s in done],
    )


def _progress(done: Sequence[DistributionStep]) -> str:
    if not done:
        return "No step was done before it."
    return f"The {len(done)} step(s) before it are done and stay so."
