"""An alert listener for tests: started, ready, collecting what it delivers.

    async with silentpulse_alert_listener() as alerts:     # the pytest fixture
        alert_id = await create_an_alert(...)
        event = await alerts.wait_for(alert_id)

Ready means listening: every change committed after the ``async with`` line is
delivered, so a test needs no sleep before it writes. Waits are on conditions, with a
generous limit that only a hang reaches.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

from ..listener import AlertEvent, AlertListener, listen_alerts

HANG = 120.0  # seconds: a guard against a hang, far beyond a loaded machine's delays


class ListeningAlerts:
    """A running listener (``listener``) and the events it delivered so far (``events``)."""

    def __init__(self, listener: AlertListener) -> None:
        self.listener = listener
        self.events: list[AlertEvent] = []
        self._arrived = asyncio.Condition()
        self._ended: BaseException | None = None

    async def consume(self) -> None:
        try:
            async for event in self.listener:
                async with self._arrived:
                    self.events.append(event)
                    self._arrived.notify_all()
        except Exception as exc:  # told to whoever waits for an event, then raised
            async with self._arrived:
                self._ended = exc
                self._arrived.notify_all()
            raise

    async def wait_for(
        self, alert_id: uuid.UUID, *, status: str | None = None, timeout: float = HANG
    ) -> AlertEvent:
        """The first event of ``alert_id`` (with ``status``, if given), once it arrives."""

        def found() -> AlertEvent | None:
            for event in self.events:
                if event.alert_id == alert_id and status in (None, event.status):
                    return event
            return None

        async with self._arrived:
            await asyncio.wait_for(
                self._arrived.wait_for(lambda: found() is not None or self._ended is not None),
                timeout,
            )
        event = found()
        if event is None:
            raise RuntimeError("the alert listener stopped") from self._ended
        return event


@contextlib.asynccontextmanager
async def listening(
    dsn: str, *, ready: bool = True, **options: Any
) -> AsyncIterator[ListeningAlerts]:
    """``listen_alerts(dsn, **options)`` consumed in a task; entered once it is ready
    (``ready=False``: at once). Its error, if it stops first, is raised here."""
    alerts = ListeningAlerts(listen_alerts(dsn, **options))
    task = asyncio.create_task(alerts.consume())
    try:
        if ready:
            await _ready(alerts.listener, task)
        yield alerts
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _ready(listener: AlertListener, task: asyncio.Task[None]) -> None:
    is_ready = asyncio.ensure_future(listener.ready())
    done, _ = await asyncio.wait({is_ready, task}, timeout=HANG, return_when="FIRST_COMPLETED")
    if task in done:
        is_ready.cancel()
        task.result()  # its error
        raise RuntimeError("the alert listener stopped before it was ready")
    if is_ready not in done:
        is_ready.cancel()
        raise TimeoutError(f"the alert listener was not ready within {HANG:g} s")
