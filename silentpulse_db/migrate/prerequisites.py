"""prerequisites.sql: the extensions it creates, and whether this role may create them.

On PostgreSQL 13+ a role that is no superuser may create a trusted extension
(pgcrypto, uuid-ossp) with CREATE on the database; managed PostgreSQL gives the
deployment no superuser. What the role may not create is asked before anything
runs, and AdministratorRequiredError gives the exact statements an administrator
runs once (the CLI exits 3).
"""

from __future__ import annotations

import logging
import re
from typing import Any, NamedTuple

from ..errors import AdministratorRequiredError
from ..postgres.databases import quote_ident
from ..postgres.roles import extensions_out_of_reach, trusted_extensions
from ..results.migrations import PrerequisitesResult
from .files.source import MigrationFile, MigrationSource

logger = logging.getLogger("silentpulse_db.migrate")

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
        from .run.applier import Applier  # lazily, as in engine.parse_ahead

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


async def check_extensions(conn: Any, source: MigrationSource, files: list[MigrationFile]) -> None:
    """Before a run applies ``files``: what prerequisites.sql creates and is not installed
    gets a warning with the statement that fixes it (the services use these extensions
    beyond the migrations; an optional one says so, once); an extension one of ``files``
    requires (``-- silentpulse: requires extension <name>``) and is not installed
    refuses the run, before anything runs, with the statements."""
    listed = extensions_in(source.prerequisites) if source.prerequisites else []
    needed_by: dict[str, str] = {}
    for file in files:
        for name in file.directives.extensions:
            needed_by.setdefault(name, file.location)
    names = list(dict.fromkeys([*listed, *needed_by]))
    if not names:
        return
    rows = await conn.fetch(
        "SELECT n.name, x.extname IS NOT NULL AS installed, a.name IS NOT NULL AS available "
        "FROM unnest($1::text[]) AS n(name) "
        "LEFT JOIN pg_extension x ON x.extname = n.name "
        "LEFT JOIN pg_available_extensions a ON a.name = n.name",
        names,
    )
    missing = {r["name"]: r["available"] for r in rows if not r["installed"]}
    refused = [name for name in names if name in missing and name in needed_by]
    if refused:
        raise await _extensions_refused(conn, refused, needed_by)
    for name in (n for n in names if n in missing):
        if name in OPTIONAL_EXTENSIONS:
            where = "where the server has it" if not missing[name] else "it is available here"
            logger.warning(
                "optional extension %r is not installed, so the schema leaves out what needs "
                "it (%s: %s)",
                name,
                where,
                create_extension(name),
            )
        else:
            logger.warning(
                "extension %r of prerequisites.sql is not installed: the services use it "
                "beyond the migrations. Run `silentpulse-db prerequisites` before the first "
                "migration (or, as an administrator: %s)",
                name,
                create_extension(name),
            )


async def _extensions_refused(
    conn: Any, names: list[str], needed_by: dict[str, str]
) -> AdministratorRequiredError:
    row = await conn.fetchrow("SELECT current_user AS role, current_database() AS db")
    statements = [create_extension(name) for name in names]
    files = "; ".join(f"{needed_by[name]} requires extension {name}" for name in names)
    return AdministratorRequiredError(
        f"{files}, which database {row['db']!r} does not have: nothing was applied. Run "
        f"`silentpulse-db prerequisites` (as a role that may create them), or have an "
        f"administrator run:\n" + "\n".join(f"    {s}" for s in statements),
        role=str(row["role"]),
        privilege="CREATE EXTENSION",
        object=f"database {row['db']}",
        statements=statements,
    )


async def create_extensions(
    conn: Any, source: MigrationSource, prerequisites: MigrationFile
) -> PrerequisitesResult:
    """apply_prerequisites on ``conn`` (holding the migration lock): run the file, then
    say what is installed and which optional extensions the server does not have."""
    notices: list[str] = []
    conn.add_log_listener(lambda _c, msg: notices.append(str(getattr(msg, "message", msg))))
    notices += await run_prerequisites(
        conn, source, prerequisites, then="Then run prerequisites again."
    )
    installed = await conn.fetch("SELECT extname FROM pg_extension ORDER BY extname")
    missing = await conn.fetch(
        "SELECT n FROM unnest($1::text[]) n "
        "WHERE n NOT IN (SELECT name FROM pg_available_extensions) ORDER BY n",
        list(OPTIONAL_EXTENSIONS),
    )
    result = PrerequisitesResult(
        installed=tuple(r["extname"] for r in installed),
        unavailable_optional=tuple(r["n"] for r in missing),
        notices=tuple(notices),
    )
    for name in result.unavailable_optional:
        logger.info("optional extension %r is not available on this server; skipped", name)
    return result
