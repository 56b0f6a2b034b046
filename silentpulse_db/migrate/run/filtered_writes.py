"""A warning for a data migration that row-level security quietly filters.

With FORCE ROW LEVEL SECURITY even the table's owner sees only the rows its
policies let through (none without app.current_tenant), so an UPDATE or DELETE
backfill "succeeds" having changed nothing. Before such a statement runs, the
runner asks whether the role is filtered on that table and says so, naming the
file and line.
"""

from __future__ import annotations

import logging
from typing import Any

from ...schema.tenancy import rls_filters
from ..files.source import MigrationFile
from ..files.statements import Statement, line_and_column

logger = logging.getLogger("silentpulse_db.migrate")


class FilteredWrites:
    """Warns once per table (a file may hold thousands of UPDATEs)."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.checked: set[str] = set()

    async def warn(self, file: MigrationFile, statement: Statement) -> None:
        """Warn if ``statement`` (an UPDATE/DELETE) writes a table whose row-level
        security filters the role running it."""
        table = statement.writes
        if table is None or table in self.checked:
            return
        self.checked.add(table)
        filtered = await rls_filters(self.conn, table)
        if filtered is None:
            return
        line, _ = line_and_column(file.sql, statement.offset + 1)
        logger.warning(
            "%s line %d: %s on %s runs as role %r, which row-level security filters "
            "(no BYPASSRLS, table %s): it only reaches the rows its policies let it see, "
            "none when app.current_tenant is unset. Run data migrations as a role with "
            "BYPASSRLS (docs/operations.md).",
            file.location,
            line,
            statement.sql.split(None, 1)[0].upper(),
            table,
            filtered.role,
            "forces RLS" if filtered.forced else "has RLS enabled",
        )
