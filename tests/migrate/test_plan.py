"""The pure planning step: every rule, no server, no I/O."""

from __future__ import annotations

import hashlib
from datetime import datetime, timezone

import pytest

from silentpulse_db import (
    ChecksumMismatchError,
    DatabaseAheadError,
    DirtyDatabaseError,
    VersionNotFoundError,
    VersionState,
)
from silentpulse_db.migrate.files.source import Migration, MigrationFile, MigrationSource
from silentpulse_db.migrate.plan import (
    NIL_VERSION,
    Down,
    Force,
    Goto,
    HistoryEntry,
    Plan,
    Unfinished,
    Up,
    is_settled,
    make_plan,
)
from silentpulse_db.migrate.status_reading import status_rows

WHEN = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)


def _file(version: int, direction: str, sql: str) -> MigrationFile:
    name = f"{version:06d}_m{version}.{direction}.sql"
    return MigrationFile(
        filename=name,
        location=f"mem/{name}",
        sql=sql,
        checksum=hashlib.sha256(sql.encode()).hexdigest(),
    )


def source_of(*versions: int) -> MigrationSource:
    return MigrationSource(
        description="mem",
        migrations=tuple(
            Migration(
                v,
                f"m{v}",
                _file(v, "up", f"CREATE TABLE t{v} ();"),
                _file(v, "down", f"DROP TABLE t{v};"),
            )
            for v in versions
        ),
    )


def at(version: int | None, dirty: bool = False) -> VersionState:
    return VersionState(version, dirty)


def history(
    source: MigrationSource, *versions: int, changed: int | None = None
) -> dict[int, HistoryEntry]:
    entries = {}
    for v in versions:
        migration = source.get(v)
        assert migration is not None and migration.up is not None
        checksum = "0" * 64 if v == changed else migration.up.checksum
        entries[v] = HistoryEntry(v, migration.name, "up", checksum, WHEN, 0.001, "tester")
    return entries


def steps(plan: Plan) -> list[tuple[int, str, int | None]]:
    return [(s.migration.version, s.direction, s.version_after) for s in plan.steps]


SOURCE = source_of(1, 2, 5)


def test_up_from_nothing_runs_every_file_in_order() -> None:
    plan = make_plan(SOURCE, at(None), Up())
    assert steps(plan) == [(1, "up", 1), (2, "up", 2), (5, "up", 5)]
    assert plan.version_after == 5


@pytest.mark.parametrize(
    ("request_", "expected"),
    [
        (Up(limit=1), [(2, "up", 2)]),
        (Up(target=2), [(2, "up", 2)]),
        (Up(target=4), [(2, "up", 2)]),
        (Up(limit=5), [(2, "up", 2), (5, "up", 5)]),
    ],
)
def test_up_count_and_target(request_: Up, expected: list[tuple[int, str, int | None]]) -> None:
    assert steps(make_plan(SOURCE, at(1), request_)) == expected


def test_nothing_pending_is_an_empty_plan() -> None:
    plan = make_plan(SOURCE, at(5), Up())
    assert plan.empty and plan.version_after == 5


def test_down_reverts_newest_first_and_records_the_version_below() -> None:
    assert steps(make_plan(SOURCE, at(5), Down(2))) == [(5, "down", 2), (2, "down", 1)]
    everything = make_plan(SOURCE, at(5), Down(None))
    assert steps(everything) == [(5, "down", 2), (2, "down", 1), (1, "down", None)]
    assert everything.version_after is None
    assert make_plan(SOURCE, at(None), Down(None)).empty


def test_goto_goes_up_or_down() -> None:
    assert steps(make_plan(SOURCE, at(1), Goto(5))) == [(2, "up", 2), (5, "up", 5)]
    assert steps(make_plan(SOURCE, at(5), Goto(1))) == [(5, "down", 2), (2, "down", 1)]
    assert make_plan(SOURCE, at(2), Goto(2)).empty


def test_goto_a_version_without_a_file_is_refused_first() -> None:
    with pytest.raises(VersionNotFoundError, match=r"version 3 .*files: 1, 2, 5"):
        make_plan(SOURCE, at(2, dirty=True), Goto(3))


def test_force_needs_no_clean_state() -> None:
    plan = make_plan(SOURCE, at(5, dirty=True), Force(2))
    assert plan.force == 2 and plan.version_after == 2 and not plan.steps
    assert make_plan(SOURCE, at(5, dirty=True), Force(NIL_VERSION)).version_after is None
    with pytest.raises(VersionNotFoundError, match=">= -1"):
        make_plan(SOURCE, at(None), Force(-2))


@pytest.mark.parametrize("request_", [Up(), Down(1), Goto(1)])
def test_dirty_is_refused_with_the_recovery_commands(request_: Up | Down | Goto) -> None:
    with pytest.raises(DirtyDatabaseError) as info:
        make_plan(SOURCE, at(5, dirty=True), request_)
    assert info.value.version == 5
    message = str(info.value)
    assert "mem/000005_m5.up.sql" in message
    assert "silentpulse-db force 2" in message and "silentpulse-db force 5" in message


def test_dirty_version_zero_stays_zero() -> None:
    # A version 0 is falsy: it must not be reported as -1 ("no version").
    zero = source_of(0, 1)
    with pytest.raises(DirtyDatabaseError) as info:
        make_plan(zero, at(0, dirty=True), Up())
    assert info.value.version == 0
    assert "force -1" in str(info.value)  # nothing below version 0


def test_dirty_with_no_version_points_to_force_minus_one() -> None:
    with pytest.raises(DirtyDatabaseError, match="force -1") as info:
        make_plan(SOURCE, at(None, dirty=True), Up())
    assert info.value.version == NIL_VERSION


def test_database_ahead_of_every_file() -> None:
    tolerant = make_plan(SOURCE, at(9), Up(allow_ahead=True))
    assert tolerant.database_ahead and tolerant.empty and tolerant.version_after == 9
    assert "ahead of the newest migration file (5)" in tolerant.warnings[0]
    for request_ in (Up(), Down(1), Goto(2)):
        with pytest.raises(DatabaseAheadError) as info:
            make_plan(SOURCE, at(9), request_)
        assert (info.value.database_version, info.value.latest_file_version) == (9, 5)


def test_a_version_missing_from_the_middle_is_always_an_error() -> None:
    with pytest.raises(DatabaseAheadError, match=r"version 3, which has no migration file"):
        make_plan(SOURCE, at(3), Up(allow_ahead=True))


def test_changed_checksum_warns_or_refuses_when_strict() -> None:
    changed = history(SOURCE, 1, 2, changed=2)
    plan = make_plan(SOURCE, at(2), Up(), history=changed)
    assert len(plan.warnings) == 1 and "000002_m2.up.sql changed" in plan.warnings[0]
    assert steps(plan) == [(5, "up", 5)]
    with pytest.raises(ChecksumMismatchError, match="000002_m2"):
        make_plan(SOURCE, at(2), Up(), history=changed, strict=True)
    assert make_plan(SOURCE, at(2), Up(), history=history(SOURCE, 1, 2)).warnings == ()


def test_is_settled() -> None:
    assert is_settled(SOURCE, at(5), target=None)
    assert is_settled(SOURCE, at(2), target=2)
    assert not is_settled(SOURCE, at(2), target=None)
    assert not is_settled(SOURCE, at(5, dirty=True), target=None)
    assert is_settled(SOURCE, at(9), target=None)  # older code: nothing it can do
    assert not is_settled(SOURCE, at(3), target=None)  # broken: must be reported


def test_status_rows() -> None:
    rows = status_rows(SOURCE, at(2, dirty=True), history(SOURCE, 1, changed=1))
    assert [(r.version, r.state, r.checksum) for r in rows] == [
        (1, "applied", "changed"),
        (2, "dirty", "unknown"),
        (5, "pending", "-"),
    ]
    assert rows[0].applied_at == WHEN and rows[0].duration == 0.001
    ahead = status_rows(SOURCE, at(9), {})
    assert [(r.version, r.state) for r in ahead][-1] == (9, "applied (no file)")


# --- a dirty version the catalog explains (run/unfinished.py) ------------------------------

THREE = source_of(1, 2, 3)


def test_an_unfinished_build_runs_again_whichever_way_the_request_goes() -> None:
    """Dirty 2, its concurrent build stopped: up runs its up file again, down its down
    file (counted as the migration reverted)."""
    build = Unfinished(THREE.migrations[1], "up", reruns_up=True, reruns_down=True)
    dirty = at(2, dirty=True)
    assert steps(make_plan(THREE, dirty, Up(), unfinished=build)) == [
        (2, "up", 2),
        (3, "up", 3),
    ]
    assert steps(make_plan(THREE, dirty, Up(limit=1), unfinished=build)) == [(2, "up", 2)]
    assert steps(make_plan(THREE, dirty, Goto(3), unfinished=build)) == [
        (2, "up", 2),
        (3, "up", 3),
    ]
    assert steps(make_plan(THREE, dirty, Down(1), unfinished=build)) == [(2, "down", 1)]
    assert steps(make_plan(THREE, dirty, Goto(1), unfinished=build)) == [(2, "down", 1)]
    assert make_plan(THREE, dirty, Up(), unfinished=build).warnings


def test_an_unfinished_drop_ends_where_the_down_was_going() -> None:
    """Dirty 1 after 2's concurrent drop stopped: `down 1` again ends at 1, not below."""
    drop = Unfinished(THREE.migrations[1], "down", reruns_up=True, reruns_down=True)
    dirty = at(1, dirty=True)
    assert steps(make_plan(THREE, dirty, Down(1), unfinished=drop)) == [(2, "down", 1)]
    assert steps(make_plan(THREE, dirty, Down(2), unfinished=drop)) == [
        (2, "down", 1),
        (1, "down", None),
    ]
    assert steps(make_plan(THREE, dirty, Up(), unfinished=drop)) == [
        (2, "up", 2),
        (3, "up", 3),
    ]
    only_down = drop._replace(reruns_up=False)
    assert steps(make_plan(THREE, dirty, Up(), unfinished=only_down)) == [
        (2, "down", 1),
        (2, "up", 2),
        (3, "up", 3),
    ]
    # force records what it is told, whatever the catalog showed.
    assert make_plan(THREE, dirty, Force(2), unfinished=drop).force == 2


def test_a_dirty_version_nothing_can_rerun_gets_the_message_of_its_direction() -> None:
    downward = Unfinished(THREE.migrations[1], "down")
    with pytest.raises(DirtyDatabaseError) as info:
        make_plan(THREE, at(1, dirty=True), Up(), unfinished=downward)
    text = str(info.value)
    assert "the down migration of version 2 (mem/000002_m2.down.sql)" in text
    assert "`silentpulse-db force 2` if none of that down took effect" in text
    assert "`silentpulse-db down 1`" in text and "`silentpulse-db force 1` if all" in text
    assert "000001_m1.up.sql" not in text and "then run `silentpulse-db up`" not in text

    upward = Unfinished(THREE.migrations[1], "up")
    with pytest.raises(DirtyDatabaseError) as info:
        make_plan(THREE, at(2, dirty=True), Down(1), unfinished=upward)
    text = str(info.value)
    assert "mem/000002_m2.up.sql" in text and ".down.sql" not in text
    assert "`silentpulse-db force 1` if none" in text and "then run `silentpulse-db up`" in text

    # Neither known (golang-migrate keeps no history): both are named.
    with pytest.raises(DirtyDatabaseError) as info:
        make_plan(THREE, at(2, dirty=True), Up())
    text = str(info.value)
    assert "mem/000002_m2.up.sql" in text and "mem/000003_m3.down.sql" in text
    assert "`silentpulse-db force 3` if none of that down took effect" in text
