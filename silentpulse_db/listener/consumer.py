"""A named consumer: one active process at a time, and its position in the log.

The position is a row of ``alert_listener_positions`` (migration 000021; the log
position since 000022). Which process delivers is written in that row (migration
000062): ``holder_pid``, the delivering backend, and ``holder_lock``, the second key of a
session-level advisory lock that backend holds while it lives (a random key, taken
before the claim). Forced row-level security with no policy leaves the row to a role
with BYPASSRLS, the listeners' (an advisory lock any role may take, and the name's keys
are computable: the election of earlier versions could be held by any role that
connects, and kept every listener standing by). A second process with the same name
waits as a standby and claims the row when the holder no longer holds its lock: its
session closed, was killed, or its host vanished (the server drops the session once TCP
keepalives fail).

On a database before 000062 the listener elects as earlier versions did, by the
advisory lock keyed by the name (:func:`lock_keys`). A listener of this version takes
that lock too, first thing in each try at the election, so that a listener of an
earlier version stands by during a rolling deploy: while another listener that may
listen (its role has BYPASSRLS, it holds no lock of its own: an earlier version's) has
it, this one stands by. A holder whose role cannot listen (no BYPASSRLS) is reported
and ignored: the listener delivers without that lock (hijacked), tries to take it every
round and every ``poll`` seconds, and stops delivering (reconnects and stands by) if a
listener of an earlier version took it first.

The holder checks its claim as it delivers: before each round it reads the row, and
each write of its position is filtered on the holder; a row gone or claimed by another
(an operator's DELETE, a TRUNCATE by its owner) is a lost claim, :class:`LostClaim`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import re
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from ..errors import ConfigurationError
from .events import AlertEvent, Position
from .nodes import Nodes
from .wakeups import Link

logger = logging.getLogger("silentpulse_db.listener")

_NAME = re.compile(r"^[A-Za-z0-9_.:-]{1,100}$")  # as migration 000021 checks it
# The lock's first key: the space of alert consumers, apart from golang-migrate's
# one-bigint key (two int4 keys are another lock space in pg_locks) and any other.
_LOCK_SPACE = 0x53504143  # "SPAC"
# The first key of a holder's own lock (migration 000062's holder_lock is the second).
HOLDER_SPACE = 0x53504148  # "SPAH"
# How long an election waits for a lock on alert_listener_positions (a role with UPDATE
# on it, as the blanket grant gives the application's, may LOCK TABLE it), after which
# it names the sessions holding one and stands by.
ELECTION_LOCK_TIMEOUT = "2s"

_LOAD = """
    SELECT log_xid, log_seq, delivered,
           greatest(since, least(changed_at, now()) - $2::interval) AS threshold
    FROM alert_listener_positions WHERE consumer = $1
"""
# On Citus, once the log is distributed (migration 000059's column): the positions on the
# other node groups too.
_LOAD_NODES = _LOAD.replace("SELECT log_xid,", "SELECT log_nodes, log_xid,")

# changed_at keeps meaning something to a listener of an older library version (a
# rollback): the server's time of the last change delivered. The position never
# moves back, even from a process that lost the lock without noticing yet.
_SAVE = """
    UPDATE alert_listener_positions
    SET log_xid = $2, log_seq = $3, changed_at = coalesce($4, changed_at),
        delivered = '[]'::jsonb, updated_at = now()
    WHERE consumer = $1
      AND (log_xid IS NULL OR (log_xid, log_seq) <= ($2::xid8, $3::bigint))
"""
# Only while this session holds the row's claim (migration 000062), by its own lock.
_MINE = " AND holder_pid = pg_backend_pid() AND holder_lock = ${}"
# The same on every node group: none moves back. A group the row knows and the new
# positions do not (or say none of, or put before it) keeps the row as it is.
_SAVE_NODES = """
    UPDATE alert_listener_positions p
    SET log_xid = $2, log_seq = $3, log_nodes = $5::jsonb, changed_at = coalesce($4, changed_at),
        delivered = '[]'::jsonb, updated_at = now()
    WHERE consumer = $1
      AND (log_xid IS NULL OR (log_xid, log_seq) <= ($2::xid8, $3::bigint))
      AND NOT EXISTS (
          SELECT 1 FROM jsonb_each(coalesce(p.log_nodes -> 'at', '{}'::jsonb)) AS old (node, pos)
          WHERE jsonb_typeof(old.pos) = 'array'
            AND (jsonb_typeof($5::jsonb -> 'at' -> old.node) IS DISTINCT FROM 'array'
                 OR ((old.pos ->> 0)::xid8, (old.pos ->> 1)::bigint)
                    > (($5::jsonb -> 'at' -> old.node ->> 0)::xid8,
                       ($5::jsonb -> 'at' -> old.node ->> 1)::bigint)))
"""


class LostClaim(Exception):
    """This session no longer holds its consumer's row (migration 000062): it must stop
    delivering; it reconnects and stands by, or claims the row again."""


def lock_keys(name: str) -> tuple[int, int]:
    """The advisory lock of consumer ``name``: (space, a 32-bit hash of the name)."""
    digest = hashlib.blake2b(name.encode(), digest_size=4).digest()
    return _LOCK_SPACE, int.from_bytes(digest, "big", signed=True)


def checked_name(name: str) -> str:
    if not _NAME.match(name):
        raise ConfigurationError(
            f"consumer {name[:120]!r}: 1 to 100 letters, digits or '_.:-' (it names a "
            f"row of alert_listener_positions)"
        )
    return name


async def try_lock(conn: Any, name: str) -> bool:
    """The advisory lock of ``name``, as listeners before migration 000062 elect."""
    space, key = lock_keys(name)
    return bool(await conn.fetchval("SELECT pg_try_advisory_lock($1, $2)", space, key))


# The database has migration 000062's columns: the election claims the consumer's row.
_HAS_HOLDER = """
    SELECT EXISTS (SELECT 1 FROM pg_attribute
                   WHERE attrelid = to_regclass('alert_listener_positions')
                     AND attname = 'holder_lock' AND NOT attisdropped)
"""
# A session-level advisory lock of two int4 keys held in this database, as pg_locks
# shows it (the keys as oids: the second one unsigned).
_ADVISORY = """l.locktype = 'advisory' AND l.granted AND l.objsubid = 2
    AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())"""
# A role that may listen: the listener refuses any other (startup.require_every_row).
# A backend pg_stat_activity does not show counts as one: never two processes
# delivering. pg_stat_activity is read once per transaction and then cached: each check
# first clears that snapshot (_FRESH), or a backend started since would count as one.
_FRESH = "SELECT pg_stat_clear_snapshot()"
_MAY_LISTEN = "coalesce(r.rolsuper OR r.rolbypassrls, true)"
_HOLDER = "SELECT holder_pid, holder_lock FROM alert_listener_positions WHERE consumer = $1"
# The row's holder still lives: it holds its own lock, its role may listen.
_ALIVE = f"""
    SELECT EXISTS (
        SELECT 1 FROM pg_locks l
        LEFT JOIN pg_stat_activity a ON a.pid = l.pid
        LEFT JOIN pg_roles r ON r.oid = a.usesysid
        WHERE {_ADVISORY} AND l.pid = $1 AND l.pid <> pg_backend_pid()
          AND l.classid::bigint = {HOLDER_SPACE}
          AND l.objid::bigint = ($2::bigint & 4294967295)
          AND {_MAY_LISTEN})
"""
# Who holds the lock of earlier versions: a listener of one (its role may listen, and it
# holds no lock of its own: a listener of this version also takes that lock), or not.
_EARLIER = f"""
    SELECT l.pid, a.usename, a.application_name, host(a.client_addr) AS client,
           {_MAY_LISTEN} AS may_listen,
           EXISTS (SELECT 1 FROM pg_locks o
                   WHERE o.pid = l.pid AND o.locktype = 'advisory' AND o.granted
                     AND o.classid::bigint = {HOLDER_SPACE} AND o.objsubid = 2) AS current
    FROM pg_locks l
    LEFT JOIN pg_stat_activity a ON a.pid = l.pid
    LEFT JOIN pg_roles r ON r.oid = a.usesysid
    WHERE {_ADVISORY} AND l.pid <> pg_backend_pid()
      AND l.classid::bigint = $1 AND l.objid::bigint = ($2::bigint & 4294967295)
    ORDER BY l.pid
"""
# This session still holds the consumer's row.
_HOLDS = """
    SELECT EXISTS (SELECT 1 FROM alert_listener_positions
                   WHERE consumer = $1 AND holder_pid = pg_backend_pid() AND holder_lock = $2)
"""
_CLAIM = """
    UPDATE alert_listener_positions
    SET holder_pid = pg_backend_pid(), holder_lock = $2, holder_since = now()
    WHERE consumer = $1
"""
# The sessions whose lock on the table keeps an election waiting: a claim's row lock
# (ROW SHARE) or a new row (ROW EXCLUSIVE) waits for these modes, which LOCK TABLE takes.
_LOCKS_IN = """
    SELECT l.pid, a.usename, a.application_name, host(a.client_addr) AS client, l.mode
    FROM pg_locks l
    LEFT JOIN pg_stat_activity a ON a.pid = l.pid
    WHERE l.locktype = 'relation' AND l.granted AND l.pid <> pg_backend_pid()
      AND l.relation = 'alert_listener_positions'::regclass
      AND l.mode IN ({})
    ORDER BY l.pid
"""
_TABLE_LOCKS = _LOCKS_IN.format(
    "'ShareLock', 'ShareRowExclusiveLock', 'ExclusiveLock', 'AccessExclusiveLock'"
)
# Otherwise a row lock kept it waiting: the consumer's row locked (FOR UPDATE, FOR
# SHARE, an UPDATE), or a row of its name inserted, by a transaction not ended. That
# transaction holds one of these modes on the table: the sessions that may be it.
_ROW_LOCKERS = _LOCKS_IN.format("'RowShareLock', 'RowExclusiveLock'")
_LOCK_NOT_AVAILABLE = "55P03"

# Create the consumer's row, claimed by this session: True when it did (no other did).
CreateRow = Callable[[Any, int], Awaitable[bool]]


@dataclass(frozen=True)
class Outcome:
    """One try at the election: this process delivers, or ``why`` it stands by."""

    delivers: bool
    why: str = ""


def _who(row: Any) -> str:
    client = f", from {row['client']}" if row["client"] else ""
    return (
        f"backend pid {row['pid']} (role {row['usename']!r}, application "
        f"{row['application_name']!r}{client})"
    )


@dataclass
class Election:
    """This process's election under ``name``, across its connections: it tries every
    ``poll`` seconds (jittered), and calls ``on_standby()`` when it stands by."""

    name: str
    poll: float
    on_standby: Callable[[], None]
    # This connection's own lock once the election is by the row (None before 000062),
    # and whether it holds the lock of earlier versions.
    key: int | None = None
    earlier_held: bool = False
    reports: Reports = field(init=False)
    _warned_before_000062: bool = False

    def __post_init__(self) -> None:
        self.reports = Reports(self.name)

    @property
    def hijacked(self) -> bool:
        """Delivering by the row without the lock of earlier versions (a role that
        cannot listen holds it): that lock is tried for every ``poll`` seconds."""
        return self.key is not None and not self.earlier_held

    async def take_the_lead(self, link: Link, create: CreateRow) -> None:
        """Return once this process is the one that delivers under the name (``create``:
        the consumer's row, when there is none); until then, stand by. ConnectionLost if
        the connection ends meanwhile."""
        conn = link.conn
        self.key, self.earlier_held = None, False  # a new connection
        if not await conn.fetchval(_HAS_HOLDER):
            await self._by_the_earlier_lock(link)
            return
        key = await own_lock(conn)
        standing_by = False
        while not (outcome := await self.claim(conn, key, create)).delivers:
            if not standing_by:
                logger.info(
                    "alert listener %r: %s; standing by to take over", self.name, outcome.why
                )
                self.on_standby()
                standing_by = True
            await link.sleep(self.poll * random.uniform(0.8, 1.2))
        self.key = key
        if standing_by:
            logger.info("alert listener %r: took over", self.name)

    async def claim(self, conn: Any, key: int, create: CreateRow) -> Outcome:
        """Claim the consumer's row unless a live holder has it; ``key``: this session's
        own lock. First the lock of earlier versions (kept: a listener of an earlier
        version stands by), then the row. Waits at most ELECTION_LOCK_TIMEOUT for a lock
        on the table, then names who holds it and stands by."""
        try:
            async with conn.transaction():
                await conn.execute(f"SET LOCAL lock_timeout = '{ELECTION_LOCK_TIMEOUT}'")
                # Session-level: held after this transaction whatever its outcome.
                if not self.earlier_held:
                    self.earlier_held = await try_lock(conn, self.name)
                # Read first, then again under the row's lock (only when it looks free):
                # a standby does not lock the row every poll.
                for locking in ("", " FOR UPDATE"):
                    await conn.execute(_FRESH)
                    row = await conn.fetchrow(_HOLDER + locking, self.name)
                    why = await self._delivering_elsewhere(conn, row)
                    if why:
                        return Outcome(False, why=why)
                if row is None:
                    if await create(conn, key):
                        return Outcome(True)
                    return Outcome(False, why="another process has just started under this name")
                await conn.execute(_CLAIM, self.name, key)
        except Exception as exc:
            if getattr(exc, "sqlstate", None) != _LOCK_NOT_AVAILABLE:
                raise
            return Outcome(False, why=await self.reports.locks(conn))
        self.reports.blockers = ()
        return Outcome(True)

    async def _delivering_elsewhere(self, conn: Any, row: Any) -> str:
        """Why another process delivers under the name, or "" if none does."""
        pid = None if row is None else row["holder_pid"]
        if pid is not None and await conn.fetchval(_ALIVE, pid, row["holder_lock"]):
            return f"backend pid {pid} is delivering under this name"
        return await self._earlier_delivering(conn)

    async def _earlier_delivering(self, conn: Any) -> str:
        """Who, a listener of an earlier version, delivers under the name (it holds
        their lock), or ""; a holder that cannot listen is reported."""
        if self.earlier_held:
            return ""  # no listener of an earlier version can deliver
        for earlier in await conn.fetch(_EARLIER, *lock_keys(self.name)):
            if not earlier["may_listen"]:
                self.reports.hijack(earlier)
            elif not earlier["current"]:
                return (
                    f"a listener of an earlier version, {_who(earlier)}, is delivering under "
                    f"this name"
                )
        return ""

    async def still_leads(self, conn: Any) -> None:
        """Before each round of a process that delivers by the row: LostClaim if its
        claim is gone, or if a listener of an earlier version took their lock (it could
        while one that cannot listen held it, and released it). Takes that lock when it
        can."""
        if self.key is None:
            return  # before 000062: the lock of earlier versions, held by the session
        if not await conn.fetchval(_HOLDS, self.name, self.key):
            raise LostClaim(
                f"alert listener {self.name!r}: its consumer's row is gone or claimed by "
                f"another session (deleted, or the table emptied); it stops delivering"
            )
        if self.earlier_held:
            return
        if await try_lock(conn, self.name):
            self.earlier_held = True
            logger.info("alert listener %r: took the advisory lock of earlier versions", self.name)
            return
        await conn.execute(_FRESH)
        why = await self._earlier_delivering(conn)
        if why:
            raise LostClaim(f"alert listener {self.name!r}: {why}; it stops delivering")

    async def _by_the_earlier_lock(self, link: Link) -> None:
        """Before migration 000062: the advisory lock keyed by the name."""
        if not self._warned_before_000062:
            self._warned_before_000062 = True
            logger.warning(
                "alert listener %r: this database is before migration 000062, so the "
                "process that delivers is elected by an advisory lock keyed by the name, "
                "which any role that connects may take and hold (docs/notifications.md); "
                "apply the migrations (`silentpulse-db up`)",
                self.name,
            )
        standing_by = False
        while not await try_lock(link.conn, self.name):
            if not standing_by:
                logger.info(
                    "alert listener %r: another process is delivering under this name; "
                    "standing by to take over",
                    self.name,
                )
                self.on_standby()
                standing_by = True
            await link.sleep(self.poll * random.uniform(0.8, 1.2))
        if standing_by:
            logger.info("alert listener %r: took over", self.name)


@dataclass
class Reports:
    """What an election under ``name`` logs as an error, once per culprit: a role that
    cannot listen holding the lock of earlier versions, a lock that keeps it waiting."""

    name: str
    reported: set[int] = field(default_factory=set)  # hijackers already named
    blockers: tuple[int, ...] = ()  # the sessions last named for a lock

    def hijack(self, holder: Any) -> None:
        if holder["pid"] in self.reported:
            return
        self.reported.add(holder["pid"])
        space, key = lock_keys(self.name)
        logger.error(
            "alert listener %r: %s holds pg_advisory_lock(%d, %d), by which listeners of "
            "earlier versions elected the process that delivers under this name; its role "
            "cannot listen (no BYPASSRLS), so it is no listener and is ignored (it delays "
            "nothing here, but would keep an earlier version's listeners standing by; "
            "should it release the lock while one of those stands by, that one would "
            "take it and this listener would stand by). Nothing but a listener takes that "
            "lock: find who runs it (SELECT * FROM pg_stat_activity WHERE pid = %d)",
            self.name,
            _who(holder),
            space,
            key,
            holder["pid"],
        )

    async def locks(self, conn: Any) -> str:
        """lock_timeout: the sessions whose lock kept the election waiting."""
        holders = await conn.fetch(_TABLE_LOCKS)
        if holders:
            who = "; ".join(f"{_who(h)} in {h['mode']}" for h in holders)
            return self._report(
                tuple(h["pid"] for h in holders),
                f"a lock on alert_listener_positions held for over {ELECTION_LOCK_TIMEOUT} "
                f"blocks the election (LOCK TABLE, which a role with UPDATE on the table "
                f"may take, in an open transaction): {who}",
                f"a lock on alert_listener_positions blocks the election ({who})",
            )
        lockers = await conn.fetch(_ROW_LOCKERS)
        who = "; ".join(_who(h) for h in lockers) or "none now (it has ended)"
        return self._report(
            tuple(h["pid"] for h in lockers),
            f"a lock on the consumer's row held for over {ELECTION_LOCK_TIMEOUT} blocks "
            f"the election: the row locked (SELECT ... FOR UPDATE or FOR SHARE, an UPDATE) "
            f"or a row of this name being inserted, by a transaction not ended, of a role "
            f"that bypasses row-level security (another listener, an operator's session). "
            f"Sessions in a transaction that wrote or locked rows of the table: {who}",
            f"a lock on the consumer's row blocks the election (held by one of: {who})",
        )

    def _report(self, pids: tuple[int, ...], message: str, why: str) -> str:
        if pids != self.blockers:
            self.blockers = pids
            logger.error(
                "alert listener %r: cannot claim its consumer's row: %s. It stands by "
                "until that transaction ends (idle_in_transaction_session_timeout on that "
                "role ends an idle one)",
                self.name,
                message,
            )
        return why


async def own_lock(conn: Any) -> int:
    """A session-level advisory lock of this connection's own, (HOLDER_SPACE, a random
    key): while it holds it, the row it claimed is its. Returns the key."""
    while True:
        key = random.randint(1, 2**31 - 1)
        if await conn.fetchval("SELECT pg_try_advisory_lock($1, $2)", HOLDER_SPACE, key):
            return key


@dataclass(frozen=True)
class Carried:
    """A position kept by a listener from before migration 000022 (by time): what it
    delivered, to carry over into the log once, skipping what it already had.

    ``threshold``: its last change's time less the margin it caught up with, and never
    later than now less that margin (a tenant's status_changed_at in the future poisoned
    positions by time), nor earlier than its first start (it delivered nothing older);
    changes before it, and those in ``delivered``, it had."""

    threshold: datetime
    delivered: frozenset[tuple[uuid.UUID, str, datetime]]

    def had(self, event: AlertEvent) -> bool:
        return event.changed_at < self.threshold or event.key in self.delivered


@dataclass(frozen=True)
class Stored:
    """A consumer's row: its log position, or what to carry over when it has none."""

    position: Position | None
    carried: Carried | None
    nodes: Nodes | None = None  # on the other node groups, once the log is distributed


async def load(conn: Any, name: str, margin: timedelta, distributed: bool = False) -> Stored | None:
    row = await conn.fetchrow(_LOAD_NODES if distributed else _LOAD, name, margin)
    if row is None:
        return None
    nodes = Nodes.from_json(row["log_nodes"]) if distributed else None
    if row["log_xid"] is not None:
        return Stored(Position(row["log_xid"], row["log_seq"]), None, nodes)
    delivered = frozenset(
        (uuid.UUID(alert), status, datetime.fromisoformat(at))
        for alert, status, at in json.loads(row["delivered"])
    )
    return Stored(None, Carried(row["threshold"], delivered))


async def create(
    conn: Any,
    name: str,
    position: Position,
    nodes: Nodes | None = None,
    holder: int | None = None,
) -> bool:
    """Write the consumer's first row; with ``holder`` (this session's own lock, migration
    000062), claimed by this session, unless another process wrote it first (False)."""
    columns, values = (
        ["consumer", "since", "changed_at", "log_xid", "log_seq"],
        [
            "$1",
            "now()",
            "now()",
            "$2",
            "$3",
        ],
    )
    args: list[Any] = [name, position.xid, position.seq]
    if nodes is not None:
        args.append(nodes.to_json())
        columns.append("log_nodes")
        values.append(f"${len(args)}::jsonb")
    conflict = ""
    if holder is not None:
        args.append(holder)
        columns += ["holder_pid", "holder_lock", "holder_since"]
        values += ["pg_backend_pid()", f"${len(args)}", "now()"]
        conflict = " ON CONFLICT (consumer) DO NOTHING"
    status = await conn.execute(
        f"INSERT INTO alert_listener_positions ({', '.join(columns)}) "
        f"VALUES ({', '.join(values)}){conflict}",
        *args,
    )
    return bool(status == "INSERT 0 1")


async def save(
    conn: Any,
    name: str,
    position: Position,
    recorded_at: datetime | None,
    nodes: Nodes | None = None,
    holder: int | None = None,
) -> None:
    """Write the position; with ``holder`` (this session's own lock, migration 000062),
    only while this session holds the row's claim: LostClaim if it does not."""
    args: list[Any] = [name, position.xid, position.seq, recorded_at]
    query = _SAVE
    if nodes is not None:
        query = _SAVE_NODES
        args.append(nodes.to_json())
    if holder is not None:
        args.append(holder)
        query += _MINE.format(len(args))
    status = await conn.execute(query, *args)
    if holder is None or status != "UPDATE 0":
        return
    if not await conn.fetchval(_HOLDS, name, holder):  # else: it never moves back
        raise LostClaim(
            f"alert listener {name!r}: could not write its position: its consumer's row is "
            f"gone or claimed by another session (deleted, or the table emptied); it stops "
            f"delivering"
        )


# Alerts changed before the log existed, which a carried-over position has not had:
# their latest state, as the listener before 000022 caught up (with their operation
# from created_at, migration 000020). An alert is (tenant_id, id): an id is unique
# within its tenant only (000044), and another tenant's alert of the same id in the
# log says nothing of this one. Matched on it, Citus runs the anti-join on each shard.
_BEFORE_THE_LOG = """
    SELECT a.id, a.tenant_id, a.status, a.started_at, a.status_changed_at, a.created_at
    FROM alerts a
    WHERE a.status_changed_at >= $1
      AND NOT EXISTS (SELECT 1 FROM alert_changes c
                      WHERE c.tenant_id = a.tenant_id AND c.alert_id = a.id
                        AND c.status = a.status
                        AND c.changed_at = a.status_changed_at)
    ORDER BY a.status_changed_at, a.tenant_id, a.id
"""


async def before_the_log(conn: Any, carried: Carried) -> list[AlertEvent]:
    events = []
    for row in await conn.fetch(_BEFORE_THE_LOG, carried.threshold):
        created = row["created_at"]
        event = AlertEvent(
            alert_id=row["id"],
            tenant_id=row["tenant_id"],
            status=row["status"],
            started_at=row["started_at"],
            changed_at=row["status_changed_at"],
            operation=None
            if created is None
            else ("INSERT" if created == row["status_changed_at"] else "UPDATE"),
            source="catch_up",
            id=f"{row['id']}@{row['status_changed_at'].isoformat()}",
            recorded_at=None,
        )
        if not carried.had(event):
            events.append(event)
    return events
