"""quote_literal: what the server reads back is the text, whatever
standard_conforming_strings a role or database sets."""

from __future__ import annotations

import asyncpg
import pytest

from silentpulse_db.postgres.literals import quote_literal

CORPUS = ["", "plain", "it's", "''", "a\\b", "\\'", "end\\", "public.assets", "$q$", "ünï"]


@pytest.mark.parametrize("conforming", ["on", "off"])
async def test_the_server_reads_back_the_text(silentpulse_database: str, conforming: str) -> None:
    conn = await asyncpg.connect(silentpulse_database)
    try:
        await conn.execute(f"SET standard_conforming_strings = {conforming}")
        for text in CORPUS:
            assert await conn.fetchval(f"SELECT {quote_literal(text)}") == text, text
    finally:
        await conn.close()
