"""The public result types: every one reachable where documented, frozen dataclasses all."""

from __future__ import annotations

import dataclasses

import pytest

import silentpulse_db
from silentpulse_db import results


@pytest.mark.parametrize("name", results.__all__)
def test_each_result_type_is_a_frozen_dataclass_in_both_places(name: str) -> None:
    cls = getattr(results, name)
    assert getattr(silentpulse_db, name) is cls
    params = cls.__dataclass_params__  # what @dataclass(frozen=True) records
    assert dataclasses.is_dataclass(cls) and params.frozen and params.eq


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
