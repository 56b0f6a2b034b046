"""A stop is never lost: a cancellation that arrives in the same turn of the loop as
the wake-up it waited for still cancels (asyncio.wait_for before Python 3.12 returned
the wake-up instead, and a listener told to stop by a deploy's SIGTERM went on)."""

from __future__ import annotations

import asyncio

import pytest

from silentpulse_db.listener.wakeups import Link
from silentpulse_db.timeouts import event_set_within


class _OpenConnection:
    def is_closed(self) -> bool:
        return False


async def test_a_cancellation_that_meets_a_wake_up_cancels() -> None:
    link = Link(_OpenConnection())
    waiting = asyncio.create_task(link.wait(60))
    await asyncio.sleep(0)  # it waits for a notification
    link.on_notify(None, 0, "silentpulse_alerts", '{"op": "INSERT", "count": 1}')
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting


async def test_the_event_or_the_time_limit() -> None:
    event = asyncio.Event()
    assert await event_set_within(event, 0) is False
    asyncio.get_running_loop().call_soon(event.set)
    assert await event_set_within(event, 60) is True
    # Nothing is left waiting on the event either way.
    await asyncio.sleep(0)
    assert [t for t in asyncio.all_tasks() if t is not asyncio.current_task()] == []
