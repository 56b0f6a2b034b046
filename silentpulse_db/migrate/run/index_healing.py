"""Concurrent index builds and drops that did not complete, and what proves an index is
a file's.

A CREATE INDEX CONCURRENTLY that stops partway leaves its version dirty and its index
INVALID; or complete and VALID, when its client was killed and the server went on
building without it (a build shorter than client_connection_check_interval finishes
before the server notices). A DROP INDEX CONCURRENTLY that stops partway leaves the
index INVALID. Before such a file runs (:func:`before`):

- a backend still building or dropping that index is waited for, at most the run's
  lock wait, saying whom it waits for (dropping the index under it, or failing, would
  waste its work);
- a build whose index is already there, VALID and defined as the file's statement
  defines it (:func:`same_definition`), is complete: it is not run again;
- an INVALID index is dropped (concurrently) and built anew;
- a drop whose index is gone is complete.

A build on a partitioned table (run/partitioned_index.py) leaves its parent's index
INVALID until the last partition's is attached: work in progress, resumed, never
dropped. With ``-- silentpulse: partitions only`` there is no parent's index: the
leaves' indexes say how far it got (:func:`partitions_facts`).

After a build the index must be valid (:func:`require_valid`). `force` refuses to record
a version whose own concurrent index is INVALID or missing (:func:`refuse_force`).
run/unfinished.py reads a dirty version with these facts.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from typing import Any, NamedTuple

from ...errors import ForceRefusedError, LockTimeoutError, MigrationFailedError, SilentPulseDBError
from ...postgres.blockers import scrub
from ..files.source import MigrationFile, MigrationSource
from ..files.statements import ParsedSQL, Statement, analyze_cached
from ..plan import CLI, NIL_VERSION, version_label

logger = logging.getLogger("silentpulse_db.migrate")

_FACTS = """
    SELECT i.indisvalid AS valid, pg_get_indexdef(i.indexrelid) AS definition,
           c.relkind = 'I' AS partitioned
    FROM pg_index AS i JOIN pg_class AS c ON c.oid = i.indexrelid
    WHERE i.indexrelid = to_regclass($1)
"""
# Who is building or dropping the index: CREATE INDEX CONCURRENTLY reports its progress
# (naming the index from its first transaction on); DROP INDEX and REINDEX CONCURRENTLY
# hold SHARE UPDATE EXCLUSIVE on the index itself (a query or a write holds weaker locks).
# In this database only: databases cloned from one template share their objects' OIDs.
_BUILDERS = """
    SELECT a.pid, coalesce(a.application_name, '') AS application_name, a.query,
           a.query_start, p.phase
    FROM pg_stat_activity AS a
    LEFT JOIN pg_stat_progress_create_index AS p ON p.pid = a.pid
    WHERE a.pid <> pg_backend_pid() AND a.datname = current_database() AND (
        p.index_relid = to_regclass($1)
        OR EXISTS (
            SELECT 1 FROM pg_locks AS l
            WHERE l.pid = a.pid AND l.locktype = 'relation' AND l.granted
              AND l.relation = to_regclass($1) AND l.mode = 'ShareUpdateExclusiveLock'))
    ORDER BY a.pid
"""
# How often a wait for another backend's build looks again (seconds).
_BUILDER_POLL = 0.2


def regclass_text(index: str) -> str:
    """``index`` ("name" or "schema.name", as the parser spells them) as to_regclass()
    reads it: each part quoted, so that a quoted mixed-case name is found."""
    return ".".join('"' + part.replace('"', '""') + '"' for part in index.split(".", 1))


class IndexFacts(NamedTuple):
    """What the catalog says of an index a migration file builds or drops."""

    exists: bool
    valid: bool = False
    definition: str | None = None  # pg_get_indexdef()
    # Whether it is the index the file's CREATE INDEX statement defines (None: no
    # statement to compare with, or the index is missing).
    matches: bool | None = None
    # A partitioned table's index: INVALID until each partition has its own attached.
    partitioned: bool = False

    def describe(self, index: str) -> str:
        if not self.exists:
            return f"index {index} does not exist"
        if not self.valid and self.partitioned:
            return f"index {index} is INVALID (partitions left to index)"
        if not self.valid:
            return f"index {index} is INVALID"
        if self.matches is False:
            return (
                f"index {index} is valid but is not the one the file builds (found: "
                f"{self.definition})"
            )
        return f"index {index} is complete and valid"


async def index_facts(conn: Any, index: str, statement: str | None = None) -> IndexFacts:
    """The index's state; ``statement``: the CREATE INDEX it should match."""
    row = await conn.fetchrow(_FACTS, regclass_text(index))
    if row is None:
        return IndexFacts(False)
    matches = None if statement is None else same_definition(row["definition"], statement)
    return IndexFacts(True, bool(row["valid"]), row["definition"], matches, row["partitioned"])


def built_index(file: MigrationFile | None) -> tuple[str, str] | None:
    """The index a CREATE INDEX CONCURRENTLY file builds, and its statement; None for any
    other file (or one that cannot be read: it is refused when it is about to run)."""
    parsed = _parsed(file)
    if parsed is None or parsed.concurrent_index is None:
        return None
    return parsed.concurrent_index, parsed.statements[0].sql


def dropped_index(file: MigrationFile | None) -> str | None:
    """The index a file whose one statement is DROP INDEX CONCURRENTLY of one index drops
    ("name" or "schema.name"); None for any other file."""
    parsed = _parsed(file)
    if parsed is None or not parsed.non_transactional or len(parsed.statements) != 1:
        return None
    from pglast import parser  # deferred, as statements.py does

    try:
        ((kind, node),) = json.loads(parser.parse_sql_json(parsed.statements[0].sql))["stmts"][0][
            "stmt"
        ].items()
    except (parser.ParseError, KeyError, IndexError, ValueError):
        return None
    if kind != "DropStmt" or node.get("removeType") != "OBJECT_INDEX":
        return None
    objects = node.get("objects", [])
    if not node.get("concurrent") or len(objects) != 1:
        return None
    parts = [item.get("String", {}).get("sval") for item in objects[0].get("List", {})["items"]]
    return ".".join(parts) if parts and all(parts) else None


def _parsed(file: MigrationFile | None) -> ParsedSQL | None:
    if file is None:
        return None
    try:
        return analyze_cached(file)
    except SilentPulseDBError:
        return None


# --- is it the file's index? ------------------------------------------------------------


def same_definition(found: str, statement: str) -> bool:
    """Whether pg_get_indexdef()'s ``found`` defines the index the CREATE INDEX
    ``statement`` of a file defines: both parsed by PostgreSQL's parser (pglast) and
    compared node by node, after what only says how it is built (CONCURRENTLY, IF NOT
    EXISTS), where the text is (locations), the schema when the file names none (the
    index is found through the same search_path), casts (the server spells
    ``'open'::text`` where a file writes ``'open'``) and how a constant is written
    (``fillfactor='70'`` for ``fillfactor=70``). Anything else that differs (columns,
    uniqueness, method, predicate, INCLUDE, opclass) is another index: a false "no"
    leaves the decision to the operator, never the other way round."""
    ours, theirs = _index_node(statement), _index_node(found)
    if ours is None or theirs is None:
        return False
    if "schemaname" not in ours.get("relation", {}):
        theirs.get("relation", {}).pop("schemaname", None)
    return ours == theirs


def same_shape(found: str, statement: str) -> bool:
    """Whether ``found`` (a partition's index) is the index ``statement`` defines but for
    its name and its table: what each partition of a partitioned build must hold."""
    ours, theirs = _index_node(statement), _index_node(found)
    if ours is None or theirs is None:
        return False
    for node in (ours, theirs):
        node.pop("idxname", None)
        node.pop("relation", None)
    return ours == theirs


def index_table(statement: str) -> tuple[str | None, str] | None:
    """The schema (None: not named) and table a CREATE INDEX ``statement`` names."""
    from pglast import parser  # deferred, as statements.py does

    try:
        (item,) = json.loads(parser.parse_sql_json(statement))["stmts"]
        relation = item["stmt"]["IndexStmt"]["relation"]
    except (parser.ParseError, KeyError, ValueError):
        return None
    return relation.get("schemaname"), str(relation["relname"])


def leaf_index_name(leaf: str, index: str, table: str) -> str:
    """The index a partitioned build gives partition ``leaf``: ``<leaf>_<suffix>``, the
    suffix being ``index`` less ``<table>_`` where it starts so (alerts_tenant_key on
    alerts: alerts_p2026_12_tenant_key), else all of it. A name past PostgreSQL's 63
    bytes keeps the suffix, after as much of the leaf's name as fits and 8 hex digits of
    md5(leaf), so that two long partition names never meet in one (000048 and
    docs/tenancy.md spell the same rule in SQL)."""
    prefix = table + "_"
    suffix = index[len(prefix) :] if index.startswith(prefix) and index != prefix else index
    name = f"{leaf}_{suffix}"
    if len(name.encode()) <= _NAME_BYTES:
        return name
    digest = hashlib.md5(leaf.encode(), usedforsecurity=False).hexdigest()[:8]
    room = _NAME_BYTES - len(f"_{digest}_{suffix}".encode())
    if room < 1:  # the suffix alone leaves no room: a digest of the whole name
        whole = hashlib.md5(name.encode(), usedforsecurity=False).hexdigest()[:8]
        return f"{_bytes_of(name, _NAME_BYTES - 9)}_{whole}"
    return f"{_bytes_of(leaf, room)}_{digest}_{suffix}"


_NAME_BYTES = 63  # PostgreSQL's NAMEDATALEN - 1


def _bytes_of(text: str, size: int) -> str:
    """As much of ``text`` as fits in ``size`` bytes of UTF-8, no character split."""
    return text.encode()[:size].decode(errors="ignore")


_LEAVES = """
    SELECT n.nspname AS schema, c.relname AS name
    FROM pg_partition_tree(to_regclass($1)) AS t
    JOIN pg_class AS c ON c.oid = t.relid
    JOIN pg_namespace AS n ON n.oid = c.relnamespace
    WHERE t.isleaf AND c.relkind = 'r'
    ORDER BY 1, 2
"""
_LEAF_INDEXES = """
    SELECT l.ord, i.indisvalid AS valid, pg_get_indexdef(i.indexrelid) AS definition
    FROM unnest($1::text[]) WITH ORDINALITY AS l (name, ord)
    JOIN pg_index AS i ON i.indexrelid = to_regclass(l.name)
"""


async def partitions_facts(conn: Any, index: str, statement: str) -> IndexFacts:
    """What the partitions of a ``-- silentpulse: partitions only`` build hold: ``exists``
    when any has its index, ``valid`` when every one has it, valid and as ``statement``
    defines it (``matches`` False when one is another index)."""
    target = index_table(statement)
    if target is None:
        return IndexFacts(False)
    schema, table = target
    leaves = await conn.fetch(_LEAVES, regclass_text(f"{schema}.{table}" if schema else table))
    names = [
        regclass_text(f"{leaf['schema']}.{leaf_index_name(leaf['name'], index, table)}")
        for leaf in leaves
    ]
    found = await conn.fetch(_LEAF_INDEXES, names)
    matches = all(same_shape(row["definition"], statement) for row in found)
    valid = len(found) == len(leaves) and all(row["valid"] for row in found) and matches
    return IndexFacts(bool(found), valid, None, matches if found else None)


def _index_node(sql: str) -> dict[str, Any] | None:
    from pglast import parser  # deferred, as statements.py does

    try:
        statements = json.loads(parser.parse_sql_json(sql))["stmts"]
    except (parser.ParseError, ValueError):
        return None
    if len(statements) != 1 or "IndexStmt" not in statements[0]["stmt"]:
        return None
    node = _normal(statements[0]["stmt"]["IndexStmt"])
    assert isinstance(node, dict)
    for how in ("concurrent", "if_not_exists"):
        node.pop(how, None)
    relation = node.get("relation", {})
    node["relation"] = {k: relation[k] for k in ("schemaname", "relname") if k in relation}
    return node


_CONSTANTS = ("ival", "sval", "fval", "boolval", "bsval")


def _normal(node: Any) -> Any:
    """``node`` without locations, casts, or the type a constant was written as."""
    if isinstance(node, list):
        return [_normal(item) for item in node]
    if not isinstance(node, dict):
        return node
    if set(node) == {"TypeCast"}:
        return _normal(node["TypeCast"].get("arg"))
    if len(node) == 1:
        ((kind, inner),) = node.items()
        if kind in ("Integer", "String", "Float", "Boolean", "A_Const") and isinstance(inner, dict):
            return {"const": _constant(inner)}
    return {k: _normal(v) for k, v in node.items() if k != "location"}


def _constant(inner: dict[str, Any]) -> str:
    for key in _CONSTANTS:
        if key in inner:
            value = inner[key]
            if isinstance(value, dict):  # A_Const: {"ival": {"ival": 1}}
                value = next(iter(value.values()), "")
            return str(value).lower() if isinstance(value, bool) else str(value)
    return "NULL" if inner.get("isnull") else ""


# --- before and after a concurrent build or drop ---------------------------------------


async def wait_for_builders(conn: Any, file: MigrationFile, index: str, timeout: float) -> None:
    """Wait while another backend builds or drops ``index`` (a killed runner's build the
    server went on with, a build by hand), at most ``timeout`` seconds; then
    LockTimeoutError naming it. Logs whom it waits for, once."""
    deadline = time.monotonic() + timeout
    said: set[int] = set()
    while True:
        builders = await conn.fetch(_BUILDERS, regclass_text(index))
        if not builders:
            return
        who = "; ".join(_builder(row) for row in builders)
        if time.monotonic() >= deadline:
            raise LockTimeoutError(
                f"{file.location}: timed out after {timeout:.0f}s waiting for another "
                f"backend to finish with index {index}: {who}. Nothing was changed; run "
                f"again once it has finished (or end it: SELECT pg_cancel_backend(pid))."
            )
        if {row["pid"] for row in builders} - said:
            said |= {row["pid"] for row in builders}
            logger.warning(
                "%s: index %s is being built or dropped by another backend (%s): waiting "
                "for it to finish (at most %.0fs) before deciding what is left to do",
                file.location,
                index,
                who,
                timeout,
            )
        await asyncio.sleep(min(_BUILDER_POLL, max(deadline - time.monotonic(), 0.0)))


def _builder(row: Any) -> str:
    phase = f", {row['phase']}" if row["phase"] else ""
    since = f", since {row['query_start']:%Y-%m-%d %H:%M:%S%z}" if row["query_start"] else ""
    return (
        f"pid {row['pid']}, application_name {row['application_name'] or '<none>'!r}"
        f"{since}{phase}, query: {scrub(row['query'], 120)}"
    )


async def before(
    conn: Any, file: MigrationFile, parsed: ParsedSQL, *, wait: float
) -> tuple[Statement, ...] | None:
    """What to run before a concurrent build's or drop's own statement: nothing, or the
    DROP of an INVALID index; None when the file's effect is already complete (its index
    built, valid and as the file defines it; or, for a drop, gone): it is not run again."""
    index = parsed.concurrent_index
    dropped = None if index is not None else dropped_index(file)
    if index is None and dropped is None:
        return ()
    await wait_for_builders(conn, file, index or str(dropped), wait)
    if dropped is not None:
        if not (await index_facts(conn, dropped)).exists:
            logger.info(
                "%s: index %s is already gone: nothing left to drop", file.location, dropped
            )
            return None
        return ()
    assert index is not None
    facts = await build_facts(conn, file, index, parsed.statements[0].sql)
    if facts.exists and facts.valid and facts.matches is not False:
        logger.warning(
            "%s: index %s is already built, valid and as this file defines it (a build "
            "that finished after its run stopped, or one made by hand): recording the "
            "version without building it again",
            file.location,
            index if not file.directives.partitions_only else f"{index} of every partition",
        )
        return None
    if file.directives.partitions_only or (facts.exists and facts.partitioned):
        # Work in progress, not a failure: the build goes on from the partitions done.
        if facts.exists:
            logger.warning(
                "%s: %s: going on with the partitions left", file.location, facts.describe(index)
            )
        return ()
    if facts.exists and not facts.valid:
        logger.warning(
            "%s: index %s is INVALID (a failed earlier build): dropping it concurrently "
            "to build it again",
            file.location,
            index,
        )
        return (Statement(f"DROP INDEX CONCURRENTLY IF EXISTS {regclass_text(index)}", 0),)
    return ()


async def build_facts(
    conn: Any, file: MigrationFile, index: str, statement: str | None
) -> IndexFacts:
    """What the catalog holds of the index ``file`` builds concurrently: the index, or,
    for a ``-- silentpulse: partitions only`` build, each partition's."""
    if file.directives.partitions_only and statement is not None:
        return await partitions_facts(conn, index, statement)
    return await index_facts(conn, index, statement)


async def require_valid(conn: Any, file: MigrationFile, index: str, dirty: int) -> None:
    """MigrationFailedError unless ``index`` exists and is valid (the version stays
    ``dirty``)."""
    built = built_index(file)
    facts = await build_facts(conn, file, index, built[1] if built else None)
    if facts.valid:
        return
    state = "does not exist" if not facts.exists else "is INVALID"
    raise MigrationFailedError(
        f"migration failed: {file.location}: the statement succeeded but index {index} "
        f"{state} (IF NOT EXISTS met an INVALID index?). The database is left dirty at "
        f"version {version_label(dirty)}; run again: the runner drops an INVALID index "
        f"and builds it anew.",
        file=file.location,
        dirty=True,
    )


async def refuse_force(conn: Any, source: MigrationSource, version: int) -> None:
    """ForceRefusedError if ``version``'s up file builds an index concurrently and that
    index is INVALID or missing: recording the version would record as applied an index
    that is not there (a later migration that needs it, such as a foreign key on a unique
    index, then fails on every run). A run heals it instead."""
    migration = None if version == NIL_VERSION else source.get(version)
    built = built_index(migration.up if migration is not None else None)
    if built is None:
        return
    index, statement = built
    assert migration is not None and migration.up is not None
    facts = await build_facts(conn, migration.up, index, statement)
    if facts.valid:
        return
    below = source.previous_version(version)
    raise ForceRefusedError(
        f"not forcing version {version}: {migration.up.location} builds index {index} "
        f"concurrently, and {facts.describe(index)}; recording version {version} would "
        f"record it as applied. Run `{CLI} up` instead: it finishes or rebuilds the index "
        f"and records version {version}. To leave version {version} out instead: "
        f"DROP INDEX CONCURRENTLY IF EXISTS {regclass_text(index)}; then "
        f"`{CLI} force {NIL_VERSION if below is None else below}`.",
        version=version,
    )
