"""What the schema's proofs return: check (CheckReport) and drift (DriftReport, its
differences and the rules that excused the rest)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal


@dataclass(frozen=True)
class CheckReport:
    """What `check` proved: the versions whose down undoes their up exactly."""

    checked: tuple[int, ...]


@dataclass(frozen=True)
class DriftDifference:
    """One object of the live database that differs from what the migration files build.

    ``kind``: relation, column, constraint, index, policy, trigger, function, sequence,
    owner, grant, partition, ...; ``change``: ``missing`` (the files build it, the live
    database has it not), ``unexpected`` (the other way) or ``changed``; ``expected`` /
    ``actual``: the two descriptions; ``fix``: the one statement that brings the live
    database back, or None where it takes more than one.
    """

    kind: str
    key: str
    change: Literal["missing", "unexpected", "changed"]
    expected: str | None
    actual: str | None
    fix: str | None = None

    def __str__(self) -> str:
        if self.change == "missing":
            what = f"missing (the files build: {self.expected})"
        elif self.change == "unexpected":
            what = f"not built by the files (found: {self.actual})"
        else:
            what = f"changed: expected {self.expected!r}, found {self.actual!r}"
        return f"{self.kind} {self.key}: {what}"


@dataclass(frozen=True)
class DriftExcuse:
    """A difference that is no drift, and the rule that says so."""

    kind: str
    key: str
    rule: str


@dataclass(frozen=True)
class DriftReport:
    """What `drift` found: the live database against the files at its version."""

    version: int | None
    differences: tuple[DriftDifference, ...]
    excused: tuple[DriftExcuse, ...]
    objects: int  # objects compared
    checked_at: datetime

    @property
    def matches(self) -> bool:
        return not self.differences
