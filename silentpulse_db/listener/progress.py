"""Where delivery stands: the position in the log, and what of it a named consumer has
written. An event counts as delivered once it is handed to the caller."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any, Literal

from ..errors import AlertGapError
from . import consumer as consumers
from .events import START, AlertEvent, Position
from .log import from_now, from_time, pruned

logger = logging.getLogger("silentpulse_db.listener")

OnGap = Literal["raise", "skip"]


class Progress:
    """One listener's position (in memory), its consumer's row, and the carry-over of a
    position kept by time before migration 000022."""

    def __init__(
        self, consumer: str | None, since: datetime | None, margin: timedelta, on_gap: OnGap
    ) -> None:
        self.consumer = consumer
        self._since = since
        self._margin = margin
        self._on_gap = on_gap
        self.position: Position | None = None
        self._saved: Position | None = None
        self.unsaved = 0  # events handed out since the position was last written
        self._recorded_at: datetime | None = None
        self._carried: consumers.Carried | None = None
        self._committed_before: frozenset[int] = frozenset()  # xids "from now" skips

    async def resume(self, conn: Any) -> list[AlertEvent]:
        """Where to read from: a named consumer's stored position (carried over from one
        by time, once), else this process's, else ``since`` or now. Returns the changes
        from before the log that a carried-over position has not had."""
        if self.consumer is None:
            self.position = self.position or await self._start(conn)
            return []
        stored = await consumers.load(conn, self.consumer, self._margin)
        if stored is None:
            self.position = self.position or await self._start(conn)
            # Were it killed before it wrote a position past them, its next start would
            # deliver the changes committed just before this one: older, never twice.
            await consumers.create(conn, self.consumer, self.position)
            self._saved = self.position
        elif stored.position is not None:
            # Ahead of what is stored: delivered by this process, not written yet.
            self.position = max(stored.position, self.position or stored.position)
            self._saved = stored.position
        elif stored.carried is not None:
            self.position, self._carried = START, stored.carried
            return await consumers.before_the_log(conn, stored.carried)
        return []

    async def _start(self, conn: Any) -> Position:
        start = await (from_now(conn) if self._since is None else from_time(conn, self._since))
        self._committed_before = start.committed
        return start.position

    def hand_out(self, position: Position, event: AlertEvent) -> bool:
        """Move past ``event``; whether the caller gets it (not if a carried-over
        position says it was delivered before the log)."""
        self.position = position
        if position.xid in self._committed_before:
            return False  # committed before the start, above the horizon then
        if self._carried is not None and self._carried.had(event):
            return False
        self.unsaved += 1
        self._recorded_at = event.recorded_at
        return True

    async def save(self, conn: Any) -> None:
        """Write a named consumer's position, when it moved."""
        if self.consumer is None or self.position is None or self.position == self._saved:
            return
        await consumers.save(conn, self.consumer, self.position, self._recorded_at)
        self._saved, self.unsaved, self._carried = self.position, 0, None

    async def check_gap(self, conn: Any) -> None:
        """Retention deleted changes past the position: say so, never skip them silently."""
        assert self.position is not None
        mark = await pruned(conn)
        if mark is None or mark.position <= self.position:
            return
        who = f"consumer {self.consumer!r}" if self.consumer else "the alert listener"
        message = (
            f"{who} is at alert change {self.position}, and retention deleted changes up to "
            f"{mark.position} (at {mark.at:%Y-%m-%d %H:%M:%S %Z}): the changes in between are "
            f"lost to it"
        )
        if self._on_gap == "raise":
            raise AlertGapError(
                message + "; start it with on_gap='skip' to go on from the oldest change kept",
                consumer=self.consumer,
                position=str(self.position),
                pruned_to=str(mark.position),
            )
        logger.error("%s; going on from the oldest change kept (on_gap='skip')", message)
        self.position = mark.position
