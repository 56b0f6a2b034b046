"""AlertListener: the alert change log, followed for as long as the service runs.

One pass, top to bottom: connect and LISTEN; on the very first connection, check the
role, wait for migration 000022 and note where "from now on" starts; for a named
consumer, claim its row (or stand by); find where to resume; then read rounds from the
log, each woken by a notification, a poll while a change is held back, or the health
check's timeout. Whatever ends it,
reconnect with backoff and go on from the position reached.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncGenerator, AsyncIterator
from datetime import datetime, timedelta
from typing import Any, Literal

from ..errors import AlertGapError, DatabaseConnectionError
from ..postgres.connect import describe, is_connection_lost, is_transient
from ..postgres.dsn import connection_dsn, validate_dsn
from ..postgres.translate import typed_errors
from ..settings import CONNECTING, DEFAULT_CONNECT, ConnectRetry, settings
from . import consumer as consumers
from .events import AlertEvent
from .log import Batch
from .nodes import NodeBatch
from .progress import OnGap, Progress
from .startup import require_every_row, wait_for_the_log
from .wakeups import Link, subscribe

logger = logging.getLogger("silentpulse_db.listener")

# Reconnect failures in a row logged as warnings; the ones after, as errors.
QUIET_FAILURES = 3
# A named consumer's position is written before the listener waits for a wake-up,
# after this many events of a long catch-up, and when the iteration closes.
SAVE_EVERY = 1000
BATCH = 1000  # rows read per round trip
# A committed change held back by an older open transaction is polled for (no
# notification says that transaction ended), from HELD_POLL_FIRST up to HELD_POLL_MAX
# seconds apart; held longer than HELD_WARNING, it is logged (once a minute).
HELD_POLL_FIRST = 0.02
HELD_POLL_MAX = 1.0
HELD_WARNING = 10.0

State = Literal["starting", "standby", "active", "reconnecting"]


class AlertListener:
    """Yields every alert change from the alert change log, in transaction order, once.

    Iterate it (``async for event in listen_alerts(dsn, consumer="notifications")``);
    ``await listener.ready()`` returns once it delivers every change committed from then
    on; ``listener.state`` says where it is, for a health check. Parameters: see
    docs/reference.md#alerts.
    """

    def __init__(
        self,
        dsn: str,
        *,
        since: datetime | None = None,
        consumer: str | None = None,
        catch_up_margin: timedelta = timedelta(seconds=60),
        initial_backoff: float = 0.2,
        max_backoff: float = 30.0,
        health_check_interval: float = 10.0,
        poll_interval: float = 0.5,
        standby_poll: float = 1.0,
        on_gap: OnGap = "raise",
        connect: ConnectRetry = DEFAULT_CONNECT,
        **deprecated: Any,
    ) -> None:
        retry = settings("AlertListener", deprecated, CONNECTING, connect=connect).connect
        dsn = connection_dsn(dsn)  # the DSN a service also gives golang-migrate: x- options out
        validate_dsn(dsn)
        self._dsn = dsn
        self.consumer = consumers.checked_name(consumer) if consumer is not None else None
        self._progress = Progress(self.consumer, since, catch_up_margin, on_gap)
        self._health_check_interval = health_check_interval
        self._poll = poll_interval
        self._election = None
        if self.consumer is not None:
            self._election = consumers.Election(self.consumer, standby_poll, self._stand_by)
        self._attempts, self._wait = retry.attempts, retry.wait
        self._state: State = "starting"
        self._ready = asyncio.Event()
        self._iterator: AsyncGenerator[AlertEvent, None] | None = None
        self._retrying = Retrying(initial_backoff, max_backoff, dsn)

    # -- the public face ------------------------------------------------------------

    def __aiter__(self) -> AlertListener:
        return self

    async def __anext__(self) -> AlertEvent:
        if self._iterator is None:
            self._iterator = self._events()
        return await self._iterator.__anext__()

    async def aclose(self) -> None:
        """Stop: write a named consumer's position and drop the connection."""
        if self._iterator is not None:
            await self._iterator.aclose()

    async def ready(self) -> None:
        """Return once the listener is active and delivers every change committed from
        now on (a standby returns when it has taken over)."""
        await self._ready.wait()

    @property
    def state(self) -> State:
        """``starting``, ``standby`` (another process has the consumer name),
        ``active`` or ``reconnecting``."""
        return self._state

    @property
    def is_ready(self) -> bool:
        return self._ready.is_set()

    # -- the loop -------------------------------------------------------------------

    async def _events(self) -> AsyncGenerator[AlertEvent, None]:
        first = True
        while True:
            link: Link | None = None
            failure: Exception
            leads = self._election is None  # only the elected process writes a position
            try:
                with typed_errors(self._dsn, "listen for alerts"):
                    link = await subscribe(self._dsn)
                    if first:
                        await require_every_row(link.conn)
                        await wait_for_the_log(link.conn, self._attempts, self._wait)
                        await self._progress.note_start(link.conn)
                        first = False
                    if self._election is not None:
                        self._progress.holder = None  # no claim on this connection yet
                        await self._election.take_the_lead(link, self._progress.create_row)
                        self._progress.holder = self._election.key
                        leads = True
                    carried_over = await self._progress.resume(link.conn)
                for event in carried_over:
                    yield event
                async for event in self._rounds(link):
                    yield event
            except AlertGapError:
                raise
            except consumers.LostClaim as exc:
                logger.error("%s", exc)
                leads = False
                failure = exc
            except Exception as exc:
                if first and not _worth_retrying(exc):
                    raise
                failure = exc  # the rounds never end but by an exception
            finally:
                self._ready.clear()
                self._state = "reconnecting"
                await close(link, self._progress if leads else None)
            await self._retrying.failed(failure)

    def _stand_by(self) -> None:
        self._state = "standby"

    async def _rounds(self, link: Link) -> AsyncIterator[AlertEvent]:
        """Read, deliver, wait; until the connection fails."""
        progress, held = self._progress, HeldBack()
        source: Literal["notify", "catch_up"] = "catch_up"
        election = self._election
        while True:
            if election is not None:
                await election.still_leads(link.conn)
            await progress.check_gap(link.conn)
            assert progress.position is not None
            batch = await progress.read(link.conn, BATCH, source)
            # A round succeeded: failures count again from zero, and it is listening.
            self._retrying.succeeded()
            self._state = "active"
            self._ready.set()
            for position, event in batch.changes:
                link.check()  # a lost connection: another process may deliver from here
                if progress.hand_out(position, event):
                    yield event
                    if progress.unsaved >= SAVE_EVERY:
                        await progress.save(link.conn)
            if batch.full:
                continue
            await progress.save(link.conn)
            if batch.held_back is None:
                held.clear()
                source = "notify"  # caught up: what comes next, a wake-up brought
                await link.wait(
                    idle_wait(progress, self._poll, self._health_check_interval, election)
                )
            else:
                await link.wait(held.next_poll(batch))


async def close(link: Link | None, progress: Progress | None) -> None:
    """Write what was delivered (the caller had it), with ``progress`` (None: this
    connection did not take the lead, or lost its claim: nothing to write), then drop
    the connection."""
    if link is None:
        return
    consumer = progress.consumer if progress is not None else None
    if (
        progress is not None
        and consumer is not None
        and not link.lost
        and not link.conn.is_closed()
    ):
        try:
            await asyncio.wait_for(progress.save(link.conn), 5)
        except Exception as exc:  # a lost connection: the next start delivers them again
            logger.warning(
                "alert listener %r could not write its position: %s", consumer, describe(exc)
            )
    link.close()


class Retrying:
    """Failures in a row and the pause before the next connection: a failure counts as
    one until a read of the log succeeds (reconnecting is no success), so the pause
    doubles and, past QUIET_FAILURES in a row, each is logged as an error."""

    def __init__(self, initial: float, maximum: float, dsn: str) -> None:
        self.initial, self.maximum, self._dsn = initial, maximum, dsn
        self.failures, self.pause = 0, initial

    def succeeded(self) -> None:
        self.failures, self.pause = 0, self.initial

    async def failed(self, exc: BaseException) -> None:
        """Log ``exc``, wait the pause (jittered), and double it for the next time."""
        self.failures += 1
        logger.log(
            logging.WARNING if self.failures <= QUIET_FAILURES else logging.ERROR,
            "alert listener: %s (failure %d in a row); reconnecting in %.1fs",
            describe(exc, self._dsn),
            self.failures,
            self.pause,
        )
        await asyncio.sleep(self.pause * random.uniform(0.8, 1.2))
        self.pause = min(self.pause * 2, self.maximum)


class HeldBack:
    """A change committed but held back by an older open transaction: polled for, and
    logged once a minute past HELD_WARNING seconds."""

    def __init__(self) -> None:
        self.since: float | None = None
        self.poll = HELD_POLL_FIRST
        self._reported = 0.0

    def clear(self) -> None:
        self.since, self.poll = None, HELD_POLL_FIRST

    def next_poll(self, batch: Batch | NodeBatch) -> float:
        now = time.monotonic()
        self.since = self.since or now
        if now - self.since >= HELD_WARNING and now - self._reported >= 60:
            self._reported = now
            logger.warning(
                "alert changes committed %.0f s ago wait for an older transaction that is "
                "still open (delivery follows transaction order); find it with SELECT pid, "
                "xact_start, query FROM %s WHERE backend_xid IS NOT NULL ORDER "
                "BY xact_start LIMIT 1 (change %s)",
                now - self.since,
                "citus_stat_activity" if isinstance(batch, NodeBatch) else "pg_stat_activity",
                batch.held_back,
            )
        poll, self.poll = self.poll, min(self.poll * 2, HELD_POLL_MAX)
        return poll


def idle_wait(
    progress: Progress,
    poll: float,
    health_check: float,
    election: consumers.Election | None = None,
) -> float:
    """Caught up: until a notification, or the health check's timeout. On Citus no
    trigger notifies (the workers' NOTIFY would reach no one and fail a two-node commit):
    the log is read every ``poll`` seconds, and a NOTIFY on the coordinator's channel
    still wakes it at once. Delivering without the lock of earlier versions (hijacked),
    every ``standby_poll`` seconds at least, to try for it."""
    wait = min(poll, health_check) if progress.distributed else health_check
    return min(wait, election.poll) if election is not None and election.hijacked else wait


def _worth_retrying(exc: BaseException) -> bool:
    """On the first connection: only what may pass by itself."""
    if isinstance(exc, DatabaseConnectionError):
        return exc.transient
    return is_transient(exc) or is_connection_lost(exc)


# The name services call; the class is its type.
listen_alerts = AlertListener
