"""What the migration operations return."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal


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
    """The outcome of run_migrations or of a CLI operation."""

    version_before: int | None
    version_after: int | None
    applied: tuple[AppliedMigration, ...] = ()
    database_ahead: bool = False
    warnings: tuple[str, ...] = field(default=())

    @property
    def changed(self) -> bool:
        return bool(self.applied)


@dataclass(frozen=True)
class StatusRow:
    """One version in `status`: applied or pending, when, how long, checksum state."""

    version: int
    name: str
    state: Literal["applied", "pending", "dirty", "applied (no file)"]
    applied_at: datetime | None = None
    duration_ms: float | None = None
    checksum: Literal["ok", "changed", "unknown", "-"] = "-"


@dataclass(frozen=True)
class PrerequisitesResult:
    """What prerequisites.sql did: notices from the server and unavailable optional extensions."""

    installed: tuple[str, ...]
    unavailable_optional: tuple[str, ...]
    notices: tuple[str, ...]
