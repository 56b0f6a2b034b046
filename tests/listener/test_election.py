"""Which process delivers under a consumer name (migration 000062): a claim on the
consumer's row, which only the listeners' role (BYPASSRLS) may write. What the
application's role (the blanket grant, no BYPASSRLS) can and cannot do to it, a listener
of an earlier version met during a rolling deploy, and a first start that stood by."""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any

import asyncpg
import pytest
from schema.seed import seed_tenant

from silentpulse_db import AlertListener
from silentpulse_db.listener import consumer
from silentpulse_db.listener.consumer import Election, LostClaim, lock_keys, own_lock
from silentpulse_db.listener.events import Position
from silentpulse_db.testing.alerts import HANG
from silentpulse_db.testing.plugin import AppRole

from .listening import delivered, new_alert, running, settled
from helpers import wait_for

POSITIONS = "alert_listener_positions"


def _name() -> str:
    return f"notifications-{uuid.uuid4().hex[:6]}"


async def _errors(caplog: pytest.LogCaptureFixture, *words: str) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.ERROR and all(w in r.getMessage() for w in words)
    ]


async def test_the_application_role_cannot_claim_nor_silence_a_consumer(
    silentpulse_migrated_database: str,
    silentpulse_app_database: str,
    silentpulse_jobs_database: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The red team's hijack: the application's role holds the consumer's advisory lock
    (its keys are computable from the name) in an idle session. Earlier versions stood by
    behind it for as long as it liked and delivered nothing; now the listener delivers,
    and names the session. The row that elects, the role can neither claim nor lock."""
    admin = await asyncpg.connect(silentpulse_migrated_database)
    app = await asyncpg.connect(silentpulse_app_database)  # the runbook's blanket grant
    name = _name()
    try:
        ids = await seed_tenant(admin, "hijack")
        assert await app.fetchval("SELECT pg_try_advisory_lock($1, $2)", *lock_keys(name))
        app_pid = await app.fetchval("SELECT pg_backend_pid()")
        with caplog.at_level(logging.INFO, logger="silentpulse_db.listener"):
            async with running(silentpulse_jobs_database, consumer=name) as (listener, events):
                alert = await new_alert(admin, ids)
                await delivered(events, alert)
                assert listener.state == "active"
                assert not any("standing by to take over" in r.getMessage() for r in caplog.records)
                (reported,) = await _errors(caplog, f"backend pid {app_pid}", "no BYPASSRLS")
                space, key = lock_keys(name)
                assert f"pg_advisory_lock({space}, {key})" in reported

                # The row the listener claimed: the role sees it not, locks it not, and
                # changes it not, whatever it has been granted.
                holder = await admin.fetchval(
                    f"SELECT holder_pid FROM {POSITIONS} WHERE consumer = $1", name
                )
                assert holder is not None and holder != app_pid
                async with app.transaction():
                    assert await app.fetch(f"SELECT 1 FROM {POSITIONS} FOR UPDATE") == []
                    assert await app.fetch(f"SELECT 1 FROM {POSITIONS} FOR SHARE") == []
                claim = (
                    f"UPDATE {POSITIONS} SET holder_pid = pg_backend_pid(), holder_lock = 1 "
                    f"WHERE consumer = $1"
                )
                assert await app.execute(claim, name) == "UPDATE 0"
                assert await app.execute(f"DELETE FROM {POSITIONS}") == "DELETE 0"
                with pytest.raises(asyncpg.InsufficientPrivilegeError, match="row-level"):
                    await app.execute(
                        f"INSERT INTO {POSITIONS} (consumer, since, changed_at, holder_pid) "
                        f"VALUES ('x', now(), now(), pg_backend_pid())"
                    )
                assert (
                    await admin.fetchval(
                        f"SELECT holder_pid FROM {POSITIONS} WHERE consumer = $1", name
                    )
                    == holder
                )
                later = await new_alert(admin, ids)
                await delivered(events, later)
                await settled(admin, ids, events)
        assert [e.alert_id for e in events] == [alert, later]
    finally:
        await app.close()
        await admin.close()


async def test_a_table_lock_is_named_and_a_first_start_misses_nothing_meanwhile(
    silentpulse_migrated_database: str,
    silentpulse_app_database: str,
    silentpulse_jobs_database: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """What the blanket grant still allows: LOCK TABLE (UPDATE suffices), in an open
    transaction. A first start (no row yet) stands by, saying which session blocks it;
    an alert written meanwhile is delivered once the lock is gone: "from now on" is when
    the listener started, not when it took the lead."""
    admin = await asyncpg.connect(silentpulse_migrated_database)
    app = await asyncpg.connect(silentpulse_app_database)
    name = _name()
    try:
        ids = await seed_tenant(admin, "locker")
        locking = app.transaction()
        await locking.start()
        await app.execute(f"LOCK TABLE {POSITIONS} IN ACCESS EXCLUSIVE MODE")
        app_pid = await app.fetchval("SELECT pg_backend_pid()")
        with caplog.at_level(logging.INFO, logger="silentpulse_db.listener"):
            async with running(silentpulse_jobs_database, consumer=name, ready=False) as (
                listener,
                events,
            ):

                async def named() -> bool:
                    return bool(await _errors(caplog, f"backend pid {app_pid}", "LOCK TABLE"))

                await wait_for(named, timeout=HANG)
                assert listener.state == "standby"
                meanwhile = await new_alert(admin, ids)
                await locking.rollback()
                await delivered(events, meanwhile)
                await settled(admin, ids, events)
        assert [e.alert_id for e in events] == [meanwhile]
    finally:
        await app.close()
        await admin.close()


async def test_a_listener_of_an_earlier_version_delivers_until_it_stops(
    silentpulse_migrated_database: str, silentpulse_jobs_database: str
) -> None:
    """A rolling deploy from an earlier version, on a first deploy: its listener holds
    the advisory lock of the name (the jobs role's session, no row written yet). This one
    stands by, and once that one stops it delivers what was written meanwhile too."""
    admin = await asyncpg.connect(silentpulse_migrated_database)
    earlier = await asyncpg.connect(silentpulse_jobs_database)
    name = _name()
    try:
        ids = await seed_tenant(admin, "earlier")
        assert await earlier.fetchval("SELECT pg_try_advisory_lock($1, $2)", *lock_keys(name))
        async with running(silentpulse_jobs_database, consumer=name, ready=False) as (
            listener,
            events,
        ):

            async def standing_by() -> bool:
                return listener.state == "standby"

            await wait_for(standing_by, timeout=HANG)
            meanwhile = await new_alert(admin, ids)
            await earlier.close()  # it stops: its session ends
            await delivered(events, meanwhile)
            await settled(admin, ids, events)
            # It now holds that lock too: an earlier version's listener stands by.
            assert not await admin.fetchval("SELECT pg_try_advisory_lock($1, $2)", *lock_keys(name))
        assert [e.alert_id for e in events] == [meanwhile]
    finally:
        await earlier.close()
        await admin.close()


async def test_two_listeners_of_one_name_and_a_killed_connection(
    silentpulse_migrated_database: str, silentpulse_jobs_database: str
) -> None:
    """Exactly one of two delivers; its connection killed, the other takes over (its
    claim's holder no longer holds its lock), and the first, reconnected (after a pause
    long enough for the other to claim first), stands by."""
    admin = await asyncpg.connect(silentpulse_migrated_database)
    name = _name()
    try:
        ids = await seed_tenant(admin, "pair")
        dsn = silentpulse_jobs_database
        slow: dict[str, Any] = {"initial_backoff": 10.0, "max_backoff": 10.0}
        async with (
            running(dsn, consumer=name, **slow) as (first, first_events),
            running(dsn, consumer=name, standby_poll=0.2, ready=False) as (second, second_events),
        ):

            async def state(listener: AlertListener, wanted: str) -> bool:
                return listener.state == wanted

            await wait_for(lambda: state(second, "standby"), timeout=HANG)
            before = await new_alert(admin, ids)
            await delivered(first_events, before)

            holder = await admin.fetchval(
                f"SELECT holder_pid FROM {POSITIONS} WHERE consumer = $1", name
            )
            assert await admin.fetchval("SELECT pg_terminate_backend($1)", holder)
            await wait_for(lambda: state(second, "active"), timeout=HANG)
            await wait_for(lambda: state(first, "standby"), timeout=HANG)
            after = await new_alert(admin, ids)
            await delivered(second_events, after)
            await settled(admin, ids, second_events)
            assert first.state == "standby"
        assert after not in {e.alert_id for e in first_events}
        # What the first handed out after its last written position may come again.
        assert [e.alert_id for e in second_events if e.alert_id != before] == [after]
    finally:
        await admin.close()


async def _state(listener: AlertListener, wanted: str) -> bool:
    return listener.state == wanted


async def test_an_earlier_version_that_gets_the_lock_a_hijacker_releases_delivers_alone(
    silentpulse_migrated_database: str,
    silentpulse_app_database: str,
    silentpulse_jobs_database: str,
) -> None:
    """The application's role holds the lock of earlier versions, so this listener
    delivers without it; a listener of an earlier version waits for that lock, and gets
    it as the role releases it (pg_advisory_unlock_all). This one stops delivering and
    stands by: never two delivering. Once that one stops, this one takes over."""
    admin = await asyncpg.connect(silentpulse_migrated_database)
    app = await asyncpg.connect(silentpulse_app_database)
    earlier = await asyncpg.connect(silentpulse_jobs_database)
    name = _name()
    space, key = lock_keys(name)
    try:
        ids = await seed_tenant(admin, "released")
        assert await app.fetchval("SELECT pg_try_advisory_lock($1, $2)", space, key)
        async with running(silentpulse_jobs_database, consumer=name, standby_poll=0.2) as (
            listener,
            events,
        ):
            first = await new_alert(admin, ids)
            await delivered(events, first)
            earlier_pid = await earlier.fetchval("SELECT pg_backend_pid()")
            waiting = asyncio.create_task(
                earlier.fetchval("SELECT pg_advisory_lock($1, $2)", space, key)
            )

            async def queued() -> bool:
                return bool(
                    await admin.fetchval(
                        "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE pid = $1 AND NOT granted)",
                        earlier_pid,
                    )
                )

            await wait_for(queued, timeout=HANG)
            await app.execute("SELECT pg_advisory_unlock_all()")  # granted to the waiter
            await waiting
            await wait_for(lambda: _state(listener, "standby"), timeout=HANG)
            assert [e.alert_id for e in events] == [first]
            meanwhile = await new_alert(admin, ids)  # the earlier version's to deliver
            await earlier.close()
            await delivered(events, meanwhile)
            await settled(admin, ids, events)
            assert not await admin.fetchval("SELECT pg_try_advisory_lock($1, $2)", space, key)
        assert [e.alert_id for e in events] == [first, meanwhile]
    finally:
        await earlier.close()
        await app.close()
        await admin.close()


async def test_a_lost_row_stops_the_holder_and_truncate_is_refused(
    silentpulse_migrated_database: str,
    silentpulse_app_database: str,
    silentpulse_app_role: AppRole,
    silentpulse_jobs_database: str,
) -> None:
    """Given GRANT ALL, the application's role may not TRUNCATE the table (a guard
    trigger: no row-level security covers TRUNCATE). An operator's DELETE of the row: the
    standby finds no row and claims a new one; the holder finds its claim gone at its
    next round and stands by, delivering nothing of it."""
    admin = await asyncpg.connect(silentpulse_migrated_database)
    app = await asyncpg.connect(silentpulse_app_database)
    name = _name()
    try:
        ids = await seed_tenant(admin, "lost")
        await admin.execute(f"GRANT ALL ON {POSITIONS} TO {silentpulse_app_role.name}")
        dsn = silentpulse_jobs_database
        async with (
            running(dsn, consumer=name) as (first, first_events),
            running(dsn, consumer=name, standby_poll=0.2, ready=False) as (second, second_events),
        ):
            await wait_for(lambda: _state(second, "standby"), timeout=HANG)
            before = await new_alert(admin, ids)
            await delivered(first_events, before)
            with pytest.raises(asyncpg.InsufficientPrivilegeError, match="may not TRUNCATE"):
                await app.execute(f"TRUNCATE {POSITIONS}")
            assert await admin.fetchval(
                f"SELECT count(*) FROM {POSITIONS} WHERE consumer = $1", name
            )

            assert await admin.execute(f"DELETE FROM {POSITIONS} WHERE consumer = $1", name) == (
                "DELETE 1"
            )
            await wait_for(lambda: _state(second, "active"), timeout=HANG)
            after = await new_alert(admin, ids)
            await wait_for(lambda: _state(first, "standby"), timeout=HANG)
            await delivered(second_events, after)
            await settled(admin, ids, second_events)
            assert first.state == "standby"
        assert after not in {e.alert_id for e in first_events}
    finally:
        await app.close()
        await admin.close()


async def test_a_position_is_written_only_by_the_rows_holder(
    silentpulse_migrated_database: str, silentpulse_jobs_database: str
) -> None:
    """A session that no longer holds the row (another claimed it) writes no position,
    and is told: LostClaim."""
    admin = await asyncpg.connect(silentpulse_migrated_database)
    jobs = await asyncpg.connect(silentpulse_jobs_database)
    name = _name()
    try:
        await admin.execute(
            f"INSERT INTO {POSITIONS} (consumer, since, changed_at, log_xid, log_seq, "
            f"holder_pid, holder_lock) VALUES ($1, now(), now(), '1', 1, 1, 1)",
            name,
        )
        with pytest.raises(LostClaim):
            await consumer.save(jobs, name, Position(5, 5), None, None, 7)
        row = await admin.fetchrow(
            f"SELECT log_xid, log_seq FROM {POSITIONS} WHERE consumer = $1", name
        )
        assert (int(row["log_xid"]), row["log_seq"]) == (1, 1)
    finally:
        await jobs.close()
        await admin.close()


async def test_a_session_started_during_the_claim_is_seen_as_it_is(
    silentpulse_migrated_database: str,
    silentpulse_app_database: str,
    silentpulse_jobs_database: str,
) -> None:
    """pg_stat_activity is read once per transaction: a backend started after the
    election's first read, holding the lock of earlier versions when it reads again
    under the row's lock, must be seen as the application's role it is (no listener),
    not as an unknown one that would keep the standby from taking over. The application's
    role holds the lock, locks the table until the claim waits, hands the lock to a new
    session, and lets the claim go on."""
    admin = await asyncpg.connect(silentpulse_migrated_database)
    app = await asyncpg.connect(silentpulse_app_database)
    fresh: asyncpg.Connection | None = None
    jobs = await asyncpg.connect(silentpulse_jobs_database)
    name = _name()
    space, lock = lock_keys(name)
    try:
        # A consumer whose holder is gone.
        await admin.execute(
            f"INSERT INTO {POSITIONS} (consumer, since, changed_at, holder_pid, holder_lock) "
            f"VALUES ($1, now(), now(), 1, 1)",
            name,
        )
        assert await app.fetchval("SELECT pg_try_advisory_lock($1, $2)", space, lock)
        election = Election(name, 1.0, lambda: None)
        key = await own_lock(jobs)

        async def never(conn: Any, key: int) -> bool:
            raise AssertionError("the row exists")

        locking = app.transaction()
        await locking.start()
        await app.execute(f"LOCK TABLE {POSITIONS} IN EXCLUSIVE MODE")
        jobs_pid = await jobs.fetchval("SELECT pg_backend_pid()")
        claiming = asyncio.create_task(election.claim(jobs, key, never))

        async def waiting() -> bool:
            return bool(
                await admin.fetchval(
                    "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE pid = $1 AND NOT granted)",
                    jobs_pid,
                )
            )

        await wait_for(waiting, timeout=HANG)
        fresh = await asyncpg.connect(silentpulse_app_database)
        await app.execute("SELECT pg_advisory_unlock($1, $2)", space, lock)
        assert await fresh.fetchval("SELECT pg_try_advisory_lock($1, $2)", space, lock)
        await locking.commit()
        outcome = await claiming
        assert outcome.delivers, outcome.why
        holder = await admin.fetchval(
            f"SELECT holder_pid FROM {POSITIONS} WHERE consumer = $1", name
        )
        assert holder == jobs_pid
    finally:
        if fresh is not None:
            await fresh.close()
        await jobs.close()
        await app.close()
        await admin.close()


async def test_a_row_lock_is_reported_as_one(
    silentpulse_migrated_database: str,
    silentpulse_jobs_database: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A session of a role that bypasses row-level security (an operator's) keeps the
    consumer's row locked in an open transaction: the election waits, then says it is a
    lock on the row and names the sessions that may hold it, not a table lock."""
    admin = await asyncpg.connect(silentpulse_migrated_database)
    operator = await asyncpg.connect(silentpulse_jobs_database)
    name = _name()
    try:
        await admin.execute(
            f"INSERT INTO {POSITIONS} (consumer, since, changed_at, holder_pid, holder_lock) "
            f"VALUES ($1, now(), now(), 1, 1)",
            name,
        )
        locking = operator.transaction()
        await locking.start()
        assert await operator.fetch(
            f"SELECT 1 FROM {POSITIONS} WHERE consumer = $1 FOR UPDATE", name
        )
        operator_pid = await operator.fetchval("SELECT pg_backend_pid()")
        with caplog.at_level(logging.INFO, logger="silentpulse_db.listener"):
            async with running(silentpulse_jobs_database, consumer=name, ready=False) as (
                listener,
                _,
            ):

                async def named() -> bool:
                    return bool(
                        await _errors(caplog, "lock on the consumer's row", f"pid {operator_pid}")
                    )

                await wait_for(named, timeout=HANG)
                assert listener.state == "standby"
                assert not await _errors(caplog, "LOCK TABLE")
                await locking.rollback()
                await wait_for(lambda: _state(listener, "active"), timeout=HANG)
    finally:
        await operator.close()
        await admin.close()
