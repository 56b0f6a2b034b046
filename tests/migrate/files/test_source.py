"""MigrationSource's lookups, on sets built in memory (loading from folders and packages
is tested with the engine: tests/migrate/test_bad_inputs.py)."""

from __future__ import annotations

from silentpulse_db.migrate.files.source import Migration, MigrationSource


def test_get_finds_each_version_and_nothing_else() -> None:
    source = MigrationSource("mem", tuple(Migration(v, f"m{v}", None, None) for v in (1, 2, 5)))
    assert [source.get(v).name for v in (1, 2, 5)] == ["m1", "m2", "m5"]  # type: ignore[union-attr]
    assert source.get(3) is None and source.get(-1) is None


def test_get_gives_the_first_of_a_version_a_hand_made_set_holds_twice() -> None:
    first, second = Migration(1, "first", None, None), Migration(1, "second", None, None)
    assert MigrationSource("mem", (first, second)).get(1) is first
