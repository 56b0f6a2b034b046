"""baseline: adopting a database created before migrations.

The database's schema is compared with what the first migration creates on a scratch
database (proofs/check.py), unless told not to; then, under the migration lock,
baseline.sql runs (it records version 1, clean, in golang-migrate's table) and the
history gets its 'baseline' row beside it. A versioned database is refused, before the
lock and again under it.
"""

from __future__ import annotations

import logging

from ..errors import BaselineError, MigrationSourceError
from ..results.migrations import MigrationResult
from ..settings import Settings
from .files.source import MigrationSource
from .plan import version_label
from .session import locked_session, open_session, read_only_state
from .version_table import HistoryRecord

logger = logging.getLogger("silentpulse_db.migrate")


async def adopt(
    dsn: str, migrations: MigrationSource, given: Settings, *, verify: bool, scratch_dsn: str | None
) -> MigrationResult:
    """Baseline ``dsn`` with ``migrations``' baseline.sql (commands.baseline says what)."""
    if migrations.baseline is None:
        raise MigrationSourceError(
            f"{migrations.description} has no baseline.sql", file=migrations.description
        )
    async with open_session(dsn, given.connect) as session:
        current = (await read_only_state(session))[0]
    if current.version is not None or current.dirty:
        raise BaselineError(
            f"the database is already versioned ({current}): baseline only adopts a "
            f"database created before migrations; use `up`"
        )
    if verify and migrations.migrations:
        from .proofs.check import baseline_differences  # the proofs load on first use

        differences = await baseline_differences(
            dsn, migrations, given.connect, scratch_dsn=scratch_dsn
        )
        if differences:
            raise BaselineError(_baseline_refusal(migrations, differences))
    async with locked_session(
        dsn, given.connect, migration_lock_timeout=given.migration_lock_timeout
    ) as session:
        conn, store = session.conn, session.store
        before = await store.version()
        if before.version is not None or before.dirty:
            raise BaselineError(
                f"database already has a migration version ({before}); baseline only adopts an "
                f"unversioned database"
            )
        from .run.applier import Applier  # as in engine.parse_ahead

        await Applier(conn, migrations).run_file(migrations.baseline)
        after = await store.version()
        if after.version is not None:
            first = migrations.get(after.version)
            # Keep baseline.sql's row; add the history entry beside it.
            await store.write(
                after.version,
                after.dirty,
                HistoryRecord(
                    after.version,
                    first.name if first else "baseline",
                    "baseline",
                    first.up.checksum if first and first.up else None,
                ),
            )
    logger.info("baselined database at version %s", version_label(after.version))
    return MigrationResult(version_before=None, version_after=after.version)


def _baseline_refusal(migrations: MigrationSource, differences: list[str]) -> str:
    """Why baseline refuses. Extensions prerequisites.sql creates are not 000001's to
    answer for: a database that lacks them is told to run `prerequisites` first."""
    from .prerequisites import extensions_in  # imported when asked, as apply_prerequisites does

    wanted = extensions_in(migrations.prerequisites) if migrations.prerequisites else []
    missing = [
        name
        for name in wanted
        if any(d.startswith(f"extension {name}: missing") for d in differences)
    ]
    rest = [d for d in differences if not any(d.startswith(f"extension {n}: ") for n in missing)]
    first = f"the database's schema does not match what {migrations.migrations[0].location} creates"
    if missing and not rest:
        return (
            f"the database lacks the extension(s) prerequisites.sql creates "
            f"({', '.join(missing)}): run `silentpulse-db prerequisites` first "
            f"(docs/migrations.md, 'A new database'), then baseline again; not baselining."
        )
    lines = [f"- {d}" for d in rest]
    if missing:
        lines.append(
            f"- and the extension(s) {', '.join(missing)} of prerequisites.sql: run "
            f"`silentpulse-db prerequisites` first"
        )
    return (
        f"{first}; not baselining. {len(rest)} difference(s) (expected -> this database):\n"
        + "\n".join(lines)
    )
