"""migrate-credentials against a migrated database: both modes, failures that change nothing,
a killed run, concurrent runs, and output that never shows a secret."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import pytest

from silentpulse_db import (
    ConnectRetry,
    CredentialMigrationError,
    DatabaseConnectionError,
    UnknownKeyError,
    tenant_transaction,
)
from silentpulse_db.credentials import migrate_credentials, verify_credentials
from silentpulse_db.credentials.rotation import LOCK_KEY
from silentpulse_db.crypto import Keyring, peek

from .data import NEW_KEY, OLD_KEY, SALT, Cell, checksum, open_all, populate, read_value
from helpers import fetchval, free_port, wait_for

OLD = Keyring(OLD_KEY, salt=SALT)
NEW = Keyring(NEW_KEY, salt=SALT)
THIRD_KEY = bytes.fromhex("c3e5" * 16)


async def values(conn: Any, cells: list[Cell]) -> list[bytes]:
    return [await read_value(conn, c) for c in cells]


async def test_v1_to_v2_across_tenants_and_tables(
    silentpulse_migrated_database: str, conn: Any
) -> None:
    cells = await populate(conn, NEW, tenants=5, per_table=20, versions=(1,))
    report = await migrate_credentials(silentpulse_migrated_database, keyring=NEW, mode="v2")
    assert report.committed and report.rewritten == len(cells) == 5 * 41
    assert [t.rewritten for t in report.tables] == [100, 100, 5]
    after = await values(conn, cells)
    assert {peek(v) for v in after} == {(2, NEW.kid)}
    assert open_all(Keyring(NEW_KEY, salt=SALT), cells, after) == [c.plaintext for c in cells]
    assert await conn.fetchval("SELECT array_agg(DISTINCT encryption_version) FROM ai_configs") == [
        2
    ]

    again = await migrate_credentials(silentpulse_migrated_database, keyring=NEW, mode="v2")
    assert again.rewritten == 0 and sum(t.current for t in again.tables) == len(cells)
    assert await values(conn, cells) == after  # not a byte changed


async def test_rotate_keeps_each_values_version(
    silentpulse_migrated_database: str, conn: Any
) -> None:
    cells = await populate(conn, OLD, tenants=4, per_table=10, versions=(1, 2))
    before = [peek(v)[0] for v in await values(conn, cells)]
    assert set(before) == {1, 2}
    report = await migrate_credentials(
        silentpulse_migrated_database, keyring=NEW, old_keyring=OLD, mode="rotate"
    )
    assert report.rewritten == len(cells)
    after = await values(conn, cells)
    assert [peek(v) for v in after] == [(v, NEW.kid) for v in before]
    assert open_all(Keyring(NEW_KEY, salt=SALT), cells, after) == [c.plaintext for c in cells]
    with pytest.raises(UnknownKeyError):
        open_all(Keyring(OLD_KEY, salt=SALT), cells[:1], after[:1])
    again = await migrate_credentials(
        silentpulse_migrated_database, keyring=NEW, old_keyring=OLD, mode="rotate"
    )
    assert again.rewritten == 0


async def test_two_tenants_rows_of_one_id_keep_their_own_values(
    silentpulse_migrated_database: str, silentpulse_app_database: str, conn: Any
) -> None:
    """An id is unique within its tenant only (000044): tenant B, as the application's
    role, gives its integration point the id of one of tenant A's. Two rotations later
    (after the first, every row rewritten shares one xmin, the guard that told them
    apart) each row still holds its own tenant's value: rows are written back by
    (tenant_id, id), never by id alone."""
    cells = await populate(conn, OLD, tenants=2, per_table=3)
    twin = next(c for c in cells if c.table == "integration_points")
    other = next(c.tenant_id for c in cells if c.tenant_id != twin.tenant_id)
    secret = b'{"password": "tenant B\'s own"}'
    sealed = OLD.encrypt(
        secret,
        version=1,
        tenant_id=other,
        table="integration_points",
        column="connection_config",
        row_id=twin.row_id,
    )
    app = await asyncpg.connect(silentpulse_app_database)
    try:
        async with tenant_transaction(app, other):
            await app.execute(
                "INSERT INTO integration_points (id, tenant_id, name, type, connection_config) "
                "VALUES ($1, $2, 'twin', 'kafka', $3)",
                twin.row_id,
                other,
                sealed,
            )
    finally:
        await app.close()
    cells.append(Cell("integration_points", "connection_config", twin.row_id, other, secret))
    dsn = silentpulse_migrated_database
    await migrate_credentials(dsn, keyring=NEW, old_keyring=OLD, mode="rotate")
    third = Keyring(THIRD_KEY, salt=SALT)
    report = await migrate_credentials(dsn, keyring=third, old_keyring=NEW, mode="rotate")
    assert report.committed and report.rewritten == len(cells)
    after = await values(conn, cells)
    assert {peek(v)[1] for v in after} == {third.kid}
    assert open_all(Keyring(THIRD_KEY, salt=SALT), cells, after) == [c.plaintext for c in cells]


async def test_wrong_old_key_dry_run_reports_every_row_and_real_run_changes_nothing(
    silentpulse_migrated_database: str, conn: Any
) -> None:
    cells = await populate(conn, OLD, tenants=3, per_table=10)
    wrong = Keyring(bytes.fromhex("c3e5" * 16), salt=SALT)
    digest = await checksum(conn)
    with pytest.raises(CredentialMigrationError) as dry:
        await migrate_credentials(
            silentpulse_migrated_database,
            keyring=NEW,
            old_keyring=wrong,
            mode="rotate",
            dry_run=True,
        )
    assert f"{len(cells)} value(s) cannot be opened" in str(dry.value)
    for cell in cells[:50]:
        assert str(cell.row_id) in str(dry.value)
    # The keys looked for are named; the values' own "key id" is not (it could be bytes
    # of a value that is not an envelope: see test_safety).
    assert "unknown key" in str(dry.value) and wrong.kid.hex() in str(dry.value)
    assert OLD.kid.hex() not in str(dry.value)
    with pytest.raises(CredentialMigrationError, match="nothing was changed"):
        await migrate_credentials(
            silentpulse_migrated_database, keyring=NEW, old_keyring=wrong, mode="rotate"
        )
    assert await checksum(conn) == digest


async def test_dry_run_counts_and_changes_nothing(
    silentpulse_migrated_database: str, conn: Any
) -> None:
    await populate(conn, NEW, tenants=2, per_table=5, versions=(1, 2))
    digest = await checksum(conn)
    report = await migrate_credentials(
        silentpulse_migrated_database, keyring=NEW, mode="v2", dry_run=True
    )
    assert not report.committed and report.dry_run
    assert sum(t.rewritten for t in report.tables) + sum(t.current for t in report.tables) == 22
    assert sum(t.current for t in report.tables) > 0
    assert await checksum(conn) == digest


async def test_one_tampered_value_among_thousands(
    silentpulse_migrated_database: str, conn: Any
) -> None:
    cells = await populate(conn, OLD, tenants=10, per_table=150)
    victim = cells[1234]
    sealed = bytearray(await read_value(conn, victim))
    sealed[-5] ^= 0x40
    await conn.execute(
        f"UPDATE {victim.table} SET {victim.column} = $1 WHERE id = $2",
        bytes(sealed),
        victim.row_id,
    )
    digest = await checksum(conn)
    with pytest.raises(CredentialMigrationError) as info:
        await migrate_credentials(
            silentpulse_migrated_database, keyring=NEW, old_keyring=OLD, mode="rotate"
        )
    text = str(info.value)
    assert "1 value(s) cannot be opened" in text
    assert f"{victim.table} id={victim.row_id}" in text and "tampered or misplaced" in text
    assert await checksum(conn) == digest


@pytest.mark.parametrize("moved_to", ["row", "column", "tenant"])
async def test_a_value_moved_elsewhere_fails_to_open(
    silentpulse_migrated_database: str, conn: Any, moved_to: str
) -> None:
    cells = await populate(conn, NEW, tenants=2, per_table=3)
    source = cells[0]  # an integration point of tenant 1
    if moved_to == "row":
        target = next(
            c
            for c in cells
            if c.table == source.table and c.tenant_id == source.tenant_id and c is not source
        )
    elif moved_to == "column":
        target = next(
            c
            for c in cells
            if c.table == "notification_channels" and c.tenant_id == source.tenant_id
        )
    else:
        target = next(
            c for c in cells if c.table == source.table and c.tenant_id != source.tenant_id
        )
    await conn.execute(
        f"UPDATE {target.table} SET {target.column} = $1 WHERE id = $2",
        await read_value(conn, source),
        target.row_id,
    )
    with pytest.raises(CredentialMigrationError) as info:
        await migrate_credentials(
            silentpulse_migrated_database, keyring=NEW, mode="v2", dry_run=True
        )
    assert f"{target.table} id={target.row_id}" in str(
        info.value
    ) and "tampered or misplaced" in str(info.value)


def cli_env(dsn: str, **extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("ENCRYPTION_KEY", "OLD_ENCRYPTION_KEY", "HKDF_SALT")
    }
    return {**env, "POSTGRES_DSN": dsn, "HKDF_SALT": SALT.decode(), **extra}


async def run_cli(*args: str, env: dict[str, str]) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "silentpulse_db.credentials.cli",
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


@pytest.mark.slow
async def test_sigkill_mid_rotation_is_atomic_and_a_rerun_completes(
    silentpulse_migrated_database: str, conn: Any
) -> None:
    cells = await populate(conn, OLD, tenants=20, per_table=1000)
    env = cli_env(
        silentpulse_migrated_database,
        ENCRYPTION_KEY=NEW_KEY.hex(),
        OLD_ENCRYPTION_KEY=OLD_KEY.hex(),
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "silentpulse_db.credentials.cli",
        "--rotate",
        "--batch-size",
        "100",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stderr is not None
    # Kill it once it reports progress: some batches are written, not committed.
    while b"rows (" not in (line := await asyncio.wait_for(proc.stderr.readline(), 60)):
        assert line, "the job ended before reporting progress"
    os.kill(proc.pid, signal.SIGKILL)
    await proc.wait()
    assert proc.returncode == -signal.SIGKILL
    await wait_for(lambda: _no_job(silentpulse_migrated_database), timeout=30)
    sample = cells[::97]
    assert open_all(OLD, sample, await values(conn, sample)) == [c.plaintext for c in sample]
    assert {peek(v)[1] for v in await values(conn, sample)} == {OLD.kid}

    code, out, err = await run_cli("--rotate", env=env)
    assert code == 0, err
    assert f"committed: {len(cells):,} value(s) rewritten" in out
    assert open_all(NEW, sample, await values(conn, sample)) == [c.plaintext for c in sample]


async def _no_job(dsn: str) -> bool:
    return not await fetchval(
        dsn, "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'migrate-credentials'"
    )


@pytest.mark.slow
@pytest.mark.parametrize("lock_timeout", [120.0, 0.05])
async def test_two_rotations_at_once(
    silentpulse_migrated_database: str, conn: Any, lock_timeout: float
) -> None:
    cells = await populate(conn, OLD, tenants=10, per_table=1000)
    outcomes = await asyncio.gather(
        *(
            migrate_credentials(
                silentpulse_migrated_database,
                keyring=NEW,
                old_keyring=OLD,
                mode="rotate",
                batch_size=200,
                lock_timeout=lock_timeout,
            )
            for _ in range(2)
        ),
        return_exceptions=True,
    )
    done = [o for o in outcomes if not isinstance(o, BaseException) and o.rewritten == len(cells)]
    others = [o for o in outcomes if o not in done]
    assert len(done) == 1, outcomes
    other = others[0]
    if isinstance(other, BaseException):  # waited lock_timeout, then failed cleanly
        assert isinstance(other, CredentialMigrationError) and "holds the lock" in str(other)
    else:  # waited for the first, then found everything current
        assert other.rewritten == 0
    sample = cells[::101]
    assert open_all(NEW, sample, await values(conn, sample)) == [c.plaintext for c in sample]


async def test_a_second_run_waits_then_names_the_holder(
    silentpulse_migrated_database: str, conn: Any
) -> None:
    await populate(conn, OLD, tenants=1, per_table=2)
    holder = await asyncpg.connect(
        silentpulse_migrated_database, server_settings={"application_name": "migrate-credentials"}
    )
    try:
        async with holder.transaction():
            await holder.execute("SELECT pg_advisory_xact_lock($1::bigint)", LOCK_KEY)
            digest = await checksum(conn)
            with pytest.raises(CredentialMigrationError) as info:
                await migrate_credentials(
                    silentpulse_migrated_database,
                    keyring=NEW,
                    old_keyring=OLD,
                    mode="rotate",
                    lock_timeout=0.5,
                )
            assert f"holds the lock (pid {holder.get_server_pid()}" in str(info.value)
            assert "gave up after 0.5s. Nothing was changed" in str(info.value)
            assert await checksum(conn) == digest
    finally:
        await holder.close()
    assert (
        await migrate_credentials(
            silentpulse_migrated_database, keyring=NEW, old_keyring=OLD, mode="rotate"
        )
    ).rewritten == 5


async def test_output_never_shows_keys_plaintext_or_password(
    silentpulse_migrated_database: str, conn: Any, tmp_path: Path
) -> None:
    cells = await populate(conn, OLD, tenants=2, per_table=3)
    dsn = silentpulse_migrated_database
    parts = urlsplit(dsn)
    if not parts.password:
        # A server with trust authentication: give the DSN a password anyway (the
        # server ignores it), so that the check for it means something.
        netloc = f"{parts.username or 'postgres'}:Unused-Pw-7x@{parts.hostname}:{parts.port}"
        dsn = parts._replace(netloc=netloc).geturl()
    dsn_password = urlsplit(dsn).password
    assert dsn_password
    outputs = []
    good = cli_env(
        dsn,
        ENCRYPTION_KEY=NEW_KEY.hex(),
        OLD_ENCRYPTION_KEY=OLD_KEY.hex(),
    )
    wrong = cli_env(dsn, ENCRYPTION_KEY=NEW_KEY.hex(), OLD_ENCRYPTION_KEY="d4e6" * 16)
    bad_dsn = cli_env(
        dsn.replace(urlsplit(dsn).hostname or "", "127.0.0.9"),
        ENCRYPTION_KEY=NEW_KEY.hex(),
    )
    for args, env in [
        (["--rotate", "--dry-run"], wrong),
        (["--rotate"], wrong),
        (["--rotate", "--dry-run"], good),
        (["--rotate"], good),
        (["--rotate"], good),
        ([], {**good, "ENCRYPTION_KEY": "nothex" * 10 + "abcd"}),
        ([], bad_dsn),
    ]:
        code, out, err = await run_cli(*args, env=env)
        outputs.append((code, out + err))
    codes = [c for c, _ in outputs]
    assert codes == [1, 1, 0, 0, 0, 2, 1], outputs
    blob = "\n".join(text for _, text in outputs)
    forbidden = [NEW_KEY.hex(), OLD_KEY.hex(), "d4e6" * 16, "nothex", dsn_password, SALT.decode()]
    forbidden += [c.plaintext.decode() for c in cells]
    for secret in forbidden:
        assert secret not in blob, f"leaked: {secret[:6]}..."
    assert "would change" in outputs[2][1] and "nothing to do" in outputs[4][1]


async def test_the_job_waits_for_the_server_as_told() -> None:
    """The job's connections took 3 attempts whatever the caller wanted."""
    nobody = f"postgresql://someone@127.0.0.1:{free_port()}/db"
    two = ConnectRetry(attempts=2, wait=0)
    for call in (
        migrate_credentials(nobody, keyring=NEW, old_keyring=OLD, mode="rotate", connect=two),
        migrate_credentials(nobody, keyring=NEW, dry_run=True, connect=two),
        verify_credentials(nobody, keyring=NEW, connect=two),
    ):
        with pytest.raises(DatabaseConnectionError, match="after 2 attempts"):
            await call
    env = cli_env(nobody, ENCRYPTION_KEY=NEW_KEY.hex())
    for args in (["--verify"], ["--dry-run"]):
        code, _, err = await run_cli(*args, "--attempts", "2", "--wait", "0", env=env)
        assert code == 1 and "after 2 attempts" in err, (args, err)
