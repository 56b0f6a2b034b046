"""CREATE INDEX CONCURRENTLY on a partitioned table, which PostgreSQL refuses ("cannot
create index on partitioned table concurrently"), run as pg_partman runs it.

A file whose one statement is ``CREATE [UNIQUE] INDEX CONCURRENTLY [IF NOT EXISTS] name
ON <partitioned table> (...)`` runs in steps, each in a transaction of its own:

1. ``CREATE [UNIQUE] INDEX IF NOT EXISTS name ON ONLY <table> (...)``: the parent's
   index, INVALID until every partition has its own attached; nothing is built (SHARE
   on the parent for an instant). From then on PostgreSQL gives a partition created or
   attached meanwhile (the partition job's next month) an index of its own, attached.
2. Each partition that is partitioned itself gets the same ON ONLY index, attached to
   its parent's; each leaf partition with no index attached yet gets
   ``CREATE [UNIQUE] INDEX CONCURRENTLY <leaf>_<suffix> ON <leaf> (...)`` (reads and
   writes go on), then ``ALTER INDEX <parent's> ATTACH PARTITION <leaf>_<suffix>``
   (catalog work: ACCESS EXCLUSIVE on the new leaf index and SHARE UPDATE EXCLUSIVE on
   the parent's, for an instant). The last attach makes the parent's index VALID.
3. Again from 2, until a pass finds nothing left to do.

The steps whose lock blocks writes (1 and the ATTACH) wait at most the run's table-lock
timeout and are tried again with backoff, as a transactional migration is; the builds
wait for older transactions, as any concurrent build does.

It resumes from any point: an INVALID parent's index is work in progress (never
dropped); a partition with an index attached is done; a leaf index of its name that is
VALID and the file's is attached as it is; an INVALID one (a build that was killed) is
dropped concurrently and built anew, once no backend is still building it; a partition
dropped meanwhile (retention) is passed over. The leaf index names:
index_healing.leaf_index_name.

``-- silentpulse: partitions only`` builds step 2's leaf indexes alone: no index on the
parent, none attached. That is what a later migration needs to make them the
partitions' keys and then the parent's (ADD CONSTRAINT ... USING INDEX on each
partition, then ADD PRIMARY KEY on the parent, which takes them as they are):
PostgreSQL can neither make a key of a partitioned index nor move a partition's index
from one parent index to another (000045-000047, for 000048).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Sequence
from typing import Any, NamedTuple, Protocol

import asyncpg

from ...defaults import DDL_RETRY_FIRST, DDL_RETRY_MAX
from ...errors import MigrationFailedError, TableLockHolder, TableLockTimeoutError
from ...postgres.blockers import table_lock_holders
from ...postgres.connect import is_connection_lost, rollback
from ...settings import DDLLimits, milliseconds
from ..files.directives import duration_text
from ..files.lock_levels import LockTaken
from ..files.source import MigrationFile, MigrationSource
from ..files.statements import ParsedSQL, Statement
from ..plan import CLI, Step, version_label
from .error_messages import failed, interrupted
from .index_healing import (
    index_facts,
    leaf_index_name,
    regclass_text,
    same_shape,
    wait_for_builders,
)

logger = logging.getLogger("silentpulse_db.migrate")


class IndexTarget(NamedTuple):
    """The file's CREATE INDEX CONCURRENTLY, read by PostgreSQL's parser (pglast)."""

    name: str  # the index's
    schema: str | None  # the table's schema, as written (None: the search_path's)
    table: str
    if_not_exists: bool
    sql: str  # the statement

    @property
    def relation(self) -> str:
        """The table as to_regclass() reads it."""
        return regclass_text(f"{self.schema}.{self.table}" if self.schema else self.table)

    def render(
        self, name: str, *, schema: str | None, table: str, only: bool, if_not_exists: bool
    ) -> str:
        """The file's index as ``name`` on ``schema.table``: on the parent alone (``only``,
        no CONCURRENTLY), else concurrently, on a leaf."""
        from pglast import ast, parse_sql
        from pglast.stream import RawStream

        node: Any = parse_sql(self.sql)[0].stmt
        node.idxname = name
        node.concurrent = not only
        node.if_not_exists = if_not_exists
        node.relation = ast.RangeVar(
            schemaname=schema, relname=table, inh=not only, relpersistence="p"
        )
        return str(RawStream()(node))


def read_target(sql: str) -> IndexTarget | None:
    """The target of a CREATE INDEX CONCURRENTLY ``sql``; None for any other statement."""
    from pglast import parse_sql
    from pglast.parser import ParseError

    try:
        (raw,) = parse_sql(sql)
    except (ParseError, ValueError):
        return None
    node: Any = raw.stmt
    if type(node).__name__ != "IndexStmt" or not node.concurrent or not node.idxname:
        return None
    relation = node.relation
    return IndexTarget(
        node.idxname, relation.schemaname, relation.relname, bool(node.if_not_exists), sql
    )


_KIND = "SELECT relkind::text FROM pg_class WHERE oid = to_regclass($1)"


async def partitioned_target(conn: Any, parsed: ParsedSQL) -> IndexTarget | None:
    """The file's target when its CREATE INDEX CONCURRENTLY names a partitioned table
    (one query); None for any other file."""
    if parsed.concurrent_index is None or len(parsed.statements) != 1:
        return None
    target = read_target(parsed.statements[0].sql)
    if target is None or await conn.fetchval(_KIND, target.relation) != "p":
        return None
    return target


# The partition tree under $1, parents first, and the index of ours (the parent index
# $2 and the indexes attached to it, at any depth) that each relation has, if any.
TREE = """
    WITH RECURSIVE ours (idx) AS (
        SELECT to_regclass($2)::oid WHERE to_regclass($2) IS NOT NULL
        UNION ALL
        SELECT h.inhrelid FROM pg_inherits AS h JOIN ours AS o ON h.inhparent = o.idx
    )
    SELECT t.relid::oid AS oid, n.nspname AS schema, c.relname AS name,
           c.relkind::text AS kind, t.parentrelid::oid AS parent, t.level,
           (SELECT x.indexrelid::regclass::text FROM ours AS o
            JOIN pg_index AS x ON x.indexrelid = o.idx
            WHERE x.indrelid = t.relid) AS attached
    FROM pg_partition_tree(to_regclass($1)) AS t
    JOIN pg_class AS c ON c.oid = t.relid
    JOIN pg_namespace AS n ON n.oid = c.relnamespace
    ORDER BY t.level, n.nspname, c.relname
"""
# What holds a name a partition's index should have: the relation, its table (an index),
# whether it is valid, its definition, and the index it is attached to.
HOLDS_NAME = """
    SELECT c.relkind::text AS kind, x.indrelid::oid AS on_table, x.indisvalid AS valid,
           pg_get_indexdef(c.oid) AS definition,
           (SELECT h.inhparent::regclass::text FROM pg_inherits AS h
            WHERE h.inhrelid = c.oid) AS attached_to
    FROM pg_class AS c LEFT JOIN pg_index AS x ON x.indexrelid = c.oid
    WHERE c.oid = to_regclass($1)
"""


class Relation(NamedTuple):
    """A partitioned table or one of its partitions, as TREE reads it."""

    oid: int
    schema: str
    name: str
    kind: str  # pg_class.relkind: "p" partitioned, "r" a leaf, "f" a foreign table
    parent: int | None
    level: int
    attached: str | None  # its index of ours, attached (regclass text)

    @property
    def qualified(self) -> str:
        return regclass_text(f"{self.schema}.{self.name}")


class Runner(Protocol):
    """What a build needs of the runner running its file (outside_transaction.py)."""

    conn: Any
    source: MigrationSource
    step: Step | None
    statement_timeout: float | None
    build_wait: float
    ddl: DDLLimits


class _Steps:
    """A partitioned build's steps on the runner's connection, its version ``dirty``
    meanwhile: each failure the file's, each lock wait bounded and retried."""

    def __init__(
        self, outside: Runner, target: IndexTarget, statement: Statement, dirty: int
    ) -> None:
        self.outside = outside
        self.conn = outside.conn
        self.target = target
        self.statement = statement
        self.dirty = dirty
        assert outside.step is not None
        self.file = outside.step.file
        self.attach = not self.file.directives.partitions_only
        timeout = self.file.directives.lock_timeout
        self.lock_timeout = outside.ddl.table_lock_timeout if timeout is None else timeout

    async def _attach(self, parent: str, child: str) -> None:
        await self._locked(
            f"ALTER INDEX {parent} ATTACH PARTITION {child}",
            {child: "ACCESS EXCLUSIVE", parent: "SHARE UPDATE EXCLUSIVE"},
        )

    async def _locked(self, sql: str, locks: dict[str, str]) -> None:
        """``sql`` in a transaction of its own waiting at most the table-lock timeout for
        its ``locks`` (relation -> mode), so that the queries queued behind it are held up
        no longer; tried again with backoff (as lock_retries.py does) for retry_for."""
        timeout = self.lock_timeout
        limit = f"SET LOCAL lock_timeout = {milliseconds(timeout)}; " if timeout else ""
        started = time.monotonic()
        pause, attempt = DDL_RETRY_FIRST, 1
        while True:
            try:
                await self._execute(f"BEGIN; {limit}{sql}; COMMIT", lost_locks=True)
                return
            except _LostLock as lost:
                await rollback(self.conn)
                blockers = await table_lock_holders(self.conn, locks)
                who = "; ".join(map(str, blockers)) or "(released meanwhile)"
                waited = time.monotonic() - started
                if waited + pause > self.outside.ddl.retry_for:
                    raise self._locked_out(sql, attempt, waited, who, blockers) from lost.error
                logger.warning(
                    "%s: %s (attempt %d): %s; held by: %s; retrying in %.1fs",
                    self.file.location,
                    "a deadlock with another session"
                    if lost.deadlock
                    else f"a lock stayed out of reach for {self._wait}",
                    attempt,
                    sql,
                    who,
                    pause,
                )
            await asyncio.sleep(pause * (0.5 + random.random()))  # jitter: replicas differ
            pause, attempt = min(pause * 2, DDL_RETRY_MAX), attempt + 1

    @property
    def _wait(self) -> str:
        return duration_text(self.lock_timeout) if self.lock_timeout else "no limit"

    async def _execute(self, sql: str, *, lost_locks: bool = False) -> None:
        """One step; a failure is the file's (the version stays dirty)."""
        try:
            await self.conn.execute(sql)
        except asyncpg.PostgresError as exc:
            if lost_locks and exc.sqlstate in ("55P03", "40P01"):
                raise _LostLock(exc) from None
            if is_connection_lost(exc):
                raise self._interrupted(exc) from None
            await rollback(self.conn)
            raise failed(
                self.outside.source,
                self.file,
                _Doing(exc, sql),
                offset=self.statement.offset,
                position=None,
                dirty_version=self.dirty,
                run_timeout=self.outside.statement_timeout,
                step=self.outside.step,
            ) from None
        except Exception as exc:
            if is_connection_lost(exc):
                raise self._interrupted(exc) from None
            raise

    def _interrupted(self, exc: BaseException) -> MigrationFailedError:
        return interrupted(
            self.file,
            exc,
            dirty_version=self.dirty,
            step=self.outside.step,
            source=self.outside.source,
        )

    def _refused(self, why: str) -> MigrationFailedError:
        return MigrationFailedError(
            f"migration failed: {self.file.location}: {why}. The partitions done so far "
            f"are kept; the database is left dirty at version {version_label(self.dirty)}: "
            f"run `{CLI} up` again once that is done, and the build goes on.",
            file=self.file.location,
            dirty=True,
        )

    def _locked_out(
        self,
        sql: str,
        attempts: int,
        waited: float,
        who: str,
        blockers: Sequence[TableLockHolder],
    ) -> TableLockTimeoutError:
        error = TableLockTimeoutError(
            f"migration failed: {self.file.location}: `{sql}` could not get its locks: "
            f"{attempts} attempt(s) over {waited:.0f}s, each waiting at most {self._wait}, "
            f"so that queries on the table were held up no longer. Held by: {who}. The "
            f"partitions done so far are kept; the database is left dirty at version "
            f"{version_label(self.dirty)}. End or wait for that transaction, then run "
            f"`{CLI} up` again: the build goes on from there (or raise --ddl-retry-for).",
            file=self.file.location,
            blockers=blockers,
        )
        error.dirty = True
        return error


class PartitionedBuild(_Steps):
    """Runs one partitioned file's build (see the module's doc)."""

    async def run(self) -> None:
        top = await self._parent() if self.attach else None
        if self.attach and top is None:
            return
        while await self._pass(top):
            pass

    async def _parent(self) -> str | None:
        """Step 1: the parent's index (regclass text); None when IF NOT EXISTS met another
        index of that name, which PostgreSQL would leave as it is too."""
        target = self.target
        name = f"{target.schema}.{target.name}" if target.schema else target.name
        facts = await index_facts(self.conn, name, target.sql)
        if facts.exists and not facts.matches and target.if_not_exists:
            logger.warning(
                "%s: %s, and the file says IF NOT EXISTS: left as it is",
                self.file.location,
                facts.describe(name),
            )
            return None
        if not facts.exists or not facts.matches:
            # Another index of that name (no IF NOT EXISTS): PostgreSQL says it exists.
            sql = target.render(
                target.name,
                schema=target.schema,
                table=target.table,
                only=True,
                if_not_exists=not facts.exists,
            )
            await self._locked(sql, {target.relation: "SHARE"})
        top = await self.conn.fetchval("SELECT to_regclass($1)::text", regclass_text(name))
        return str(top)

    async def _pass(self, top: str | None) -> bool:
        """Steps 2-3: one pass over the tree; whether it did anything."""
        rows = await self.conn.fetch(TREE, self.target.relation, top)
        relations = [Relation(*row) for row in rows]
        ours = {r.oid: r.attached for r in relations}
        worked = False
        for rel in relations[1:]:
            if rel.attached is not None:
                continue
            parent = ours.get(rel.parent) if self.attach and rel.parent else None
            if self.attach and parent is None:
                continue  # its parent's index is not there yet: the next pass
            if rel.kind == "p":
                if self.attach:
                    ours[rel.oid] = await self._intermediate(rel, str(parent))
                    worked = True
            elif rel.kind == "r":
                worked = await self._leaf(rel, parent) or worked
            else:
                raise self._refused(
                    f"partition {rel.qualified} is a foreign table, which cannot have an "
                    f"index (PostgreSQL's own CREATE INDEX on the parent refuses it too for "
                    f"a unique index): detach it, or build the index on the other "
                    f"partitions by hand"
                )
        return worked

    async def _intermediate(self, rel: Relation, parent: str) -> str:
        """A partition partitioned itself: its own ON ONLY index, attached to ``parent``."""
        name = leaf_index_name(rel.name, self.target.name, self.target.table)
        qualified = regclass_text(f"{rel.schema}.{name}")
        holder = await self._holder(rel, qualified)
        if holder is None:
            sql = self.target.render(
                name, schema=rel.schema, table=rel.name, only=True, if_not_exists=False
            )
            await self._locked(sql, {rel.qualified: "SHARE"})
        await self._attach(parent, qualified)
        return qualified

    async def _leaf(self, rel: Relation, parent: str | None) -> bool:
        """A leaf partition with no index of ours attached: build its index concurrently
        (unless it holds it already), then attach it to ``parent`` (if any). Whether it
        did anything."""
        name = leaf_index_name(rel.name, self.target.name, self.target.table)
        qualified = regclass_text(f"{rel.schema}.{name}")
        holder = await self._holder(rel, qualified)
        if holder is not None and not holder["valid"]:
            # A killed run's build, perhaps still going on without its client.
            await wait_for_builders(
                self.conn, self.file, f"{rel.schema}.{name}", self.outside.build_wait
            )
            holder = await self._holder(rel, qualified)
        if holder is not None and not holder["valid"]:
            logger.warning(
                "%s: index %s is INVALID (a failed earlier build): dropping it concurrently "
                "to build it again",
                self.file.location,
                qualified,
            )
            await self._execute(f"DROP INDEX CONCURRENTLY IF EXISTS {qualified}")
            holder = None
        worked = False
        try:
            if holder is None:
                sql = self.target.render(
                    name, schema=rel.schema, table=rel.name, only=False, if_not_exists=False
                )
                await self._execute(sql)
                worked = True
            if parent is not None:
                await self._attach(parent, qualified)
                worked = True
        except MigrationFailedError as exc:
            if exc.sqlstate != "42P01":
                raise
            logger.info(
                "%s: partition %s is gone (dropped meanwhile): passed over",
                self.file.location,
                rel.qualified,
            )
            return True  # the next pass reads the tree again
        return worked

    async def _holder(self, rel: Relation, qualified: str) -> Any:
        """What holds the name of ``rel``'s index (None: nothing): refused unless it is
        an index of ``rel`` defined as the file's, attached to no other index."""
        row = await self.conn.fetchrow(HOLDS_NAME, qualified)
        if row is None:
            return None
        if row["kind"] not in ("i", "I") or row["on_table"] != rel.oid:
            raise self._refused(
                f"the name {qualified} the build gives the index of partition "
                f"{rel.qualified} is taken by another relation: rename it"
            )
        if row["attached_to"] is not None:
            raise self._refused(
                f"index {qualified} of partition {rel.qualified} is attached to index "
                f"{row['attached_to']}, not to this file's"
            )
        # An INVALID leaf index is a failed build, dropped whatever it was; a partitioned
        # one (INVALID until its partitions are attached) must be the file's.
        if (row["valid"] or row["kind"] == "I") and not same_shape(
            row["definition"], self.target.sql
        ):
            raise self._refused(
                f"index {qualified} of partition {rel.qualified} is not the one the file "
                f"builds (found: {row['definition']}): drop or rename it"
            )
        return row


class _LostLock(Exception):
    """A step lost a lock conflict (lock timeout or deadlock) and is tried again."""

    def __init__(self, error: asyncpg.PostgresError) -> None:
        super().__init__(str(error))
        self.error = error
        self.deadlock = error.sqlstate == "40P01"


class _Doing:
    """A server error of one step, with the step the engine ran for the file."""

    def __init__(self, exc: asyncpg.PostgresError, sql: str) -> None:
        self.sqlstate = exc.sqlstate
        self.message = getattr(exc, "message", None) or str(exc)
        self.detail = getattr(exc, "detail", None)
        self.hint = getattr(exc, "hint", None)
        own = getattr(exc, "context", None)
        step = f"the engine ran, for the partitioned table: {sql}"
        self.context = f"{own}; {step}" if own else step


# --- what a dry run shows ----------------------------------------------------------------


class PlannedBuild(NamedTuple):
    """A partitioned file's build as it would run now: its locks, and its steps in words."""

    locks: tuple[LockTaken, ...]
    steps: tuple[str, ...]


async def plan_build(conn: Any, file: MigrationFile, parsed: ParsedSQL) -> PlannedBuild | None:
    """What the build of ``file`` would do on the database as it is (read-only queries);
    None unless it is a CREATE INDEX CONCURRENTLY on a partitioned table."""
    target = await partitioned_target(conn, parsed)
    if target is None:
        return None
    attach = not file.directives.partitions_only
    name = f"{target.schema}.{target.name}" if target.schema else target.name
    locks: list[LockTaken] = []
    how = (
        "each leaf partition's index built concurrently, none attached"
        if not attach
        else "the parent's index ON ONLY, then each partition's built concurrently and attached"
    )
    steps = [f"{_shown(target.schema, target.table)} is partitioned: {how}:"]
    top: str | None = None
    if attach:
        facts = await index_facts(conn, name, target.sql)
        if facts.exists and facts.valid and facts.matches:
            return PlannedBuild((), (f"index {name} is complete: nothing left to build",))
        if facts.exists:
            top = await conn.fetchval("SELECT to_regclass($1)::text", regclass_text(name))
            steps.append(f"{facts.describe(name)}: going on with the partitions left")
        else:
            steps.append(
                target.render(
                    target.name,
                    schema=target.schema,
                    table=target.table,
                    only=True,
                    if_not_exists=True,
                )
            )
            locks.append(LockTaken(_shown(target.schema, target.table), "SHARE", note=_ONLY_NOTE))
    relations = [Relation(*row) for row in await conn.fetch(TREE, target.relation, top)]
    ours = {rel.oid: rel.attached for rel in relations}
    if relations and ours[relations[0].oid] is None:
        ours[relations[0].oid] = regclass_text(name)
    done = 0
    for rel in relations[1:]:
        if (
            rel.attached is not None
            or rel.kind not in ("p", "r")
            or (rel.kind == "p" and not attach)
        ):
            done += rel.attached is not None
            continue
        leaf = leaf_index_name(rel.name, target.name, target.table)
        qualified = regclass_text(f"{rel.schema}.{leaf}")
        holder = await conn.fetchrow(HOLDS_NAME, qualified)
        if holder is not None and not holder["valid"] and rel.kind == "r":
            steps.append(f"DROP INDEX CONCURRENTLY IF EXISTS {qualified} (INVALID: a failed build)")
            holder = None
        mine = holder is None or not (holder["valid"] or rel.kind == "p")
        if not mine and (
            holder["attached_to"] is not None or not same_shape(holder["definition"], target.sql)
        ):
            steps.append(f"stops here: {qualified} is not this file's: {holder['definition']}")
            break
        if holder is not None and not attach:
            done += 1  # built already
            continue
        if holder is None:
            steps.append(
                target.render(
                    leaf,
                    schema=rel.schema,
                    table=rel.name,
                    only=rel.kind == "p",
                    if_not_exists=False,
                )
            )
            if rel.kind == "r":
                locks.append(
                    LockTaken(
                        _shown(rel.schema, rel.name),
                        "SHARE UPDATE EXCLUSIVE",
                        scans=True,
                        note=_BUILD_NOTE,
                    )
                )
            else:
                locks.append(LockTaken(_shown(rel.schema, rel.name), "SHARE", note=_ONLY_NOTE))
        if attach:
            steps.append(f"ALTER INDEX {ours.get(rel.parent or 0)} ATTACH PARTITION {qualified}")
            locks.append(LockTaken(_shown(rel.schema, leaf), "ACCESS EXCLUSIVE", note=_ATTACH_NOTE))
            ours[rel.oid] = qualified
    if done:
        steps.append(f"({done} partition(s) have their index already: left as they are)")
    return PlannedBuild(tuple(locks), tuple(steps))


def _shown(schema: str | None, name: str) -> str:
    return f"{schema}.{name}" if schema else name


_ONLY_NOTE = "ON ONLY: nothing built; an instant, under the table-lock timeout, retried"
_BUILD_NOTE = "CREATE INDEX CONCURRENTLY scans the partition without blocking writes"
_ATTACH_NOTE = (
    "ATTACH PARTITION of the new index: writes to its partition wait for an instant, "
    "under the table-lock timeout, retried"
)
