"""Shared by the credential tests: a connection to a fresh, fully migrated database."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest


@pytest.fixture
async def conn(silentpulse_migrated_database: str) -> AsyncIterator[Any]:
    connection = await asyncpg.connect(silentpulse_migrated_database)
    try:
        yield connection
    finally:
        await connection.close()
