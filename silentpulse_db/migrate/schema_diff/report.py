"""drift as it runs: the live catalog read while the files' one is built on a scratch
database (expected.py), then the two compared (compare.py) into the report."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from datetime import datetime, timezone

from ...errors import ConfigurationError, DirtyDatabaseError
from ...postgres.dsn import redact
from ...results.proofs import DriftReport
from ...settings import ConnectRetry
from ..files.source import MigrationSource
from ..plan import CLI, NIL_VERSION, dirty_message
from ..session import open_session
from ..version_table import VERSION_TABLE
from .compare import compare
from .expected import all_service_sets, built_catalog, live_catalog


async def drift_report(
    dsn: str,
    migrations: MigrationSource,
    sets: Sequence[tuple[MigrationSource, str]],
    *,
    connect: ConnectRetry,
    scratch_dsn: str | None,
    app_roles: Sequence[str],
) -> DriftReport:
    """``dsn``'s live schema against what ``migrations`` (then each of ``sets``: its files,
    its version table) build at its version (commands.drift says what is compared)."""
    async with open_session(dsn, connect) as session:
        if not session.versioned:
            raise ConfigurationError(
                f"{redact(dsn, dsn)} has no {VERSION_TABLE}: it was never migrated, so "
                f"there is no version to compare with. Run `{CLI} prerequisites` and "
                f"`{CLI} up` (or `{CLI} baseline` for a database made before migrations)."
            )
        # golang-migrate's table alone is enough: drift needs no history.
        state = await session.store.version()
        if state.dirty:
            raise DirtyDatabaseError(
                dirty_message(migrations, state),
                version=NIL_VERSION if state.version is None else state.version,
            )
        # The scratch build takes the time; the live read goes on meanwhile.
        others = await all_service_sets(session.conn, sets)
        built = asyncio.create_task(
            built_catalog(dsn, scratch_dsn, migrations, state.version, others)
        )
        try:
            live = await live_catalog(session.conn)
        except BaseException:
            built.cancel()
            with contextlib.suppress(BaseException):
                await built  # its scratch database dropped before we go
            raise
        expected = await built
    return compare(
        expected,
        live,
        version=state.version,
        checked_at=datetime.now(timezone.utc),
        app_roles=tuple(app_roles),
    )
