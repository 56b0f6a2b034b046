"""Healing a concurrent index build (CREATE INDEX CONCURRENTLY) that did not complete.

A failed concurrent build leaves an INVALID index behind, and its version dirty.
Before the statement runs, an INVALID index of that name is dropped
(concurrently) so that it is built anew; after it, the index must be valid
before the version is recorded clean. A dirty version that is such an
unfinished build is run again by a plain ``up`` (:func:`reruns_dirty`);
anything else dirty stays for the operator (``force``).
"""

from __future__ import annotations

import logging
from typing import Any

from ...errors import MigrationFailedError
from ...results import VersionState
from ..files.source import MigrationFile, MigrationSource
from ..files.statements import Statement, analyze_cached
from ..plan import version_label

logger = logging.getLogger("silentpulse_db.migrate")

_INVALID_INDEX = """
    SELECT i.indexrelid::regclass::text FROM pg_index AS i
    WHERE i.indexrelid = to_regclass($1) AND NOT i.indisvalid
"""
_INDEX_VALID = "SELECT i.indisvalid FROM pg_index AS i WHERE i.indexrelid = to_regclass($1)"


async def reruns_dirty(conn: Any, source: MigrationSource, state: VersionState) -> bool:
    """Whether a dirty version is a concurrent index build that did not complete (its
    index is missing or INVALID), which running the file again heals. Anything else
    dirty stays for the operator (`force`)."""
    if not state.dirty or state.version is None:
        return False
    migration = source.get(state.version)
    if migration is None:
        return False
    index = analyze_cached(migration.up).concurrent_index
    return index is not None and not await conn.fetchval(_INDEX_VALID, index)


async def drop_if_invalid(conn: Any, file: MigrationFile, index: str) -> Statement | None:
    """The statement that drops ``index`` if a failed earlier build left it INVALID."""
    invalid = await conn.fetchval(_INVALID_INDEX, index)
    if invalid is None:
        return None
    logger.warning(
        "%s: index %s is INVALID (a failed earlier build): dropping it concurrently "
        "to build it again",
        file.location,
        invalid,
    )
    return Statement(f"DROP INDEX CONCURRENTLY IF EXISTS {invalid}", 0)


async def require_valid(conn: Any, file: MigrationFile, index: str, dirty: int) -> None:
    """MigrationFailedError unless ``index`` exists and is valid (the version stays
    ``dirty``)."""
    valid = await conn.fetchval(_INDEX_VALID, index)
    if valid:
        return
    state = "does not exist" if valid is None else "is INVALID"
    raise MigrationFailedError(
        f"migration failed: {file.location}: the statement succeeded but index {index} "
        f"{state} (IF NOT EXISTS met an INVALID index?). The database is left dirty at "
        f"version {version_label(dirty)}; run again: the runner drops an INVALID index "
        f"and builds it anew.",
        file=file.location,
        dirty=True,
    )
