"""Waiting for an asyncio event with a time limit, without losing a cancellation.

``asyncio.wait_for`` before Python 3.12 returns the awaited result instead of raising
CancelledError when the cancellation and the result arrive in the same turn of the
loop (python/cpython#86296): a listener told to stop (a deploy's SIGTERM) as a
notification woke it went on listening. ``asyncio.wait`` raises it whatever else is
done, so the waits for a wake-up go through here.
"""

from __future__ import annotations

import asyncio


async def event_set_within(event: asyncio.Event, seconds: float) -> bool:
    """True once ``event`` is set, False when ``seconds`` pass first."""
    waiter = asyncio.ensure_future(event.wait())
    try:
        done, _ = await asyncio.wait({waiter}, timeout=seconds)
    finally:
        waiter.cancel()
    return bool(done)
