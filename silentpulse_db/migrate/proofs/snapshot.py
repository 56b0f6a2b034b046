"""A snapshot of a database's schema, as `check` and `baseline` compare it, and the
difference of two.

Each object gets a stable key ("index public.t1_id_idx", "column public.t.id") and a
description of everything a migration could change about it (both read by
migrate/catalog/), so that two snapshots compare object by object and a difference
names the object.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..catalog.reader import CatalogObject, read_objects

# The kinds of object a snapshot holds (catalog/queries.py): what a migration makes,
# not who owns it or what is granted on it (drift compares those).
COMPARED = (
    "schema",
    "extension",
    "type",
    "relation",
    "column",
    "constraint",
    "index",
    "policy",
    "trigger",
    "function",
    "function comment",
)


@dataclass(frozen=True)
class Snapshot:
    """Every object of a schema: {kind: {key: description}}."""

    objects: Mapping[str, Mapping[str, str]]

    def diff(self, other: Snapshot) -> list[str]:
        """Lines naming each object that differs from ``self`` (before) to ``other`` (after)."""
        lines = []
        for kind in sorted(set(self.objects) | set(other.objects)):
            mine, theirs = self.objects.get(kind, {}), other.objects.get(kind, {})
            for key in sorted(set(mine) | set(theirs)):
                if key not in theirs:
                    lines.append(f"{kind} {key}: missing (was: {mine[key]})")
                elif key not in mine:
                    lines.append(f"{kind} {key}: unexpected (now: {theirs[key]})")
                elif mine[key] != theirs[key]:
                    lines.append(f"{kind} {key}: changed from {mine[key]!r} to {theirs[key]!r}")
        return lines

    def without_partitions(self) -> Snapshot:
        """The snapshot without partitions and their columns, constraints, indexes, triggers.

        Which monthly partitions exist depends on when a database was created;
        the partitioned tables themselves stay in.
        """
        relations = self.objects.get("relation", {})
        parts = {k for k, v in relations.items() if "partition of " in v}
        if not parts:
            return self

        def keep(kind: str, key: str, value: str) -> bool:
            if kind == "relation":
                return key not in parts
            if kind == "index":
                return not any(f" ON {p} USING" in value for p in parts)
            return not any(key.startswith(p + ".") for p in parts)

        return Snapshot(
            {
                kind: {k: v for k, v in items.items() if keep(kind, k, v)}
                for kind, items in self.objects.items()
            }
        )

    def count(self, kind: str) -> int:
        return len(self.objects.get(kind, {}))


async def snapshot(conn: Any) -> Snapshot:
    """Read the schema of the connected database."""
    objects = await read_objects(conn, COMPARED, statements=False)
    return Snapshot(
        {kind: {key: _described(o) for key, o in items.items()} for kind, items in objects.items()}
    )


def _described(obj: CatalogObject) -> str:
    """Its value, and a partition's bound: read apart for drift, which compares the
    months of two databases one by one; a snapshot compares it with the rest."""
    return obj.value if obj.bound is None else f"{obj.value} | bound {obj.bound}"
