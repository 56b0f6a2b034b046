"""Where delivery stands: the position in the log, and what of it a named consumer has
written. An event counts as delivered once it is handed to the caller.

On plain PostgreSQL (and on Citus before the log is distributed) the position is one
``(xid, seq)``. Once ``alert_changes`` is distributed it is one per node group of origin
(listener/nodes.py): ``position`` stays origin 0's (the coordinator's: the changes
written before the log was distributed), ``nodes`` holds the others.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from ..errors import AlertGapError
from . import consumer as consumers
from .events import START, AlertEvent, Position, Source
from .log import Batch, from_now, from_time, pruned, read_after
from .nodes import NodeBatch, NodeReader, Nodes, citus_present, log_distributed, origin

logger = logging.getLogger("silentpulse_db.listener")

OnGap = Literal["raise", "skip"]


@dataclass(frozen=True)
class _Start:
    """Where a listener starts: its position (and on the other node groups), and the
    transactions it skips, committed above the horizon when it started."""

    position: Position
    nodes: Nodes | None
    before: frozenset[int]
    on_nodes: frozenset[tuple[int, int]]


class Reading:
    """Where a listener reads: its position (in memory), from where it started, and the
    log's shape (by node group once Citus distributes it)."""

    def __init__(self, consumer: str | None, since: datetime | None) -> None:
        self.consumer = consumer
        self._since = since
        self.position: Position | None = None
        self.nodes: Nodes | None = None  # on Citus, once the log is distributed
        self._reader: NodeReader | None = None
        self._citus = False  # the extension is there: the log may be distributed later
        # The transactions "from now" skips: xids (plain), (origin, xid) on Citus.
        self._committed_before: frozenset[int] = frozenset()
        self._committed_on_nodes: frozenset[tuple[int, int]] = frozenset()
        # A named consumer's "from now on", taken when the listener started (it may
        # stand by first): used if its row does not exist yet when it takes the lead.
        self._first: _Start | None = None

    @property
    def distributed(self) -> bool:
        """The log is distributed by Citus: no notification wakes the reader (it polls)."""
        return self._reader is not None

    async def note_start(self, conn: Any) -> None:
        """A named consumer's start: where "from now on" begins, should its row not exist
        yet when it takes the lead (it may stand by first). Once per process."""
        if self.consumer is None or self.position is not None or self._first is not None:
            return
        await self._detect(conn)
        self._first = await self._started_now(conn)

    async def _detect(self, conn: Any) -> None:
        """Citus, and whether the log is distributed (then read by node group)."""
        self._citus = await citus_present(conn)
        self._reader = None
        if self._citus and await log_distributed(conn):
            await self._distribute(conn)

    async def _started_now(self, conn: Any) -> _Start:
        """Where a start now (or at ``since``) would read from; the position is not moved."""
        assert self.position is None
        await self._start(conn)
        start = self._here()
        self.position, self.nodes = None, None
        self._committed_before, self._committed_on_nodes = frozenset(), frozenset()
        return start

    def _here(self) -> _Start:
        assert self.position is not None
        return _Start(self.position, self.nodes, self._committed_before, self._committed_on_nodes)

    def _adopt(self, start: _Start) -> None:
        """Read from ``start`` (the log distributed since it was taken: by node group,
        every group but 0 from its first change, as _distribute does)."""
        self.position, self.nodes = start.position, start.nodes
        self._committed_before, self._committed_on_nodes = start.before, start.on_nodes
        if self.distributed and self.nodes is None:
            self.nodes = Nodes()
            self._committed_on_nodes = frozenset((0, xid) for xid in start.before)
        self._first = None

    async def _distribute(self, conn: Any) -> None:
        """Read the distributed log from now on: the positions on the other node groups
        start empty, every group from its first change (none wrote before the log was
        distributed: the changes written until then are origin 0's)."""
        self._reader = NodeReader()
        await self._reader.prepare(conn)
        if self.nodes is None and self.position is not None:
            self.nodes = Nodes()
            self._committed_on_nodes = frozenset((0, xid) for xid in self._committed_before)

    async def _start(self, conn: Any) -> None:
        if self._reader is not None:
            reader, since = self._reader, self._since
            start = await (reader.from_time(conn, since) if since else reader.from_now(conn))
            self.position, self.nodes = start.position, start.nodes
            self._committed_on_nodes = start.committed
            return
        plain = await (from_now(conn) if self._since is None else from_time(conn, self._since))
        self.position = plain.position
        self._committed_before = plain.committed


class Progress(Reading):
    """One listener's position (in memory), its consumer's row, and the carry-over of a
    position kept by time before migration 000022."""

    def __init__(
        self, consumer: str | None, since: datetime | None, margin: timedelta, on_gap: OnGap
    ) -> None:
        super().__init__(consumer, since)
        self._margin = margin
        self._on_gap = on_gap
        self._saved: Position | None = None
        self._saved_nodes: str | None = None  # the nodes' positions last written
        self.unsaved = 0  # events handed out since the position was last written
        self._recorded_at: datetime | None = None
        self._carried: consumers.Carried | None = None
        # The own lock of the session that claimed the consumer's row (migration 000062;
        # None before it): writes of the position are filtered on that claim.
        self.holder: int | None = None

    async def create_row(self, conn: Any, holder: int) -> bool:
        """The election found no row for the consumer: write it, claimed by this session
        (its own lock ``holder``), from where this process is or started; False if
        another process wrote it first (then its row says where to resume)."""
        assert self.consumer is not None
        await self._detect(conn)
        here = self.position is not None
        start = self._here() if here else self._first or await self._started_now(conn)
        nodes = _on_nodes(start) if self.distributed else None
        if not await consumers.create(conn, self.consumer, start.position, nodes, holder):
            return False
        self._adopt(start)
        self._mark_saved()
        return True

    async def resume(self, conn: Any) -> list[AlertEvent]:
        """Where to read from: a named consumer's stored position (carried over from one
        by time, once), else this process's, else ``since`` or now (a named consumer's:
        when the process started). Returns the changes from before the log that a
        carried-over position has not had."""
        await self._detect(conn)
        if self.consumer is None:
            if self.position is None:
                await self._start(conn)
            return []
        stored = await consumers.load(conn, self.consumer, self._margin, self.distributed)
        if stored is None:
            if self.holder is not None:  # claimed, and gone since
                raise consumers.LostClaim(
                    f"alert listener {self.consumer!r}: its consumer's row was deleted as it "
                    f"took the lead"
                )
            if self.position is None:
                self._adopt(self._first or await self._started_now(conn))
            assert self.position is not None
            # Were it killed before it wrote a position past them, its next start would
            # deliver the changes committed just before this one: older, never twice.
            await consumers.create(conn, self.consumer, self.position, self.nodes)
            self._mark_saved()
        elif stored.position is not None:
            # Ahead of what is stored: delivered by this process, not written yet.
            self.position = max(stored.position, self.position or stored.position)
            if self.distributed:
                self.nodes = _ahead(stored.nodes or Nodes(), self.nodes)
            self._saved = stored.position
            self._saved_nodes = stored.nodes.to_json() if stored.nodes is not None else None
        elif stored.carried is not None:
            self.position, self._carried = START, stored.carried
            if self.distributed:
                self.nodes = Nodes()
            return await consumers.before_the_log(conn, stored.carried)
        return []

    async def read(self, conn: Any, limit: int, source: Source) -> Batch | NodeBatch:
        """The next changes after the position."""
        assert self.position is not None
        if self._reader is None and self._citus and await log_distributed(conn):
            await self._distribute(conn)  # distributed while this listener ran
        if self._reader is not None:
            assert self.nodes is not None
            return await self._reader.read_after(conn, self.position, self.nodes, limit, source)
        return await read_after(conn, self.position, limit, source)

    def hand_out(self, position: Position, event: AlertEvent) -> bool:
        """Move past ``event``; whether the caller gets it (not if a carried-over
        position says it was delivered before the log)."""
        if self.nodes is None:
            self.position = position
            if position.xid in self._committed_before:
                return False  # committed before the start, above the horizon then
        else:
            group = origin(position.seq)
            if group:
                self.nodes.move(position)
            else:
                self.position = position
            if (group, position.xid) in self._committed_on_nodes:
                return False
        if self._carried is not None and self._carried.had(event):
            return False
        self.unsaved += 1
        self._recorded_at = event.recorded_at
        return True

    def _moved(self) -> bool:
        nodes_moved = self.nodes is not None and self.nodes.to_json() != self._saved_nodes
        return self.position != self._saved or nodes_moved

    def _mark_saved(self) -> None:
        self._saved = self.position
        self._saved_nodes = self.nodes.to_json() if self.nodes is not None else None

    async def save(self, conn: Any) -> None:
        """Write a named consumer's position, when it moved."""
        if self.consumer is None or self.position is None or not self._moved():
            return
        nodes = self.nodes if self.distributed else None
        await consumers.save(
            conn, self.consumer, self.position, self._recorded_at, nodes, self.holder
        )
        self._mark_saved()
        self.unsaved, self._carried = 0, None

    async def check_gap(self, conn: Any) -> None:
        """Retention deleted changes past the position: say so, never skip them silently."""
        assert self.position is not None
        mark = await pruned(conn, self.distributed)
        if mark is None:
            return
        if mark.position > self.position:
            gap(self.consumer, self._on_gap, str(self.position), str(mark.position), mark.at)
            self.position = mark.position
        if self.nodes is None:
            return
        for group, deleted in sorted(mark.nodes.items()):
            after = self.nodes.after(group)
            if after is not None and deleted > after:
                where = f"node group {group}: "
                gap(self.consumer, self._on_gap, where + str(after), where + str(deleted), mark.at)
                self.nodes.set(group, deleted)


def _on_nodes(start: _Start) -> Nodes:
    return start.nodes if start.nodes is not None else Nodes()


def gap(consumer: str | None, on_gap: OnGap, position: str, pruned_to: str, at: datetime) -> None:
    """Retention deleted changes past ``position``: AlertGapError, or logged (on_gap="skip")."""
    who = f"consumer {consumer!r}" if consumer else "the alert listener"
    message = (
        f"{who} is at alert change {position}, and retention deleted changes up to "
        f"{pruned_to} (at {at:%Y-%m-%d %H:%M:%S %Z}): the changes in between are lost to it"
    )
    if on_gap == "raise":
        raise AlertGapError(
            message + "; start it with on_gap='skip' to go on from the oldest change kept",
            consumer=consumer,
            position=position,
            pruned_to=pruned_to,
        )
    logger.error("%s; going on from the oldest change kept (on_gap='skip')", message)


def _ahead(stored: Nodes, mine: Nodes | None) -> Nodes:
    """The further of two positions on each node group (this process's may be ahead of
    what its consumer's row says: delivered, not written yet). Both agree on the groups
    that are None (gone when the consumer started): its row was written from the same."""
    if mine is None:
        return stored
    merged = Nodes(top=max(stored.top, mine.top))
    for group in sorted(set(stored.at) | set(mine.at)):
        a, b = stored.after(group), mine.after(group)
        merged.at[group] = None if a is None or b is None else max(a, b)
    return merged
