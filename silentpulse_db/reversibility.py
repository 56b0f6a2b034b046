"""`silentpulse-db check`: prove on a scratch database that every down undoes its up.

For each migration in order: snapshot the catalog, apply up, snapshot, apply
down, require the snapshot from before up; apply up again, require the first
after-up snapshot. Naming rules are checked too. A mismatch names the
migration and each object that differs.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import asyncpg

from .catalog import Snapshot, snapshot
from .errors import MigrationFailedError, ReversibilityError
from .migrator import Migrator
from .scaffold import LEGACY_MAX_VERSION, naming_problem
from .scratch import scratch_database
from .source import MigrationSource
from .version_table import ensure_tables

logger = logging.getLogger("silentpulse_db.reversibility")


@dataclass
class CheckReport:
    checked: list[int] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def naming_problems(source: MigrationSource) -> list[str]:
    problems = []
    for migration in source.migrations:
        if migration.version <= LEGACY_MAX_VERSION:
            continue  # predates the naming rule
        problem = naming_problem(migration.name)
        if problem:
            problems.append(f"{migration.up.location}: {problem}")
    return problems


async def check_reversibility(dsn: str, source: MigrationSource) -> CheckReport:
    """Run the up/down/up proof on a scratch database created on ``dsn``'s server.

    Raises ReversibilityError listing every problem; returns the report when clean.
    """
    report = CheckReport(problems=naming_problems(source))
    async with scratch_database(dsn, prefix="silentpulse_check") as conn:
        await _prove(conn, source, report)
    if report.problems:
        raise ReversibilityError(
            f"{len(report.problems)} problem(s) in {source.description}:\n"
            + "\n".join(f"- {p}" for p in report.problems)
        )
    return report


async def _prove(conn: asyncpg.Connection, source: MigrationSource, report: CheckReport) -> None:
    migrator = Migrator(conn, source)
    if source.prerequisites is not None:
        await migrator.run_file(source.prerequisites)
    await ensure_tables(conn)
    for migration in source.migrations:
        stem = f"{migration.version:06d}_{migration.name}"
        before = await snapshot(conn)
        step = "up"
        try:
            await migrator.apply([migration], "up")
            after_up = await snapshot(conn)
            step = "down"
            await migrator.apply([migration], "down")
            after_down = await snapshot(conn)
            _compare(report, stem, "down does not restore the schema before up", before, after_down)
            step = "up again after down"
            await migrator.apply([migration], "up")
        except MigrationFailedError as exc:
            # Later migrations would run on an unknown schema: stop here.
            report.problems.append(f"{stem}: {step} failed: {exc}")
            return
        again = await snapshot(conn)
        _compare(report, stem, "up after down differs from the first up", after_up, again)
        report.checked.append(migration.version)
        logger.info("%s: up, down, up: ok", migration.up.location)


def _compare(
    report: CheckReport, stem: str, what: str, expected: Snapshot, actual: Snapshot
) -> None:
    differences = expected.diff(actual)
    if differences:
        report.problems.append(f"{stem}: {what}:\n" + "\n".join(f"    {d}" for d in differences))
