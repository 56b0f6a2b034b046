"""The migration lock's keys: golang-migrate's, for the database and schema.

golang-migrate locks ``crc32(schema \\0 table \\0 database_name) * 1486364155 mod 2**32``
with ``pg_advisory_lock``. Its CLI uses the URL path (``/db``) as the database
name and an embedded driver uses ``CURRENT_DATABASE()`` (``db``), so we take
both keys, always URL-path key first, and no golang-migrate peer of either
kind can run beside us.
"""

from __future__ import annotations

import zlib
from typing import NamedTuple

from ..version_table import VERSION_TABLE

ADVISORY_LOCK_SALT = 1486364155


def golang_migrate_lock_key(database_name: str, schema: str, table: str = VERSION_TABLE) -> int:
    """The key golang-migrate's GenerateAdvisoryLockId computes."""
    joined = "\x00".join((schema, table, database_name)).encode()
    return (zlib.crc32(joined) * ADVISORY_LOCK_SALT) % 2**32


class LockKeys(NamedTuple):
    url_path: int  # the CLI's key: database name with its leading slash
    current_database: int  # an embedded driver's key: CURRENT_DATABASE()

    @property
    def ordered(self) -> tuple[int, ...]:
        # Same order everywhere, so two of our runners never deadlock.
        return tuple(dict.fromkeys((self.url_path, self.current_database)))


def lock_keys_for(database: str, schema: str, table: str = VERSION_TABLE) -> LockKeys:
    """Both golang-migrate keys for ``database`` (its name without a slash), ``schema``
    and the version ``table``."""
    return LockKeys(
        url_path=golang_migrate_lock_key("/" + database, schema, table),
        current_database=golang_migrate_lock_key(database, schema, table),
    )
