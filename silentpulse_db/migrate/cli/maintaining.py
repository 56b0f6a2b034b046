"""partitions and retention: the schema's daily jobs (docs/operations.md)."""

from __future__ import annotations

import argparse
from typing import TextIO

from ... import console
from ...schema.jobs import enforce_retention, maintain_partitions
from .keywords import connect


async def _partitions(args: argparse.Namespace, out: TextIO) -> int:
    dsn = console.database(args.database)
    report = await maintain_partitions(dsn, ahead=args.ahead, connect=connect(args))
    for change in report.created:
        print(change, file=out)
    for name in report.secured:
        print(f"secured {name} (it had no row-level security)", file=out)
    for note in report.skipped:
        print(f"skipped: {note}", file=out)
    if not (report.created or report.secured or report.skipped):
        print("no change: every partition is there", file=out)
    # Something skipped (a busy table, rows it may not see) is a job to retry.
    return console.EXIT_FAILURE if report.skipped else console.EXIT_OK


async def _retention(args: argparse.Namespace, out: TextIO) -> int:
    dsn = console.database(args.database)
    report = await enforce_retention(dsn, dry_run=args.dry_run, connect=connect(args))
    for action in report.actions:
        print(f"{'(dry run) ' if report.dry_run else ''}{action}", file=out)
    if not report.actions:
        print("nothing has expired", file=out)
    return console.EXIT_OK


HANDLERS = {"partitions": _partitions, "retention": _retention}
