"""up, down and goto with --dry-run: the files, statements and table locks they would run.

Its own module: the dry run reads each statement with PostgreSQL's parser (pglast,
~25 ms to import: docs/benchmarks.md), which no other command needs."""

from __future__ import annotations

import argparse
from typing import TextIO

from ... import console
from ..dryrun.preview import format_plan, plan_down, plan_goto, plan_up
from .keywords import connection, down_count


async def _plan_up(args: argparse.Namespace, out: TextIO) -> int:
    plan = await plan_up(console.database(args.database), args.n, **connection(args))
    print(format_plan(plan), file=out)
    return console.EXIT_OK


async def _plan_down(args: argparse.Namespace, out: TextIO) -> int:
    count = down_count(args)  # the words first, as every usage error
    plan = await plan_down(console.database(args.database), count, **connection(args))
    print(format_plan(plan), file=out)
    return console.EXIT_OK


async def _plan_goto(args: argparse.Namespace, out: TextIO) -> int:
    plan = await plan_goto(console.database(args.database), args.v, **connection(args))
    print(format_plan(plan), file=out)
    return console.EXIT_OK


HANDLERS = {"up": _plan_up, "down": _plan_down, "goto": _plan_goto}
