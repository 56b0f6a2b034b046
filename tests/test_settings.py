"""The settings objects every verb takes, and the keywords they replaced (one release of
DeprecationWarning). No server: each verb is pointed at a port nobody listens on, so it
fails at its first connection attempt, after the settings are read."""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest

import silentpulse_db
from silentpulse_db import (
    ConnectRetry,
    DatabaseConnectionError,
    DDLLimits,
    InvalidArgumentError,
    migrate,
    run_migrations,
)
from silentpulse_db.schema import jobs
from silentpulse_db.settings import MIGRATING, milliseconds, settings

from helpers import fetch, simple_set, write_migrations

NOBODY = "postgresql://someone@127.0.0.1:1/db"

BAD: list[tuple[dict[str, Any], str]] = [
    ({"connect": ConnectRetry(attempts=0)}, "ConnectRetry(attempts=0)"),
    ({"connect": ConnectRetry(attempts=2.5)}, "ConnectRetry(attempts=2.5)"),  # type: ignore[arg-type]
    ({"connect": ConnectRetry(attempts=True)}, "ConnectRetry(attempts=True)"),
    ({"connect": ConnectRetry(wait=-1)}, "ConnectRetry(wait=-1)"),
    ({"connect": ConnectRetry(wait=math.nan)}, "ConnectRetry(wait=nan)"),
    ({"connect": ConnectRetry(wait="2")}, "ConnectRetry(wait='2')"),  # type: ignore[arg-type]
    ({"ddl": DDLLimits(table_lock_timeout=-0.5)}, "DDLLimits(table_lock_timeout=-0.5)"),
    ({"ddl": DDLLimits(table_lock_timeout=math.inf)}, "DDLLimits(table_lock_timeout=inf)"),
    ({"ddl": DDLLimits(retry_for=None)}, "DDLLimits(retry_for=None)"),  # type: ignore[arg-type]
    ({"migration_lock_timeout": -1}, "up(migration_lock_timeout=-1)"),
]


@pytest.mark.parametrize(("given", "named"), BAD, ids=[named for _, named in BAD])
def test_a_bad_setting_is_refused_naming_it(given: dict[str, Any], named: str) -> None:
    with pytest.raises(InvalidArgumentError) as info:
        settings("up", {}, MIGRATING, **given)
    assert str(info.value).startswith(named)


async def test_a_verb_refuses_a_bad_setting_before_connecting(tmp_path: Path) -> None:
    source = write_migrations(tmp_path, simple_set(1))
    with pytest.raises(InvalidArgumentError, match=r"ConnectRetry\(attempts=0\)"):
        await migrate.status(NOBODY, source=source, connect=ConnectRetry(attempts=0))


@pytest.mark.parametrize("ahead", [-1, 25, 10**9, 2.5, True, "3"])
async def test_run_migrations_refuses_partitions_ahead_it_cannot_make_before_connecting(
    tmp_path: Path, ahead: Any
) -> None:
    # 10**9 was a bare ValueError ("year 83335360 is out of range"); 25 a warning at
    # every start, with no month ever made.
    source = write_migrations(tmp_path, simple_set(1))
    with pytest.raises(InvalidArgumentError, match=r"run_migrations\(partitions_ahead="):
        await silentpulse_db.run_migrations(NOBODY, source=source, partitions_ahead=ahead)


def test_the_defaults_are_the_documented_ones() -> None:
    assert ConnectRetry() == ConnectRetry(attempts=30, wait=2.0)
    assert DDLLimits() == DDLLimits(table_lock_timeout=3.0, retry_for=60.0)
    assert DDLLimits(table_lock_timeout=None).table_lock_timeout is None  # the session's own


def test_the_old_keywords_fold_into_the_objects() -> None:
    with pytest.warns(DeprecationWarning):
        given = settings(
            "up",
            {"attempts": 4, "lock_timeout": 9.0, "ddl_retry_for": 1.0},
            ("attempts", "wait", "lock_timeout", "ddl_lock_timeout", "ddl_retry_for"),
            connect=ConnectRetry(wait=0.5),
            ddl=DDLLimits(table_lock_timeout=7.0),
        )
    assert given.connect == ConnectRetry(attempts=4, wait=0.5)
    assert given.migration_lock_timeout == 9.0
    assert given.ddl == DDLLimits(table_lock_timeout=7.0, retry_for=1.0)


def _verbs(source: Path) -> dict[str, Callable[..., Awaitable[Any]]]:
    return {
        "run_migrations": lambda **kw: silentpulse_db.run_migrations(NOBODY, source=source, **kw),
        "up": lambda **kw: migrate.up(NOBODY, source=source, **kw),
        "down": lambda **kw: migrate.down(NOBODY, 1, source=source, **kw),
        "goto": lambda **kw: migrate.goto(NOBODY, 1, source=source, **kw),
        "force": lambda **kw: migrate.force(NOBODY, 1, source=source, **kw),
        "version": lambda **kw: migrate.version(NOBODY, **kw),
        "status": lambda **kw: migrate.status(NOBODY, source=source, **kw),
        "drift": lambda **kw: migrate.drift(NOBODY, source=source, **kw),
        "plan_up": lambda **kw: migrate.plan_up(NOBODY, source=source, **kw),
        "maintain_partitions": lambda **kw: jobs.maintain_partitions(NOBODY, **kw),
        "enforce_retention": lambda **kw: jobs.enforce_retention(NOBODY, **kw),
    }


VERBS = [
    "run_migrations",
    "up",
    "down",
    "goto",
    "force",
    "version",
    "status",
    "drift",
    "plan_up",
    "maintain_partitions",
    "enforce_retention",
]


@pytest.mark.parametrize("verb", VERBS)
async def test_every_verb_takes_connect_and_still_its_old_attempts(
    verb: str, tmp_path: Path
) -> None:
    call = _verbs(write_migrations(tmp_path, simple_set(1)))[verb]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the new name warns of nothing
        with pytest.raises(DatabaseConnectionError, match="after 2 attempts"):
            await call(connect=ConnectRetry(attempts=2, wait=0))
    with (
        pytest.warns(DeprecationWarning) as warned,
        pytest.raises(DatabaseConnectionError, match="after 3 attempts"),
    ):
        await call(attempts=3, wait=0)
    texts = [str(w.message) for w in warned]
    assert f"{verb}(attempts=...) is deprecated and goes in 0.3.0" in texts[0], texts
    assert "use connect=ConnectRetry(attempts=...)" in texts[0]
    # Pointed at the line that passed it, as a user's test run shows it.
    assert {Path(w.filename).name for w in warned} == {Path(__file__).name}


@pytest.mark.parametrize("verb", ["check", "apply_prerequisites", "baseline"])
async def test_the_verbs_without_old_keywords_take_connect(verb: str, tmp_path: Path) -> None:
    # The packaged set: prerequisites and baseline need their files.
    source = write_migrations(tmp_path, simple_set(1)) if verb == "check" else None
    call = getattr(migrate, verb)
    with pytest.raises(DatabaseConnectionError, match="after 2 attempts"):
        await call(NOBODY, source=source, connect=ConnectRetry(attempts=2, wait=0))


async def test_the_old_lock_names_warn_and_a_keyword_never_taken_is_a_type_error(
    tmp_path: Path,
) -> None:
    source = write_migrations(tmp_path, simple_set(1))
    one = ConnectRetry(attempts=1)
    for old, new in [
        ("lock_timeout", "migration_lock_timeout=..."),
        ("ddl_lock_timeout", "ddl=DDLLimits(table_lock_timeout=...)"),
        ("ddl_retry_for", "ddl=DDLLimits(retry_for=...)"),
    ]:
        with (
            pytest.warns(DeprecationWarning, match=rf"use {re.escape(new)}"),
            pytest.raises(DatabaseConnectionError),
        ):
            old_keyword: dict[str, Any] = {old: 5.0}
            await migrate.up(NOBODY, source=source, connect=one, **old_keyword)
    with pytest.raises(TypeError, match="version\\(\\) got an unexpected keyword argument"):
        await migrate.version(NOBODY, lock_timeout=5.0)
    with pytest.raises(TypeError, match="'lock_timout'"):
        await migrate.up(NOBODY, source=source, lock_timout=5.0)
    with pytest.raises(InvalidArgumentError, match="migration_lock_timeout=-1"):
        await migrate.up(NOBODY, source=source, migration_lock_timeout=-1)


async def test_the_alert_listener_takes_connect_too() -> None:
    with pytest.warns(DeprecationWarning, match=r"AlertListener\(wait=\.\.\.\)"):
        listener = silentpulse_db.AlertListener(NOBODY, wait=0.1)
    assert (listener._attempts, listener._wait) == (30, 0.1)
    listener = silentpulse_db.AlertListener(NOBODY, connect=ConnectRetry(attempts=2, wait=0))
    assert (listener._attempts, listener._wait) == (2, 0)


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [(0, "0"), (0.0004, "1ms"), (0.0005, "1ms"), (0.001, "1ms"), (0.29, "290ms"), (2.5, "2500ms")],
)
async def test_a_timeout_reaches_postgresql_as_set(
    silentpulse_database: str, seconds: float, shown: str
) -> None:
    """int(0.29 * 1000) sent 289ms, and any limit under a millisecond read as 0: no limit."""
    conn = await asyncpg.connect(silentpulse_database)
    try:
        async with conn.transaction():
            await conn.execute(f"SET LOCAL lock_timeout = {milliseconds(seconds)}")
            assert await conn.fetchval("SHOW lock_timeout") == shown
    finally:
        await conn.close()


async def test_a_migration_runs_under_the_limit_its_header_and_the_run_give(
    silentpulse_database: str, tmp_path: Path
) -> None:
    seen = "CREATE TABLE {name} AS SELECT current_setting('lock_timeout') AS lock_timeout;\n"
    files = {
        1: ("add_header", "-- silentpulse: lock_timeout=0.4ms\n" + seen.format(name="h"), ""),
        2: ("add_run", seen.format(name="r"), ""),
    }
    await run_migrations(
        silentpulse_database,
        source=write_migrations(tmp_path, files),
        ddl=DDLLimits(table_lock_timeout=0.29),
        partitions_ahead=None,
    )
    rows = await fetch(silentpulse_database, "SELECT 'h', * FROM h UNION ALL SELECT 'r', * FROM r")
    assert sorted(tuple(row) for row in rows) == [("h", "1ms"), ("r", "290ms")]
