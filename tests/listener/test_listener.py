"""listen_alerts: live, across a dropped connection, a role locked out for a while, a
restarted consumer, and the NOTIFY payloads the trigger still sends for older listeners."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from datetime import datetime, timezone
from typing import Any

import asyncpg
import pytest
from schema.seed import seed_tenant

from silentpulse_db import (
    ConfigurationError,
    DatabaseConnectionError,
    RequiredVersionError,
    RowSecurityError,
    listen_alerts,
    run_migrations,
)
from silentpulse_db.migrate import apply_prerequisites
from silentpulse_db.settings import ConnectRetry

from .listening import (
    LISTENER_GRANTS,
    collecting,
    count_at_least,
    delivered,
    listener_pid,
    new_alert,
    settled,
)
from helpers import execute, fetchval, login_role, wait_for


async def test_live_and_across_a_dropped_connection(
    silentpulse_migrated_database: str, silentpulse_jobs_database: str
) -> None:
    admin = silentpulse_migrated_database
    conn = await asyncpg.connect(admin)
    try:
        ids = await seed_tenant(conn, "echo")
        async with collecting(silentpulse_jobs_database) as events:  # as in production
            live = [await new_alert(conn, ids) for _ in range(3)]
            await conn.execute("UPDATE alerts SET status = 'acknowledged' WHERE id = $1", live[0])
            await count_at_least(events, 4)

            # Drop the listener's connection, keep writing while it is away.
            pid = await listener_pid(admin)
            assert pid is not None
            assert await fetchval(admin, "SELECT pg_terminate_backend($1)", pid)
            away = [await new_alert(conn, ids) for _ in range(5)]
            await conn.execute(
                "UPDATE alerts SET status = 'resolved', resolved_at = now() WHERE id = $1", live[1]
            )
            after = [await new_alert(conn, ids) for _ in range(2)]
            await delivered(events, *after)
            await settled(conn, ids, events)
        keys = [(e.alert_id, e.status) for e in events]
        assert len(keys) == len(set(keys)) == 3 + 1 + 5 + 1 + 2, events
        for alert in live + away + after:
            assert (alert, "open") in keys
        assert (live[0], "acknowledged") in keys and (live[1], "resolved") in keys
        assert {e.source for e in events} == {"notify", "catch_up"}
        assert all(e.tenant_id == ids["tenants"] for e in events)
        assert len({e.id for e in events}) == len(events)
    finally:
        await conn.close()


async def test_since_replays_from_the_log(silentpulse_migrated_database: str) -> None:
    conn = await asyncpg.connect(silentpulse_migrated_database)
    try:
        ids = await seed_tenant(conn, "foxtrot")
        since = datetime(2000, 1, 1, tzinfo=timezone.utc)
        async with collecting(silentpulse_migrated_database, since=since) as events:
            await delivered(events, ids["alerts"])
        assert events[0].alert_id == ids["alerts"] and events[0].source == "catch_up"
        assert events[0].operation == "INSERT"
    finally:
        await conn.close()


async def raw_listener(dsn: str) -> tuple[asyncpg.Connection, asyncio.Queue[str]]:
    conn = await asyncpg.connect(dsn)
    received: asyncio.Queue[str] = asyncio.Queue()
    await conn.add_listener("silentpulse_alerts", lambda *args: received.put_nowait(args[3]))
    return conn, received


async def drain(received: asyncio.Queue[str], conn: asyncpg.Connection) -> list[dict[str, Any]]:
    """Every notification committed before now: a sentinel sent now arrives after them
    (notifications are delivered in commit order), so no wait on the clock."""
    await conn.execute("SELECT pg_notify('silentpulse_alerts', 'sentinel')")
    items = []
    while (payload := await asyncio.wait_for(received.get(), 120)) != "sentinel":
        items.append(json.loads(payload))
    return items


async def test_one_notification_per_statement_whatever_its_rows(
    silentpulse_migrated_database: str,
) -> None:
    dsn = silentpulse_migrated_database
    conn = await asyncpg.connect(dsn)
    listener, received = await raw_listener(dsn)
    try:
        ids = await seed_tenant(conn, "bulk")
        await drain(received, conn)
        async with collecting(dsn) as events:
            await conn.execute(
                "INSERT INTO alerts (tenant_id, flow_pulse_id, asset_id, alert_type, severity, "
                "started_at) SELECT $1, $2, $3, 'silence', 'high', now() - g * interval '1 second' "
                "FROM generate_series(1, 5000) g",
                ids["tenants"],
                ids["flow_pulses"],
                ids["assets"],
            )
            (bulk,) = await drain(received, conn)
            assert (bulk["op"], bulk["count"]) == ("INSERT", 5000) and "alerts" not in bulk
            assert len(json.dumps(bulk)) < 8000
            await count_at_least(events, 5000)
            await settled(conn, ids, events)
            assert len({e.alert_id for e in events}) == len(events) == 5000
            await drain(received, conn)  # the sentinel alert's

            await conn.execute("UPDATE alerts SET status = 'acknowledged' WHERE status = 'open'")
            (update,) = await drain(received, conn)
            assert (update["op"], update["count"]) == ("UPDATE", 5002)
    finally:
        await listener.close()
        await conn.close()


async def test_moving_an_alert_to_another_partition_is_not_an_insert(
    silentpulse_migrated_database: str,
) -> None:
    conn = await asyncpg.connect(silentpulse_migrated_database)
    listener, received = await raw_listener(silentpulse_migrated_database)
    try:
        ids = await seed_tenant(conn, "mover")
        await drain(received, conn)
        before = await conn.fetchval(
            "SELECT tableoid::regclass::text FROM alerts WHERE id = $1", ids["alerts"]
        )
        await conn.execute(
            "UPDATE alerts SET started_at = started_at + interval '40 days' WHERE id = $1",
            ids["alerts"],
        )
        after = await conn.fetchval(
            "SELECT tableoid::regclass::text FROM alerts WHERE id = $1", ids["alerts"]
        )
        assert before != after  # it really moved
        assert await drain(received, conn) == []  # no INSERT, and no status change to tell
    finally:
        await listener.close()
        await conn.close()


# --- a listener that never gives up, and its durable position (issue 20, 3) ----------


async def test_a_role_that_cannot_log_in_for_a_while_misses_nothing(
    silentpulse_migrated_database: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Its role NOLOGIN and its connection cut: it keeps trying (warnings, then errors),
    and once it may log in again it delivers every change made meanwhile, once, in order,
    with its operation."""
    admin = silentpulse_migrated_database
    conn = await asyncpg.connect(admin)
    try:
        ids = await seed_tenant(conn, "golf")
        async with login_role(admin, LISTENER_GRANTS, prefix="listener") as (role, dsn):
            with caplog.at_level(logging.WARNING, logger="silentpulse_db.listener"):
                async with collecting(dsn) as events:
                    before = await new_alert(conn, ids)
                    await delivered(events, before)
                    await execute(admin, f"ALTER ROLE {role} NOLOGIN")
                    pid = await listener_pid(admin)
                    await fetchval(admin, "SELECT pg_terminate_backend($1)", pid)
                    meanwhile = [await new_alert(conn, ids) for _ in range(4)]
                    await conn.execute(
                        "UPDATE alerts SET status = 'acknowledged' WHERE id = $1", before
                    )
                    # Refused again and again: more than QUIET_FAILURES attempts.
                    await wait_for(lambda: _errors_logged(caplog), timeout=60)
                    assert await listener_pid(admin) is None
                    await execute(admin, f"ALTER ROLE {role} LOGIN")
                    await count_at_least(events, 6)
                    await settled(conn, ids, events)
        keys = [(e.alert_id, e.status) for e in events]
        assert len(keys) == len(set(keys)) == 6, events
        caught_up = [e for e in events if e.source == "catch_up"]
        assert [e.alert_id for e in caught_up] == [*meanwhile, before]  # commit order
        assert [e.operation for e in caught_up] == ["INSERT"] * 4 + ["UPDATE"]
        assert caught_up[-1].status == "acknowledged"
        failures = [r for r in caplog.records if "reconnecting" in r.getMessage()]
        assert [r.levelno for r in failures[:3]] == [logging.WARNING] * 3
        assert failures[3].levelno == logging.ERROR
        assert "not permitted to log in" in failures[3].getMessage()
    finally:
        await conn.close()


async def test_a_restarted_consumer_resumes_right_after_what_it_delivered(
    silentpulse_migrated_database: str,
) -> None:
    admin = silentpulse_migrated_database
    conn = await asyncpg.connect(admin)
    name = f"notifications-{uuid.uuid4().hex[:6]}"
    try:
        ids = await seed_tenant(conn, "hotel")
        async with login_role(admin, LISTENER_GRANTS, prefix="listener") as (_, dsn):
            async with collecting(dsn, consumer=name) as first:
                sent = [await new_alert(conn, ids) for _ in range(3)]
                await delivered(first, *sent)
            # Down: what happens now is delivered by the next start, and nothing else.
            away = [await new_alert(conn, ids) for _ in range(2)]
            await conn.execute(
                "UPDATE alerts SET status = 'resolved', resolved_at = now() WHERE id = $1",
                sent[0],
            )
            async with collecting(dsn, consumer=name) as second:
                await count_at_least(second, 3)
                await settled(conn, ids, second)
            async with collecting(dsn, consumer=name) as third:
                await settled(conn, ids, third)
        assert [e.alert_id for e in first] == sent
        assert [(e.alert_id, e.status) for e in second] == [(a, "open") for a in away] + [
            (sent[0], "resolved")
        ]
        assert {e.source for e in second} == {"catch_up"}
        assert third == []
    finally:
        await conn.close()


async def test_an_application_role_cannot_read_the_listeners_positions(
    silentpulse_migrated_database: str,
) -> None:
    """alert_listener_positions holds every tenant's alert ids: forced row-level security
    with no policy hides it from a role that the blanket grant reached."""
    admin = silentpulse_migrated_database
    await execute(
        admin,
        "INSERT INTO alert_listener_positions (consumer, since, changed_at, delivered) "
        "VALUES ('svc', now(), now(), '[]')",
    )
    grants = "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {role};"
    async with login_role(admin, grants, prefix="app") as (_, dsn):
        app = await asyncpg.connect(dsn)
        try:
            assert await app.fetchval("SELECT count(*) FROM alert_listener_positions") == 0
            assert await app.execute("DELETE FROM alert_listener_positions") == "DELETE 0"
            with pytest.raises(asyncpg.InsufficientPrivilegeError, match="row-level security"):
                await app.execute(
                    "INSERT INTO alert_listener_positions (consumer, since, changed_at) "
                    "VALUES ('x', now(), now())"
                )
        finally:
            await app.close()


async def test_settings_that_cannot_work_raise_on_the_first_connection(
    silentpulse_migrated_database: str, silentpulse_database: str
) -> None:
    with pytest.raises(ConfigurationError, match="consumer"):
        await anext(listen_alerts(silentpulse_migrated_database, consumer="no spaces allowed"))
    wrong = silentpulse_migrated_database.rsplit("/", 1)[0] + "/no_such_database"
    with pytest.raises(DatabaseConnectionError, match="no_such_database"):
        await asyncio.wait_for(anext(listen_alerts(wrong)), 30)
    # A database that has not reached migration 000022, and no attempts left to wait.
    await apply_prerequisites(silentpulse_database)
    await run_migrations(silentpulse_database, target=21)
    with pytest.raises(RequiredVersionError, match="000022") as info:
        await anext(
            listen_alerts(silentpulse_database, consumer="svc", connect=ConnectRetry(attempts=1))
        )
    assert (info.value.table, info.value.version) == ("schema_migrations", 22)


async def test_a_role_that_row_level_security_limits_is_refused(
    silentpulse_migrated_database: str,
) -> None:
    """It would read no tenant's alerts and deliver nothing, silently (review, issue 20)."""
    grants = "GRANT SELECT ON alerts, alert_changes TO {role};"
    async with login_role(silentpulse_migrated_database, grants, prefix="app") as (role, dsn):
        with pytest.raises(RowSecurityError, match="BYPASSRLS") as info:
            await asyncio.wait_for(anext(listen_alerts(dsn, consumer="svc")), 30)
        assert info.value.role == role


async def test_the_dsn_a_service_gives_golang_migrate_is_accepted(
    silentpulse_migrated_database: str,
) -> None:
    conn = await asyncpg.connect(silentpulse_migrated_database)
    try:
        ids = await seed_tenant(conn, "india")
        dsn = silentpulse_migrated_database + "?x-migrations-table=worker_schema_migrations"
        async with collecting(dsn) as events:
            await delivered(events, await new_alert(conn, ids))
    finally:
        await conn.close()


async def _errors_logged(caplog: pytest.LogCaptureFixture) -> bool:
    return any(r.levelno == logging.ERROR for r in caplog.records)
