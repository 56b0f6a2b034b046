"""``silentpulse-db`` (also ``python -m silentpulse_db``): a thin shell over commands.py.

Plain like dbmate: one command a line, results on stdout, errors on stderr.
Exit codes, the DSN and the error format are those of silentpulse_db.console.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from .. import console
from .._version import __version__
from ..defaults import CONNECT_ATTEMPTS, CONNECT_WAIT, LOCK_TIMEOUT
from ..errors import ConfigurationError
from ..results import MigrationResult, StatusReport
from . import commands
from .plan import version_label
from .scaffold import create_migration
from .source import MigrationSource, load_source

PROG = "silentpulse-db"
# `create` writes into the project's migrations folder (never into site-packages).
DEFAULT_CREATE_PATH = Path("silentpulse_db/migrations")


def _common_options(parser: argparse.ArgumentParser, *, suppress: bool) -> None:
    # Accepted before and after the command; SUPPRESS keeps a subcommand from
    # overwriting a value given before it.
    console.add_connection_options(parser, suppress=suppress)

    def default(value: object) -> Any:
        return argparse.SUPPRESS if suppress else value

    parser.add_argument(
        "--path",
        metavar="DIR",
        default=default(None),
        help="migrations directory (default: the set packaged in silentpulse_db)",
    )
    parser.add_argument(
        "--lock-timeout",
        metavar="SECONDS",
        type=float,
        default=default(LOCK_TIMEOUT),
        help=f"how long to wait for the migration lock (default {LOCK_TIMEOUT:g})",
    )
    parser.add_argument(
        "--attempts",
        type=_positive,
        default=default(CONNECT_ATTEMPTS),
        help=f"connection attempts while the server starts (default {CONNECT_ATTEMPTS}, "
        f"{CONNECT_WAIT:g} s apart)",
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", default=default(False), help="log each step"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Migrations for the SilentPulse database (golang-migrate compatible).",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    _common_options(parser, suppress=False)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        cmd = sub.add_parser(name, help=help_text, description=help_text)
        _common_options(cmd, suppress=True)
        return cmd

    command("up", "apply all pending migrations, or the next N").add_argument(
        "n", nargs="?", type=_positive, metavar="N"
    )
    down = command("down", "revert the last N migrations (or all with --all)")
    down.add_argument("n", nargs="?", type=_positive, metavar="N")
    down.add_argument("--all", action="store_true", help="revert every applied migration")
    command("goto", "migrate up or down to version V").add_argument("v", type=int, metavar="V")
    command("force", "record version V as clean without running anything (-1: none)").add_argument(
        "v", type=int, metavar="V"
    )
    command("version", "print the current version: 3, or 3 (dirty)")
    command("status", "one row a version: applied or pending, when, checksum")
    command("prerequisites", "run prerequisites.sql (extensions; as a superuser)")
    command("baseline", "adopt a database created before migrations (version 1)")
    command("create", "write the next NNNNNN_name.up.sql / .down.sql pair").add_argument(
        "name", help="snake_case with a verb prefix, e.g. add_tags_table"
    )
    command("check", "prove on a scratch database that every down undoes its up")
    return parser


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number >= 1, got {value}")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = console.parse(parser, None if argv is None else list(argv))
    if isinstance(args, int):
        return args
    if not args.command:
        parser.print_usage(sys.stderr)
        print(f"{PROG}: error: a command is required", file=sys.stderr)
        return console.EXIT_USAGE
    console.configure_logging(verbose=args.verbose)
    return console.run(
        PROG,
        args.command,
        lambda: _dispatch(args, sys.stdout),
        debug=args.debug,
        database=args.database,
    )


async def _dispatch(args: argparse.Namespace, out: TextIO) -> int:
    if args.command == "create":
        directory = Path(args.path) if args.path else DEFAULT_CREATE_PATH
        if not directory.is_dir():
            raise console.UsageError(
                f"{directory} is not a directory: run from the project root or pass --path"
            )
        for path in create_migration(directory, args.name):
            print(path, file=out)
        return console.EXIT_OK
    if args.command == "down" and (args.all == (args.n is not None)):
        raise console.UsageError(
            "give either N or --all, not both"
            if args.all
            else "refusing to revert everything implicitly: give N (down 1) or --all"
        )
    dsn = console.database(args.database)
    source = _source(args)
    connection = {"source": source, "attempts": args.attempts, "wait": CONNECT_WAIT}
    locked = {**connection, "lock_timeout": args.lock_timeout}
    command = args.command
    if command == "check":
        report = await commands.check(dsn, source=source)
        print(
            f"checked {len(report.checked)} migration(s): up, down and up again restore the "
            f"schema exactly; names and pairs follow the rules",
            file=out,
        )
    elif command == "prerequisites":
        result = await commands.apply_prerequisites(dsn, **locked)
        print(f"extensions installed: {', '.join(result.installed) or 'none'}", file=out)
        for notice in result.notices:
            print(f"notice: {notice}", file=out)
        for name in result.unavailable_optional:
            print(f"optional extension {name!r} is not available on this server: skipped", file=out)
    elif command == "baseline":
        outcome = await commands.baseline(dsn, **locked)
        print(f"baselined at version {version_label(outcome.version_after)}", file=out)
    elif command == "version":
        print(await commands.version(dsn, attempts=args.attempts), file=out)
    elif command == "status":
        print(format_status(await commands.status(dsn, **connection)), file=out)
    elif command == "force":
        await commands.force(dsn, args.v, **locked)
        print(f"version forced to {version_label(None if args.v == -1 else args.v)}", file=out)
    elif command == "up":
        _report(await commands.up(dsn, args.n, **locked), out)
    elif command == "down":
        _report(await commands.down(dsn, "all" if args.all else args.n, **locked), out)
    elif command == "goto":
        _report(await commands.goto(dsn, args.v, **locked), out)
    return console.EXIT_OK


def _source(args: argparse.Namespace) -> MigrationSource:
    if args.path is None:
        return load_source()
    if not Path(args.path).is_dir():
        raise ConfigurationError(f"--path {args.path!r} is not a directory")
    return load_source(Path(args.path))


def _report(result: MigrationResult, out: TextIO) -> None:
    for item in result.applied:
        print(
            f"{item.version}/{item.direction} {item.name} ({item.duration * 1000:.1f} ms)", file=out
        )
    if not result.applied:
        print("no change", file=out)
    print(f"version: {version_label(result.version_after)}", file=out)


def format_status(report: StatusReport) -> str:
    table = [("version", "name", "state", "applied_at", "duration", "checksum")]
    for row in report.rows:
        table.append(
            (
                str(row.version),
                row.name,
                row.state,
                row.applied_at.isoformat(sep=" ", timespec="seconds") if row.applied_at else "-",
                f"{row.duration * 1000:.1f} ms" if row.duration is not None else "-",
                row.checksum,
            )
        )
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in table]
    return "\n".join([*lines, f"current version: {report.current}"])
