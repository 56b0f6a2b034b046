"""Shared by the benchmarks: a server, fresh databases, medians, and docs/benchmarks.md.

Every benchmark compares against a baseline measured in the same run and
reports the ratio: this machine is shared and noisy, absolute times are not
comparable between runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import platform
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

from silentpulse_db.postgres import databases

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "docs" / "benchmarks.md"

# A throwaway server on disk, as a production server is: the test harness puts its own
# in memory where it can, which makes migrating ~3x cheaper and would move every ratio
# whose baseline migrates (bench_replicas measured 1.56 there against 1.26 on disk).
os.environ.setdefault("SILENTPULSE_TEST_DIR", tempfile.gettempdir())


@contextlib.contextmanager
def server_dsn() -> Iterator[str]:
    """$BENCH_DSN (an admin DSN of an existing server) or a throwaway server's DSN."""
    if os.environ.get("BENCH_DSN"):
        yield os.environ["BENCH_DSN"]
        return
    from silentpulse_db.testing.server import PostgresServer

    with PostgresServer() as server:
        yield server.dsn


async def create_database(admin_dsn: str, prefix: str = "bench") -> str:
    """A fresh database beside ``admin_dsn``'s; returns its DSN."""
    return await databases.create_database(admin_dsn, databases.unique_name(prefix))


async def drop_database(admin_dsn: str, dsn: str) -> None:
    await databases.drop_database(admin_dsn, urlsplit(dsn).path.lstrip("/"))


async def alternate(rounds: int, **candidates: Callable[[], Awaitable[object]]) -> dict[str, float]:
    """Median seconds of each candidate, run in alternation so noise hits all alike."""
    samples = await alternate_samples(rounds, **candidates)
    return {name: statistics.median(values) for name, values in samples.items()}


async def alternate_samples(
    rounds: int, **candidates: Callable[[], Awaitable[object]]
) -> dict[str, list[float]]:
    """Seconds of each candidate in each round, run in alternation."""
    samples: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(rounds):
        for name, fn in candidates.items():
            started = time.perf_counter()
            await fn()
            samples[name].append(time.perf_counter() - started)
    return samples


def paired_ratio(samples: dict[str, list[float]], name: str, baseline: str) -> float:
    """The median of each round's own ratio: a slow moment of this shared machine
    slows both runs of a round alike, where it would shift one median alone."""
    pairs = zip(samples[name], samples[baseline], strict=True)
    return statistics.median(a / b for a, b in pairs)


def machine() -> str:
    """The machine, and how busy it was as the figures were written (a shared machine's
    load moves wall times more than most changes do)."""
    load = os.getloadavg()[0]
    return (
        f"{platform.machine()}, {os.cpu_count()} cores, Python {sys.version.split()[0]}, "
        f"load average {load:.1f}"
    )


def write_section(name: str, markdown: str) -> None:
    """Replace the section between <!-- name --> markers in docs/benchmarks.md."""
    RESULTS.parent.mkdir(exist_ok=True)
    text = RESULTS.read_text() if RESULTS.exists() else _HEADER
    begin, end = f"<!-- {name} -->", f"<!-- /{name} -->"
    block = f"{begin}\n{markdown.strip()}\n{end}"
    if begin in text:
        text = re.sub(re.escape(begin) + r".*?" + re.escape(end), lambda _: block, text, flags=re.S)
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    RESULTS.write_text(text)
    print(markdown)


_HEADER = """# Benchmarks

Produced by `make bench` (scripts in `bench/`). Each figure is a ratio against
a baseline measured in the same run, on the same server, so that a noisy
shared machine does not decide the result. Re-run to refresh.
"""


def run(coro: Awaitable[None]) -> None:
    asyncio.run(coro)  # type: ignore[arg-type]
