"""migrate-credentials cannot fail silently (issue 11): roles that row-level security
limits are refused, the dry run is read-only, values left under the old key are
reported after the commit, and --verify guards the old key's retirement."""

from __future__ import annotations

import asyncio
import concurrent.futures
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from crypto.corpus import PASS_THE_HEADER, shown_bytes

from silentpulse_db import (
    ConfigurationError,
    CredentialMigrationError,
    PermissionDeniedError,
    RowSecurityError,
)
from silentpulse_db.credentials import cli, migrate_credentials, verify_credentials
from silentpulse_db.crypto import Keyring

from .data import NEW_KEY, OLD_KEY, SALT, checksum, populate
from .test_migrate_credentials import cli_env, run_cli
from helpers import login_role

OLD = Keyring(OLD_KEY, salt=SALT)
NEW = Keyring(NEW_KEY, salt=SALT)
# What operators really run for a service role: every table, not just some.
GRANTS = "GRANT ALL ON ALL TABLES IN SCHEMA public TO {role};"
READ_ONLY = "GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role};"


async def untouched(conn: Any) -> bool:
    """No row of the three tables was updated, deleted or locked since it was written:
    an UPDATE rolled back, or a FOR UPDATE, leaves its xid in the live tuple's xmax."""
    total = 0
    for table in ("integration_points", "notification_channels", "ai_configs"):
        total += await conn.fetchval(f"SELECT count(*) FROM {table} WHERE xmax::text <> '0'")
    return total == 0


async def test_a_role_without_bypassrls_is_refused_before_anything(
    silentpulse_migrated_database: str, conn: Any
) -> None:
    await populate(conn, OLD, tenants=3, per_table=4)
    digest = await checksum(conn)
    async with login_role(silentpulse_migrated_database, GRANTS, prefix="norls") as (role, dsn):
        for call in (
            migrate_credentials(dsn, keyring=NEW, old_keyring=OLD, mode="rotate"),
            migrate_credentials(dsn, keyring=NEW, old_keyring=OLD, mode="rotate", dry_run=True),
            verify_credentials(dsn, keyring=NEW),
        ):
            with pytest.raises(RowSecurityError) as info:
                await call
            assert info.value.role == role
            assert f"role {role!r}" in str(info.value) and "BYPASSRLS" in str(info.value)
            # The advice an application role can follow without breaking tenant isolation.
            assert "ALTER ROLE" not in str(info.value) and "jobs role" in str(info.value)
        env = cli_env(dsn, ENCRYPTION_KEY=NEW_KEY.hex(), OLD_ENCRYPTION_KEY=OLD_KEY.hex())
        for args in (["--rotate"], ["--rotate", "--dry-run"], ["--verify"], []):
            code, out, err = await run_cli(*args, env=env)
            assert code == 2, (args, out, err)
            assert f"role {role!r}" in err and "BYPASSRLS" in err
            assert "nothing to do" not in out and "Traceback" not in err
    assert await checksum(conn) == digest and await untouched(conn)


async def test_a_role_with_a_default_tenant_is_refused(
    silentpulse_migrated_database: str, conn: Any
) -> None:
    await populate(conn, OLD, tenants=2, per_table=3)
    tenant = await conn.fetchval("SELECT id FROM tenants LIMIT 1")
    digest = await checksum(conn)
    for bypass in ("", "ALTER ROLE {role} BYPASSRLS;"):
        setup = GRANTS + bypass + f"ALTER ROLE {{role}} SET app.current_tenant = '{tenant}';"
        async with login_role(silentpulse_migrated_database, setup, prefix="tenant") as (
            role,
            dsn,
        ):
            with pytest.raises(RowSecurityError) as info:
                await migrate_credentials(dsn, keyring=NEW, old_keyring=OLD, mode="rotate")
            assert info.value.role == role
            expected = "app.current_tenant" if bypass else "BYPASSRLS"
            assert expected in str(info.value)
    assert await checksum(conn) == digest


async def test_a_bypassrls_role_that_is_not_superuser_rotates_every_row(
    silentpulse_migrated_database: str, conn: Any
) -> None:
    cells = await populate(conn, OLD, tenants=3, per_table=4)
    setup = GRANTS + "ALTER ROLE {role} BYPASSRLS;"
    async with login_role(silentpulse_migrated_database, setup, prefix="jobs") as (role, dsn):
        report = await migrate_credentials(dsn, keyring=NEW, old_keyring=OLD, mode="rotate")
        assert report.role == role and report.rewritten == len(cells)
        assert report.left_behind == {}
        assert (await verify_credentials(dsn, keyring=NEW)).passed


async def test_dry_run_is_read_only_and_counts_what_the_real_run_does(
    silentpulse_migrated_database: str, conn: Any
) -> None:
    await populate(conn, NEW, tenants=4, per_table=6, versions=(1, 2))
    await conn.execute("UPDATE ai_configs SET api_key_enc = 'sk-plain', encryption_version = 0")
    await conn.execute("VACUUM FREEZE integration_points, notification_channels, ai_configs")
    assert await untouched(conn)
    digest = await checksum(conn)
    # A read-only role in sessions that cannot write at all (as on a hot standby).
    setup = READ_ONLY + "ALTER ROLE {role} BYPASSRLS;"
    setup += "ALTER ROLE {role} SET default_transaction_read_only = on;"
    async with login_role(silentpulse_migrated_database, setup, prefix="ro") as (_, dsn):
        dry = await migrate_credentials(dsn, keyring=NEW, mode="v2", dry_run=True)
        code, out, err = await run_cli("--dry-run", env=cli_env(dsn, ENCRYPTION_KEY=NEW_KEY.hex()))
    assert code == 0 and "Traceback" not in err, err
    assert "dry run: nothing changed, no row locked" in out
    # It says the real run needs UPDATE, which this role lacks.
    assert sorted(dry.cannot_write) == ["ai_configs", "integration_points", "notification_channels"]
    assert "may read but not update" in err
    assert not dry.committed and await untouched(conn) and await checksum(conn) == digest
    # Another session can lock every row while a dry run reads them: it takes no row lock.
    locker = await asyncpg.connect(silentpulse_migrated_database)
    try:
        async with locker.transaction():
            await locker.execute("SELECT 1 FROM integration_points FOR UPDATE")
            again = await asyncio.wait_for(
                migrate_credentials(
                    silentpulse_migrated_database, keyring=NEW, mode="v2", dry_run=True
                ),
                timeout=30,
            )
    finally:
        await locker.close()
    real = await migrate_credentials(silentpulse_migrated_database, keyring=NEW, mode="v2")
    counts = [(t.name, t.rewritten, t.current, t.empty, t.problems) for t in real.tables]
    assert [(t.name, t.rewritten, t.current, t.empty, t.problems) for t in dry.tables] == counts
    assert [(t.name, t.rewritten, t.current, t.empty, t.problems) for t in again.tables] == counts
    assert real.rewritten > 0 and sum(t.current for t in real.tables) > 0


def _insert_under(dsn: str, keyring: Keyring) -> None:
    """Commit, from another connection and thread, one integration point sealed under
    ``keyring``: what a service still holding the old key writes meanwhile."""

    async def insert() -> None:
        other = await asyncpg.connect(dsn)
        try:
            tenant = await other.fetchval("SELECT id FROM tenants LIMIT 1")
            row = uuid.uuid4()
            sealed = keyring.encrypt(
                b'{"password": "late"}',
                version=1,
                tenant_id=tenant,
                table="integration_points",
                column="connection_config",
                row_id=row,
            )
            await other.execute(
                "INSERT INTO integration_points (id, tenant_id, name, type, connection_config) "
                "VALUES ($1, $2, 'late', 'kafka', $3)",
                row,
                tenant,
                sealed,
            )
        finally:
            await other.close()

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, insert()).result()


class _LateWriter:
    """A progress callback that, once the job has moved past integration_points,
    commits one value there under the old key (the job's snapshot cannot see it)."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.done = False

    def __call__(self, table: str, rows: int, rate: float) -> None:
        if table.startswith("notification_channels") and not self.done:
            self.done = True
            _insert_under(self.dsn, OLD)


async def test_values_written_under_the_old_key_meanwhile_are_reported(
    silentpulse_migrated_database: str, conn: Any
) -> None:
    dsn = silentpulse_migrated_database
    cells = await populate(conn, OLD, tenants=2, per_table=5)
    late = _LateWriter(dsn)
    report = await migrate_credentials(
        dsn, keyring=NEW, old_keyring=OLD, mode="rotate", progress=late
    )
    assert late.done and report.committed and report.rewritten == len(cells)
    assert report.left_behind == {"integration_points.connection_config": 1}
    verified = await verify_credentials(dsn, keyring=NEW, known_kids=[OLD.kid])
    assert not verified.passed and verified.need_other_key == 1
    assert dict(verified.other_kids) == {OLD.kid.hex(): 1} and verified.unknown_key == 0
    # Not told of the old key, the check counts the value without naming its key id.
    unnamed = await verify_credentials(dsn, keyring=NEW)
    assert unnamed.need_other_key == 1 and unnamed.unknown_key == 1 and not unnamed.other_kids
    # A plain rerun moves it; then the old key can go.
    rerun = await migrate_credentials(dsn, keyring=NEW, old_keyring=OLD, mode="rotate")
    assert rerun.rewritten == 1 and rerun.left_behind == {}
    assert (await verify_credentials(dsn, keyring=NEW)).passed


async def test_the_cli_exits_1_naming_what_was_left_behind(
    silentpulse_migrated_database: str,
    conn: Any,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    dsn = silentpulse_migrated_database
    await populate(conn, OLD, tenants=2, per_table=5)
    for name, value in cli_env(
        dsn, ENCRYPTION_KEY=NEW_KEY.hex(), OLD_ENCRYPTION_KEY=OLD_KEY.hex()
    ).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(cli, "_Progress", lambda _stream: _LateWriter(dsn))
    code = await asyncio.to_thread(cli.main, ["--rotate"])
    out, err = capsys.readouterr()
    assert code == 1, (out, err)
    assert "committed: 22 value(s) rewritten" in out
    assert "1 value(s) are still not under key" in err
    assert "integration_points.connection_config: 1" in err and "old key" in err
    assert "late" not in out + err


async def test_verify_counts_what_still_needs_another_key(
    silentpulse_migrated_database: str, conn: Any, tmp_path: Path
) -> None:
    dsn = silentpulse_migrated_database
    cells = await populate(conn, NEW, tenants=3, per_table=4, versions=(1, 2))
    report = await verify_credentials(dsn, keyring=NEW)
    assert report.passed and sum(c.opened for c in report.columns) == len(cells)
    assert sum(c.v1 for c in report.columns) > 0
    with pytest.raises(ConfigurationError, match="new key alone"):
        await verify_credentials(dsn, keyring=Keyring(NEW_KEY, salt=SALT, previous_keys=[OLD_KEY]))

    # Under the old key, never encrypted, and one value moved to another row.
    await populate(conn, OLD, tenants=1, per_table=2)
    await conn.execute(
        "UPDATE ai_configs SET api_key_enc = 'sk-plaintext', encryption_version = 0 "
        "WHERE tenant_id = (SELECT tenant_id FROM ai_configs WHERE encryption_version = 1 "
        "AND substring(api_key_enc FROM 2 FOR 8) = $1 ORDER BY tenant_id LIMIT 1)",
        NEW.kid,
    )
    await conn.execute(
        "UPDATE notification_channels SET config = (SELECT config FROM notification_channels "
        "WHERE substring(config FROM 2 FOR 8) = $1 ORDER BY id LIMIT 1) WHERE id = "
        "(SELECT id FROM notification_channels WHERE substring(config FROM 2 FOR 8) = $1 "
        "ORDER BY id DESC LIMIT 1)",
        NEW.kid,
    )
    report = await verify_credentials(dsn, keyring=NEW, known_kids=(OLD.kid,))
    assert not report.passed
    assert sum(c.other_key for c in report.columns) == 5 and report.other_kids[OLD.kid.hex()] == 5
    assert sum(c.plaintext for c in report.columns) == 1 and report.need_other_key == 6
    assert len(report.problems) == 1 and "tampered or misplaced" in str(report.problems[0])

    env = cli_env(dsn, ENCRYPTION_KEY=NEW_KEY.hex(), OLD_ENCRYPTION_KEY=OLD_KEY.hex())
    code, out, err = await run_cli("--verify", env=env)
    assert code == 1, err
    assert "NOT verified: 6 value(s) need another key" in out and OLD.kid.hex() in out
    assert "sk-plaintext" not in out + err and OLD_KEY.hex() not in out + err


async def test_missing_grants_are_named_before_anything_is_read(
    silentpulse_migrated_database: str, conn: Any
) -> None:
    await populate(conn, OLD, tenants=1, per_table=2)
    setup = "ALTER ROLE {role} BYPASSRLS; GRANT SELECT ON integration_points TO {role};"
    async with login_role(silentpulse_migrated_database, setup, prefix="nogrant") as (role, dsn):
        for call in (
            migrate_credentials(dsn, keyring=NEW, old_keyring=OLD, mode="rotate"),
            migrate_credentials(dsn, keyring=NEW, mode="v2", dry_run=True),
            verify_credentials(dsn, keyring=NEW),
        ):
            with pytest.raises(PermissionDeniedError) as info:
                await call
            assert info.value.role == role and "notification_channels" in str(info.value)
            assert f"TO {role}" in str(info.value)
        env = cli_env(dsn, ENCRYPTION_KEY=NEW_KEY.hex(), OLD_ENCRYPTION_KEY=OLD_KEY.hex())
        code, _, err = await run_cli("--verify", env=env)
        assert code == 1 and "OLD_ENCRYPTION_KEY is set but not used" in err


class _RowChanger:
    """A progress callback that, after the job's first batch of ``table``, commits a
    change to the last row the job will read there (already read by its snapshot)."""

    def __init__(self, dsn: str, table: str, change: str) -> None:
        self.dsn, self.table, self.change = dsn, table, change
        self.done = False

    def __call__(self, name: str, rows: int, rate: float) -> None:
        if name.startswith(self.table + ".") and not self.done:
            self.done = True
            with concurrent.futures.ThreadPoolExecutor(1) as pool:
                pool.submit(asyncio.run, self._change()).result()

    async def _change(self) -> None:
        other = await asyncpg.connect(self.dsn)
        try:
            last = f"(SELECT ctid FROM {self.table} ORDER BY ctid DESC LIMIT 1)"
            await other.execute(self.change.format(table=self.table, last=last))
        finally:
            await other.close()


@pytest.mark.parametrize(
    ("table", "change"),
    [
        ("integration_points", "UPDATE {table} SET name = name || '-renamed' WHERE ctid = {last}"),
        ("integration_points", "DELETE FROM {table} WHERE ctid = {last}"),
        ("ai_configs", "UPDATE {table} SET model = 'changed' WHERE ctid = {last}"),
    ],
)
async def test_a_row_changed_after_the_job_read_it_rolls_everything_back(
    silentpulse_migrated_database: str, conn: Any, table: str, change: str
) -> None:
    """The job writes the row versions it read or nothing: a row updated or deleted in
    between is not overwritten (or brought back), and the whole run is rolled back."""
    dsn = silentpulse_migrated_database
    await populate(conn, OLD, tenants=4, per_table=3)
    before = await _values(conn)
    changer = _RowChanger(dsn, table, change)
    with pytest.raises(CredentialMigrationError, match="changed while the job ran"):
        await migrate_credentials(
            dsn, keyring=NEW, old_keyring=OLD, mode="rotate", batch_size=2, progress=changer
        )
    assert changer.done
    after = await _values(conn)
    changed = {key for key in before if key[0] == table} - set(after)
    assert len(changed) == (1 if change.startswith("DELETE") else 0)  # not brought back
    assert after == {key: value for key, value in before.items() if key not in changed}
    if not change.startswith("DELETE"):
        # The other writer's change stays.
        kept = "name LIKE '%-renamed'" if table == "integration_points" else "model = 'changed'"
        assert await conn.fetchval(f"SELECT count(*) FROM {table} WHERE {kept}") == 1


async def _values(conn: Any) -> dict[tuple[str, Any], bytes]:
    """Every credential value, by table and row id."""
    values = {}
    for table, id_column, column in (
        ("integration_points", "id", "connection_config"),
        ("notification_channels", "id", "config"),
        ("ai_configs", "tenant_id", "api_key_enc"),
    ):
        for row in await conn.fetch(f"SELECT {id_column}, {column} FROM {table}"):
            values[(table, row[0])] = row[1]
    return values


async def _plant_values_that_are_not_envelopes(conn: Any) -> tuple[int, dict[str, bytes]]:
    """Values under the old key, and in each column one plaintext of 37 bytes or more
    whose first byte is 0x01 or 0x02: how many values, and the planted ones by row id
    (as the problem lists name it)."""
    cells = await populate(conn, OLD, tenants=2, per_table=2)
    planted: dict[str, bytes] = {}
    for (_, value), table in zip(
        PASS_THE_HEADER, ("integration_points", "notification_channels", "ai_configs"), strict=True
    ):
        cell = next(c for c in cells if c.table == table)
        id_column = "tenant_id" if table == "ai_configs" else "id"
        await conn.execute(
            f"UPDATE {table} SET {cell.column} = $1 WHERE {id_column} = $2", value, cell.row_id
        )
        planted[str(cell.row_id)] = value
    return len(cells), planted


def _leaks(text: str, planted: dict[str, bytes]) -> list[str]:
    return [shown for value in planted.values() for shown in shown_bytes(text, value)]


async def test_a_value_that_is_not_an_envelope_shows_none_of_its_bytes(
    silentpulse_migrated_database: str, conn: Any
) -> None:
    """Issue 27 (item 6): such a plaintext passes for an envelope until the key lookup;
    verify_credentials counted it under its bytes 1-8 as a key id, and the dry run's
    problem list printed them."""
    dsn = silentpulse_migrated_database
    values, planted = await _plant_values_that_are_not_envelopes(conn)
    report = await verify_credentials(dsn, keyring=OLD, known_kids=[NEW.kid])
    assert not report.passed and report.unknown_key == 3 and not report.other_kids
    assert sum(c.opened for c in report.columns) == values - 3
    with pytest.raises(CredentialMigrationError) as info:
        await migrate_credentials(dsn, keyring=NEW, old_keyring=OLD, mode="rotate", dry_run=True)
    assert "3 value(s) cannot be opened" in str(info.value)
    assert _leaks(str(info.value), planted) == []
    for row in planted:
        assert f"id={row} kid=-: unknown key" in str(info.value)


async def test_the_cli_shows_no_byte_of_a_value_that_is_not_an_envelope(
    silentpulse_migrated_database: str, conn: Any
) -> None:
    """The same through migrate-credentials --verify and its dry runs (their output)."""
    dsn = silentpulse_migrated_database
    _, planted = await _plant_values_that_are_not_envelopes(conn)
    keys = {"ENCRYPTION_KEY": NEW_KEY.hex(), "OLD_ENCRYPTION_KEY": OLD_KEY.hex()}
    for args, env in [
        (["--verify"], cli_env(dsn, ENCRYPTION_KEY=OLD_KEY.hex())),
        (
            ["--verify"],
            cli_env(dsn, ENCRYPTION_KEY=OLD_KEY.hex(), OLD_ENCRYPTION_KEY=NEW_KEY.hex()),
        ),
        (["--rotate", "--dry-run"], cli_env(dsn, **keys)),
        (["--dry-run"], cli_env(dsn, ENCRYPTION_KEY=OLD_KEY.hex())),
    ]:
        code, out, err = await run_cli(*args, env=env)
        assert code == 1, (args, out, err)
        assert _leaks(out + err, planted) == [], (args, out + err)
        if "--verify" in args:
            assert "an unknown key id: 3" in out, out
        else:
            assert all(f"id={row} kid=-: unknown key" in out + err for row in planted), err
