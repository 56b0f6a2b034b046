"""A scratch database on the same server, dropped afterwards (used by check and baseline)."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

from .connect import connect


@contextlib.asynccontextmanager
async def scratch_database(dsn: str, *, prefix: str = "silentpulse_scratch") -> AsyncIterator[Any]:
    """Create an empty database beside ``dsn``'s (needs CREATEDB), yield a connection to it."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = await connect(dsn, attempts=1)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        try:
            conn = await connect(urlsplit(dsn)._replace(path=f"/{name}").geturl(), attempts=1)
            try:
                yield conn
            finally:
                await conn.close()
        finally:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()
