"""Key rotation throughput: migrate-credentials --rotate vs a plain UPDATE of the same column.

For 100k and 1M values (200-byte secrets, 1000 tenants, v2 envelopes) in
integration_points (plus one ai_configs row per tenant), in the same run:
- floor: `UPDATE integration_points SET connection_config = connection_config`,
  the rate at which PostgreSQL rewrites the rows with the same bytes;
- rotation: the `migrate-credentials --rotate` command, its own rows/s, and
  its peak memory (max RSS of the process).
Target: rotation >= 0.8 of the floor's rate; peak RSS < 150 MiB at 1M values, flat as rows grow.
Usage: python bench_rotation.py [ROWS ...]   (default: 100000 1000000)
"""

from __future__ import annotations

import asyncio
import os
import re
import statistics
import subprocess
import sys
import time
import uuid

import asyncpg

from silentpulse_db import run_migrations
from silentpulse_db.credentials.columns import COLUMNS
from silentpulse_db.credentials.rotation import DEFAULT_BATCH, WRITER_SETTINGS, update_sql
from silentpulse_db.crypto import Keyring
from silentpulse_db.migrate import apply_prerequisites

from common import create_database, drop_database, machine, server_dsn, write_section

TENANTS = 1000
OLD_KEY, NEW_KEY = "a1c3" * 16, "b2d4" * 16


async def populate(dsn: str, rows: int) -> None:
    keyring = Keyring(bytes.fromhex(OLD_KEY), per_tenant=True)
    tenants = [uuid.uuid4() for _ in range(TENANTS)]
    conn = await asyncpg.connect(dsn)
    try:
        await conn.copy_records_to_table(
            "tenants", records=[(t, "t", t.hex) for t in tenants], columns=["id", "name", "handle"]
        )
        secret = os.urandom(100).hex().encode()  # 200 bytes
        chunk = 50_000
        for start in range(0, rows, chunk):
            records = []
            for i in range(start, min(start + chunk, rows)):
                tenant, row = tenants[i % TENANTS], uuid.uuid4()
                sealed = keyring.encrypt(
                    secret,
                    tenant_id=tenant,
                    table="integration_points",
                    column="connection_config",
                    row_id=row,
                )
                records.append((row, tenant, f"p{i}", "kafka", sealed))
            await conn.copy_records_to_table(
                "integration_points",
                records=records,
                columns=["id", "tenant_id", "name", "type", "connection_config"],
            )
        configs = [
            (
                t,
                "openai",
                "m",
                keyring.encrypt(
                    secret, tenant_id=t, table="ai_configs", column="api_key_enc", row_id=t
                ),
                2,
            )
            for t in tenants
        ]
        await conn.copy_records_to_table(
            "ai_configs",
            records=configs,
            columns=["tenant_id", "provider", "model", "api_key_enc", "encryption_version"],
        )
        await conn.execute("VACUUM ANALYZE")
    finally:
        await conn.close()


async def plain_update(dsn: str) -> float:
    conn = await asyncpg.connect(dsn)
    try:
        started = time.perf_counter()
        await conn.execute("UPDATE integration_points SET connection_config = connection_config")
        elapsed = time.perf_counter() - started
        await conn.execute("VACUUM integration_points")
        return elapsed
    finally:
        await conn.close()


async def writer_alone(dsn: str) -> float:
    """The job's own UPDATE statements (same SQL, settings and batches), fed with the
    values already there: what its one writer costs with no reading or sealing beside
    it. Seconds for the writes alone (each batch is read first, untimed); the rotation
    cannot beat this."""
    column = COLUMNS[0]  # integration_points: all but TENANTS of the values
    reader, writer = await asyncpg.connect(dsn), await asyncpg.connect(dsn)
    elapsed = 0.0
    try:
        sql = update_sql(column)
        async with reader.transaction(isolation="repeatable_read"), writer.transaction():
            await writer.execute(WRITER_SETTINGS)
            cursor = await reader.cursor(column.select_sql())
            while batch := await cursor.fetch(DEFAULT_BATCH):
                started = time.perf_counter()
                # The job's arguments (credentials.rotation._arguments): ids, tenants,
                # xmins, values, in select_sql()'s order.
                status = await writer.execute(sql, *([r[i] for r in batch] for i in range(4)))
                elapsed += time.perf_counter() - started
                assert status == f"UPDATE {len(batch)}", status  # every row written
        await writer.execute("VACUUM integration_points")
        return elapsed
    finally:
        await reader.close()
        await writer.close()


# The command run with its own peak RSS printed at exit: VmHWM belongs to the process
# image after exec. ru_maxrss would count the bench process it was forked from.
_RUN_WITH_PEAK = """
import atexit, resource, runpy, sys
def peak():
    try:
        with open("/proc/self/status") as status:
            kib = next(int(l.split()[1]) for l in status if l.startswith("VmHWM:"))
    except OSError:
        kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024  # macOS: bytes
    print(f"peak-rss-kib {kib}", file=sys.stderr)
atexit.register(peak)
runpy.run_module("silentpulse_db.credentials.cli", run_name="__main__", alter_sys=True)
"""


def rotate(dsn: str, old: str, new: str) -> tuple[float, int, float]:
    """Run the CLI from key ``old`` to ``new``; (seconds it reports, rows it rewrote,
    peak RSS in MiB of the command's process)."""
    env = {**os.environ, "POSTGRES_DSN": dsn, "ENCRYPTION_KEY": new, "OLD_ENCRYPTION_KEY": old}
    done = subprocess.run(
        [sys.executable, "-c", _RUN_WITH_PEAK, "--rotate"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    match = re.search(r"committed: ([\d,]+) value\(s\) rewritten in ([\d.]+)s", done.stdout)
    peak = re.search(r"peak-rss-kib (\d+)", done.stderr)
    assert match and peak, done.stdout + done.stderr
    return float(match.group(2)), int(match.group(1).replace(",", "")), int(peak.group(1)) / 1024


async def measure(admin: str, rows: int) -> dict[str, float]:
    """Floor and rotation in alternation (the rotation goes back and forth between the
    two keys, so the rows need no repopulating); medians of ``rounds(rows)``."""
    dsn = await create_database(admin)
    floors: list[float] = []
    writers: list[float] = []
    rotations: list[float] = []
    peak = 0.0
    try:
        await apply_prerequisites(dsn)
        await run_migrations(dsn)
        await populate(dsn, rows)
        # Not measured: the first rewrite of a freshly loaded table is slower (its pages
        # are full); both sides are measured from the state a rewrite leaves.
        await plain_update(dsn)
        keys = (OLD_KEY, NEW_KEY)
        for _ in range(rounds(rows)):
            floors.append(await plain_update(dsn))
            writers.append(await writer_alone(dsn))
            rot_s, rewritten, peak = await asyncio.to_thread(rotate, dsn, *keys)
            assert rewritten == rows + TENANTS
            rotations.append(rot_s)
            print(
                f"round: floor {rows / floors[-1]:,.0f} rows/s, writer alone "
                f"{rows / writers[-1]:,.0f} rows/s, rotation {(rows + TENANTS) / rot_s:,.0f} rows/s",
                flush=True,
            )
            keys = keys[::-1]
            await vacuum(dsn)  # as plain_update does after its UPDATE
    finally:
        await drop_database(admin, dsn)
    floor_s, rot_s = statistics.median(floors), statistics.median(rotations)
    return {
        "rows": rows,
        "floor_rate": rows / floor_s,
        "writer_rate": rows / statistics.median(writers),
        "rot_rate": (rows + TENANTS) / rot_s,
        "rss": peak,
        "rot_s": rot_s,
        "rounds": len(floors),
    }


def rounds(rows: int) -> int:
    """Three alternating rounds where a round takes seconds; one at a million rows."""
    return 3 if rows <= 200_000 else 1


async def vacuum(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("VACUUM integration_points")
    finally:
        await conn.close()


async def main(admin: str, sizes: list[int]) -> None:
    results = [await measure(admin, n) for n in sizes]
    lines = [
        "| values | rounds | plain UPDATE (floor) | the job's writer alone | "
        "migrate-credentials --rotate | ratio (target >= 0.8) | rotation time | peak RSS |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {int(r['rows']):,} | {int(r['rounds'])} | {r['floor_rate']:,.0f} rows/s "
            f"| {r['writer_rate']:,.0f} rows/s ({r['writer_rate'] / r['floor_rate']:.2f}) "
            f"| {r['rot_rate']:,.0f} rows/s | "
            f"**{r['rot_rate'] / r['floor_rate']:.2f}** | {r['rot_s']:.1f} s | {r['rss']:.0f} MiB |"
        )
    write_section(
        "rotation",
        f"""## Key rotation

`migrate-credentials --rotate` (v2 envelopes, 200-byte secrets, {TENANTS} tenants, values in
integration_points plus one ai_configs row per tenant) against a plain
`UPDATE integration_points SET connection_config = connection_config` on the same rows in the
same run, in alternation after one unmeasured rewrite (medians; the rotation goes back and
forth between two keys); throwaway server (fsync off for both); {machine()}. Peak RSS is the
command's whole process (Python, asyncpg, cryptography): it should not grow with the rows.
"The job's writer alone" runs the job's own UPDATE statements, batches and settings on the
values already there, with nothing read or sealed beside it: the most the rotation can reach
with its one writer (the single transaction allows no second one).
Reproduce: `.venv/bin/python bench/bench_rotation.py`.

{chr(10).join(lines)}
""",
    )


if __name__ == "__main__":
    sizes = [int(a) for a in sys.argv[1:]] or [100_000, 1_000_000]
    with server_dsn() as admin:
        asyncio.run(main(admin, sizes))
