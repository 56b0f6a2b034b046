"""The LISTENing connection: a notification only wakes the reader.

Any role that can connect may ``pg_notify`` on the channel, so a payload decides
nothing: however many arrive while the reader is busy, they make one wake-up,
and what is read comes from the log. Payloads that are not the trigger's shape
are counted and logged at most once a minute (someone is sending them).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

from ..defaults import ENGINE_SESSION_SETTINGS
from ..postgres.connect import connect
from ..settings import ONE_ATTEMPT
from ..timeouts import event_set_within

logger = logging.getLogger("silentpulse_db.listener")

ALERT_CHANNEL = "silentpulse_alerts"
LISTENER_NEEDS_A_SESSION = (
    "the listener LISTENs, which holds for a session; in this mode notifications reach "
    "whichever client has that server connection at the time, and most are lost"
)
# The server drops the session of a listener whose host vanished (no FIN, no RST)
# within about idle + interval x count seconds, which frees its consumer's lock.
KEEPALIVES = {
    "tcp_keepalives_idle": "5",
    "tcp_keepalives_interval": "2",
    "tcp_keepalives_count": "3",
}
REPORT_EVERY = 60.0  # seconds between two reports of foreign payloads


class ConnectionLost(ConnectionResetError):
    """The listener's connection ended."""


class Link:
    """A connection LISTENing on the alert channel."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.lost = False
        self._wake = asyncio.Event()
        self._foreign = 0
        self._reported_at = -REPORT_EVERY

    def on_notify(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        self._wake.set()
        if not _trigger_shaped(payload):
            self._foreign += 1
            self._report()

    def on_close(self, _conn: Any) -> None:
        self.lost = True
        self._wake.set()

    def _report(self) -> None:
        now = time.monotonic()
        if now - self._reported_at < REPORT_EVERY:
            return
        logger.warning(
            "%d notification(s) on %s were not the alert trigger's (malformed or sent by "
            "hand); each only woke the listener, which reads the alert change log",
            self._foreign,
            ALERT_CHANNEL,
        )
        self._reported_at, self._foreign = now, 0

    def check(self) -> None:
        if self.lost or self.conn.is_closed():
            raise ConnectionLost("listener connection closed")

    async def wait(self, timeout: float) -> None:
        """Until a notification or ``timeout`` seconds; ConnectionLost if it ended."""
        self.check()
        await event_set_within(self._wake, timeout)
        self._wake.clear()
        self.check()

    async def sleep(self, seconds: float) -> None:
        """``seconds``, notifications or not; ConnectionLost if it ended meanwhile."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            await self.wait(left)

    def close(self) -> None:
        if not self.conn.is_closed():
            self.conn.terminate()


def _trigger_shaped(payload: str) -> bool:
    """The shape silentpulse_alert_notify_statement() sends (000019 and 000022)."""
    try:
        data = json.loads(payload)
    except ValueError:
        return False
    return (
        isinstance(data, dict)
        and data.get("op") in ("INSERT", "UPDATE")
        and isinstance(data.get("count"), int)
    )


async def subscribe(dsn: str) -> Link:
    """Connect and LISTEN. Behind a pooler that keeps no session, connect() refuses:
    LISTEN would hear only while the server connection it ran on happened to be ours."""
    conn = await connect(
        dsn,
        ONE_ATTEMPT,
        application_name="silentpulse-db listener",
        session_settings={**ENGINE_SESSION_SETTINGS, **KEEPALIVES},
        need=LISTENER_NEEDS_A_SESSION,
    )
    link = Link(conn)
    try:
        conn.add_termination_listener(link.on_close)
        await conn.add_listener(ALERT_CHANNEL, link.on_notify)
    except BaseException:
        conn.terminate()
        raise
    return link
