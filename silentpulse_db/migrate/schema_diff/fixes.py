"""The one statement that brings a changed object back to what the files build, where
one statement does (None where it takes a drop and a create: the report says so).

Pure: from the two catalog objects (expected: the scratch database's; actual: the
live one's) and the object's key.
"""

from __future__ import annotations

import re

from ...postgres.literals import quote_literal
from ..catalog.reader import CatalogObject

_POLICY_HEAD = re.compile(r"^CREATE POLICY (?P<name>.+?) ON (?P<table>\S+) AS \w+ FOR \w+ ")


# What a fix that checks every row costs, said before it (an SQL comment: the fix still
# runs as it is printed), and the form that holds the strong lock only a moment where
# PostgreSQL has one: NOT VALID, then VALIDATE under SHARE UPDATE EXCLUSIVE (reads and
# writes go on). A partitioned table takes no NOT VALID constraint (PostgreSQL 15).
_SCANS = {
    "FOREIGN KEY": "SHARE ROW EXCLUSIVE on both tables (their writes wait)",
    "CHECK": "ACCESS EXCLUSIVE (reads and writes wait)",
}
_VALIDATE_LATER = (
    "; NOT VALID holds it a moment only, VALIDATE then scans under SHARE UPDATE EXCLUSIVE "
    "(reads and writes go on):"
)


def missing_fix(kind: str, expected: CatalogObject, *, partitioned: bool = False) -> str | None:
    """The statement creating a missing object as the files do (a constraint's with what
    it costs, and in two steps where that keeps the table usable)."""
    create = expected.create
    if kind != "constraint" or create is None:
        return create
    definition = expected.value
    scans = next((lock for head, lock in _SCANS.items() if definition.startswith(head)), None)
    if scans is None:  # UNIQUE, PRIMARY KEY, EXCLUDE: an index built under the lock
        return (
            "-- builds its index holding ACCESS EXCLUSIVE (reads and writes wait); CREATE "
            "UNIQUE INDEX CONCURRENTLY first, then ADD CONSTRAINT ... USING INDEX, waits less\n"
            + create
        )
    if partitioned:
        return f"-- scans every partition holding {scans}\n{create}"
    head, _, name = create.partition(" ADD CONSTRAINT ")
    name = name.split(" ", 1)[0]
    return (
        f"-- ADD CONSTRAINT scans every row holding {scans}{_VALIDATE_LATER}\n"
        f"{create} NOT VALID;\n{head} VALIDATE CONSTRAINT {name}"
    )


def changed_fix(
    kind: str,
    key: str,
    expected: CatalogObject,
    actual: CatalogObject,
    *,
    partitioned: bool = False,
) -> str | None:
    """The statement turning ``actual`` into ``expected``, or None."""
    if kind in ("function", "sequence"):
        # CREATE OR REPLACE FUNCTION ...; the history's sequence's setval (none for
        # another sequence: its create is None)
        return expected.create
    if kind == "index":
        # Not a partitioned table's index: REINDEX leaves that one INVALID.
        if actual.value == expected.value + " (INVALID)" and "CONCURRENTLY" in (
            expected.create or ""
        ):
            return f"REINDEX INDEX CONCURRENTLY {key}"
        return _index_options_fix(key, expected.value, actual.value)
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
        return _column_fix(key, expected.value, actual.value, partitioned)
    if kind == "relation":
        return _attach_fix(key, expected, actual) or _rls_fix(key, expected.value, actual.value)
    return None


# pg_get_indexdef's storage options: WITH (fillfactor='50', deduplicate_items='off')
_INDEX_OPTIONS = re.compile(r" WITH \((?P<options>[^()]*)\)")


def _index_options_fix(key: str, expected: str, actual: str) -> str | None:
    """An index whose storage options alone changed (ALTER INDEX ... SET): RESET what
    the live one has, SET what the files give. The options apply to pages written
    from then on (REINDEX rewrites the others)."""
    want, have = _INDEX_OPTIONS.search(expected), _INDEX_OPTIONS.search(actual)
    if _INDEX_OPTIONS.sub("", expected) != _INDEX_OPTIONS.sub("", actual):
        return None  # its definition changed too: drop and create
    statements = []
    if have:
        names = ", ".join(o.split("=", 1)[0].strip() for o in have["options"].split(","))
        statements.append(f"ALTER INDEX {key} RESET ({names})")
    if want:
        statements.append(f"ALTER INDEX {key} SET ({want['options']})")
    return ";\n".join(statements) or None


def _attach_fix(key: str, expected: CatalogObject, actual: CatalogObject) -> str | None:
    """A partition (a default one: a month detached is reported as a partition) that
    the live database holds as a table of its own: attach it again, with its bound.
    What else differs on it is the next run's difference."""
    want = [p for p in expected.value.split(" | ") if p.startswith("partition of ")]
    have = [p for p in actual.value.split(" | ") if p.startswith("partition of ")]
    if not want or have or not expected.bound:
        return None
    parent = want[0].removeprefix("partition of ").removesuffix(" (default)")
    return f"ALTER TABLE {parent} ATTACH PARTITION {key} {expected.bound}"


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


def _column_fix(key: str, expected: str, actual: str, partitioned: bool) -> str | None:
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
    if want.get("collate") != have.get("collate") and want["type"] == have["type"]:
        collation = want.get("collate") or '"default"'
        steps.append(f"ALTER COLUMN {column} TYPE {want['type']} COLLATE {collation}")
    if want.get("storage") != have.get("storage"):
        steps.append(f"ALTER COLUMN {column} SET STORAGE {_storage(want, have)}")
    if want.get("statistics") != have.get("statistics"):
        steps.append(f"ALTER COLUMN {column} SET STATISTICS {want.get('statistics', '-1')}")
    if want.get("default") != have.get("default"):
        default = want.get("default")
        steps.append(
            f"ALTER COLUMN {column} SET DEFAULT {default}"
            if default is not None
            else f"ALTER COLUMN {column} DROP DEFAULT"
        )
    comment = None
    if want.get("comment") != have.get("comment"):
        text = want.get("comment")
        quoted = "NULL" if text is None else quote_literal(text)
        comment = f"COMMENT ON COLUMN {table}.{column} IS {quoted}"
    if not steps:
        return comment
    fix = f"ALTER TABLE {table} " + ", ".join(steps) + (f";\n{comment}" if comment else "")
    if "not" not in want or "not" in have:
        return fix
    scans = "-- SET NOT NULL scans every row holding ACCESS EXCLUSIVE (reads and writes wait)"
    if len(steps) > 1 or partitioned:
        return f"{scans}\n{fix}"
    # A valid CHECK (c IS NOT NULL) spares SET NOT NULL its scan (PostgreSQL 12+).
    check = _ident(f"{key.rpartition('.')[2]}_not_null")
    return (
        f"{scans}; a CHECK added NOT VALID and validated under SHARE UPDATE EXCLUSIVE "
        f"(reads and writes go on) spares it the scan:\n"
        f"ALTER TABLE {table} ADD CONSTRAINT {check} CHECK ({column} IS NOT NULL) NOT VALID;\n"
        f"ALTER TABLE {table} VALIDATE CONSTRAINT {check};\n"
        f"{fix};\n"
        f"ALTER TABLE {table} DROP CONSTRAINT {check}"
    )


def _storage(want: dict[str, str], have: dict[str, str]) -> str:
    """The storage the files give: theirs, or else the type's own (read on the live
    column: 'external (its type extended)')."""
    if "storage" in want:
        return want["storage"].split(" ", 1)[0].upper()
    return have["storage"].rsplit(" ", 1)[1].rstrip(")").upper()


_FLAGS = (
    ("rls", "ENABLE ROW LEVEL SECURITY", "DISABLE ROW LEVEL SECURITY"),
    ("force rls", "FORCE ROW LEVEL SECURITY", "NO FORCE ROW LEVEL SECURITY"),
    ("internal triggers disabled", "DISABLE TRIGGER ALL", "ENABLE TRIGGER ALL"),
)


_REPLICA = {"d": "DEFAULT", "f": "FULL", "n": "NOTHING"}  # 'i': an index, by name


def _rls_fix(key: str, expected: str, actual: str) -> str | None:
    """Flags, storage options, replica identity and the comment of a relation; None when
    something else changed too (kind, partitioning, view definition)."""
    want, have = set(expected.split(" | ")), set(actual.split(" | "))
    steps: list[str] = []
    for flag, on, off in _FLAGS:
        if (flag in want) != (flag in have):
            steps.append(on if flag in want else off)
    if ("unlogged" in want) != ("unlogged" in have):
        # Rewrites the table holding ACCESS EXCLUSIVE (SET LOGGED also writes it to WAL).
        steps.append("SET UNLOGGED" if "unlogged" in want else "SET LOGGED")
    wanted, had = _prefixed(want, "options "), _prefixed(have, "options ")
    if wanted != had:
        if had:
            keys = ", ".join(option.split("=", 1)[0] for option in had.split(","))
            steps.append(f"RESET ({keys})")
        if wanted:
            steps.append(f"SET ({wanted.replace(',', ', ')})")
    identity = _prefixed(want, "replica identity ") or "d"
    if identity != (_prefixed(have, "replica identity ") or "d"):
        if identity not in _REPLICA:
            return None
        steps.append(f"REPLICA IDENTITY {_REPLICA[identity]}")
    statements = [f"ALTER TABLE {key} " + ", ".join(steps)] if steps else []
    comment = _prefixed(want, "comment ")
    if comment != _prefixed(have, "comment "):
        what = "TABLE" if want & {"kind r", "kind p"} else None
        if what is None:
            return None
        text = "NULL" if comment is None else quote_literal(comment)
        statements.append(f"COMMENT ON {what} {key} IS {text}")
    known = ("unlogged", "options ", "replica identity ", "comment ")
    others = {
        part
        for part in want ^ have
        if part not in {flag for flag, _on, _off in _FLAGS} and not part.startswith(known)
    }
    if not statements or others:
        return None
    return ";\n".join(statements)


def _prefixed(parts: set[str], prefix: str) -> str | None:
    return next((p.removeprefix(prefix) for p in parts if p.startswith(prefix)), None)
