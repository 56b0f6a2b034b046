"""What the public functions return, by who returns them. Durations are seconds (float).

- :mod:`.migrations`: the migration verbs (run_migrations, up, down, goto, force,
  baseline, version, apply_prerequisites);
- :mod:`.status`: what status reports;
- :mod:`.proofs`: check and drift;
- :mod:`.schema_jobs`: the partition and retention jobs;
- :mod:`.placement`: distribute, where each table's rows live on a Citus cluster.

Import any of them from here (or the package face). Each room loads when one of its
names is first used: a start-up never returns a proof's or a job's report, and their
dataclasses would cost every process that imports the package ~4.5 ms
(bench/bench_startup_tricks.py).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .migrations import (
        AppliedMigration,
        MigrationResult,
        PrerequisitesResult,
        VersionState,
    )
    from .placement import (
        DistributionReport,
        DistributionSetting,
        DistributionStep,
        TablePlacement,
    )
    from .proofs import CheckReport, DriftDifference, DriftExcuse, DriftReport
    from .schema_jobs import (
        PartitionChange,
        PartitionCoverage,
        PartitionReport,
        RetentionAction,
        RetentionReport,
    )
    from .status import StatusReport, StatusRow

# Each public name, and the room it lives in (silentpulse_db's face reuses it).
HOMES = {
    **dict.fromkeys(
        (
            "AppliedMigration",
            "MigrationResult",
            "PrerequisitesResult",
            "VersionState",
        ),
        ".migrations",
    ),
    **dict.fromkeys(("StatusReport", "StatusRow"), ".status"),
    **dict.fromkeys(("CheckReport", "DriftDifference", "DriftExcuse", "DriftReport"), ".proofs"),
    **dict.fromkeys(
        (
            "PartitionChange",
            "PartitionCoverage",
            "PartitionReport",
            "RetentionAction",
            "RetentionReport",
        ),
        ".schema_jobs",
    ),
    **dict.fromkeys(
        ("DistributionReport", "DistributionSetting", "DistributionStep", "TablePlacement"),
        ".placement",
    ),
}


def __getattr__(name: str) -> Any:
    room = HOMES.get(name)
    if room is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(room, __name__), name)
    globals()[name] = value
    return value


__all__ = [
    "AppliedMigration",
    "CheckReport",
    "DistributionReport",
    "DistributionSetting",
    "DistributionStep",
    "DriftDifference",
    "DriftExcuse",
    "DriftReport",
    "MigrationResult",
    "PartitionChange",
    "PartitionCoverage",
    "PartitionReport",
    "PrerequisitesResult",
    "RetentionAction",
    "RetentionReport",
    "StatusReport",
    "StatusRow",
    "TablePlacement",
    "VersionState",
]
