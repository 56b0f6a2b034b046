"""What ``distribute`` returns: where each table's rows live on a Citus cluster
(TablePlacement), the steps that put them there (DistributionStep), the settings those
steps use (DistributionSetting), all in one DistributionReport."""

from __future__ import annotations

from dataclasses import dataclass

# TablePlacement.placement
REFERENCE = "reference"  # a copy on every node
DISTRIBUTED = "distributed"  # hash-distributed by tenant_id, colocated
COORDINATOR = "coordinator"  # a plain table on the coordinator alone


@dataclass(frozen=True)
class TablePlacement:
    """One table (a partitioned table counts once, with its partitions): ``placement``
    is where distribute puts it (``reference``, ``distributed`` or ``coordinator``),
    ``reason`` why; ``placed``: it was so before this run (nothing to do for it)."""

    table: str
    placement: str
    reason: str
    placed: bool

    def __str__(self) -> str:
        done = "" if self.placed else " (to do)"
        return f"{self.placement:<11}  {self.table}{done}: {self.reason}"


@dataclass(frozen=True)
class DistributionStep:
    """One step, run in a transaction of its own: ``action`` on ``table`` with
    ``statements`` (the SET LOCALs it needs first), ``why``. ``duration``: seconds it
    took; None in a dry run."""

    table: str
    action: str
    statements: tuple[str, ...]
    why: str
    duration: float | None = None

    def __str__(self) -> str:
        took = "" if self.duration is None else f" ({self.duration * 1000:.0f} ms)"
        return f"{self.action} {self.table}{took}: {self.why}"


@dataclass(frozen=True)
class DistributionSetting:
    """A Citus setting a step sets for its own transaction (SET LOCAL: nothing persists)."""

    name: str
    value: str
    why: str

    def __str__(self) -> str:
        return f"{self.name} = {self.value}: {self.why}"


@dataclass(frozen=True)
class DistributionReport:
    """What distribute planned (``dry_run``) or did. ``version``: the schema version it
    ran at; ``shard_count``: the distributed tables' shards, ``colocated_with``: the
    table they are colocated with (None: no table to distribute); ``nodes``: the nodes
    that hold shards. ``steps`` empty: every table was placed already, nothing done."""

    dry_run: bool
    version: int
    shard_count: int
    colocated_with: str | None
    nodes: int
    tables: tuple[TablePlacement, ...]
    steps: tuple[DistributionStep, ...]
    settings: tuple[DistributionSetting, ...]

    @property
    def changed(self) -> bool:
        """Steps ran (or would run, in a dry run)."""
        return bool(self.steps)

    def placed(self, placement: str) -> tuple[str, ...]:
        """The tables planned ``placement`` (REFERENCE, DISTRIBUTED or COORDINATOR)."""
        return tuple(t.table for t in self.tables if t.placement == placement)
