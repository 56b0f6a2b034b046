"""Sets written for golang-migrate (issue 28, items 1-4 and 6): a file's own BEGIN and
COMMIT, empty and comment-only files, downs named apart from their ups, versions with
no down file, DO blocks and CALLs that commit, stray non-.sql files.

The accepted corpus is ``golang_migrate_sets/accepted`` (run it by hand with either
tool). Where golang-migrate's CLI is built (bench/build_golang_migrate.sh), the same
files go through both tools, each into a database of its own and interleaved on one,
and the schemas (``pg_dump --schema-only``, the bookkeeping aside), the version rows and
the data the files write must agree.
"""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from silentpulse_db import (
    MigrationFailedError,
    MigrationSourceError,
    MissingMigrationFileError,
    run_migrations,
)
from silentpulse_db.migrate import check, down, force, goto, load_source, status, up
from silentpulse_db.migrate.files.scaffold import UP_TEMPLATE
from silentpulse_db.postgres.databases import create_database, drop_database
from silentpulse_db.testing.server import PostgresServer

from helpers import execute, fetch, fetchval, user_tables, version_rows

CORPUS = Path(__file__).parent / "golang_migrate_sets" / "accepted"
LATEST = 10  # the corpus's last version, which has no down file

MIGRATE = shutil.which("migrate") or str(Path.home() / "go/bin/migrate")
needs_golang_migrate = pytest.mark.skipif(
    not Path(MIGRATE).exists(),
    reason="golang-migrate's CLI is not built here (bench/build_golang_migrate.sh)",
)

GOOD_FIRST = {
    "000001_add_t1.up.sql": "CREATE TABLE t1 (id int);\n",
    "000001_add_t1.down.sql": "DROP TABLE t1;\n",
}
BAD = "000002_add_x.up.sql"

# Refused before anything runs (not even the good 000001 before it), each naming its
# file and line and why. {case: (files beside 000001, what the message says)}.
REFUSED: dict[str, tuple[dict[str, str], tuple[str, ...]]] = {
    "a statement after COMMIT": (
        {BAD: "BEGIN;\nCREATE TABLE x (id int);\nCOMMIT;\nCREATE TABLE y (id int);\n"},
        (f"{BAD}:4: this statement follows the file's COMMIT at line 3", "Split the file"),
    ),
    "a second transaction": (
        {BAD: "BEGIN;\nCREATE TABLE x (id int);\nCOMMIT;\n\nBEGIN;\nSELECT 1;\nCOMMIT;\n"},
        (f"{BAD}:5: this statement follows the file's COMMIT at line 3", "second transaction"),
    ),
    "COMMIT without BEGIN halfway": (
        {BAD: "CREATE TABLE x (id int);\nCOMMIT;\nCREATE TABLE y (id int);\n"},
        (f"{BAD}:3: this statement follows the file's COMMIT at line 2",),
    ),
    "ROLLBACK as the end": (
        {BAD: "BEGIN;\nCREATE TABLE x (id int);\nROLLBACK;\n"},
        (f"{BAD}:3: ROLLBACK would undo the file's work", "recorded as applied"),
    ),
    "ABORT": (
        {BAD: "CREATE TABLE x (id int);\nABORT;\n"},
        (f"{BAD}:2: ROLLBACK would undo",),
    ),
    "COMMIT AND CHAIN": (
        {BAD: "BEGIN;\nSELECT 1;\nCOMMIT AND CHAIN;\nSELECT 2;\nCOMMIT;\n"},
        (f"{BAD}:3: COMMIT AND CHAIN",),
    ),
    "PREPARE TRANSACTION": (
        {BAD: "BEGIN;\nSELECT 1;\nPREPARE TRANSACTION 'x';\n"},
        (f"{BAD}:3: PREPARE TRANSACTION", "two-phase commit"),
    ),
    "COMMIT PREPARED": (
        {BAD: "-- finish another session's\nCOMMIT PREPARED 'x';\n"},
        (f"{BAD}:2: COMMIT PREPARED cannot run in a transaction block",),
    ),
    "BEGIN READ ONLY": (
        {BAD: "BEGIN READ ONLY;\nSELECT 1;\nCOMMIT;\n"},
        (f"{BAD}:1: BEGIN READ ONLY", "version row"),
    ),
    "a BEGIN with options inside the transaction": (
        {BAD: "BEGIN;\nSELECT 1;\nBEGIN ISOLATION LEVEL SERIALIZABLE;\nCOMMIT;\n"},
        (f"{BAD}:3: a BEGIN with options inside the file's transaction (BEGIN at line 1)",),
    ),
    "CREATE INDEX CONCURRENTLY inside BEGIN/COMMIT": (
        {BAD: "BEGIN;\nCREATE INDEX CONCURRENTLY t1_id ON t1 (id);\nCOMMIT;\n"},
        (
            f"{BAD}:2: CREATE INDEX CONCURRENTLY cannot run inside the file's transaction "
            f"(BEGIN at line 1)",
        ),
    ),
    "a DO block that commits beside another statement": (
        {BAD: "CREATE TABLE x (id int);\nDO $$ BEGIN COMMIT; END $$;\n"},
        (f"{BAD}:2: this DO block commits", "only statement of its file"),
    ),
    "a DO block that rolls back, deep inside BEGIN/COMMIT": (
        {BAD: "BEGIN;\nDO $$\nBEGIN\n  IF true THEN\n    ROLLBACK;\n  END IF;\nEND $$;\nCOMMIT;\n"},
        (f"{BAD}:2: this DO block commits (or rolls back)",),
    ),
    "a stray backup beside its file": (
        {"000001_add_t1.up.sql.bak": "CREATE TABLE t1 (id int);\n"},
        (
            "000001_add_t1.up.sql.bak: named like a migration but not a .sql file",
            "golang-migrate would run it as version 1 up",
        ),
    ),
    "another extension": (
        {"000002_add_x.up.txt": "SELECT 1;\n"},
        ("000002_add_x.up.txt: named like a migration but not a .sql file",),
    ),
    "create's template never filled in": (
        {BAD: UP_TEMPLATE.format(stem="000002_add_x")},
        (f"{BAD}: still the template `create` wrote",),
    ),
}


@pytest.mark.parametrize("case", list(REFUSED))
async def test_what_cannot_be_made_safe_is_refused_before_anything_runs(
    case: str, silentpulse_database: str, tmp_path: Path
) -> None:
    files, mentions = REFUSED[case]
    for name, text in {**GOOD_FIRST, **files}.items():
        (tmp_path / name).write_text(text)
    if BAD in files:
        (tmp_path / BAD.replace(".up.", ".down.")).write_text("SELECT 1;\n")
    with pytest.raises(MigrationSourceError) as info:
        await run_migrations(silentpulse_database, source=tmp_path)
    for needle in mentions:
        assert needle in str(info.value), f"{needle!r} not in {info.value}"
    assert await version_rows(silentpulse_database) == []  # not even 000001 ran
    assert await user_tables(silentpulse_database) == set()


async def test_a_wrapped_file_commits_with_its_version_and_history_rows(
    silentpulse_database: str, tmp_path: Path
) -> None:
    dsn = silentpulse_database
    for name, text in {
        "1_add_a.up.sql": "SET search_path = public;\nBEGIN;\nCREATE TABLE a (id int);\nCOMMIT;\n",
        "1_add_a.down.sql": "BEGIN;\nDROP TABLE a;\nEND;\n",
        "2_add_b.up.sql": "BEGIN;\nCREATE TABLE b (id int);\n\nSELECT 1/0;\nCOMMIT;\n",
        "2_add_b.down.sql": "DROP TABLE b;\n",
    }.items():
        (tmp_path / name).write_text(text)
    with pytest.raises(MigrationFailedError) as info:
        await up(dsn, source=tmp_path)
    # The file's own transaction is the runner's: the failure rolled 2 back, its
    # line counted in the file as written, and 1 committed with its rows, in one
    # transaction (one xid wrote the table, the version row and the history row).
    assert "2_add_b.up.sql line 4" in str(info.value) and "division by zero" in str(info.value)
    assert await version_rows(dsn) == [(1, False)]
    assert await user_tables(dsn) == {"a"}
    xids = await fetch(
        dsn,
        "SELECT (SELECT xmin::text FROM pg_class WHERE relname = 'a') AS created, "
        "(SELECT xmin::text FROM schema_migrations) AS version, "
        "(SELECT xmin::text FROM schema_migrations_history WHERE version = 1) AS history",
    )
    assert len({xids[0]["created"], xids[0]["version"], xids[0]["history"]}) == 1
    await down(dsn, 1, source=tmp_path)  # a down file wrapped in BEGIN ... END
    assert await version_rows(dsn) == [] and await user_tables(dsn) == set()


async def test_the_corpus_applies_here(
    silentpulse_database: str, caplog: pytest.LogCaptureFixture
) -> None:
    dsn = silentpulse_database
    with caplog.at_level(logging.DEBUG, logger="silentpulse_db"):
        result = await up(dsn, source=CORPUS)
    assert [a.version for a in result.applied] == list(range(1, LATEST + 1))
    assert "3_reserved.up.sql holds no statement: a migration that runs nothing" in caplog.text
    assert await version_rows(dsn) == [(LATEST, False)]
    assert await fetchval(dsn, "SELECT level FROM isolation_seen") == "serializable"
    assert await fetchval(dsn, "SELECT to_regclass('scratch') IS NULL")  # ROLLBACK TO
    assert await _batches(dsn) == [1, 2, 3, 100, 101]  # CALL and DO committed as they went
    history = await fetch(dsn, "SELECT version, name FROM schema_migrations_history ORDER BY id")
    assert [(r["version"], r["name"]) for r in history][:3] == [
        (1, "create_accounts"),  # the up file's name, its down named apart
        (2, "add_account_status"),
        (3, "reserved"),  # an empty up file, recorded as applied
    ]
    report = await status(dsn, source=CORPUS)
    notes = {row.version: row.notes for row in report.rows if row.notes}
    assert notes == {3: ("empty up", "empty down"), LATEST: ("no down file",)}
    assert report.rows[0].name == "create_accounts"


async def test_empty_and_comment_only_files_are_migrations_that_run_nothing(
    silentpulse_database: str, tmp_path: Path
) -> None:
    dsn = silentpulse_database
    for name, text in {
        **GOOD_FIRST,
        "000002_reserved.up.sql": "",
        "000002_reserved.down.sql": "-- nothing to undo\n/* really */\n",
        "000003_add_t3.up.sql": "\ufeff  \n",  # a BOM and blanks
        "000003_add_t3.down.sql": "",
    }.items():
        (tmp_path / name).write_text(text)
    before = await status(dsn, source=tmp_path)  # the set loads, status included
    assert [(r.state, r.notes) for r in before.rows] == [
        ("pending", ()),
        ("pending", ("empty up", "empty down")),
        ("pending", ("empty up", "empty down")),
    ]
    assert (await up(dsn, source=tmp_path)).version_after == 3
    rows = await fetch(dsn, "SELECT version, checksum FROM schema_migrations_history ORDER BY id")
    assert [r["version"] for r in rows] == [1, 2, 3] and all(r["checksum"] for r in rows)
    assert await user_tables(dsn) == {"t1"}
    await goto(dsn, 1, source=tmp_path)
    assert await version_rows(dsn) == [(1, False)] and await user_tables(dsn) == {"t1"}


async def test_a_version_without_its_down_file_refuses_the_run_that_needs_it(
    silentpulse_database: str, tmp_path: Path
) -> None:
    dsn = silentpulse_database
    await up(dsn, source=CORPUS)
    attempts: list[Callable[[], Awaitable[object]]] = [
        lambda: down(dsn, 1, source=CORPUS),
        lambda: goto(dsn, 5, source=CORPUS),
    ]
    for attempt in attempts:
        with pytest.raises(MissingMigrationFileError) as info:
            await attempt()
        text = str(info.value)
        assert f"needs {LATEST}_create_harbor_style.down.sql to revert version {LATEST}" in text
        assert f"leave version {LATEST}'s objects in place" in text  # golang-migrate would
        assert "Nothing was run" in text and f"`silentpulse-db force {LATEST - 1}`" in text
        assert (info.value.version, info.value.direction) == (LATEST, "down")
        assert await version_rows(dsn) == [(LATEST, False)]
        assert "harbor_style" in await user_tables(dsn)
    # check's round trip needs every down: refused before it builds anything.
    with pytest.raises(MissingMigrationFileError, match=r"lacks 1 file\(s\): 10_create_harbor"):
        await check(dsn, source=CORPUS)

    # The versions that have their down files go down all the way, through downs named
    # apart, comment-only and wrapped ones.
    paired = _copy_corpus(tmp_path / "paired", without=LATEST)
    await force(dsn, LATEST - 1, source=paired)
    await execute(dsn, "DROP TABLE harbor_style")
    await down(dsn, "all", source=paired)
    assert await version_rows(dsn) == []
    assert await user_tables(dsn) == set()


async def test_a_version_with_only_its_down_file(silentpulse_database: str, tmp_path: Path) -> None:
    dsn = silentpulse_database
    for name, text in {**GOOD_FIRST, "000002_drop_x.down.sql": "DROP TABLE x;\n"}.items():
        (tmp_path / name).write_text(text)
    only_down = load_source(tmp_path).get(2)  # the set loads
    assert only_down is not None and only_down.up is None and only_down.name == "drop_x"
    with pytest.raises(MissingMigrationFileError) as info:
        await run_migrations(dsn, source=tmp_path)
    text = str(info.value)
    assert "up needs 000002_drop_x.up.sql to apply version 2" in text
    assert "000002_drop_x.down.sql" in text and "as applied with nothing of it created" in text
    assert await version_rows(dsn) == []  # refused before 000001 ran too
    await run_migrations(dsn, source=tmp_path, target=1)
    assert [r.notes for r in (await status(dsn, source=tmp_path)).rows] == [(), ("no up file",)]
    # A database at 2 (its up came from elsewhere) goes down through the down file.
    await execute(dsn, "CREATE TABLE x (id int)")
    await force(dsn, 2, source=tmp_path)
    await down(dsn, 1, source=tmp_path)
    assert await version_rows(dsn) == [(1, False)] and await user_tables(dsn) == {"t1"}


async def test_a_call_alone_follows_golang_migrates_protocol(
    silentpulse_database: str, tmp_path: Path
) -> None:
    """Outside a transaction (so that its procedure may commit): dirty, CALL, clean. A
    procedure that fails after a COMMIT leaves what it committed, and the version dirty."""
    dsn = silentpulse_database
    for name, text in {
        "1_add_p.up.sql": "CREATE TABLE done (n int);\n"
        "CREATE PROCEDURE p() LANGUAGE plpgsql AS $$ BEGIN INSERT INTO done VALUES (1); "
        "COMMIT; RAISE EXCEPTION 'after the commit'; END $$;\n",
        "1_add_p.down.sql": "DROP PROCEDURE p; DROP TABLE done;\n",
        "2_run_p.up.sql": "CALL p();\n",
        "2_run_p.down.sql": "DELETE FROM done;\n",
    }.items():
        (tmp_path / name).write_text(text)
    with pytest.raises(MigrationFailedError, match="after the commit"):
        await up(dsn, source=tmp_path)
    assert await version_rows(dsn) == [(2, True)]
    assert await fetchval(dsn, "SELECT count(*) FROM done") == 1


# --- both tools -------------------------------------------------------------------------


@needs_golang_migrate
async def test_both_tools_build_the_same_schema_from_the_corpus(
    silentpulse_postgres: PostgresServer, silentpulse_database: str
) -> None:
    ours = silentpulse_database
    await up(ours, source=CORPUS)
    async with _fresh_database(silentpulse_postgres) as theirs:
        _golang_migrate(theirs, CORPUS, "up")
        assert await version_rows(theirs) == await version_rows(ours) == [(LATEST, False)]
        assert _schema(silentpulse_postgres, theirs) == _schema(silentpulse_postgres, ours)
        await _same_data(ours, theirs)


@needs_golang_migrate
async def test_interleaved_with_golang_migrate(
    silentpulse_postgres: PostgresServer, silentpulse_database: str, tmp_path: Path
) -> None:
    """Up and down by turns on one database: at each version the schema, version row
    and data are those of this engine alone."""
    paired = _copy_corpus(tmp_path / "paired", without=LATEST)
    reference = silentpulse_database
    await up(reference, source=paired)
    async with _fresh_database(silentpulse_postgres) as mixed:
        _golang_migrate(mixed, paired, "up", "2")
        await up(mixed, 3, source=paired)  # 3 (empty), 4 (before BEGIN), 5 (savepoints)
        _golang_migrate(mixed, paired, "up")
        assert await version_rows(mixed) == [(LATEST - 1, False)]
        await _same(silentpulse_postgres, reference, mixed)
        await down(mixed, 3, source=paired)  # 9, 8, 7: DO, CALL, the procedure
        _golang_migrate(mixed, paired, "down", "3")  # 6, 5, 4
        assert await version_rows(mixed) == [(3, False)]
        await goto(mixed, LATEST - 1, source=paired)
        await _same(silentpulse_postgres, reference, mixed)


@needs_golang_migrate
async def test_golang_migrate_runs_a_missing_down_as_an_empty_one(
    silentpulse_postgres: PostgresServer, silentpulse_database: str
) -> None:
    """What docs/migrations.md says golang-migrate v4.17.1 does, and why this refuses."""
    dsn = silentpulse_database
    _golang_migrate(dsn, CORPUS, "up")
    with pytest.raises(MissingMigrationFileError):
        await down(dsn, 1, source=CORPUS)
    done = _golang_migrate(dsn, CORPUS, "down", "1")
    assert f"{LATEST}/d <empty>" in done.stderr
    assert await version_rows(dsn) == [(LATEST - 1, False)]
    assert "harbor_style" in await user_tables(dsn)  # left in place, at version 9
    # So that the next up fails on the objects the "reverted" version left: here rolled
    # back (still 9, clean), golang-migrate's dirty.
    with pytest.raises(MigrationFailedError, match='relation "harbor_style" already exists'):
        await up(dsn, source=CORPUS)
    assert await version_rows(dsn) == [(LATEST - 1, False)]
    again = _golang_migrate(dsn, CORPUS, "up", ok=False)
    assert again.returncode == 1 and 'relation "harbor_style" already exists' in again.stderr
    assert await version_rows(dsn) == [(LATEST, True)]


# --- helpers ----------------------------------------------------------------------------


def _copy_corpus(folder: Path, *, without: int) -> Path:
    folder.mkdir(parents=True)
    for path in CORPUS.glob("*.sql"):
        if not path.name.startswith(f"{without}_"):
            shutil.copy(path, folder / path.name)
    return folder


@asynccontextmanager
async def _fresh_database(server: PostgresServer) -> AsyncIterator[str]:
    name = f"golang_{uuid.uuid4().hex[:12]}"
    dsn = await create_database(server.dsn, name)
    try:
        yield dsn
    finally:
        await drop_database(server.dsn, name)


def _golang_migrate(
    dsn: str, folder: Path, *args: str, ok: bool = True
) -> subprocess.CompletedProcess[str]:
    url = f"{dsn}{'&' if '?' in dsn else '?'}sslmode=disable"
    done = subprocess.run(
        [MIGRATE, "-path", str(folder), "-database", url, *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0 or not ok, done.stderr
    return done


# The bookkeeping each tool keeps beside the schema: golang-migrate's version table, and
# this engine's history table, its guard function and the version table's protection.
_BOOKKEEPING = re.compile(r"schema_migrations|silentpulse_version_table_guard")


def _schema(server: PostgresServer, dsn: str) -> list[str]:
    """``pg_dump --schema-only``, object by object, without the bookkeeping."""
    dump = subprocess.run(
        [str(server.bindir / "pg_dump"), "--schema-only", "-d", dsn],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    # Each object's block starts with a "-- Name: <object>; Type: ..." header. Left out:
    # the preamble, pg_dump's per-run \restrict key, and the session SETs it writes
    # before the next table (which may be a bookkeeping one).
    body = dump.split("\n--\n-- PostgreSQL database dump complete")[0]
    blocks = body.split("\n--\n-- Name: ")[1:]
    kept = [b for b in blocks if not _BOOKKEEPING.search(b.split("\n", 1)[0])]
    assert kept, dump
    noise = ("SET ", "\\restrict ", "\\unrestrict ")
    return ["\n".join(x for x in b.splitlines() if not x.startswith(noise)).strip() for b in kept]


async def _batches(dsn: str) -> list[int]:
    return [r["batch"] for r in await fetch(dsn, "SELECT batch FROM backfill_log ORDER BY 1")]


async def _same_data(ours: str, theirs: str) -> None:
    """What the files write (the isolation level a file saw, the rows its CALL and DO
    committed) is the same in both databases."""
    for query in (
        "SELECT level FROM isolation_seen",
        "SELECT array_agg(batch ORDER BY batch) FROM backfill_log",
    ):
        assert await fetchval(ours, query) == await fetchval(theirs, query), query


async def _same(server: PostgresServer, reference: str, other: str) -> None:
    assert await version_rows(other) == await version_rows(reference)
    assert _schema(server, other) == _schema(server, reference)
    await _same_data(reference, other)
