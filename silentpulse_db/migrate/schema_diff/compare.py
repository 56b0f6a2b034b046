"""PURE: the live catalog against the one the files built, object by object.

Before comparing, what legitimately differs between two databases is set alike:
- the role that migrates owns what it made: an owner equal to each database's
  migrating role reads ``<owner>``, and so does that role as a grantee;
- the runbook's grants (grants.py) are expected where the runbook gives them;
- monthly partitions: the jobs make and drop months (months.py); each month is
  compared with a month the files built;
- Citus on a coordinator: its extensions are the operator's (the scratch database has
  none), and what they made (schemas, views in public, functions, sequences, their
  grants) is left out as every extension's own objects are when the catalog is read
  (catalog/), by pg_depend, not by name. Distributed tables are the coordinator's
  ordinary tables to compare; their shards are hidden from the catalog by Citus.
Each excused difference is listed with the rule that excused it. Then one change is
one difference: what belongs to a relation reported whole, and what a partition
inherits from a change reported on its table, are left out.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import Literal, NamedTuple

from ...results.proofs import DriftDifference, DriftExcuse, DriftReport
from ..catalog.queries import REVOKED_FROM_ITSELF
from ..catalog.reader import Catalog, CatalogObject
from .fixes import changed_fix, missing_fix
from .grants import (
    OWNER,
    RUNBOOK_APP_ROLES,
    expect_blanket_grants,
    expect_default_grants,
    named_roles,
)
from .months import (
    RULE_AHEAD,
    Split,
    as_template,
    bound_problem,
    first_by_parent,
    month_fix,
    split,
)

Objects = dict[str, dict[str, CatalogObject]]

# CREATE EXTENSION citus makes citus_columnar too, with no dependency between the two to
# find it by: these names are the one list. Excused where citus is there.
CITUS_EXTENSIONS = ("citus", "citus_columnar")
RULE_CITUS = (
    "Citus, installed by the operator on a Citus coordinator (not by the migration files); "
    "its own objects are not compared"
)


# What prepare_alert_stream_for_citus changes, on purpose, where the log is distributed
# (schema/citus_alerts.py): an index by node of origin for the plain (xid, seq) one, and
# the log's INSERT policy naming its owner for 000022's subquery, which Citus refuses.
CITUS_ALERT_LOG = ("alert_changes_node_xid_seq_idx", "alert_changes_xid_seq_idx")
CITUS_ALERT_POLICY = "alert_changes_written_by_owner"
RULE_CITUS_ALERTS = (
    "the alert stream's layout on Citus (prepare_alert_stream_for_citus, run by distribute: "
    "docs/notifications.md, 'On Citus')"
)


class _Live(NamedTuple):
    """What a fix needs of the live database: its migrating role, and each object's
    relation (for telling children from their parents)."""

    owner: str | None
    tables: dict[tuple[str, str], str | None]
    parents: dict[str, str]  # a partition (or a partition's index) -> its parent's


def compare(
    expected: Catalog,
    live: Catalog,
    *,
    version: int | None,
    checked_at: datetime,
    app_roles: tuple[str, ...] = RUNBOOK_APP_ROLES,
) -> DriftReport:
    """The report of ``live`` against ``expected`` (the files' schema at ``version``);
    ``app_roles``: the application roles a blanket grant is excused to (grants.py)."""
    want, have = split(expected), split(live)
    excused: list[DriftExcuse] = []
    rest_want = _normalised(want.rest, expected.owner)
    rest_have = _normalised(have.rest, live.owner)
    for key, obj in list(rest_want.get("sequence", {}).items()):
        if (obj.create or "").startswith("SELECT setval(") and key not in rest_have["sequence"]:
            # The history's sequence, where the live database has no history: only
            # golang-migrate migrated it (the runner adds the history at its next run).
            del rest_want["sequence"][key]
    _excuse_citus(rest_want, rest_have, excused)
    # The default privileges first: a grant they give is theirs, not a blanket grant's,
    # though it too is on every table.
    defaults, differences = expect_default_grants(rest_want, rest_have, live, excused)
    blanket = expect_blanket_grants(rest_want, rest_have, excused, named_roles(live, app_roles))
    differences += _schema_create(live)
    context = _context(expected, live)
    differences += _detached(_differences(rest_want, rest_have, context), want)
    differences += _partition_differences(
        want, have, (expected.owner, live.owner), (blanket, defaults), excused, context
    )
    count = sum(len(items) for items in rest_have.values()) + sum(
        len(items) for month in have.months.values() for items in month.values()
    )
    return DriftReport(
        version=version,
        differences=tuple(sorted(_one_per_change(differences, context), key=_order)),
        excused=tuple(excused),
        objects=count,
        checked_at=checked_at,
    )


def _excuse_citus(want: Objects, have: Objects, excused: list[DriftExcuse]) -> None:
    """Expect Citus's extensions where the live database has citus, and the alert
    stream's layout on Citus where prepare_alert_stream_for_citus made it."""
    extensions = have.get("extension", {})
    if "citus" not in extensions:
        return
    expected = dict(want.get("extension", {}))  # want's own: the catalog stays as read
    for name in CITUS_EXTENSIONS:
        if name in extensions and name not in expected:
            expected[name] = extensions[name]
            excused.append(DriftExcuse("extension", name, RULE_CITUS))
    want["extension"] = expected
    if not any(key.endswith(CITUS_ALERT_LOG[0]) for key in have.get("index", {})):
        return  # the alert stream is as the files make it
    for kind, names in (("index", CITUS_ALERT_LOG), ("policy", (CITUS_ALERT_POLICY,))):
        wanted, found = dict(want.get(kind, {})), have.get(kind, {})
        for key in {*wanted, *found}:
            if not key.endswith(names) or wanted.get(key) == found.get(key):
                continue
            if key in found:
                wanted[key] = found[key]
            else:
                del wanted[key]
            excused.append(DriftExcuse(kind, key, RULE_CITUS_ALERTS))
        want[kind] = wanted


def _order(difference: DriftDifference) -> tuple[str, str]:
    return (difference.kind, difference.key)


def _context(expected: Catalog, live: Catalog) -> _Live:
    tables: dict[tuple[str, str], str | None] = {}
    parents: dict[str, str] = {}
    for catalog in (expected, live):
        for kind, items in catalog.objects.items():
            for key, obj in items.items():
                tables[(kind, key)] = obj.table
                if kind in ("relation", "index") and obj.parent:
                    parents[key] = obj.parent
    return _Live(live.owner, tables, parents)


def _normalised(objects: Objects, owner: str | None) -> Objects:
    """``owner`` (the migrating role) as ``<owner>`` in owners and grants."""
    if owner is None:
        return objects
    result = dict(objects)
    result["owner"] = {
        key: obj._replace(value=OWNER + obj.value[len(owner) :])
        if obj.value == owner or obj.value.startswith(owner + REVOKED_FROM_ITSELF)
        else obj
        for key, obj in objects.get("owner", {}).items()
    }
    result["grant"] = {
        _grantee_as_owner(key, owner): obj for key, obj in objects.get("grant", {}).items()
    }
    return result


def _grantee_as_owner(key: str, owner: str) -> str:
    relation, _, rest = key.partition(" to ")
    grantee, _, privilege = rest.rpartition(": ")
    return f"{relation} to {OWNER if grantee == owner else grantee}: {privilege}"


def _differences(
    want: Objects, have: Objects, context: _Live, *, month: tuple[str, str] | None = None
) -> list[DriftDifference]:
    """Object by object; ``month``: (the template name, the real one) of a partition
    compared with a month the files built, put back in what is reported."""
    return list(_walk(want, have, context, month))


def _walk(
    want: Objects, have: Objects, context: _Live, month: tuple[str, str] | None
) -> Iterator[DriftDifference]:
    def real(text: str | None) -> str | None:
        return text if text is None or month is None else text.replace(*month)

    for kind in sorted(set(want) | set(have)):
        mine, theirs = want.get(kind, {}), have.get(kind, {})
        for key in sorted(set(mine) | set(theirs)):
            shown = real(key) or key
            expected, actual = mine.get(key), theirs.get(key)
            table = (expected or actual or CatalogObject("", None, None, None)).table
            relation = want.get("relation", {}).get(table or "")
            partitioned = relation is not None and relation.value.startswith("kind p")
            if actual is None and expected is not None:
                change: Literal["missing", "unexpected", "changed"] = "missing"
                fix = missing_fix(kind, expected, partitioned=partitioned)
            elif expected is None and actual is not None:
                change, fix = "unexpected", actual.drop
            elif expected is not None and actual is not None and expected.value != actual.value:
                change = "changed"
                fix = (
                    _owner_fix(shown, expected.value, actual.value, context)
                    if kind == "owner"
                    else changed_fix(kind, shown, expected, actual, partitioned=partitioned)
                )
            else:
                continue
            yield DriftDifference(
                kind=kind,
                key=shown,
                change=change,
                expected=real(None if expected is None else expected.value),
                actual=real(None if actual is None else actual.value),
                fix=fix,
            )


def _detached(differences: list[DriftDifference], want: Split) -> list[DriftDifference]:
    """A table the live database holds where the files build a month of a partitioned
    table: a month detached by hand (retention detaches and drops in one transaction).
    Its fix attaches it again."""
    result = []
    for difference in differences:
        parent = want.parents.get(difference.key)
        if difference.kind == "relation" and difference.change == "unexpected" and parent:
            bound = want.months[difference.key]["relation"][difference.key].bound
            difference = DriftDifference(
                "partition",
                difference.key,
                "changed",
                f"a month of {parent}",
                "detached: a table of its own, its row-level security and policies unchecked",
                f"ALTER TABLE {parent} ATTACH PARTITION {difference.key} {bound}",
            )
        result.append(difference)
    return result


def _owner_fix(key: str, expected: str, actual: str, context: _Live) -> str | None:
    if expected != OWNER or context.owner is None:
        return None
    if actual.startswith(OWNER + REVOKED_FROM_ITSELF):
        # Its own privileges given back: ALL is what an owner holds by default.
        what = "FUNCTION " if key.startswith("function ") else ""
        target = key.removeprefix("function ").removeprefix("relation ")
        return f"GRANT ALL ON {what}{target} TO {_quoted(context.owner)}"
    if key.startswith("function "):
        return f"ALTER FUNCTION {key.removeprefix('function ')} OWNER TO {context.owner}"
    relation = key.removeprefix("relation ")
    if key == relation:
        return None
    return f"ALTER TABLE {relation} OWNER TO {context.owner}"


def _schema_create(live: Catalog) -> list[DriftDifference]:
    """CREATE on a schema to PUBLIC or a role other than the one that migrates (the
    runbook gives it to that one alone): read on the live database, no scratch needed."""
    return [
        DriftDifference(
            "schema grant",
            f"{schema} to {grantee}: CREATE",
            "unexpected",
            None,
            "granted",
            f"REVOKE CREATE ON SCHEMA {_quoted(schema)} FROM "
            + (grantee if grantee == "PUBLIC" else _quoted(grantee)),
        )
        for schema, grantee in live.schema_create
        if grantee != live.owner
    ]


def _quoted(name: str) -> str:
    return name if re.fullmatch(r"[a-z_][a-z0-9_]*", name) else '"' + name.replace('"', '""') + '"'


def _partition_differences(
    want: Split,
    have: Split,
    owners: tuple[str | None, str | None],
    grants: tuple[dict[str, str], dict[str, str]],
    excused: list[DriftExcuse],
    context: _Live,
) -> list[DriftDifference]:
    """Each live month against a month the files built. Months the jobs made ahead are
    excused; a month the files build now (this one, the next ones) and the live
    database lacks is drift: the partition job (``silentpulse-db partitions``) makes it.
    ``grants``: the runbook's blanket grants and default privileges on tables
    ("grantee: privilege" -> rule); a month has the latter's, whoever made it."""
    table_wide = {**grants[0], **grants[1]}
    differences: list[DriftDifference] = []
    for partition in sorted(set(want.parents) - set(have.parents)):
        if partition in have.rest.get("relation", {}):
            continue  # detached by hand: the table itself is reported (_detached)
        differences.append(
            DriftDifference(
                "partition",
                partition,
                "missing",
                "a month the partition job (silentpulse-db partitions) makes",
                None,
                month_fix(partition, want.parents[partition]),
            )
        )
    templates = first_by_parent(want.parents)
    for partition, parent in sorted(have.parents.items()):
        if partition not in want.parents:
            excused.append(DriftExcuse("partition", partition, RULE_AHEAD))
        problem = bound_problem(partition, have.months[partition]["relation"][partition])
        if problem:
            differences.append(
                DriftDifference("partition", partition, "changed", "its month", problem)
            )
        reference = templates.get(parent)
        if reference is None:
            continue  # the files build no month of it today: nothing to compare with
        mine = as_template(
            reference, parent, _normalised(want.months[reference], owners[0]), target=partition
        )
        theirs = as_template(
            partition, parent, _normalised(have.months[partition], owners[1]), target=partition
        )
        generic = parent.split(".", 1)[1] + "_p*"
        name = partition.split(".", 1)[1]
        for key, obj in theirs.get("grant", {}).items():
            rule = table_wide.get(key.partition(" to ")[2])
            if rule is not None and key not in mine.setdefault("grant", {}):
                mine["grant"][key] = obj
                excused.append(DriftExcuse("grant", key.replace(generic, name), rule))
        _expect_default_grants(mine, theirs, grants[1], partition, generic)
        differences += _differences(mine, theirs, context, month=(generic, name))
    return differences


def _expect_default_grants(
    mine: Objects, theirs: Objects, defaults: dict[str, str], partition: str, generic: str
) -> None:
    """A month its owner holds gets the owner's default privileges' grants, whoever made
    it (migration 000023): one missing is drift, with the GRANT."""
    relation = partition.split(".", 1)[0] + "." + generic
    owner = theirs.get("owner", {}).get(f"relation {relation}")
    if owner is None or owner.value != OWNER:
        return  # another owner: reported as such
    for rest in defaults:
        key = f"{relation} to {rest}"
        if key not in mine.setdefault("grant", {}):
            grantee, _, privilege = rest.rpartition(": ")
            mine["grant"][key] = CatalogObject(
                "granted", relation, f"GRANT {privilege} ON {partition} TO {grantee}", None
            )


def _one_per_change(differences: list[DriftDifference], context: _Live) -> list[DriftDifference]:
    """Leave out what follows from another difference reported: the columns, indexes,
    grants, ... of a relation reported missing or unexpected as a whole; a partition's
    column, constraint, trigger or index changed as its table's is (one hand-made index
    on alerts is one difference, not one more for each month's copy of it); a CHECK or
    an index whose definition reads differently because a column it names was retyped
    (PostgreSQL adds a cast to it; the column's fix takes it back)."""
    retyped = _retyped(differences)
    whole = {
        d.key
        for d in differences
        if (d.kind == "relation" and d.change != "changed")
        or (d.kind == "partition" and d.actual is not None and d.actual.startswith("detached"))
    }
    seen = {(d.kind, d.key, d.change) for d in differences}

    def follows(difference: DriftDifference) -> bool:
        table = context.tables.get((difference.kind, difference.key))
        if difference.kind == "owner":
            table = difference.key.removeprefix("relation ")
        if difference.kind != "relation" and table in whole:
            return True
        if _names_a_retyped_column(difference, retyped.get(table or "", ())):
            return True
        if difference.kind == "index":
            parent_index = context.parents.get(difference.key)
            return (difference.kind, parent_index, difference.change) in seen
        parent = context.parents.get(table or "")
        if parent is None or table is None or difference.kind not in _INHERITED:
            return False
        inherited = parent + difference.key[len(table) :]
        return (difference.kind, inherited, difference.change) in seen

    return [d for d in differences if not follows(d)]


def _retyped(differences: list[DriftDifference]) -> dict[str, set[str]]:
    """Table -> its columns whose type changed."""
    retyped: dict[str, set[str]] = {}
    for d in differences:
        if (
            d.kind == "column"
            and d.change == "changed"
            and d.expected
            and d.actual
            and d.expected.split(" | ")[0] != d.actual.split(" | ")[0]
        ):
            table, _, column = d.key.rpartition(".")
            retyped.setdefault(table, set()).add(column)
    return retyped


def _names_a_retyped_column(difference: DriftDifference, columns: Iterable[str]) -> bool:
    if difference.kind not in ("constraint", "index") or difference.change != "changed":
        return False
    text = f"{difference.expected} {difference.actual}"
    return any(re.search(rf"(?<![\w$]){re.escape(c)}(?![\w$])", text) for c in columns)


# What a partition takes from its table, and changes with it.
_INHERITED = frozenset({"column", "constraint", "trigger"})
