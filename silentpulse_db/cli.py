"""The operator CLI: ``silentpulse-db`` (also ``python -m silentpulse_db``).

Plain like dbmate: one command a line, results on stdout, errors on stderr.
Exit status 0 success, 1 failure, 2 usage error.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

from . import __version__
from .dsn import DSN_ENV_VARS, dsn_from_env, redact, validate_dsn
from .errors import ConfigurationError, SilentPulseDBError
from .migrator import Migrator, version_label
from .results import AppliedMigration, StatusRow
from .reversibility import check_reversibility
from .run import apply_prerequisites, baseline
from .scaffold import create_migration
from .session import locked_connection
from .source import MigrationSource, load_source

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2
# `create` writes into the project's migrations folder (never into site-packages).
DEFAULT_CREATE_PATH = Path("silentpulse_db/migrations")


class UsageError(Exception):
    """Wrong words on the command line (exit 2)."""


def _common_options(parser: argparse.ArgumentParser, *, suppress: bool) -> None:
    # Accepted before and after the command; SUPPRESS keeps a subcommand from
    # overwriting a value given before it.
    default: Any = argparse.SUPPRESS if suppress else None
    parser.add_argument(
        "--database",
        "-d",
        metavar="DSN",
        default=default,
        help=f"PostgreSQL URL (default: ${' or $'.join(DSN_ENV_VARS)})",
    )
    parser.add_argument(
        "--path",
        metavar="DIR",
        default=default,
        help="migrations directory (default: the set packaged in silentpulse_db)",
    )
    parser.add_argument(
        "--lock-timeout",
        metavar="SECONDS",
        type=float,
        default=argparse.SUPPRESS if suppress else 60.0,
        help="how long to wait for the migration lock (default 60)",
    )
    parser.add_argument(
        "--attempts",
        type=int,
        default=argparse.SUPPRESS if suppress else 5,
        help="connection attempts while the server starts (default 5, 2 s apart)",
    )
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        default=argparse.SUPPRESS if suppress else False,
        help="log each step",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="silentpulse-db",
        description="Migrations for the SilentPulse database (golang-migrate compatible).",
    )
    parser.add_argument("--version", action="version", version=f"silentpulse-db {__version__}")
    _common_options(parser, suppress=False)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        _common_options(sub, suppress=True)
        return sub

    up = command("up", "apply all pending migrations, or the next N")
    up.add_argument("n", nargs="?", type=_positive, metavar="N")
    down = command("down", "revert the last N migrations (or all with --all)")
    down.add_argument("n", nargs="?", type=_positive, metavar="N")
    down.add_argument("--all", action="store_true", help="revert every applied migration")
    goto = command("goto", "migrate up or down to version V")
    goto.add_argument("v", type=int, metavar="V")
    force = command("force", "record version V as clean without running anything (-1: none)")
    force.add_argument("v", type=int, metavar="V")
    command("version", "print the current version: 3, or 3 (dirty)")
    command("status", "one row a version: applied or pending, when, checksum")
    command("prerequisites", "run prerequisites.sql (extensions; as a superuser)")
    command("baseline", "adopt a database created before migrations (version 1)")
    create = command("create", "write the next NNNNNN_name.up.sql / .down.sql pair")
    create.add_argument("name", help="snake_case with a verb prefix, e.g. add_tags_table")
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
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: 0 for --help, 2 for usage errors
        return int(exc.code or 0)
    if not args.command:
        parser.print_usage(sys.stderr)
        print("silentpulse-db: error: a command is required", file=sys.stderr)
        return EXIT_USAGE
    _configure_logging(args.verbose)
    try:
        return asyncio.run(_dispatch(args, sys.stdout))
    except UsageError as exc:
        print(f"silentpulse-db {args.command}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except SilentPulseDBError as exc:
        print(f"silentpulse-db {args.command}: error: {redact(str(exc))}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        print("silentpulse-db: interrupted", file=sys.stderr)
        return 130


def _configure_logging(verbose: bool) -> None:
    # The CLI is an application: it may configure logging; the library never does.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("silentpulse_db")
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO if verbose else logging.WARNING)
    root.propagate = False


def _database(args: argparse.Namespace) -> str:
    dsn = args.database or dsn_from_env()
    if not dsn:
        raise UsageError(f"no database: pass --database or set {' or '.join(DSN_ENV_VARS)}")
    setting = "--database" if args.database else "the DSN environment variable"
    return validate_dsn(dsn, setting=setting)


def _source(args: argparse.Namespace) -> MigrationSource:
    if args.path is not None:
        if not Path(args.path).is_dir():
            raise ConfigurationError(f"--path {args.path!r} is not a directory")
        return load_source(Path(args.path))
    return load_source()


async def _dispatch(args: argparse.Namespace, out: TextIO) -> int:
    if args.command == "down" and not args.all and args.n is None:
        raise UsageError("refusing to revert everything implicitly: give N (down 1) or --all")
    if args.command == "down" and args.all and args.n is not None:
        raise UsageError("give either N or --all, not both")
    if args.command == "create":
        directory = Path(args.path) if args.path else DEFAULT_CREATE_PATH
        if not directory.is_dir():
            raise UsageError(
                f"{directory} is not a directory: run from the project root or pass --path"
            )
        for path in create_migration(directory, args.name):
            print(path, file=out)
        return EXIT_OK
    dsn = _database(args)
    source = _source(args)
    if args.command == "check":
        report = await check_reversibility(dsn, source)
        print(
            f"checked {len(report.checked)} migration(s): up, down and up again restore the "
            f"schema exactly; names and pairs follow the rules",
            file=out,
        )
        return EXIT_OK
    options = {"attempts": args.attempts, "lock_timeout": args.lock_timeout}

    if args.command == "prerequisites":
        result = await apply_prerequisites(dsn, source=source, **options)
        print(f"extensions installed: {', '.join(result.installed) or 'none'}", file=out)
        for notice in result.notices:
            print(f"notice: {notice}", file=out)
        for name in result.unavailable_optional:
            print(f"optional extension {name!r} is not available on this server: skipped", file=out)
        return EXIT_OK
    if args.command == "baseline":
        outcome = await baseline(dsn, source=source, **options)
        print(f"baselined at version {version_label(outcome.version_after)}", file=out)
        return EXIT_OK

    operation = _OPERATIONS[args.command]
    async with locked_connection(dsn, **options) as conn:
        return await operation(Migrator(conn, source), args, out)


async def _up(m: Migrator, args: argparse.Namespace, out: TextIO) -> int:
    return _report(await m.up(count=args.n), await m.state(), out)


async def _down(m: Migrator, args: argparse.Namespace, out: TextIO) -> int:
    return _report(await m.down(count=None if args.all else args.n), await m.state(), out)


async def _goto(m: Migrator, args: argparse.Namespace, out: TextIO) -> int:
    return _report(await m.goto(args.v), await m.state(), out)


async def _force(m: Migrator, args: argparse.Namespace, out: TextIO) -> int:
    await m.force(args.v)
    print(f"version forced to {version_label(None if args.v == -1 else args.v)}", file=out)
    return EXIT_OK


async def _version(m: Migrator, args: argparse.Namespace, out: TextIO) -> int:
    print(await m.state(), file=out)
    return EXIT_OK


async def _status(m: Migrator, args: argparse.Namespace, out: TextIO) -> int:
    state = await m.state()
    print(format_status(await m.status()), file=out)
    print(f"current version: {state}", file=out)
    return EXIT_OK


_OPERATIONS: dict[str, Callable[[Migrator, argparse.Namespace, TextIO], Awaitable[int]]] = {
    "up": _up,
    "down": _down,
    "goto": _goto,
    "force": _force,
    "version": _version,
    "status": _status,
}


def _report(applied: list[AppliedMigration], state: object, out: TextIO) -> int:
    for item in applied:
        print(
            f"{item.version}/{item.direction} {item.name} ({item.duration * 1000:.1f} ms)", file=out
        )
    if not applied:
        print("no change", file=out)
    print(f"version: {state}", file=out)
    return EXIT_OK


def format_status(rows: Sequence[StatusRow]) -> str:
    table = [("version", "name", "state", "applied_at", "duration", "checksum")]
    for row in rows:
        table.append(
            (
                str(row.version),
                row.name,
                row.state,
                row.applied_at.isoformat(sep=" ", timespec="seconds") if row.applied_at else "-",
                f"{row.duration_ms:.1f} ms" if row.duration_ms is not None else "-",
                row.checksum,
            )
        )
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in table
    )
