"""run_migrations says what prerequisites.sql would have created before it starts, and
refuses a file whose extension is missing (issue 27, 10): the README's path used to skip
`prerequisites` and apply all 21 migrations with nothing noticing."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from silentpulse_db import AdministratorRequiredError, run_migrations
from silentpulse_db.migrate import apply_prerequisites

from helpers import execute, user_tables, version_rows, write_migrations


async def test_a_first_deploy_without_prerequisites_is_told_what_is_missing(
    silentpulse_database: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="silentpulse_db.migrate"):
        await run_migrations(silentpulse_database, target=20)
    said = [r.getMessage() for r in caplog.records if "extension" in r.getMessage()]
    for name, statement in (
        ("uuid-ossp", 'CREATE EXTENSION IF NOT EXISTS "uuid-ossp";'),
        ("pgcrypto", "CREATE EXTENSION IF NOT EXISTS pgcrypto;"),
    ):
        (line,) = [s for s in said if f"extension {name!r} of prerequisites.sql" in s]
        assert "silentpulse-db prerequisites" in line and statement in line
    (optional,) = [s for s in said if "optional extension 'age'" in s]
    assert "CREATE EXTENSION IF NOT EXISTS age;" in optional
    assert len(said) == 3, said

    # With the prerequisites, the next migrations hear only of the optional one (where
    # the server lacks it, as this one does).
    caplog.clear()
    await apply_prerequisites(silentpulse_database)
    with caplog.at_level(logging.WARNING, logger="silentpulse_db.migrate"):
        result = await run_migrations(silentpulse_database)
    assert result.applied
    said = [r.getMessage() for r in caplog.records if "extension" in r.getMessage()]
    assert [s for s in said if "of prerequisites.sql" in s] == []
    assert len(said) <= 1 and all("optional extension 'age'" in s for s in said)


async def test_a_file_that_requires_a_missing_extension_is_refused_before_anything_runs(
    silentpulse_database: str, tmp_path: Path
) -> None:
    source = write_migrations(
        tmp_path,
        {
            1: ("add_t1", "CREATE TABLE t1 (id int);\n", "DROP TABLE t1;\n"),
            2: (
                "add_trigram_index",
                "-- silentpulse: requires extension pg_trgm\n"
                "CREATE TABLE t2 (name text);\n"
                "CREATE INDEX t2_name_trgm ON t2 USING gin (name gin_trgm_ops);\n",
                "DROP TABLE t2;\n",
            ),
        },
    )
    with pytest.raises(AdministratorRequiredError, match="requires extension pg_trgm") as info:
        await run_migrations(silentpulse_database, source=source)
    assert info.value.statements == ("CREATE EXTENSION IF NOT EXISTS pg_trgm;",)
    assert "nothing was applied" in str(info.value)
    assert await version_rows(silentpulse_database) == []
    assert "t1" not in await user_tables(silentpulse_database)

    await run_migrations(silentpulse_database, source=source, target=1)  # 1 needs nothing
    await execute(silentpulse_database, "CREATE EXTENSION pg_trgm")
    result = await run_migrations(silentpulse_database, source=source)
    assert result.version_after == 2
