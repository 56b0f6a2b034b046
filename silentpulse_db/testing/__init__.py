"""Test support: a throwaway PostgreSQL and pytest fixtures (see :mod:`.plugin`)."""

from .server import PostgresServer, create_database, drop_database, find_bindir

__all__ = ["PostgresServer", "create_database", "drop_database", "find_bindir"]
