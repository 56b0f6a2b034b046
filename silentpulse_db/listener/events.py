"""What the listener yields, and where in the alert change log it stands."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, NamedTuple

Operation = Literal["INSERT", "UPDATE"]
Source = Literal["notify", "catch_up"]


class Position(NamedTuple):
    """A place in alert_changes: every row at or before ``(xid, seq)`` is behind it.

    Both numbers are the server's (the writing transaction's id and an identity), so no
    caller's value decides what is delivered or skipped."""

    xid: int
    seq: int

    def __str__(self) -> str:
        return f"{self.xid}.{self.seq}"


START = Position(0, 0)  # before the first row the log ever held


@dataclass(frozen=True)
class AlertEvent:
    """An alert created or changed status, as the alert change log recorded it.

    ``id``: stable across deliveries (``"<xid>.<seq>"``, the change's place in the log),
    for handlers that must be idempotent. ``operation``: ``INSERT`` (the alert was
    created with this status) or ``UPDATE`` (its status changed); None only for a
    change carried over from before migration 000022 whose kind is unknown.
    ``changed_at``: the alert's ``status_changed_at`` (the row's data); ``recorded_at``:
    the server's time of the writing transaction. ``source``: ``catch_up`` for the
    changes read after a (re)start until it caught up, ``notify`` for those read on a
    wake-up after that."""

    alert_id: uuid.UUID
    tenant_id: uuid.UUID
    status: str
    started_at: datetime
    changed_at: datetime
    operation: Operation | None
    source: Source
    id: str
    recorded_at: datetime | None

    @property
    def key(self) -> tuple[uuid.UUID, str, datetime]:
        return (self.alert_id, self.status, self.changed_at)


def from_log(row: Any, source: Source) -> tuple[Position, AlertEvent]:
    """The place and the event of one row of log.READ (its columns by position)."""
    xid, seq, tenant_id, alert_id, started_at, operation, status, changed_at, recorded_at = row[:9]
    event = object.__new__(AlertEvent)
    # The frozen dataclass's __init__ sets each field through object.__setattr__: ~1.7 us
    # an event, a third of a catch-up's time (bench/bench_listener.py, catch-up).
    event.__dict__.update(
        alert_id=alert_id,
        tenant_id=tenant_id,
        status=status,
        started_at=started_at,
        changed_at=changed_at,
        operation=operation,
        source=source,
        id=f"{xid}.{seq}",
        recorded_at=recorded_at,
    )
    return Position(xid, seq), event
