"""Creating and dropping databases beside a DSN's, and scratch databases (check, baseline)."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

from ..defaults import SCRATCH_PREFIX
from .connect import close_quietly, connect


def with_database(dsn: str, name: str) -> str:
    """``dsn`` pointing at database ``name`` instead (same server, user and options)."""
    return urlsplit(dsn)._replace(path=f"/{name}").geturl()


def unique_name(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


async def create_database(dsn: str, name: str, *, template: str | None = None) -> str:
    """Create database ``name`` on ``dsn``'s server (needs CREATEDB); return its DSN."""
    clause = f' TEMPLATE "{template}"' if template else ""
    admin = await connect(dsn, attempts=1)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"{clause}')
    finally:
        await close_quietly(admin)
    return with_database(dsn, name)


async def execute_sql(dsn: str, sql: str) -> None:
    """Run ``sql`` (statements, simple protocol) on ``dsn``'s database, then disconnect."""
    conn = await connect(dsn, attempts=1)
    try:
        await conn.execute(sql)
    finally:
        await close_quietly(conn)


async def drop_database(dsn: str, name: str) -> None:
    """Drop database ``name`` on ``dsn``'s server, disconnecting whoever is still in it."""
    admin = await connect(dsn, attempts=1)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await close_quietly(admin)


@contextlib.asynccontextmanager
async def scratch_database(dsn: str, *, prefix: str = SCRATCH_PREFIX) -> AsyncIterator[Any]:
    """An empty database beside ``dsn``'s for the length of the block; yields a connection."""
    name = unique_name(prefix)
    scratch_dsn = await create_database(dsn, name)
    try:
        conn = await connect(scratch_dsn, attempts=1)
        try:
            yield conn
        finally:
            await close_quietly(conn)
    finally:
        await drop_database(dsn, name)
