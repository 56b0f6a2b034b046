"""The operator jobs' reports (prerequisites, check, partitions, retention) and status rows.

Public as ``silentpulse_db.results.<name>`` (and ``silentpulse_db.<name>``),
which loads this module on first use: see results.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Literal


@dataclass(frozen=True)
class PrerequisitesResult:
    """What prerequisites.sql did: notices from the server and unavailable optional extensions."""

    installed: tuple[str, ...]
    unavailable_optional: tuple[str, ...]
    notices: tuple[str, ...]


@dataclass(frozen=True)
class CheckReport:
    """What `check` proved: the versions whose down undoes their up exactly."""

    checked: tuple[int, ...]


@dataclass(frozen=True)
class PartitionChange:
    table: str
    partition: str
    moved_rows: int

    def __str__(self) -> str:
        moved = (
            f", {self.moved_rows} row(s) moved from the default partition"
            if self.moved_rows
            else ""
        )
        return f"created {self.partition}{moved}"


@dataclass(frozen=True)
class PartitionReport:
    """What ensure_partitions did: partitions created, partitions secured, what it skipped."""

    created: tuple[PartitionChange, ...] = ()
    secured: tuple[str, ...] = ()
    skipped: tuple[str, ...] = ()


@dataclass(frozen=True)
class PartitionCoverage:
    """One partitioned table in `status`."""

    table: str
    covered_until: date | None  # first month (UTC) from now on with no partition
    months_ahead: int  # whole months covered after the current one
    default_rows: int | None  # None: row-level security hides them from this role

    def __str__(self) -> str:
        last = "-"
        if self.covered_until is not None:  # the first month without: name the last one with
            year, month = divmod(self.covered_until.year * 12 + self.covered_until.month - 2, 12)
            last = f"{year:04d}-{month + 1:02d}"
        rows = (
            "hidden by row-level security" if self.default_rows is None else str(self.default_rows)
        )
        ahead = f"{self.months_ahead} month(s) ahead (last month covered: {last})"
        return f"{self.table}: {ahead}, rows in default: {rows}"


@dataclass(frozen=True)
class RetentionAction:
    table: str
    partition: str
    dropped: bool
    reason: str

    def __str__(self) -> str:
        verb = "drop" if self.dropped else "keep"
        return f"{verb} {self.partition}: {self.reason}"


@dataclass(frozen=True)
class RetentionReport:
    dry_run: bool
    actions: tuple[RetentionAction, ...]

    @property
    def refused(self) -> tuple[RetentionAction, ...]:
        return tuple(a for a in self.actions if not a.dropped)


@dataclass(frozen=True)
class StatusRow:
    """One version in `status`: applied or pending, when, how long, checksum state."""

    version: int
    name: str
    state: Literal["applied", "pending", "dirty", "applied (no file)"]
    applied_at: datetime | None = None
    duration: float | None = None  # seconds
    checksum: Literal["ok", "changed", "unknown", "-"] = "-"
    breaking: bool = False  # its up file says `-- silentpulse: breaking`
    # What its files are: "no down file", "no up file", "empty up", "empty down" (a file
    # of comments only runs nothing, as in golang-migrate).
    notes: tuple[str, ...] = ()


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
