"""The one statement that brings a changed object back to what the files build, where
one statement does (None where it takes a drop and a create: the report says so).

Pure: from the two catalog objects (expected: the scratch database's; actual: the
live one's) and the object's key.
"""

from __future__ import annotations

import re

from .catalog import CatalogObject

_POLICY_HEAD = re.compile(r"^CREATE POLICY (?P<name>.+?) ON (?P<table>\S+) AS \w+ FOR \w+ ")


def changed_fix(kind: str, key: str, expected: CatalogObject, actual: CatalogObject) -> str | None:
    """The statement turning ``actual`` into ``expected``, or None."""
    if kind == "function":
        return expected.create  # CREATE OR REPLACE FUNCTION ...
    if kind == "index":
        # Not a partitioned table's index: REINDEX leaves that one INVALID.
        if actual.value == expected.value + " (INVALID)" and "CONCURRENTLY" in (
            expected.create or ""
        ):
            return f"REINDEX INDEX CONCURRENTLY {key}"
        return None
    if kind == "constraint":
        if actual.value == expected.value + " NOT VALID":
            table, _, name = key.rpartition(".")
            return f"ALTER TABLE {table} VALIDATE CONSTRAINT {_ident(name)}"
        return None
    if kind == "policy":
        head = _POLICY_HEAD.match(expected.create or "")
        if head is None or _kind_part(expected.value) != _kind_part(actual.value):
            return None  # permissive/restrictive or the command changed: drop and create
        return (
            "ALTER POLICY "
            + head["name"]
            + " ON "
            + head["table"]
            + " "
            + ((expected.create or "")[head.end() :])
        )
    if kind == "trigger" and _without_enabled(expected.value) == _without_enabled(actual.value):
        table, _, name = key.rpartition(".")
        return f"ALTER TABLE {table} ENABLE TRIGGER {_ident(name)}"
    if kind == "column":
        return _column_fix(key, expected.value, actual.value)
    if kind == "relation":
        return _rls_fix(key, expected.value, actual.value)
    return None


def _kind_part(value: str) -> list[str]:
    return value.split(" | ")[:2]  # permissive, command


def _without_enabled(value: str) -> str:
    return value.rsplit(" enabled ", 1)[0]


def _ident(name: str) -> str:
    return name if re.fullmatch(r"[a-z_][a-z0-9_]*", name) else '"' + name.replace('"', '""') + '"'


def _parts(value: str) -> dict[str, str]:
    """A column's description: its type first, then 'not null', 'default ...', ..."""
    items = value.split(" | ")
    parts = {"type": items[0]}
    for item in items[1:]:
        word, _, rest = item.partition(" ")
        parts[word] = rest
    return parts


def _column_fix(key: str, expected: str, actual: str) -> str | None:
    want, have = _parts(expected), _parts(actual)
    if want.get("identity") != have.get("identity") or want.get("generated") != have.get(
        "generated"
    ):
        return None
    table, _, column = key.rpartition(".")
    column = _ident(column)
    steps = []
    if want["type"] != have["type"]:
        steps.append(f"ALTER COLUMN {column} TYPE {want['type']}")
    if ("not" in want) != ("not" in have):
        steps.append(f"ALTER COLUMN {column} {'SET' if 'not' in want else 'DROP'} NOT NULL")
    if want.get("default") != have.get("default"):
        default = want.get("default")
        steps.append(
            f"ALTER COLUMN {column} SET DEFAULT {default}"
            if default is not None
            else f"ALTER COLUMN {column} DROP DEFAULT"
        )
    return f"ALTER TABLE {table} " + ", ".join(steps) if steps else None


_FLAGS = (
    ("rls", "ENABLE ROW LEVEL SECURITY", "DISABLE ROW LEVEL SECURITY"),
    ("force rls", "FORCE ROW LEVEL SECURITY", "NO FORCE ROW LEVEL SECURITY"),
    ("internal triggers disabled", "DISABLE TRIGGER ALL", "ENABLE TRIGGER ALL"),
)


def _rls_fix(key: str, expected: str, actual: str) -> str | None:
    want, have = set(expected.split(" | ")), set(actual.split(" | "))
    steps = []
    for flag, on, off in _FLAGS:
        if (flag in want) != (flag in have):
            steps.append(on if flag in want else off)
    if not steps or (want ^ have) - {flag for flag, _on, _off in _FLAGS}:
        return None  # something else changed too (kind, partitioning, view definition)
    return f"ALTER TABLE {key} " + ", ".join(steps)
