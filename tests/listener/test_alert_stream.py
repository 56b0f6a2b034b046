"""The alert stream as an attacker and a service team tried it (issue 26): nothing forged,
nothing skipped, nothing twice. Each test reproduces one of the failures found on the
listener that trusted payloads and positions by time."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from schema.seed import seed_tenant

from silentpulse_db import (
    AlertGapError,
    ConnectRetry,
    create_pool,
    enforce_retention,
    listen_alerts,
    run_migrations,
    tenant_transaction,
)
from silentpulse_db.listener.consumer import Carried, before_the_log
from silentpulse_db.migrate import apply_prerequisites, goto, up
from silentpulse_db.testing.alerts import HANG, ListeningAlerts

from .listening import (
    collecting,
    count_at_least,
    delivered,
    new_alert,
    running,
    settled,
)
from helpers import execute, fetchval, login_role, wait_for

FORGED = (
    # The payload that silenced every tenant: timestamps without an offset.
    '{{"op":"UPDATE","count":1,"since":"2026-12-07T00:00:00","until":"2026-12-07T00:00:00",'
    '"alerts":[["{alert}","resolved","2026-12-07T00:00:00"]]}}',
    # 000003's per-row shape, for an alert that does not exist.
    '{{"alert_id":"{ghost}","tenant_id":"{tenant}","status":"open","op":"INSERT",'
    '"started_at":"2026-12-07T00:00:00+00:00","changed_at":"2026-12-07T00:00:00+00:00"}}',
    # A bulk range over every alert there is.
    '{{"op":"INSERT","count":99,"since":"2000-01-01T00:00:00+00:00",'
    '"until":"2100-01-01T00:00:00+00:00"}}',
    "not json at all",
    '{{"op": 1, "count": "x"}}',
    "[]",
    "null",
    "{{" * 7900,  # 7,900 bytes: near the server's 8000-byte limit
)


async def test_forged_payloads_from_any_role_yield_nothing_and_stop_nothing(
    silentpulse_migrated_database: str, caplog: pytest.LogCaptureFixture
) -> None:
    """1,000 forged, malformed and oversized notifications from a role with no grant at
    all: 0 events, delivery goes on, and they are reported once (not once each)."""
    admin = silentpulse_migrated_database
    conn = await asyncpg.connect(admin)
    try:
        a = await seed_tenant(conn, "forge_a")
        b = await seed_tenant(conn, "forge_b")
        payloads = [
            p.format(alert=b["alerts"], ghost=uuid.uuid4(), tenant=b["tenants"]) for p in FORGED
        ]
        async with login_role(admin, prefix="anyone") as (_, anyone_dsn):
            anyone = await asyncpg.connect(anyone_dsn)
            try:
                with caplog.at_level(logging.WARNING, logger="silentpulse_db.listener"):
                    began = time.monotonic()
                    async with collecting(admin) as events:
                        for i in range(1000):
                            await anyone.execute(
                                "SELECT pg_notify('silentpulse_alerts', $1)",
                                payloads[i % len(payloads)],
                            )
                        real = await new_alert(conn, a)
                        await delivered(events, real)
                        await settled(conn, a, events)
                    minutes = (time.monotonic() - began) // 60
            finally:
                await anyone.close()
        assert [(e.alert_id, e.status) for e in events] == [(real, "open")]
        status = await conn.fetchval("SELECT status FROM alerts WHERE id = $1", b["alerts"])
        assert status == "open"
        reports = [r for r in caplog.records if "not the alert trigger's" in r.getMessage()]
        assert 1 <= len(reports) <= 1 + minutes, [r.getMessage() for r in reports]
        assert "1 notification(s)" in reports[0].getMessage()  # the first; then a minute
    finally:
        await conn.close()


async def test_a_tenants_timestamps_move_no_consumer_and_ranges_deliver_once(
    silentpulse_app_database: str, silentpulse_migrated_database: str
) -> None:
    """Inside tenant A's transaction, status_changed_at in 2099 and in 2000 (one INSERT of
    51 alerts): each change is delivered once, and what tenant B writes while every
    consumer is down is delivered to each, the one started afterwards included."""
    admin = silentpulse_migrated_database
    conn = await asyncpg.connect(admin)
    pool = await create_pool(silentpulse_app_database, min_size=1, max_size=2)
    names = [f"svc{i}-{uuid.uuid4().hex[:6]}" for i in range(3)]
    try:
        a = await seed_tenant(conn, "clock_a")
        b = await seed_tenant(conn, "clock_b")
        async with contextlib.AsyncExitStack() as stack:
            seen = [
                await stack.enter_async_context(collecting(admin, consumer=n)) for n in names[:2]
            ]
            async with tenant_transaction(pool, a["tenants"]) as app:
                future = await new_alert(
                    app, a, status_changed_at=datetime(2099, 1, 1, tzinfo=timezone.utc)
                )
                await app.execute(
                    "INSERT INTO alerts (tenant_id, flow_pulse_id, asset_id, alert_type, severity, "
                    "started_at, status_changed_at) SELECT $1, $2, $3, 'silence', 'low', now(), "
                    "CASE WHEN g = 1 THEN timestamptz '2000-01-01' ELSE now() END "
                    "FROM generate_series(1, 51) g",
                    a["tenants"],
                    a["flow_pulses"],
                    a["assets"],
                )
            await settled(conn, a, *seen)
            for events in seen:
                assert len(events) == 52 and len({e.id for e in events}) == 52
                assert future in {e.alert_id for e in events}
        # Every consumer down: tenant B's alerts are theirs to deliver at the next start.
        meanwhile = [await new_alert(conn, b) for _ in range(3)]
        async with contextlib.AsyncExitStack() as stack:
            seen = [
                await stack.enter_async_context(collecting(admin, consumer=n)) for n in names[:2]
            ]
            await settled(conn, b, *seen)
        for events in seen:
            assert [e.alert_id for e in events] == meanwhile
        async with collecting(admin, consumer=names[2]) as late:
            later = await new_alert(conn, b)
            await delivered(late, later)
            await settled(conn, b, late)
        assert [e.alert_id for e in late] == [later]
    finally:
        await pool.close()
        await conn.close()


async def test_a_late_commit_is_never_skipped_and_a_rollback_leaves_no_hole(
    silentpulse_migrated_database: str,
) -> None:
    """A transaction that started writing first but commits last: its change comes first
    (below the horizon, in transaction order); a rolled-back one holds nothing up."""
    admin = silentpulse_migrated_database
    conn = await asyncpg.connect(admin)
    slow = await asyncpg.connect(admin)
    gone = await asyncpg.connect(admin)
    try:
        ids = await seed_tenant(conn, "late")
        async with running(admin) as (listener, events):
            slow_tx = slow.transaction()
            await slow_tx.start()
            early = await new_alert(slow, ids)  # its xid is the older one
            gone_tx = gone.transaction()
            await gone_tx.start()
            await new_alert(gone, ids)
            quick = await new_alert(conn, ids)  # committed now, held back behind `slow`
            await gone_tx.rollback()
            await slow_tx.commit()
            await delivered(events, quick)
            await settled(conn, ids, events)
            assert listener.is_ready and listener.state == "active"
        assert [e.alert_id for e in events] == [early, quick]
    finally:
        for c in (conn, slow, gone):
            await c.close()


async def test_from_now_skips_what_committed_before_the_start(
    silentpulse_migrated_database: str,
) -> None:
    """An older transaction open when the listener starts holds the horizon below a change
    committed before the start: that change is not "from now on" (a restarted listener
    without a name delivered it again), while the open transaction's own change is."""
    admin = silentpulse_migrated_database
    conn = await asyncpg.connect(admin)
    holder = await asyncpg.connect(admin)
    try:
        ids = await seed_tenant(conn, "from_now")
        holding = holder.transaction()
        await holding.start()
        await holder.fetchval("SELECT pg_current_xact_id()")  # an xid: it holds the horizon
        before = await new_alert(conn, ids)  # committed, above the horizon
        async with collecting(admin) as events:
            after = await new_alert(conn, ids)
            late = await new_alert(holder, ids)
            await holding.commit()
            await delivered(events, late, after)
            await settled(conn, ids, events)
        assert [e.alert_id for e in events] == [late, after]
        assert before not in {e.alert_id for e in events}
    finally:
        await holder.close()
        await conn.close()


async def test_what_the_application_role_can_do_to_the_log(
    silentpulse_app_database: str, silentpulse_migrated_database: str
) -> None:
    """After the blanket grants operators run (ALL on every table, EXECUTE on every
    function): a tenant reads its own changes and nothing else, writes none, empties
    nothing, cannot borrow the owner's trigger function; its writes to a month's
    partition (not the parent) are logged like the others."""
    admin = silentpulse_migrated_database
    app_role = await fetchval(silentpulse_app_database, "SELECT current_user")
    await execute(
        admin,
        f"GRANT ALL ON ALL TABLES IN SCHEMA public TO {app_role}; "
        f"GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA public TO {app_role};",
    )
    conn = await asyncpg.connect(admin)
    app = await asyncpg.connect(silentpulse_app_database)
    try:
        a = await seed_tenant(conn, "log_a")
        b = await seed_tenant(conn, "log_b")
        partition = await conn.fetchval(
            "SELECT tableoid::regclass::text FROM alerts WHERE id = $1", a["alerts"]
        )
        assert partition != "alerts"
        async with tenant_transaction(app, a["tenants"]):
            rows = await app.fetch("SELECT tenant_id FROM alert_changes")
            assert {r["tenant_id"] for r in rows} == {a["tenants"]}
            assert await app.execute("UPDATE alert_changes SET status = 'resolved'") == "UPDATE 0"
            assert await app.execute("DELETE FROM alert_changes") == "DELETE 0"
            # Written straight into the month's partition: logged all the same.
            direct = await app.fetchval(
                f"INSERT INTO {partition} (tenant_id, flow_pulse_id, asset_id, alert_type, "
                f"severity, started_at) SELECT tenant_id, flow_pulse_id, asset_id, alert_type, "
                f"severity, started_at FROM alerts WHERE id = $1 RETURNING id",
                a["alerts"],
            )
            await app.execute(
                f"UPDATE {partition} SET status = 'acknowledged' WHERE id = $1", direct
            )
        logged = await conn.fetch(
            "SELECT operation, status FROM alert_changes WHERE alert_id = $1 ORDER BY xid, seq",
            direct,
        )
        assert [tuple(r) for r in logged] == [("INSERT", "open"), ("UPDATE", "acknowledged")]
        forged_insert = (
            "INSERT INTO alert_changes (tenant_id, alert_id, started_at, operation, status, "
            "changed_at) VALUES ($1, $2, now(), 'UPDATE', 'resolved', now())"
        )
        for tenant in (a["tenants"], b["tenants"]):
            async with tenant_transaction(app, tenant):
                with pytest.raises(asyncpg.InsufficientPrivilegeError, match="row-level security"):
                    await app.execute(forged_insert, tenant, b["alerts"])
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="may not TRUNCATE"):
            await app.execute("TRUNCATE alert_changes")
        # The owner's SECURITY DEFINER trigger function on a table of its own, with a
        # transition table of forged rows: refused.
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="alerts only"):
            await app.execute(
                "CREATE TEMP TABLE fake (LIKE alerts); "
                "CREATE TRIGGER fake_log AFTER INSERT ON fake REFERENCING NEW TABLE AS new_rows "
                "FOR EACH STATEMENT EXECUTE FUNCTION silentpulse_alert_notify_statement(); "
                f"INSERT INTO fake SELECT * FROM alerts LIMIT 0; "
                f"INSERT INTO fake (id, tenant_id, flow_pulse_id, asset_id, alert_type, severity, "
                f"status, started_at, status_changed_at) VALUES ('{b['alerts']}', "
                f"'{b['tenants']}', gen_random_uuid(), gen_random_uuid(), 'silence', 'high', "
                f"'resolved', now(), now())"
            )
        total = await conn.fetchval("SELECT count(*) FROM alert_changes WHERE status = 'resolved'")
        assert total == 0
    finally:
        await app.close()
        await conn.close()


async def test_catch_up_replays_each_change_in_order_with_stable_ids(
    silentpulse_migrated_database: str,
) -> None:
    """Created and resolved while the service was down: both arrive, in order; the same
    change read again (another listener, from a time) has the same id."""
    admin = silentpulse_migrated_database
    conn = await asyncpg.connect(admin)
    name = f"pager-{uuid.uuid4().hex[:6]}"
    try:
        ids = await seed_tenant(conn, "replay")
        started_at = await conn.fetchval("SELECT now()")
        async with collecting(admin, consumer=name) as first:
            await settled(conn, ids, first)
        alert = await new_alert(conn, ids)
        await conn.execute("UPDATE alerts SET status = 'acknowledged' WHERE id = $1", alert)
        await conn.execute(
            "UPDATE alerts SET status = 'resolved', resolved_at = now() WHERE id = $1", alert
        )
        async with collecting(admin, consumer=name) as second:
            await count_at_least(second, 3)
            await settled(conn, ids, second)
        assert [(e.alert_id, e.operation, e.status) for e in second] == [
            (alert, "INSERT", "open"),
            (alert, "UPDATE", "acknowledged"),
            (alert, "UPDATE", "resolved"),
        ]
        async with collecting(admin, since=started_at) as again:
            await delivered(again, alert)
            await settled(conn, ids, again)
        replayed = [e for e in again if e.alert_id == alert]
        assert [e.id for e in replayed] == [e.id for e in second]
    finally:
        await conn.close()


async def test_ready_means_listening(
    silentpulse_migrated_database: str,
    silentpulse_alert_listener: Callable[..., AbstractAsyncContextManager[ListeningAlerts]],
) -> None:
    """Ready, then an alert at once, twenty times over: never lost (the plugin's fixture)."""
    assert listen_alerts(silentpulse_migrated_database).state == "starting"
    conn = await asyncpg.connect(silentpulse_migrated_database)
    try:
        ids = await seed_tenant(conn, "ready")
        for _ in range(20):
            async with silentpulse_alert_listener() as alerts:
                assert alerts.listener.is_ready and alerts.listener.state == "active"
                alert = await new_alert(conn, ids)
                event = await alerts.wait_for(alert)
                assert (event.operation, event.status) == ("INSERT", "open")
    finally:
        await conn.close()


async def test_a_first_deploy_waits_for_the_migration(
    silentpulse_database: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Started beside the API on a fresh database: it waits for 000022 (as a `requires`
    does), then delivers."""
    dsn = silentpulse_database
    await apply_prerequisites(dsn)
    with caplog.at_level(logging.WARNING, logger="silentpulse_db.listener"):
        options = {"consumer": "notifications", "connect": ConnectRetry(100_000, 0.05)}
        async with running(dsn, ready=False, **options) as (
            listener,
            events,
        ):
            await wait_for(lambda: _logged(caplog, "core migration 000022"), timeout=HANG)
            assert listener.state == "starting"
            await run_migrations(dsn)
            await asyncio.wait_for(listener.ready(), HANG)
            conn = await asyncpg.connect(dsn)
            try:
                ids = await seed_tenant(conn, "first")
                await settled(conn, ids, events)
            finally:
                await conn.close()
    assert [e.alert_id for e in events] == [ids["alerts"]]


async def test_failures_count_until_a_round_succeeds(
    silentpulse_migrated_database: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The log gone (core `goto 21`): every reconnect 'succeeds' and every read fails, so
    failures add up (backoff grows, errors after three) instead of a storm of 'failure 1'."""
    admin = silentpulse_migrated_database
    conn = await asyncpg.connect(admin)
    try:
        ids = await seed_tenant(conn, "storm")
        with caplog.at_level(logging.WARNING, logger="silentpulse_db.listener"):
            options = {"initial_backoff": 0.05, "max_backoff": 0.4, "health_check_interval": 0.1}
            async with collecting(admin, **options) as events:
                await goto(admin, 21)  # below 000022: the change log is gone
                await wait_for(lambda: _logged(caplog, "failure 5 in a row"), timeout=HANG)
                await up(admin)
                await settled(conn, ids, events)
        numbers = [
            int(r.getMessage().split("failure ")[1].split(" ")[0])
            for r in caplog.records
            if "in a row" in r.getMessage()
        ]
        assert numbers[:5] == [1, 2, 3, 4, 5]
        levels = [r.levelno for r in caplog.records if "in a row" in r.getMessage()]
        assert levels[:5] == [logging.WARNING] * 3 + [logging.ERROR] * 2
        delays = [
            float(r.getMessage().rsplit("in ", 1)[1].rstrip("s"))
            for r in caplog.records
            if "in a row" in r.getMessage()
        ]
        assert delays[:5] == sorted(delays[:5]) and delays[4] == 0.4  # backoff grew
    finally:
        await conn.close()


def _logged(caplog: pytest.LogCaptureFixture, text: str) -> Any:
    async def found() -> bool:
        return any(text in r.getMessage() for r in caplog.records)

    return found()


async def test_retention_prunes_behind_consumers_and_a_gap_is_never_silent(
    silentpulse_migrated_database: str,
) -> None:
    admin = silentpulse_migrated_database
    conn = await asyncpg.connect(admin)
    try:
        ids = await seed_tenant(conn, "prune")
        async with collecting(admin, consumer="fast") as fast:
            await settled(conn, ids, fast)
        async with collecting(admin, consumer="slow") as slow:
            await settled(conn, ids, slow)
        for _ in range(3):
            await new_alert(conn, ids)
        async with collecting(admin, consumer="fast") as fast:
            await count_at_least(fast, 3)
            await settled(conn, ids, fast)
        total = await conn.fetchval("SELECT count(*) FROM alert_changes")
        # A day later: nothing every consumer has passed is kept past a day, and
        # `slow` has not passed the last four.
        tomorrow = datetime.now(timezone.utc) + timedelta(days=1, minutes=1)
        report = await enforce_retention(admin, now=tomorrow)
        (action,) = [a for a in report.actions if a.table == "alert_changes"]
        assert action.partition == f"{total - 4} change(s) of alert_changes"
        assert await conn.fetchval("SELECT count(*) FROM alert_changes") == 4
        async with collecting(admin, consumer="slow") as slow:
            await count_at_least(slow, 4)
            await settled(conn, ids, slow)
        # A month later, `slow` gone meanwhile: past the age, whoever still needs them.
        await new_alert(conn, ids)
        await enforce_retention(admin, now=tomorrow + timedelta(days=31))
        assert await conn.fetchval("SELECT count(*) FROM alert_changes") == 0
        with pytest.raises(AlertGapError, match="retention deleted") as info:
            await asyncio.wait_for(anext(listen_alerts(admin, consumer="slow")), HANG)
        assert info.value.consumer == "slow"
        async with collecting(admin, consumer="slow", on_gap="skip") as slow:
            after = await new_alert(conn, ids)
            await delivered(slow, after)
            await settled(conn, ids, slow)
        assert [e.alert_id for e in slow] == [after]
    finally:
        await conn.close()


async def test_an_old_position_is_carried_over_without_a_loss_or_a_flood(
    silentpulse_database: str,
) -> None:
    """A consumer kept by the listener before 000022 (its first start, its last change
    and what it delivered near it): after the upgrade it gets what it had not had, from
    before and after the log existed, and nothing it had, nor anything older than its
    first start (an old version running on after the upgrade keeps such a row)."""
    dsn = silentpulse_database
    await apply_prerequisites(dsn)
    await run_migrations(dsn, target=21)
    conn = await asyncpg.connect(dsn)
    try:
        ids = await seed_tenant(conn, "carried")  # its alert: before the consumer's start
        since = await conn.fetchval("SELECT clock_timestamp()")
        had = [await new_alert(conn, ids), await new_alert(conn, ids)]
        rows = await conn.fetch(
            "SELECT id, status, status_changed_at FROM alerts WHERE id = ANY($1)", had
        )
        last = max(r["status_changed_at"] for r in rows)
        delivered_json = json.dumps(
            [[str(r["id"]), r["status"], r["status_changed_at"].isoformat()] for r in rows]
        )
        await conn.execute(
            "INSERT INTO alert_listener_positions (consumer, since, changed_at, delivered) "
            "VALUES ('notifications', $1, $2, $3)",
            since,
            last,
            delivered_json,
        )
        missed = await new_alert(conn, ids)  # while it was down, before the upgrade
        await run_migrations(dsn)
        after = await new_alert(conn, ids)
        async with collecting(dsn, consumer="notifications") as events:
            await delivered(events, missed, after)
            await settled(conn, ids, events)
        assert [e.alert_id for e in events] == [missed, after]
        assert events[0].source == "catch_up" and events[0].operation == "INSERT"
        async with collecting(dsn, consumer="notifications") as again:
            await settled(conn, ids, again)
        assert again == []
    finally:
        await conn.close()


async def test_a_carried_over_consumer_tells_two_tenants_alerts_of_one_id_apart(
    silentpulse_migrated_database: str, silentpulse_app_database: str
) -> None:
    """An id is unique within its tenant only (000044): tenant B, as the application's
    role, creates an alert with the id of one of tenant A's. B's change from before the
    log (its log row gone, as for an alert changed before 000022) is caught up by a
    consumer carried over from then, though A's alert of that id has a log row with the
    same status and time: the log is looked up by (tenant_id, alert_id). (The time is set
    by the owner: the alerts trigger stamps each change with the clock.)"""
    admin = await asyncpg.connect(silentpulse_migrated_database)
    app = await asyncpg.connect(silentpulse_app_database)
    try:
        a = await seed_tenant(admin, "tenant-a")
        b = await seed_tenant(admin, "tenant-b")
        twin = await new_alert(admin, a)
        at = await admin.fetchval(
            "SELECT status_changed_at FROM alerts WHERE tenant_id = $1 AND id = $2",
            a["tenants"],
            twin,
        )
        async with tenant_transaction(app, b["tenants"]):
            await new_alert(app, b, id=twin)
        await admin.execute(
            "DELETE FROM alert_changes WHERE tenant_id = $1 AND alert_id = $2", b["tenants"], twin
        )
        await admin.execute(
            "UPDATE alerts SET status_changed_at = $3 WHERE tenant_id = $1 AND id = $2",
            b["tenants"],
            twin,
            at,
        )
        events = await before_the_log(admin, Carried(at, frozenset()))
        assert [(e.tenant_id, e.alert_id, e.status, e.changed_at) for e in events] == [
            (b["tenants"], twin, "open", at)
        ]
    finally:
        await app.close()
        await admin.close()


async def test_a_change_to_two_tenants_alerts_of_one_id_is_logged_once_each(
    silentpulse_migrated_database: str, silentpulse_app_database: str
) -> None:
    """Tenant B, as the application's role, creates an alert with the id of one of tenant
    A's; a job's statement (as the owner, past row-level security) then resolves both.
    The trigger pairs each changed row with its own old row, by (tenant_id, id) (000051):
    one log row each, where pairing by id alone logged each change twice."""
    admin = await asyncpg.connect(silentpulse_migrated_database)
    app = await asyncpg.connect(silentpulse_app_database)
    try:
        a = await seed_tenant(admin, "tenant-a")
        b = await seed_tenant(admin, "tenant-b")
        twin = await new_alert(admin, a)
        async with tenant_transaction(app, b["tenants"]):
            await new_alert(app, b, id=twin)
        await admin.execute("UPDATE alerts SET status = 'resolved' WHERE id = $1", twin)
        logged = await admin.fetch(
            "SELECT tenant_id, status FROM alert_changes "
            "WHERE alert_id = $1 AND operation = 'UPDATE' ORDER BY seq",
            twin,
        )
        assert sorted((r["tenant_id"], r["status"]) for r in logged) == sorted(
            [(a["tenants"], "resolved"), (b["tenants"], "resolved")]
        )
    finally:
        await app.close()
        await admin.close()


# --- one active process per consumer name, as real processes --------------------------

PROCESS = Path(__file__).with_name("listener_process.py")


class Service:
    """One listener process and the lines it printed."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.events: list[dict[str, str]] = []
        self.states: list[str] = []
        self._reading = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        async for line in self.proc.stdout:
            item = json.loads(line)
            (self.states.append(item["state"]) if "state" in item else self.events.append(item))

    async def reached(self, state: str) -> None:
        async def there() -> bool:
            if self.proc.returncode is not None and state not in self.states:
                raise AssertionError(f"exited {self.proc.returncode} before {state}")
            return state in self.states

        await wait_for(there, timeout=HANG)

    async def stop(self, sig: int) -> None:
        self.proc.send_signal(sig)
        await asyncio.wait_for(self.proc.wait(), HANG)
        await self._reading


@contextlib.asynccontextmanager
async def service(dsn: str, name: str) -> AsyncIterator[Service]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(PROCESS), dsn, name, stdout=asyncio.subprocess.PIPE, env=env
    )
    svc = Service(proc)
    try:
        yield svc
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def _write_alerts(conn: asyncpg.Connection, ids: dict[str, uuid.UUID], n: int) -> list[str]:
    written = []
    for _ in range(n):
        written.append(str(await new_alert(conn, ids)))
        await asyncio.sleep(0)  # let the listeners' output be read meanwhile
    return written


@pytest.mark.slow
@pytest.mark.parametrize("how", ["SIGTERM", "SIGKILL"])
async def test_one_process_per_consumer_name_and_a_rolling_deploy(
    silentpulse_migrated_database: str, how: str
) -> None:
    """The new pod starts before the old one stops: it stands by, takes over when the
    old one stops (a deploy's SIGTERM: 0 duplicates) or dies (SIGKILL: again only what
    the old one handed out after its last written position, a suffix of its deliveries);
    nothing is lost either way."""
    admin = silentpulse_migrated_database
    conn = await asyncpg.connect(admin)
    name = f"notifications-{how.lower()}"
    try:
        ids = await seed_tenant(conn, "deploy")
        async with service(admin, name) as old:
            await old.reached("active")
            written = await _write_alerts(conn, ids, 40)
            async with service(admin, name) as new:
                await new.reached("standby")
                written += await _write_alerts(conn, ids, 40)
                await old.stop(getattr(signal, how))
                written += await _write_alerts(conn, ids, 40)
                await new.reached("active")
                written += await _write_alerts(conn, ids, 40)
                last = str(await new_alert(conn, ids))

                async def all_in() -> bool:
                    return any(e["alert"] == last for e in new.events)

                await wait_for(all_in, timeout=HANG)
                await new.stop(signal.SIGTERM)
        old_ids = [e["alert"] for e in old.events]
        new_ids = [e["alert"] for e in new.events]
        assert set(old_ids) | set(new_ids) == {*written, last}  # nothing lost
        assert len(set(old_ids)) == len(old_ids) and len(set(new_ids)) == len(new_ids)
        twice = [a for a in old_ids if a in set(new_ids)]
        if how == "SIGTERM":
            assert twice == []
        else:
            assert twice == old_ids[len(old_ids) - len(twice) :]  # a suffix
        assert new.states[:3] == ["starting", "standby", "active"]
    finally:
        await conn.close()
