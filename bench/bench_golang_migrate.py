"""Against the golang-migrate CLI itself (the tool this project is compatible with).

- applying the 500 one-statement migrations of bench_apply.py to a fresh
  database: `migrate -path DIR -database DSN up` (a process) against
  `run_migrations` (in-process, as bench_apply.py) and `silentpulse-db up --path DIR`
  (a process, like golang-migrate);
- the no-op start: both CLIs as processes on an up-to-date database, once with
  the packaged migrations and once with the 500 generated ones.

The binary is $GOLANG_MIGRATE, else `migrate` on PATH, else ~/go/bin/migrate
(bench/build_golang_migrate.sh builds it). Without it the benchmark says why and
stops; the figures already in docs/benchmarks.md stay.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from importlib import resources
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
from bench_apply import COUNT, generate

from silentpulse_db import run_migrations
from silentpulse_db._version import __version__
from silentpulse_db.migrate import apply_prerequisites

from common import (
    RESULTS,
    alternate,
    create_database,
    drop_database,
    machine,
    run,
    server_dsn,
    write_section,
)

APPLY_ROUNDS = 5
NOOP_ROUNDS = 15
WARMUP = 3
SECTION = "golang-migrate"
CLI = Path(sys.executable).parent / "silentpulse-db"
REPRODUCE = "Reproduce: `.venv/bin/python bench/bench_golang_migrate.py`."


def find_migrate() -> tuple[Path, str] | None:
    """The golang-migrate binary and its version, or None."""
    candidates = [
        os.environ.get("GOLANG_MIGRATE"),
        shutil.which("migrate"),
        str(Path.home() / "go" / "bin" / "migrate"),
    ]
    for candidate in candidates:
        if not candidate or not os.access(candidate, os.X_OK):
            continue
        try:
            probe = subprocess.run(
                [candidate, "-version"], capture_output=True, text=True, timeout=10
            )
        except OSError:
            continue
        # golang-migrate prints its version (v4.18.1, or "dev") on stderr.
        version = (probe.stderr or probe.stdout).strip()
        if probe.returncode == 0 and re.fullmatch(r"v?\d+\.\d+\.\d+\S*|dev", version):
            return Path(candidate), version
    return None


def build_info(binary: Path) -> str:
    """How the binary was built, as `go version -m` tells it (when Go is here)."""
    if not shutil.which("go"):
        return "build unknown"
    info = subprocess.run(["go", "version", "-m", str(binary)], capture_output=True, text=True)
    lines = info.stdout.splitlines()
    if info.returncode != 0 or not lines:
        return "build unknown"
    go = lines[0].rsplit(" ", 1)[-1]
    if any(line.split("\t")[1:2] == ["mod"] for line in lines):
        return f"built with {go} in module mode"
    # bench/build_golang_migrate.sh SRC: the tagged source, Debian's lib/pq and friends.
    return f"built with {go} in GOPATH mode (dependencies from Debian's packages)"


def without_ssl(dsn: str) -> str:
    """``dsn`` with sslmode=disable: golang-migrate's lib/pq defaults to require."""
    parts = urlsplit(dsn)
    query = "&".join(p for p in parts.query.split("&") if p and not p.startswith("sslmode="))
    return parts._replace(query=f"{query}&sslmode=disable" if query else "sslmode=disable").geturl()


async def process(argv: list[str], env: dict[str, str] | None = None) -> None:
    """Run ``argv`` to the end; fail loudly if it fails."""
    proc = await asyncio.create_subprocess_exec(
        *argv, env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
    )
    _, err = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"{argv[0]} exited {proc.returncode}: {err.decode()}")


def cli_env(dsn: str) -> dict[str, str]:
    env = {**os.environ, "DATABASE_URL": dsn}
    env.pop("POSTGRES_DSN", None)
    return env


async def apply_rounds(admin: str, binary: Path, source: Path) -> dict[str, float]:
    """Median seconds to apply the COUNT migrations to a fresh database, per tool."""
    times: dict[str, list[float]] = {"golang-migrate": [], "run_migrations": [], "cli": []}
    for _ in range(APPLY_ROUNDS):
        for name in times:
            dsn = without_ssl(await create_database(admin))
            try:
                started = time.perf_counter()
                if name == "golang-migrate":
                    await process([str(binary), "-path", str(source), "-database", dsn, "up"])
                elif name == "run_migrations":
                    await run_migrations(dsn, source=source)
                else:
                    await process([str(CLI), "up", "--path", str(source)], cli_env(dsn))
                elapsed = time.perf_counter() - started
                times[name].append(elapsed)
                await check_version(dsn, COUNT)
            finally:
                await drop_database(admin, dsn)
    return {name: statistics.median(values) for name, values in times.items()}


async def check_version(dsn: str, expected: int) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        row = await conn.fetchrow("SELECT version, dirty FROM schema_migrations")
    finally:
        await conn.close()
    assert row is not None and (row["version"], row["dirty"]) == (expected, False), row


async def noop_rounds(binary: Path, dsn: str, source: Path) -> dict[str, float]:
    """Median seconds of both CLIs on ``dsn``, already up to date with ``source``."""
    candidates = {
        "golang-migrate": lambda: process(
            [str(binary), "-path", str(source), "-database", dsn, "up"]
        ),
        "cli": lambda: process([str(CLI), "up", "--path", str(source)], cli_env(dsn)),
    }
    await alternate(WARMUP, **candidates)
    return await alternate(NOOP_ROUNDS, **candidates)


async def main(admin: str, binary: Path, gm_version: str) -> None:
    work = Path(tempfile.mkdtemp(prefix="bench-golang-migrate-"))
    generated = work / "generated"
    generated.mkdir()
    generate(generated)
    with resources.as_file(resources.files("silentpulse_db") / "migrations") as packaged:
        packaged_count = len(list(packaged.glob("*.up.sql")))
        try:
            apply = await apply_rounds(admin, binary, generated)
            noop: dict[str, dict[str, float]] = {}
            for label, source in (("packaged", packaged), ("generated", generated)):
                dsn = without_ssl(await create_database(admin))
                try:
                    if label == "packaged":
                        await apply_prerequisites(dsn)
                    await run_migrations(dsn, source=None if label == "packaged" else source)
                    noop[label] = await noop_rounds(binary, dsn, source)
                finally:
                    await drop_database(admin, dsn)
        finally:
            shutil.rmtree(work)

    def ratio(med: dict[str, float], name: str) -> str:
        return f"{med[name] / med['golang-migrate']:.2f}"

    def ms(seconds: float) -> str:
        return f"{seconds * 1000:.1f} ms"

    write_section(
        SECTION,
        f"""## Against golang-migrate

golang-migrate {gm_version} (`migrate` CLI, postgres driver; {build_info(binary)}) and silentpulse-db
{__version__} on the same server, DSNs with `sslmode=disable` on both sides
(golang-migrate's lib/pq requires it without SSL); {machine()}. {REPRODUCE}
The binary: `bench/build_golang_migrate.sh`.

Applying the {COUNT} one-statement migrations of `bench_apply.py` to a fresh database,
{APPLY_ROUNDS} rounds in alternation, medians:

| | total | per migration | vs golang-migrate |
|---|---|---|---|
| baseline: `migrate -path DIR -database DSN up` (process) | {apply["golang-migrate"]:.3f} s | {apply["golang-migrate"] / COUNT * 1000:.3f} ms | 1.00 |
| `run_migrations` (in-process) | {apply["run_migrations"]:.3f} s | {apply["run_migrations"] / COUNT * 1000:.3f} ms | **{ratio(apply, "run_migrations")}** |
| `silentpulse-db up --path DIR` (process) | {apply["cli"]:.3f} s | {apply["cli"] / COUNT * 1000:.3f} ms | **{ratio(apply, "cli")}** |

No-op start: both CLIs as processes on one up-to-date database, {NOOP_ROUNDS}
alternating rounds after {WARMUP} warm-up rounds, wall-time medians:

| migrations folder | `migrate ... up` (baseline) | `silentpulse-db up --path DIR` | silentpulse / golang-migrate |
|---|---|---|---|
| packaged ({packaged_count} versions) | {ms(noop["packaged"]["golang-migrate"])} | {ms(noop["packaged"]["cli"])} | **{ratio(noop["packaged"], "cli")}** |
| generated ({COUNT} versions) | {ms(noop["generated"]["golang-migrate"])} | {ms(noop["generated"]["cli"])} | **{ratio(noop["generated"], "cli")}** |
""",
    )


def skip(reason: str) -> None:
    print(f"bench_golang_migrate: skipped: {reason}")
    text = RESULTS.read_text() if RESULTS.exists() else ""
    if re.search(rf"<!-- {SECTION} -->\s*## Against golang-migrate\s*golang-migrate", text):
        return  # keep the figures measured where the binary was present
    write_section(
        SECTION,
        f"""## Against golang-migrate

Not measured: {reason}. Build the binary with `bench/build_golang_migrate.sh`
(or point `GOLANG_MIGRATE` at one), then {REPRODUCE[0].lower()}{REPRODUCE[1:]}
""",
    )


if __name__ == "__main__":
    found = find_migrate()
    if found is None:
        skip(
            "no golang-migrate binary ($GOLANG_MIGRATE, `migrate` on PATH, ~/go/bin/migrate); "
            "`go install` needs the Go module proxy"
        )
        sys.exit(0)
    with server_dsn() as admin:
        run(main(admin, *found))
