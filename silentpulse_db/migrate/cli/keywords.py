"""The parsed options as the verbs' keyword arguments (commands.py's signatures)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Literal

from ... import console
from ...errors import ConfigurationError
from ...settings import ConnectRetry, DDLLimits
from ..files.source import MigrationSource, load_source
from ..version_table import VERSION_TABLE


def source(args: argparse.Namespace) -> MigrationSource:
    """--path's folder, or the packaged set."""
    if args.path is None:
        return load_source()
    if not Path(args.path).is_dir():
        raise ConfigurationError(f"--path {args.path!r} is not a directory")
    return load_source(Path(args.path))


def connect(args: argparse.Namespace) -> ConnectRetry:
    return ConnectRetry(args.attempts, args.wait)


def connection(args: argparse.Namespace) -> dict[str, Any]:
    """What every verb reading a set takes: the set, connecting, its version table."""
    return {"source": source(args), "connect": connect(args), "table": args.table}


def locked(args: argparse.Namespace) -> dict[str, Any]:
    """connection(), and how long to wait for the migration lock."""
    return {**connection(args), "migration_lock_timeout": args.migration_lock_timeout}


def migrating(args: argparse.Namespace) -> dict[str, Any]:
    """locked(), and the statements' table-lock limits."""
    return {**locked(args), "ddl": ddl(args)}


def ddl(args: argparse.Namespace) -> DDLLimits:
    return DDLLimits(args.table_lock_timeout, args.ddl_retry_for)


def core_only(args: argparse.Namespace) -> dict[str, Any]:
    """locked() for the packaged set's own verbs (prerequisites, baseline): no --table."""
    options = locked(args)
    packaged_set_only(args, options.pop("table"))
    return options


def packaged_set_only(args: argparse.Namespace, table: str | None) -> None:
    if table not in (None, VERSION_TABLE):
        raise console.UsageError(f"{args.command} belongs to the packaged set: no --table")


def down_count(args: argparse.Namespace) -> int | Literal["all"]:
    """down's N, or "all" for --all: one of the two, never everything by default."""
    if args.all == (args.n is not None):
        raise console.UsageError(
            "give either N or --all, not both"
            if args.all
            else "refusing to revert everything implicitly: give N (down 1) or --all"
        )
    return "all" if args.all else int(args.n)
