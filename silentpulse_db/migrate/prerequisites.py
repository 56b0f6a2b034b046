"""prerequisites.sql: the extensions it creates, and whether this role may create them.

On PostgreSQL 13+ a role that is no superuser may create a trusted extension
(pgcrypto, uuid-ossp) with CREATE on the database; managed PostgreSQL gives the
deployment no superuser. What the role may not create is asked before anything
runs, and AdministratorRequiredError gives the exact statements an administrator
runs once (the CLI exits 3).
"""

from __future__ import annotations

import re
from typing import Any, NamedTuple

from ..errors import AdministratorRequiredError
from ..postgres.databases import quote_ident
from ..postgres.roles import extensions_out_of_reach, trusted_extensions
from .files.source import MigrationFile, MigrationSource

# Apache AGE: created where the server has it; the schema works without it (000001).
OPTIONAL_EXTENSIONS = ("age",)
_CREATE_EXTENSION = re.compile(
    r'CREATE\s+EXTENSION\s+(?:IF\s+NOT\s+EXISTS\s+)?("(?:[^"]|"")+"|[A-Za-z_][\w$]*)', re.I
)


def extensions_in(file: MigrationFile) -> list[str]:
    """The extensions a prerequisites file creates, in its order, each once."""
    names: list[str] = []
    for match in _CREATE_EXTENSION.finditer(file.sql):
        name = match[1]
        name = name[1:-1].replace('""', '"') if name.startswith('"') else name.lower()
        if name not in names:
            names.append(name)
    return names


def create_extension(name: str) -> str:
    """The statement that creates extension ``name`` where it is missing."""
    plain = re.fullmatch(r"[a-z_][a-z0-9_$]*", name) is not None
    return f"CREATE EXTENSION IF NOT EXISTS {name if plain else quote_ident(name)};"


class Extensions(NamedTuple):
    """What a prerequisites file asks of this role: the extensions it may not create."""

    required: list[str]  # missing, needed, out of this role's reach
    optional: list[str]  # missing, optional, out of this role's reach
    creatable: list[str]  # missing and needed, which this role may create


async def extensions_needed(conn: Any, file: MigrationFile) -> Extensions:
    """Sort the missing extensions of ``file`` by whether this role may create them."""
    names = extensions_in(file)
    unreachable = await extensions_out_of_reach(conn, names)
    missing = {
        r["name"]
        for r in await conn.fetch(
            "SELECT name FROM pg_available_extensions "
            "WHERE name = ANY($1::text[]) AND installed_version IS NULL",
            names,
        )
    }
    return Extensions(
        required=[n for n in unreachable if n not in OPTIONAL_EXTENSIONS],
        optional=[n for n in unreachable if n in OPTIONAL_EXTENSIONS],
        creatable=[
            n
            for n in names
            if n in missing and n not in unreachable and n not in OPTIONAL_EXTENSIONS
        ],
    )


async def run_prerequisites(
    conn: Any, source: MigrationSource, file: MigrationFile, *, then: str
) -> list[str]:
    """Run a prerequisites ``file`` as far as this role may; return notes on what it skipped.

    Asked before running anything: a role that may not create a needed extension gets
    AdministratorRequiredError with the statements (then ``then``), not the file's first
    failure. An optional extension only an administrator may create is skipped, noted.
    """
    needed = await extensions_needed(conn, file)
    if needed.required:
        raise await administrator_creates(conn, needed, then=then)
    if not needed.optional:
        from .run.applier import Applier  # lazily, as in runbook.parse_ahead

        await Applier(conn, source).run_file(file)
        return []
    # The file would fail on the optional one: create only what is needed.
    for name in needed.creatable:
        await conn.execute(create_extension(name))
    return [
        f"optional extension {name!r} is available but only an administrator may create it "
        f"(skipped): {create_extension(name)}"
        for name in needed.optional
    ]


async def administrator_creates(
    conn: Any, needed: Extensions, *, then: str
) -> AdministratorRequiredError:
    """The error naming the CREATE EXTENSION statements an administrator runs for this role."""
    row = await conn.fetchrow(
        "SELECT current_user AS role, current_database() AS db, "
        "quote_ident(current_user) AS q_role, quote_ident(current_database()) AS q_db"
    )
    role, database = str(row["role"]), str(row["db"])
    statements = [create_extension(name) for name in needed.required]
    trusted = await trusted_extensions(conn, needed.required)
    lines = [
        f"role {role!r} may not create the extension(s) {', '.join(needed.required)} that "
        f"prerequisites.sql needs (only a superuser, or on a managed service its administrator "
        f"role, may). An administrator runs, once, in database {database!r}:",
        *(f"    {statement}" for statement in statements),
    ]
    if trusted == needed.required:
        # Trusted (PostgreSQL 13+: pgcrypto, uuid-ossp): CREATE on the database suffices.
        lines.append(
            f"or lets this role create them itself (they are trusted extensions):\n"
            f"    GRANT CREATE ON DATABASE {row['q_db']} TO {row['q_role']};"
        )
    for name in needed.optional:
        lines.append(f"optional (skipped without it): {create_extension(name)}")
    lines.append(f"{then} Nothing was changed.")
    return AdministratorRequiredError(
        "\n".join(lines),
        role=role,
        privilege="CREATE EXTENSION",
        object=f"database {database}",
        statements=statements,
    )
