"""check and drift: the proofs on a scratch database, and the live schema against the
files."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import TextIO

from ... import console
from ...errors import ConfigurationError
from ...results.proofs import DriftReport
from ..commands import check, drift
from ..files.source import MigrationSource, load_source
from ..version_table import VERSION_TABLE
from .keywords import connect, source


async def _check(args: argparse.Namespace, out: TextIO) -> int:
    report = await check(
        console.database(args.database),
        source=source(args),
        table=args.table,
        scratch_dsn=args.scratch_dsn,
        connect=connect(args),
    )
    print(
        f"checked {len(report.checked)} migration(s): up, down and up again restore the "
        f"schema exactly; names and pairs follow the rules; every relation with tenant "
        f"rows is guarded by row-level security",
        file=out,
    )
    return console.EXIT_OK


async def _drift(args: argparse.Namespace, out: TextIO) -> int:
    core, sets = _drift_sets(args)
    report = await drift(
        console.database(args.database),
        source=core,
        sets=sets,
        scratch_dsn=args.scratch_dsn,
        app_roles=args.app_roles or ("silentpulse_app",),
        connect=connect(args),
    )
    print(drift_json(report) if args.json else format_drift(report), file=out)
    return console.EXIT_OK if report.matches else console.EXIT_FAILURE


def _drift_sets(args: argparse.Namespace) -> tuple[MigrationSource, list[tuple[Path, str]]]:
    """The packaged (or --path) set, and the service sets: each --set DIR:TABLE, and
    --path DIR --table TABLE (the packaged set, then that one: as `check` builds the
    core a set requires first)."""
    sets: list[tuple[Path, str]] = []
    for written in args.sets or ():
        folder, colon, table = written.rpartition(":")
        if not colon or not folder or not table:
            raise console.UsageError(f"--set {written!r}: give DIR:TABLE")
        if not Path(folder).is_dir():
            raise ConfigurationError(f"--set {written!r}: {folder!r} is not a directory")
        sets.append((Path(folder), table))
    if args.table in (None, VERSION_TABLE):
        return source(args), sets
    if args.path is None:
        raise console.UsageError(f"--table {args.table}: give that set's folder, --path DIR")
    if not Path(args.path).is_dir():
        raise ConfigurationError(f"--path {args.path!r} is not a directory")
    sets.append((Path(args.path), args.table))
    return load_source(), sets


def format_drift(report: DriftReport) -> str:
    """The short human report: grouped by kind of object, each with its fix if one
    statement does."""
    at = "none" if report.version is None else str(report.version)
    if report.matches:
        lines = [
            f"no drift: the live schema matches the files at version {at} "
            f"({report.objects} objects compared)"
        ]
    else:
        lines = [
            f"drift: {len(report.differences)} difference(s) from the files at version "
            f"{at} ({report.objects} objects compared)"
        ]
        kind = None
        for difference in report.differences:
            if difference.kind != kind:
                kind = difference.kind
                lines.append(f"{kind}:")
            lines.append(f"  {difference}")
            if difference.fix:
                lines.append(f"    fix: {difference.fix.strip()}")
            else:
                lines.append(f"    (no single statement: {_BY_HAND[difference.change]})")
    if report.excused:
        rules: dict[str, int] = {}
        for excuse in report.excused:
            rules[excuse.rule] = rules.get(excuse.rule, 0) + 1
        lines.append("excused (not drift):")
        lines += [f"  {count} x {rule}" for rule, count in rules.items()]
    return "\n".join(lines)


_BY_HAND = {
    "missing": "create it as the files do",
    "unexpected": "remove it by hand",
    "changed": "drop it and create it as the files do",
}


def drift_json(report: DriftReport) -> str:
    """The report as JSON: what CI and monitoring read."""
    document = dataclasses.asdict(report)
    document["matches"] = report.matches
    document["checked_at"] = report.checked_at.isoformat()
    return json.dumps(document, indent=2)


HANDLERS = {"check": _check, "drift": _drift}
