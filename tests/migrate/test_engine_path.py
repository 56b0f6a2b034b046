"""The path of one run_migrations, as issue 30 measures it: the library's frames between
run_migrations and the connection's execute of a migration, and the package files the
run enters. Ratchets: each may shrink, never grow (targets: 5 frames, 15 files); a
service's start-up as written (the partition hook on) enters one file more."""

from __future__ import annotations

import os
import sys
import traceback
from pathlib import Path
from types import FrameType
from typing import Any

import asyncpg
import pytest

import silentpulse_db
from silentpulse_db import run_migrations

from helpers import write_migrations

PACKAGE = os.path.dirname(silentpulse_db.__file__)
FRAMES_TODAY = 5  # from 11 before the one engine (run_request), 7 after it
# 25 before VersionStore, connect_settled and the rare paths made rare; 19 before
# run/packing.py (the groups decided beside the chunks, Together made for a group) and
# files/statements.py took in the file's own transaction control; 17 before the extension
# check was left to sets with extensions and the migration lock joined session.py
FILES_TODAY = 15


def _entering(entered: set[str]) -> Any:
    """A profile function adding the package files whose code is entered to ``entered``."""

    def profile(frame: FrameType, event: str, _arg: object) -> None:
        if event == "call" and frame.f_code.co_filename.startswith(PACKAGE):
            entered.add(os.path.relpath(frame.f_code.co_filename, PACKAGE))

    return profile


async def test_one_run_is_a_short_path(
    silentpulse_database: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = {1: ("add_t1", "CREATE TABLE t1 (id int);\n", "DROP TABLE t1;\n")}
    await run_migrations(silentpulse_database, source=write_migrations(tmp_path, files))
    stacks: list[list[str]] = []
    execute = asyncpg.Connection.execute

    async def watched(self: Any, query: str, *args: Any, **kwargs: Any) -> Any:
        if "CREATE TABLE t2" in query:
            stacks.append(
                [
                    f"{Path(f.filename).name}:{f.name}"
                    for f in traceback.extract_stack()
                    if f.filename.startswith(PACKAGE)
                ]
            )
        return await execute(self, query, *args, **kwargs)

    monkeypatch.setattr(asyncpg.Connection, "execute", watched)
    files[2] = ("add_t2", "CREATE TABLE t2 (id int);\n", "DROP TABLE t2;\n")
    source = write_migrations(tmp_path, files)
    entered: set[str] = set()
    sys.setprofile(_entering(entered))
    try:
        result = await run_migrations(silentpulse_database, source=source, partitions_ahead=None)
    finally:
        sys.setprofile(None)
    assert [a.version for a in result.applied] == [2]
    (stack,) = stacks
    assert stack[0] == "commands.py:run_migrations", stack
    assert len(stack) <= FRAMES_TODAY, " -> ".join(stack)
    assert len(entered) <= FILES_TODAY, sorted(entered)

    # A service's start as it is written (partitions_ahead's default): the engine's files
    # and the hook after applying, in one file of its own.
    files[3] = ("add_t3", "CREATE TABLE t3 (id int);\n", "DROP TABLE t3;\n")
    source = write_migrations(tmp_path, files)
    at_startup: set[str] = set()
    sys.setprofile(_entering(at_startup))
    try:
        result = await run_migrations(silentpulse_database, source=source)
    finally:
        sys.setprofile(None)
    assert [a.version for a in result.applied] == [3]
    assert at_startup - entered == {os.path.join("schema", "partitions.py")}, sorted(at_startup)
