"""version and status: what the database records, read without the migration lock."""

from __future__ import annotations

import argparse
import sys
from typing import TextIO

from ... import console
from ...results.status import StatusReport
from ..commands import status
from .keywords import connect, connection


async def _version(args: argparse.Namespace, out: TextIO) -> int:
    dsn = console.database(args.database)
    report = await status(dsn, connect=connect(args), files=False, table=args.table)
    print(report.current, file=out)
    for line in _notes(report):
        print(line, file=sys.stderr)
    return console.EXIT_OK


async def _status(args: argparse.Namespace, out: TextIO) -> int:
    report = await status(console.database(args.database), **connection(args))
    print(format_status(report), file=out)
    return console.EXIT_OK


def _notes(report: StatusReport) -> list[str]:
    """What `version` and `status` add: no version table, a migration running now."""
    notes = []
    if not report.versioned:
        notes.append("no version table: nothing was ever migrated in this database")
    for holder in report.running:
        dirty = report.current.dirty and report.current.version is not None
        which = next(
            (r.name for r in report.rows if dirty and r.version == report.current.version), None
        )
        where = f" (applying version {report.current.version} {which})" if which else ""
        notes.append(f"a migration is running{where}: {holder}")
    return notes


def format_status(report: StatusReport) -> str:
    table = [("version", "name", "state", "applied_at", "duration", "checksum")]
    for row in report.rows:
        table.append(
            (
                str(row.version),
                row.name
                + (" [breaking]" if row.breaking else "")
                + "".join(f" [{note}]" for note in row.notes),
                row.state,
                row.applied_at.isoformat(sep=" ", timespec="seconds") if row.applied_at else "-",
                f"{row.duration * 1000:.1f} ms" if row.duration is not None else "-",
                row.checksum,
            )
        )
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in table]
    lines.append(f"current version: {report.current}")
    lines += _notes(report)
    if report.partitions:
        lines.append("partitions (UTC months):")
        lines += [f"  {coverage}" for coverage in report.partitions]
    for gap in report.unguarded:
        lines.append(f"UNGUARDED: {gap}")
    for index in report.invalid_indexes:
        lines.append(f"INVALID: {index}")
    return "\n".join(lines)


HANDLERS = {"version": _version, "status": _status}
