"""Monthly partitions in drift: which ones exist is the lifecycle jobs' business, how
each one is made is the migrations'.

The partition job creates months ahead and retention detaches and drops old ones, so
the live database and a scratch one built today hold different months, and neither
is drift. What is drift is a partition made differently from its siblings in the
files' schema (an index, a policy, a grant or an owner changed on one month), or a
bound that does not match its name. So each live month is compared with a month of
the scratch database, both named ``<table>_p*`` for the comparison.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from ..catalog.reader import Catalog, CatalogObject

_MONTH = re.compile(r"^(?P<table>.+)_p(?P<year>\d{4})_(?P<month>\d{2})$")
_FROM = re.compile(r"FROM \('(\d{4})-(\d{2})-01 00:00:00(\+00)?'\) TO \('(\d{4})-(\d{2})-01 ")

RULE_AHEAD = "monthly partitions: the partition job makes months ahead, retention drops old ones"


class Split(NamedTuple):
    """A catalog's objects apart from its monthly partitions, and those by partition.

    A table named like a month but not attached is no month: retention detaches and
    drops in one transaction, so it is a hand change, compared as any table."""

    rest: dict[str, dict[str, CatalogObject]]
    months: dict[str, dict[str, dict[str, CatalogObject]]]  # partition -> kind -> key
    parents: dict[str, str]  # monthly partition -> its partitioned table


def split(catalog: Catalog) -> Split:
    """Set the monthly partitions apart."""
    relations = catalog.objects.get("relation", {})
    partitioned = {key for key, obj in relations.items() if obj.value.startswith("kind p")}
    parents: dict[str, str] = {}
    for key, obj in relations.items():
        match = _MONTH.match(key)
        if match is not None and match["table"] in partitioned and obj.parent == match["table"]:
            parents[key] = match["table"]
    apart = set(parents)
    rest: dict[str, dict[str, CatalogObject]] = {}
    months: dict[str, dict[str, dict[str, CatalogObject]]] = {p: {} for p in apart}
    for kind, objects in catalog.objects.items():
        rest[kind] = {}
        for key, obj in objects.items():
            owner = _owner_of(kind, key, obj, apart)
            if owner is None:
                rest[kind][key] = obj
            else:
                months[owner].setdefault(kind, {})[key] = obj
    return Split(rest, months, parents)


def _owner_of(kind: str, key: str, obj: CatalogObject, apart: set[str]) -> str | None:
    if kind == "relation":
        return key if key in apart else None
    return obj.table if obj.table in apart else None


def as_template(
    partition: str, parent: str, objects: dict[str, dict[str, CatalogObject]], *, target: str
) -> dict[str, dict[str, CatalogObject]]:
    """A month's objects with its name replaced by ``<parent>_p*`` in keys and values
    (its bound left out): what every month of ``parent`` should look like. Their
    statements name ``target`` instead, the live month a fix is for."""
    name = partition.split(".", 1)[1]
    generic = parent.split(".", 1)[1] + "_p*"
    into = target.split(".", 1)[1]

    def aimed(statement: str | None) -> str | None:
        return None if statement is None else statement.replace(name, into)

    return {
        kind: {
            key.replace(name, generic): obj._replace(
                value=obj.value.replace(name, generic),
                create=aimed(obj.create),
                drop=aimed(obj.drop),
                bound=None,
            )
            for key, obj in items.items()
        }
        for kind, items in objects.items()
    }


def bound_problem(partition: str, obj: CatalogObject) -> str | None:
    """Why ``partition``'s bound does not match the month in its name, if it does not."""
    match = _MONTH.match(partition)
    bound = obj.bound or ""
    found = _FROM.search(bound)
    if match is None:
        return None
    year, month = int(match["year"]), int(match["month"])
    after = (year + month // 12, month % 12 + 1)
    if (
        found
        and (int(found[1]), int(found[2])) == (year, month)
        and (
            int(found[4]),
            int(found[5]),
        )
        == after
    ):
        return None
    return f"its bound is {bound or 'none'}, not the month its name says ({year}-{month:02d})"


def first_by_parent(parents: dict[str, str]) -> dict[str, str]:
    """One month of each partitioned table (the earliest): the template to compare with."""
    chosen: dict[str, str] = {}
    for partition in sorted(parents):
        chosen.setdefault(parents[partition], partition)
    return chosen


def month_fix(partition: str, parent: str) -> str | None:
    """The statement making a missing month as the partition job does (its rows moved
    out of the default partition, its grants and row-level security given); or
    `silentpulse-db partitions`, which makes every month due."""
    match = _MONTH.match(partition)
    if match is None:
        return None
    return (
        f"SELECT silentpulse_create_monthly_partition('{parent}'::regclass, "
        f"DATE '{match['year']}-{match['month']}-01')"
    )
