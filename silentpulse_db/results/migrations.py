"""What the migration verbs return: run_migrations, up, down, goto, force, baseline
(MigrationResult), version (VersionState) and apply_prerequisites
(PrerequisitesResult). Durations are seconds (float). What `status` reports is in
:mod:`.status`."""

from __future__ import annotations

import importlib
import warnings
from dataclasses import dataclass, field
from typing import Any, Literal


@dataclass(frozen=True)
class VersionState:
    """What schema_migrations says. ``version`` is None when there is no version."""

    version: int | None
    dirty: bool

    def __str__(self) -> str:
        shown = "none" if self.version is None else str(self.version)
        return f"{shown} (dirty)" if self.dirty else shown


@dataclass(frozen=True)
class AppliedMigration:
    """One migration file that ran."""

    version: int
    name: str
    direction: Literal["up", "down"]
    duration: float  # seconds
    transactional: bool = True

    def __str__(self) -> str:
        return f"{self.version:06d}_{self.name} ({self.direction}, {self.duration * 1000:.1f} ms)"


@dataclass(frozen=True)
class MigrationResult:
    """The outcome of run_migrations, up, down, goto, force or baseline."""

    version_before: int | None
    version_after: int | None
    applied: tuple[AppliedMigration, ...] = ()
    database_ahead: bool = False
    warnings: tuple[str, ...] = field(default=())


@dataclass(frozen=True)
class PrerequisitesResult:
    """What prerequisites.sql did: notices from the server and unavailable optional extensions."""

    installed: tuple[str, ...]
    unavailable_optional: tuple[str, ...]
    notices: tuple[str, ...]


# Moved to results/status.py; the old path works until 0.3.0 (settings.REMOVED_IN), at
# run time only: importing them here for type checkers would make results/status.py,
# which imports VersionState from this module, a cycle. The documented homes (the
# package face, silentpulse_db.results) are typed and unchanged.
_MOVED = ("StatusReport", "StatusRow")


def __getattr__(name: str) -> Any:
    if name not in _MOVED:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    warnings.warn(
        f"silentpulse_db.results.migrations.{name} is deprecated and goes in 0.3.0: use "
        f"silentpulse_db.results.status.{name} (or silentpulse_db.{name})",
        DeprecationWarning,
        stacklevel=2,
    )
    return getattr(importlib.import_module(".status", __package__), name)
