"""up, down, goto, force, baseline and prerequisites: the commands that change a version."""

from __future__ import annotations

import argparse
from typing import TextIO

from ... import console
from ...results.migrations import MigrationResult
from ..commands import apply_prerequisites, baseline, down, force, goto, up
from ..plan import version_label
from .keywords import core_only, down_count, locked, migrating


async def _up(args: argparse.Namespace, out: TextIO) -> int:
    return _report(await up(console.database(args.database), args.n, **migrating(args)), out)


async def _down(args: argparse.Namespace, out: TextIO) -> int:
    count = down_count(args)  # the words first, as every usage error
    return _report(await down(console.database(args.database), count, **migrating(args)), out)


async def _goto(args: argparse.Namespace, out: TextIO) -> int:
    return _report(await goto(console.database(args.database), args.v, **migrating(args)), out)


async def _force(args: argparse.Namespace, out: TextIO) -> int:
    dsn = console.database(args.database)
    await force(dsn, args.v, allow_missing_file=args.allow_missing_file, **locked(args))
    print(f"version forced to {version_label(None if args.v == -1 else args.v)}", file=out)
    return console.EXIT_OK


async def _baseline(args: argparse.Namespace, out: TextIO) -> int:
    options = core_only(args)  # the words first, as every usage error
    dsn = console.database(args.database)
    result = await baseline(dsn, verify=args.verify, scratch_dsn=args.scratch_dsn, **options)
    print(f"baselined at version {version_label(result.version_after)}", file=out)
    return console.EXIT_OK


async def _prerequisites(args: argparse.Namespace, out: TextIO) -> int:
    options = core_only(args)  # the words first, as every usage error
    result = await apply_prerequisites(console.database(args.database), **options)
    print(f"extensions installed: {', '.join(result.installed) or 'none'}", file=out)
    for notice in result.notices:
        # An absent optional extension gets its own line below: not said twice.
        if not any(f'"{name}"' in notice for name in result.unavailable_optional):
            print(f"notice: {notice}", file=out)
    for name in result.unavailable_optional:
        print(f"optional extension {name!r} is not available on this server: skipped", file=out)
    return console.EXIT_OK


def _report(result: MigrationResult, out: TextIO) -> int:
    for item in result.applied:
        print(
            f"{item.version}/{item.direction} {item.name} ({item.duration * 1000:.1f} ms)", file=out
        )
    if not result.applied:
        print("no change", file=out)
    print(f"version: {version_label(result.version_after)}", file=out)
    return console.EXIT_OK


HANDLERS = {
    "up": _up,
    "down": _down,
    "goto": _goto,
    "force": _force,
    "baseline": _baseline,
    "prerequisites": _prerequisites,
}
