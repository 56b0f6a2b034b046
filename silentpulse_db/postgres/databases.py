"""Creating and dropping databases beside a DSN's, and scratch databases (check, baseline):
created beside the live one, or one the operator provides (a role without CREATEDB)."""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import asyncpg

from ..defaults import SCRATCH_PREFIX
from ..errors import AdministratorRequiredError, ScratchDatabaseError
from ..settings import ONE_ATTEMPT
from .connect import close_quietly, connect

logger = logging.getLogger("silentpulse_db.postgres")


def with_database(dsn: str, name: str) -> str:
    """``dsn`` pointing at database ``name`` instead (same server, user and options)."""
    return urlsplit(dsn)._replace(path=f"/{name}").geturl()


def unique_name(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


async def create_database(dsn: str, name: str, *, template: str | None = None) -> str:
    """Create database ``name`` on ``dsn``'s server (needs CREATEDB); return its DSN."""
    clause = f' TEMPLATE "{template}"' if template else ""
    admin = await connect(dsn, ONE_ATTEMPT)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"{clause}')
    finally:
        await close_quietly(admin)
    return with_database(dsn, name)


async def execute_sql(dsn: str, sql: str) -> None:
    """Run ``sql`` (statements, simple protocol) on ``dsn``'s database, then disconnect."""
    conn = await connect(dsn, ONE_ATTEMPT)
    try:
        await conn.execute(sql)
    finally:
        await close_quietly(conn)


async def drop_database(dsn: str, name: str) -> None:
    """Drop database ``name`` on ``dsn``'s server, disconnecting whoever is still in it."""
    admin = await connect(dsn, ONE_ATTEMPT)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await close_quietly(admin)


@contextlib.asynccontextmanager
async def scratch_database(
    dsn: str, *, prefix: str = SCRATCH_PREFIX, instead: str = ""
) -> AsyncIterator[Any]:
    """An empty database beside ``dsn``'s for the length of the block; yields a connection.

    A role without CREATEDB gets AdministratorRequiredError: the statement an administrator
    runs, then ``instead`` (what the caller offers in its place).
    """
    name = unique_name(prefix)
    try:
        scratch_dsn = await create_database(dsn, name)
    except asyncpg.InsufficientPrivilegeError:
        raise await _createdb_required(dsn, instead) from None
    try:
        conn = await connect(scratch_dsn, ONE_ATTEMPT)
        try:
            yield conn
        finally:
            await close_quietly(conn)
    finally:
        await drop_database(dsn, name)


async def _createdb_required(dsn: str, instead: str) -> AdministratorRequiredError:
    conn = await connect(dsn, ONE_ATTEMPT)
    try:
        # The server's quote_ident: quotes only where SQL needs it (keywords included).
        row = await conn.fetchrow("SELECT current_user AS role, quote_ident(current_user) AS q")
    finally:
        await close_quietly(conn)
    role = str(row["role"])
    statement = f"ALTER ROLE {row['q']} CREATEDB;"
    return AdministratorRequiredError(
        f"role {role!r} may not create the scratch database this needs (it lacks CREATEDB, "
        f"as an owner role on a managed server often does). An administrator can run:\n"
        f"    {statement}\n{instead}".rstrip()
        + " Nothing was changed.",
        role=role,
        privilege="CREATEDB",
        object="the server",
        statements=(statement,),
    )


def quote_ident(name: str) -> str:
    """``name`` as a double-quoted SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


# The identity of the database a session is in: the server (its system identifier when
# this role may read it, and when it started) and the database's name.
_WHERE = """
    SELECT current_database() AS db, pg_postmaster_start_time() AS started,
           inet_server_port() AS port
"""
_SYSTEM_ID = "SELECT system_identifier FROM pg_control_system()"

# What a database holds beyond PostgreSQL's own and its extensions' objects (extensions
# themselves are allowed: an administrator creates them for a role that may not).
_SYSTEM_SCHEMA = (
    "{n} NOT IN ('pg_catalog', 'information_schema', 'pg_toast') "
    "AND {n} NOT LIKE 'pg\\_temp\\_%' AND {n} NOT LIKE 'pg\\_toast\\_temp\\_%'"
)
_NOT_MEMBER = "NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = {oid} AND d.deptype = 'e')"
_USER_OBJECTS = f"""
    SELECT 1 AS rank, 'SCHEMA' AS kind, quote_ident(n.nspname) AS name
    FROM pg_namespace n
    WHERE n.nspname <> 'public' AND {_SYSTEM_SCHEMA.format(n="n.nspname")}
      AND {_NOT_MEMBER.format(oid="n.oid")}
    UNION ALL
    SELECT 2, CASE c.relkind WHEN 'v' THEN 'VIEW' WHEN 'm' THEN 'MATERIALIZED VIEW'
                             WHEN 'S' THEN 'SEQUENCE' WHEN 'f' THEN 'FOREIGN TABLE'
                             ELSE 'TABLE' END,
           format('%I.%I', n.nspname, c.relname)
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f') AND {_SYSTEM_SCHEMA.format(n="n.nspname")}
      AND {_NOT_MEMBER.format(oid="c.oid")}
    UNION ALL
    SELECT 3, CASE p.prokind WHEN 'a' THEN 'AGGREGATE' ELSE 'ROUTINE' END,
           format('%I.%I(%s)', n.nspname, p.proname, pg_get_function_identity_arguments(p.oid))
    FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
    WHERE {_SYSTEM_SCHEMA.format(n="n.nspname")} AND {_NOT_MEMBER.format(oid="p.oid")}
    UNION ALL
    SELECT 4, CASE t.typtype WHEN 'd' THEN 'DOMAIN' ELSE 'TYPE' END,
           format('%I.%I', n.nspname, t.typname)
    FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
    WHERE {_SYSTEM_SCHEMA.format(n="n.nspname")} AND {_NOT_MEMBER.format(oid="t.oid")}
      AND (t.typtype IN ('e', 'd', 'r')
           OR (t.typtype = 'c' AND (SELECT relkind FROM pg_class WHERE oid = t.typrelid) = 'c'))
    ORDER BY 1, 3
"""


async def user_objects(conn: Any) -> list[str]:
    """What the connected database holds besides extensions: ``table public.t``, ..."""
    return [f"{r['kind'].lower()} {r['name']}" for r in await conn.fetch(_USER_OBJECTS)]


async def _identity(conn: Any) -> tuple[str, Any, Any, Any]:
    row = await conn.fetchrow(_WHERE)
    try:
        async with conn.transaction():  # a savepoint when already in one
            system_id = await conn.fetchval(_SYSTEM_ID)
    except asyncpg.InsufficientPrivilegeError:  # some managed services revoke it
        system_id = None
    return row["db"], row["started"], row["port"], system_id


async def same_database(conn: Any, other: Any) -> bool:
    """Are two sessions in the same database of the same server?"""
    mine, theirs = await _identity(conn), await _identity(other)
    if None not in (mine[3], theirs[3]) and mine[3] != theirs[3]:
        return False
    return mine[:3] == theirs[:3]


@contextlib.asynccontextmanager
async def provided_scratch(live_dsn: str, scratch_dsn: str, *, doing: str) -> AsyncIterator[Any]:
    """The operator's empty database ``scratch_dsn`` for the block, emptied again afterwards.

    Refused (ScratchDatabaseError, nothing touched) when it is ``live_dsn``'s database or
    holds anything but extensions. Extensions it had stay; everything else the block
    creates in it is dropped.
    """
    conn = await connect(scratch_dsn, ONE_ATTEMPT)
    try:
        live = await connect(live_dsn, ONE_ATTEMPT)
        try:
            if await same_database(conn, live):
                name = await conn.fetchval("SELECT current_database()")
                raise ScratchDatabaseError(
                    f"the scratch database given to {doing} is the live database itself "
                    f"(same server, same database {name!r}): give an empty database of its "
                    f"own. Nothing was changed."
                )
        finally:
            await close_quietly(live)
        found = await user_objects(conn)
        if found:
            shown = ", ".join(found[:10]) + (
                f", ... ({len(found)} in all)" if len(found) > 10 else ""
            )
            raise ScratchDatabaseError(
                f"the scratch database given to {doing} is not empty ({shown}): it must hold "
                f"nothing but extensions, as it is emptied afterwards. Nothing was changed."
            )
        kept = {r["extname"] for r in await conn.fetch("SELECT extname FROM pg_extension")}
        try:
            yield conn
        finally:
            await close_quietly(conn)
            # A fresh session: the block may have left its own in a failed transaction.
            await empty_database(scratch_dsn, kept)
    finally:
        await close_quietly(conn)


async def empty_database(dsn: str, keep_extensions: set[str]) -> None:
    """Drop every object of ``dsn``'s database, and every extension not in ``keep_extensions``."""
    conn = await connect(dsn, ONE_ATTEMPT)
    try:
        for _ in range(5):  # CASCADE takes most at once; what depended on a later one, next round
            objects = await conn.fetch(_USER_OBJECTS)
            extensions = [
                r["extname"]
                for r in await conn.fetch("SELECT extname FROM pg_extension")
                if r["extname"] not in keep_extensions
            ]
            if not objects and not extensions:
                return
            for row in objects:
                await conn.execute(f"DROP {row['kind']} IF EXISTS {row['name']} CASCADE")
            for name in extensions:
                await conn.execute(f"DROP EXTENSION IF EXISTS {quote_ident(name)} CASCADE")
        logger.warning("the scratch database still holds: %s", ", ".join(await user_objects(conn)))
    finally:
        await close_quietly(conn)
