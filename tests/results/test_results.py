"""The public result types: every one reachable where documented, frozen dataclasses all."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest

import silentpulse_db
from silentpulse_db import results


@pytest.mark.parametrize("name", results.__all__)
def test_each_result_type_is_a_frozen_dataclass_where_documented(name: str) -> None:
    """In silentpulse_db.results, and at the top level what a service gets back (what the
    operator verbs return moved off it: tests/test_public_names.py)."""
    cls = getattr(results, name)
    if name in silentpulse_db.__all__:
        assert getattr(silentpulse_db, name) is cls
    else:
        assert silentpulse_db._MOVED[name] == "silentpulse_db.results"
    params = cls.__dataclass_params__  # what @dataclass(frozen=True) records
    assert dataclasses.is_dataclass(cls) and params.frozen and params.eq


@pytest.mark.parametrize("name", results.__all__)
def test_each_result_type_lives_in_the_room_named_for_who_returns_it(name: str) -> None:
    assert sorted(results.HOMES) == results.__all__
    assert getattr(results, name).__module__ == f"silentpulse_db.results{results.HOMES[name]}"


def test_importing_the_package_creates_no_result_class() -> None:
    """A start-up loads the migration results when it runs; the proofs' and the jobs'
    reports never (their dataclasses cost every process ~4.5 ms)."""
    code = (
        "import sys, silentpulse_db\n"
        "rooms = {m for m in sys.modules if m.startswith('silentpulse_db.results.')}\n"
        "assert not rooms, rooms\n"
        "from silentpulse_db import run_migrations, MigrationResult\n"
        "rooms = {m for m in sys.modules if m.startswith('silentpulse_db.results.')}\n"
        "assert rooms == {'silentpulse_db.results.migrations'}, rooms\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_a_report_behaves_as_before() -> None:
    from silentpulse_db.results import PartitionChange, PartitionReport

    report = PartitionReport(created=(PartitionChange("alerts", "alerts_p2026_01", 2),))
    assert report == PartitionReport(created=(PartitionChange("alerts", "alerts_p2026_01", 2),))
    assert hash(report) == hash(dataclasses.replace(report))
    assert repr(report).startswith("PartitionReport(created=(PartitionChange(table='alerts'")
    assert [f.name for f in dataclasses.fields(report)] == ["created", "secured", "skipped"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        report.skipped = ("x",)  # type: ignore[misc]


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="NoSuchReport"):
        results.NoSuchReport  # noqa: B018
    with pytest.raises(ImportError):
        from silentpulse_db.results import NoSuchReport  # noqa: F401
