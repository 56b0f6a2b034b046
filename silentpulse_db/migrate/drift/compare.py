"""PURE: the live catalog against the one the files built, object by object.

Before comparing, what legitimately differs between two databases is set alike:
- the role that migrates owns what it made: an owner equal to each database's
  migrating role reads ``<owner>``, and so does that role as a grantee;
- grants that the live database's default privileges give (a runbook step: ALTER
  DEFAULT PRIVILEGES before the first deploy) are expected on what the owner made;
- monthly partitions: which months exist is the jobs' (partitions.py); each month
  is compared with a month the files built.
Each excused difference is listed with the rule that excused it.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Literal

from ..._reports import DriftDifference, DriftExcuse, DriftReport
from .catalog import Catalog, CatalogObject
from .fixes import changed_fix
from .partitions import (
    RULE_AHEAD,
    RULE_DETACHED,
    Split,
    as_template,
    bound_problem,
    first_by_parent,
    split,
)

OWNER = "<owner>"
RULE_DEFAULT_PRIVILEGES = "granted by the default privileges (ALTER DEFAULT PRIVILEGES, runbook)"
# pg_default_acl's object types, by relation kind (pg_class.relkind in 'kind X').
_OBJTYPE = {"r": "r", "p": "r", "v": "r", "m": "r", "f": "r", "S": "S"}

Objects = dict[str, dict[str, CatalogObject]]


def compare(
    expected: Catalog, live: Catalog, *, version: int | None, checked_at: datetime
) -> DriftReport:
    """The report of ``live`` against ``expected`` (the files' schema at ``version``)."""
    want, have = split(expected), split(live)
    excused: list[DriftExcuse] = []
    rest_want = _normalised(want.rest, expected.owner)
    rest_have = _normalised(have.rest, live.owner)
    table_wide = _expect_default_grants(rest_want, rest_have, live, excused)
    table_wide.update(_expect_blanket_grants(rest_want, rest_have, excused))
    differences = list(_differences(rest_want, rest_have))
    differences += _partition_differences(
        want, have, (expected.owner, live.owner), table_wide, excused
    )
    differences = _without_children(differences, expected, live)
    count = sum(len(items) for items in rest_have.values()) + sum(
        len(items) for month in have.months.values() for items in month.values()
    )
    return DriftReport(
        version=version,
        differences=tuple(sorted(differences, key=lambda d: (d.kind, d.key))),
        excused=tuple(excused),
        objects=count,
        checked_at=checked_at,
    )


def _normalised(objects: Objects, owner: str | None) -> Objects:
    """``owner`` (the migrating role) as ``<owner>`` in owners and grants."""
    if owner is None:
        return objects
    result = dict(objects)
    result["owner"] = {
        key: obj._replace(value=OWNER) if obj.value == owner else obj
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


def _expect_default_grants(
    want: Objects, have: Objects, live: Catalog, excused: list[DriftExcuse]
) -> dict[str, str]:
    """Add to ``want`` the grants live's default privileges give on what its owner made;
    return those on tables ("grantee: privilege" -> rule), for the partitions."""
    defaults = [d for d in live.default_privileges if d[0] == live.owner]
    table_wide = {
        f"{OWNER if grantee == live.owner else grantee}: {privilege}": RULE_DEFAULT_PRIVILEGES
        for _role, grantee, privilege, objtype in defaults
        if objtype == "r"
    }
    kinds = {
        key: obj.value.split(" | ")[0].removeprefix("kind ")
        for key, obj in have.get("relation", {}).items()
    }
    owners = have.get("owner", {})
    for relation, kind in kinds.items():
        if owners.get(f"relation {relation}", CatalogObject("", None, None, None)).value != OWNER:
            continue
        for _role, grantee, privilege, objtype in defaults:
            if _OBJTYPE.get(kind) != objtype:
                continue
            key = f"{relation} to {OWNER if grantee == live.owner else grantee}: {privilege}"
            if key in want.setdefault("grant", {}):
                continue
            found = have.get("grant", {}).get(key)
            want["grant"][key] = found or CatalogObject(
                "granted", relation, f"GRANT {privilege} ON {relation} TO {grantee}", None
            )
            if found is not None:
                excused.append(DriftExcuse("grant", key, RULE_DEFAULT_PRIVILEGES))
    return table_wide


RULE_BLANKET = "a blanket grant: on every table of the schema (GRANT ... ON ALL TABLES, runbook)"


def _expect_blanket_grants(
    want: Objects, have: Objects, excused: list[DriftExcuse]
) -> dict[str, str]:
    """Add to ``want`` a grant the live database holds on every one of its tables (a
    ``GRANT ... ON ALL TABLES IN SCHEMA``, as the runbook does for a database that
    predates its default privileges): one table's extra grant is drift, a role's on
    all of them is not. Returns them ("grantee: privilege" -> rule), for the partitions."""
    blanket: dict[str, str] = {}
    for kinds in (("kind r", "kind p"), ("kind S",)):  # ON ALL TABLES, ON ALL SEQUENCES
        relations = {
            key for key, obj in have.get("relation", {}).items() if obj.value.startswith(kinds)
        }
        holders: dict[str, set[str]] = {}
        for key in have.get("grant", {}):
            relation, _, rest = key.partition(" to ")
            if relation in relations:
                holders.setdefault(rest, set()).add(relation)
        for rest in (rest for rest, on in holders.items() if on == relations):
            _expect_everywhere(want, have, relations, rest, excused)
            if kinds[0] == "kind r":
                blanket[rest] = RULE_BLANKET
    return blanket


def _expect_everywhere(
    want: Objects, have: Objects, relations: set[str], rest: str, excused: list[DriftExcuse]
) -> None:
    """Expect ``rest`` ("grantee: privilege") on each of ``relations``, as found."""
    for relation in relations:
        key = f"{relation} to {rest}"
        if key not in want.setdefault("grant", {}):
            want["grant"][key] = have["grant"][key]
            excused.append(DriftExcuse("grant", key, RULE_BLANKET))


def _differences(
    want: Objects, have: Objects, *, rename: dict[str, str] | None = None
) -> Iterator[DriftDifference]:
    """Object by object; ``rename``: template key -> the real key to report (partitions)."""
    names = rename or {}
    for kind in sorted(set(want) | set(have)):
        mine, theirs = want.get(kind, {}), have.get(kind, {})
        for key in sorted(set(mine) | set(theirs)):
            shown = names.get(key, key)
            if key not in theirs:
                yield _item(kind, shown, "missing", mine[key], None, mine[key].create)
            elif key not in mine:
                yield _item(kind, shown, "unexpected", None, theirs[key], theirs[key].drop)
            elif mine[key].value != theirs[key].value:
                fix = changed_fix(kind, shown, mine[key], theirs[key])
                if kind == "owner":
                    fix = _owner_fix(shown, mine[key].value, have)
                yield _item(kind, shown, "changed", mine[key], theirs[key], fix)


def _item(
    kind: str,
    key: str,
    change: Literal["missing", "unexpected", "changed"],
    expected: CatalogObject | None,
    actual: CatalogObject | None,
    fix: str | None,
) -> DriftDifference:
    return DriftDifference(
        kind=kind,
        key=key,
        change=change,
        expected=None if expected is None else expected.value,
        actual=None if actual is None else actual.value,
        fix=fix,
    )


def _owner_fix(key: str, expected: str, have: Objects) -> str | None:
    relation = key.removeprefix("relation ")
    kind = have.get("relation", {}).get(relation)
    if expected != OWNER or kind is None or not kind.value.startswith(("kind r", "kind p")):
        return None
    return f"ALTER TABLE {relation} OWNER TO <the migrating role>"


def _partition_differences(
    want: Split,
    have: Split,
    owners: tuple[str | None, str | None],
    table_wide: dict[str, str],
    excused: list[DriftExcuse],
) -> list[DriftDifference]:
    """Each live month against a month the files built; the months themselves excused,
    and the grants ``table_wide`` ("grantee: privilege" -> rule) gives every table."""
    want_owner, have_owner = owners
    differences: list[DriftDifference] = []
    templates = first_by_parent(want.parents)
    for partition in sorted(set(want.parents) - set(have.parents)):
        excused.append(DriftExcuse("partition", partition, RULE_AHEAD))
    for table in sorted(have.detached):
        excused.append(DriftExcuse("relation", table, RULE_DETACHED))
    for partition, parent in sorted(have.parents.items()):
        if partition not in want.parents:
            excused.append(DriftExcuse("partition", partition, RULE_AHEAD))
        relation = have.months[partition]["relation"][partition]
        problem = bound_problem(partition, relation)
        if problem:
            differences.append(
                DriftDifference("partition", partition, "changed", "its month", problem)
            )
        reference = templates.get(parent)
        if reference is None:
            continue  # the files build no month of it today: nothing to compare with
        mine = as_template(
            reference, parent, _normalised(want.months[reference], want_owner), target=partition
        )
        theirs = as_template(
            partition, parent, _normalised(have.months[partition], have_owner), target=partition
        )
        generic = parent.split(".", 1)[1] + "_p*"
        name = partition.split(".", 1)[1]
        rename = {
            key: key.replace(generic, name)
            for side in (mine, theirs)
            for items in side.values()
            for key in items
        }
        for key, obj in theirs.get("grant", {}).items():
            rule = table_wide.get(key.partition(" to ")[2])
            if rule is not None and key not in mine.setdefault("grant", {}):
                mine["grant"][key] = obj
                excused.append(DriftExcuse("grant", rename[key], rule))
        differences += _differences(mine, theirs, rename=rename)
    return differences


def _without_children(
    differences: list[DriftDifference], expected: Catalog, live: Catalog
) -> list[DriftDifference]:
    """Leave out a partition's index whose index on the partitioned table is reported
    the same way: it comes and goes with that one (one hand-made index on alerts is one
    difference, not one a month)."""
    reported = {(d.key, d.change) for d in differences if d.kind == "index"}
    indexes = {**expected.objects.get("index", {}), **live.objects.get("index", {})}

    def follows_parent(difference: DriftDifference) -> bool:
        found = indexes.get(difference.key)
        parent = None if found is None else found.parent
        return difference.kind == "index" and (parent, difference.change) in reported

    return [d for d in differences if not follows_parent(d)]
