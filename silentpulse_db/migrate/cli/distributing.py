"""distribute: the schema placed on a Citus cluster by tenant (docs/scaling.md)."""

from __future__ import annotations

import argparse
from typing import TextIO

from ... import console
from ...results.placement import DistributionReport
from ..commands import distribute
from .keywords import connect, ddl, packaged_set_only


async def _distribute(args: argparse.Namespace, out: TextIO) -> int:
    packaged_set_only(args, args.table)
    report = await distribute(
        console.database(args.database),
        dry_run=args.dry_run,
        shard_count=args.shard_count,
        connect=connect(args),
        migration_lock_timeout=args.migration_lock_timeout,
        ddl=ddl(args),
    )
    print(format_distribution(report), file=out)
    return console.EXIT_OK


def format_distribution(report: DistributionReport) -> str:
    """Where each table goes, then the steps (a dry run: with their statements) and the
    settings they use; or that there was nothing to do."""
    head = "distribute (dry run: nothing changed)" if report.dry_run else "distribute"
    lines = [
        f"{head}: schema version {report.version}; {report.nodes} node(s) take shards; "
        f"{report.shard_count} shards a distributed table"
    ]
    lines.append("placement:")
    lines += [f"  {placement}" for placement in report.tables]
    if not report.steps:
        lines.append("nothing to do: every table is placed as planned, and no local copy is left")
        return "\n".join(lines)
    if report.settings:
        lines.append("settings (SET LOCAL in the steps that need them; nothing persists):")
        lines += [f"  {setting}" for setting in report.settings]
    planned = "would run" if report.dry_run else "done"
    lines.append(f"steps ({planned}; each a transaction of its own):")
    for number, step in enumerate(report.steps, 1):
        lines.append(f"  {number}. {step}")
        if report.dry_run:
            lines += [f"       {statement};" for statement in step.statements]
    if not report.dry_run:
        total = sum(step.duration or 0.0 for step in report.steps)
        lines.append(f"distributed: {len(report.steps)} step(s) in {total:.1f} s")
    return "\n".join(lines)


HANDLERS = {"distribute": _distribute}
