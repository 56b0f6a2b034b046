"""``silentpulse-db`` (also ``python -m silentpulse_db``): a thin shell over commands.py.

Plain like dbmate: one command a line, results on stdout, errors on stderr.
Exit codes, the DSN and the error format are those of silentpulse_db.console.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NoReturn, TextIO

from .. import console
from .._version import __version__
from ..defaults import (
    CLI_CONNECT_ATTEMPTS,
    CONNECT_ATTEMPTS,
    CONNECT_WAIT,
    DDL_LOCK_TIMEOUT,
    DDL_RETRY_FOR,
    LOCK_TIMEOUT,
    PARTITIONS_AHEAD,
    SCRATCH_DSN_ENV,
)
from ..errors import ConfigurationError, SilentPulseDBError
from ..settings import ConnectRetry, DDLLimits
from . import commands
from .files.scaffold import create_migration, naming_problem
from .files.source import MigrationSource, load_source
from .plan import version_label
from .version_table import VERSION_TABLE

if TYPE_CHECKING:
    from ..results.migrations import MigrationResult, StatusReport
    from ..results.placement import DistributionReport
    from ..results.proofs import DriftReport

# commands, preview, scaffold and schema.jobs are imported by the handlers that use
# them: the CLI starts without loading what its command does not need.

PROG = "silentpulse-db"
# `create` writes into the project's migrations folder (never into site-packages).
DEFAULT_CREATE_PATH = Path("silentpulse_db/migrations")


def _common_options(parser: argparse.ArgumentParser, *, suppress: bool, locks: bool = True) -> None:
    # Accepted before and after the command; SUPPRESS keeps a subcommand from
    # overwriting a value given before it. ``locks``: the migration lock's and the DDL's
    # options, which a command that takes neither (drift) does not list.
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
        "--table",
        metavar="NAME",
        default=default(None),
        help="the version table of this set of migrations (default schema_migrations, or the "
        "DSN's ?x-migrations-table=): a service's own set keeps its own",
    )
    if locks:
        _lock_options(parser, default)
    parser.add_argument(
        "--attempts",
        type=_positive,
        default=default(CLI_CONNECT_ATTEMPTS),
        help=f"connection attempts while the server starts (default {CLI_CONNECT_ATTEMPTS}: "
        f"fail at once; a deploy job beside a starting database: {CONNECT_ATTEMPTS}, as "
        f"run_migrations)",
    )
    parser.add_argument(
        "--wait",
        metavar="SECONDS",
        type=_seconds,
        default=default(CONNECT_WAIT),
        help=f"seconds between two connection attempts (default {CONNECT_WAIT:g})",
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", default=default(False), help="log each step"
    )


def _lock_options(parser: argparse.ArgumentParser, default: Callable[[object], Any]) -> None:
    # --lock-timeout is golang-migrate's name for the same wait: its operators keep it.
    parser.add_argument(
        "--migration-lock-timeout",
        "--lock-timeout",
        dest="migration_lock_timeout",
        metavar="SECONDS",
        type=_seconds,
        default=default(LOCK_TIMEOUT),
        help=f"how long to wait for the migration lock, held by another runner "
        f"(default {LOCK_TIMEOUT:g}; --lock-timeout: golang-migrate's name for it)",
    )
    parser.add_argument(
        "--table-lock-timeout",
        dest="table_lock_timeout",
        metavar="SECONDS",
        type=_seconds,
        default=default(DDL_LOCK_TIMEOUT),
        help=f"how long each migration statement may wait for a table lock, holding up "
        f"the queries behind it (default {DDL_LOCK_TIMEOUT:g}; 0: no limit)",
    )
    parser.add_argument(  # the name before 0.2.0: it said "lock" twice
        "--ddl-lock-timeout",
        dest="table_lock_timeout",
        metavar="SECONDS",
        type=_deprecated_seconds("--ddl-lock-timeout", "--table-lock-timeout"),
        default=default(DDL_LOCK_TIMEOUT),
        help=argparse.SUPPRESS,
    )
    parser.add_argument(
        "--ddl-retry-for",
        metavar="SECONDS",
        type=_seconds,
        default=default(DDL_RETRY_FOR),
        help=f"how long to retry a migration that timed out on a table lock "
        f"(default {DDL_RETRY_FOR:g})",
    )


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The CLI's parser; with ``only``, that command's and no other (see main)."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Migrations for the SilentPulse database (golang-migrate compatible).",
        formatter_class=console.HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    _common_options(parser, suppress=False)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (help_text, arguments) in _COMMAND_ARGUMENTS.items():
        if only is None or name == only:
            cmd = sub.add_parser(
                name, help=help_text, description=help_text, formatter_class=console.HelpFormatter
            )
            _common_options(cmd, suppress=True, locks=name not in _NO_LOCKS)
            arguments(cmd)
    return parser


def _command_named(argv: list[str]) -> str | None:
    """The command ``argv`` runs, read as the full parser reads it; None when the full
    parser must decide (no command, top-level --help or --version, a bad option)."""
    # The same top-level options, abbreviations included, so the same first positional.
    router = _Router(prog=PROG, add_help=False, formatter_class=console.HelpFormatter)
    _common_options(router, suppress=False)
    router.add_argument("-h", "--help", "--version", action="store_true", dest="top_level")
    router.add_argument("words", nargs=argparse.REMAINDER)
    try:
        known, _ = router.parse_known_args(argv)
    except _NotSure:
        return None
    if known.top_level or not known.words or known.words[0] not in _COMMAND_ARGUMENTS:
        return None
    return str(known.words[0])


class _NotSure(Exception):
    pass


class _Router(argparse.ArgumentParser):
    """A parser that raises instead of printing an error and exiting."""

    def error(self, message: str) -> NoReturn:
        raise _NotSure(message)


def _count_argument(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument("n", nargs="?", type=_positive, metavar="N")


def _version_argument(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument("v", type=int, metavar="V")


def _dry_run_option(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument(
        "--dry-run",
        action="store_true",
        help="print the files, statements and table locks it would run; change nothing "
        "(no version tables created, no lock taken)",
    )


def _up_arguments(cmd: argparse.ArgumentParser) -> None:
    _count_argument(cmd)
    _dry_run_option(cmd)


def _down_arguments(cmd: argparse.ArgumentParser) -> None:
    _count_argument(cmd)
    cmd.add_argument("--all", action="store_true", help="revert every applied migration")
    _dry_run_option(cmd)


def _goto_arguments(cmd: argparse.ArgumentParser) -> None:
    _version_argument(cmd)
    _dry_run_option(cmd)


def _force_arguments(cmd: argparse.ArgumentParser) -> None:
    _version_argument(cmd)
    cmd.add_argument(
        "--allow-missing-file",
        action="store_true",
        help="record a version that no migration file has (the database is ahead of them)",
    )


def _create_arguments(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument("name", help="snake_case with a verb prefix, e.g. add_tags_table")


def _partitions_arguments(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument(
        "--ahead",
        type=_non_negative,
        default=PARTITIONS_AHEAD,
        metavar="N",
        help=f"months after the current one (default {PARTITIONS_AHEAD})",
    )


def _retention_arguments(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument("--dry-run", action="store_true", help="say what would go; change nothing")


def _scratch_option(cmd: argparse.ArgumentParser, verb: str) -> None:
    cmd.add_argument(
        "--scratch-dsn",
        metavar="DSN",
        default=os.environ.get(SCRATCH_DSN_ENV) or None,
        help=f"an empty database (extensions allowed) for {verb}'s proof, instead of one it "
        f"creates and drops (which needs CREATEDB); refused if it holds anything else or is "
        f"the live database; left empty afterwards (default: ${SCRATCH_DSN_ENV}; prefer it: "
        f"a password here is visible to ps)",
    )


def _check_arguments(cmd: argparse.ArgumentParser) -> None:
    _scratch_option(cmd, "check")


def _baseline_arguments(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument(
        "--no-verify",
        dest="verify",
        action="store_false",
        help="do not compare the schema with what the first migration creates (no scratch "
        "database): adopt the database as it is",
    )
    _scratch_option(cmd, "baseline")


def _drift_arguments(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument("--json", action="store_true", help="the report as JSON (CI, monitoring)")
    cmd.add_argument(
        "--app-role",
        dest="app_roles",
        action="append",
        metavar="ROLE",
        help="the application role, whose blanket grant on every table is the runbook's "
        "(repeat for several; default silentpulse_app); any other role's is drift",
    )
    cmd.add_argument(
        "--set",
        dest="sets",
        action="append",
        metavar="DIR:TABLE",
        help="a service's own migration set the database records (its folder and version "
        "table), built after the packaged set; repeat for each (--path DIR --table TABLE: "
        "that one alone)",
    )
    _scratch_option(cmd, "drift")


def _distribute_arguments(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument(
        "--dry-run",
        action="store_true",
        help="print where each table goes and the steps, statements and settings it would "
        "run; change nothing (no lock taken)",
    )
    cmd.add_argument(
        "--shard-count",
        type=_positive,
        metavar="N",
        help="shards of the distributed tables, fixed by the first one distributed "
        "(default: the server's citus.shard_count, 32 unless set)",
    )


def _no_arguments(cmd: argparse.ArgumentParser) -> None:
    pass


# Commands that take neither the migration lock nor a table lock for DDL: their help
# lists no such option, and refuses one given after them.
_NO_LOCKS = frozenset({"drift"})

# Each command: its help line and what it takes besides the common options.
_COMMAND_ARGUMENTS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None]]] = {
    "up": ("apply all pending migrations, or the next N", _up_arguments),
    "down": ("revert the last N migrations (or all with --all)", _down_arguments),
    "goto": ("migrate up or down to version V", _goto_arguments),
    "force": (
        "record version V as clean without running anything (-1: none)",
        _force_arguments,
    ),
    "version": ("print the current version: 3, or 3 (dirty)", _no_arguments),
    "status": ("one row a version: applied or pending, when, checksum", _no_arguments),
    "prerequisites": (
        "run prerequisites.sql (extensions); exit 3: what an administrator must run",
        _no_arguments,
    ),
    "baseline": ("adopt a database created before migrations (version 1)", _baseline_arguments),
    "create": ("write the next NNNNNN_name.up.sql / .down.sql pair", _create_arguments),
    "check": ("prove on a scratch database that every down undoes its up", _check_arguments),
    "drift": (
        "compare the live schema with what the files build at its version; exit 0 "
        "matches, 1 drift, 2 error",
        _drift_arguments,
    ),
    "partitions": (
        "create the monthly partitions ahead, empty the default partitions",
        _partitions_arguments,
    ),
    "retention": (
        "drop expired partitions (alerts, audit logs, observations)",
        _retention_arguments,
    ),
    "distribute": (
        "on a Citus coordinator: reference tables, tenant tables distributed by tenant_id "
        "and colocated (docs/scaling.md); --dry-run: the plan",
        _distribute_arguments,
    ),
}


def _at_least(minimum: int) -> Callable[[str], int]:
    """An argparse type: a whole number >= ``minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected a number >= {minimum}, got {value}")
        return value

    return parse


def _seconds(text: str) -> float:
    """An argparse type: a duration in seconds, >= 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if not 0 <= value < math.inf:  # also refuses nan
        raise argparse.ArgumentTypeError(f"expected seconds >= 0, got {text}")
    return value


def _deprecated_seconds(old: str, new: str) -> Callable[[str], float]:
    """_seconds for an option's old name, with a warning that names the new one."""

    def parse(text: str) -> float:
        print(f"warning: {old} is deprecated and goes in 0.3.0: use {new}", file=sys.stderr)
        return _seconds(text)

    return parse


_positive = _at_least(1)
_non_negative = _at_least(0)


def main(argv: Sequence[str] | None = None) -> int:
    words = sys.argv[1:] if argv is None else list(argv)
    # Only the command being run gets its parser: building all twelve costs every
    # start-up ~1.7 ms more (bench/bench_startup_tricks.py). Top-level help, or a
    # doubt, gets them all (same output: tested).
    parser = build_parser(only=_command_named(words))
    args = console.parse(parser, words)
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
        lambda: _json_errors(args, _dispatch(args, sys.stdout)),
        debug=args.debug,
        database=args.database,
        other_dsns=(getattr(args, "scratch_dsn", None),),
        failure_exit=_failure_exit(args.command),
    )


def _failure_exit(command: str) -> int:
    """drift's 1 means "drift found": a failure to compare is 2 (3 as for every command
    when an administrator must act first, e.g. grant CREATEDB for the scratch build)."""
    return console.EXIT_USAGE if command == "drift" else console.EXIT_FAILURE


async def _json_errors(args: argparse.Namespace, run: Awaitable[int]) -> int:
    """``drift --json``: an error is a JSON object on stdout too, where CI and monitoring
    read the report (``{"error": {"type", "message", "exit"}}``); raised on for the message
    on stderr and the exit code."""
    try:
        return await run
    except SilentPulseDBError as exc:
        if not getattr(args, "json", False):
            raise
        import json

        given = (args.database, getattr(args, "scratch_dsn", None))
        error = {
            "type": type(exc).__name__,
            "message": console.scrubbed(str(exc), given),
            "exit": console.exit_code(exc, _failure_exit(args.command)),
        }
        print(json.dumps({"error": error}, indent=2), file=sys.stdout)
        raise


async def _dispatch(args: argparse.Namespace, out: TextIO) -> int:
    if args.command == "create":
        directory = Path(args.path) if args.path else DEFAULT_CREATE_PATH
        if not directory.is_dir():
            where = (
                "check --path, or create the folder first"
                if args.path
                else "run from the project root or pass --path"
            )
            raise console.UsageError(f"{directory} is not a directory: {where}")
        if problem := naming_problem(args.name):
            raise console.UsageError(f"bad migration name: {problem}")
        if load_source(directory).latest is None and args.table in (None, VERSION_TABLE):
            print(_SECOND_SET_WARNING.format(directory=directory), file=sys.stderr)
        for path in create_migration(directory, args.name):
            print(path, file=out)
        return console.EXIT_OK
    if args.command == "down" and (args.all == (args.n is not None)):
        raise console.UsageError(
            "give either N or --all, not both"
            if args.all
            else "refusing to revert everything implicitly: give N (down 1) or --all"
        )
    if args.command in DRY_RUN_COMMANDS and args.dry_run:
        return await _dry_run(console.database(args.database), args, out)
    return await _COMMANDS[args.command](console.database(args.database), args, out)


# `create` in an empty folder starts a set at 000001; on schema_migrations it would
# collide with the packaged set's 000001 (issue 20: a service's own migrations).
_SECOND_SET_WARNING = (
    "warning: {directory} has no migration yet: this starts a set of migrations at "
    "000001. If it is a service's own set, give it a version table of its own "
    "(run_migrations(..., table='worker_schema_migrations'), --table, or the DSN's "
    "?x-migrations-table=): on schema_migrations it collides with the packaged set "
    '(docs/migrations.md, "A service\'s own migrations").'
)


def _connect(args: argparse.Namespace) -> ConnectRetry:
    return ConnectRetry(args.attempts, args.wait)


def _connection(args: argparse.Namespace) -> dict[str, Any]:
    return {"source": _source(args), "connect": _connect(args), "table": args.table}


def _locked(args: argparse.Namespace) -> dict[str, Any]:
    return {**_connection(args), "migration_lock_timeout": args.migration_lock_timeout}


def _core_only(args: argparse.Namespace) -> dict[str, Any]:
    """_locked() for prerequisites and baseline: the packaged set's, not a service's."""
    options = _locked(args)
    if options.pop("table") not in (None, VERSION_TABLE):
        raise console.UsageError(f"{args.command} belongs to the packaged set: no --table")
    return options


def _migrating(args: argparse.Namespace) -> dict[str, Any]:
    return {**_locked(args), "ddl": DDLLimits(args.table_lock_timeout, args.ddl_retry_for)}


async def _up(dsn: str, args: argparse.Namespace, out: TextIO) -> int:
    return _report(await commands.up(dsn, args.n, **_migrating(args)), out)


async def _down(dsn: str, args: argparse.Namespace, out: TextIO) -> int:
    count: int | Literal["all"] = "all" if args.all else args.n
    return _report(await commands.down(dsn, count, **_migrating(args)), out)


async def _goto(dsn: str, args: argparse.Namespace, out: TextIO) -> int:
    return _report(await commands.goto(dsn, args.v, **_migrating(args)), out)


DRY_RUN_COMMANDS = ("up", "down", "goto")


async def _dry_run(dsn: str, args: argparse.Namespace, out: TextIO) -> int:
    from .dryrun import preview  # on first use: spares every other command ~35 ms (pglast)

    if args.command == "up":
        plan = await preview.plan_up(dsn, args.n, **_connection(args))
    elif args.command == "down":
        plan = await preview.plan_down(dsn, "all" if args.all else args.n, **_connection(args))
    else:
        plan = await preview.plan_goto(dsn, args.v, **_connection(args))
    print(preview.format_plan(plan), file=out)
    return console.EXIT_OK


async def _force(dsn: str, args: argparse.Namespace, out: TextIO) -> int:
    await commands.force(dsn, args.v, allow_missing_file=args.allow_missing_file, **_locked(args))
    print(f"version forced to {version_label(None if args.v == -1 else args.v)}", file=out)
    return console.EXIT_OK


async def _version(dsn: str, args: argparse.Namespace, out: TextIO) -> int:
    report = await commands.status(dsn, connect=_connect(args), files=False, table=args.table)
    print(report.current, file=out)
    for line in _notes(report):
        print(line, file=sys.stderr)
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


async def _status(dsn: str, args: argparse.Namespace, out: TextIO) -> int:
    print(format_status(await commands.status(dsn, **_connection(args))), file=out)
    return console.EXIT_OK


async def _check(dsn: str, args: argparse.Namespace, out: TextIO) -> int:
    report = await commands.check(
        dsn, source=_source(args), table=args.table, scratch_dsn=args.scratch_dsn
    )
    print(
        f"checked {len(report.checked)} migration(s): up, down and up again restore the "
        f"schema exactly; names and pairs follow the rules; every relation with tenant "
        f"rows is guarded by row-level security",
        file=out,
    )
    return console.EXIT_OK


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
        return _source(args), sets
    if args.path is None:
        raise console.UsageError(f"--table {args.table}: give that set's folder, --path DIR")
    if not Path(args.path).is_dir():
        raise ConfigurationError(f"--path {args.path!r} is not a directory")
    sets.append((Path(args.path), args.table))
    return load_source(), sets


async def _drift(dsn: str, args: argparse.Namespace, out: TextIO) -> int:
    core, sets = _drift_sets(args)
    report = await commands.drift(
        dsn,
        source=core,
        sets=sets,
        scratch_dsn=args.scratch_dsn,
        app_roles=args.app_roles or ("silentpulse_app",),
        connect=_connect(args),
    )
    print(drift_json(report) if args.json else format_drift(report), file=out)
    return console.EXIT_OK if report.matches else console.EXIT_FAILURE


async def _prerequisites(dsn: str, args: argparse.Namespace, out: TextIO) -> int:
    result = await commands.apply_prerequisites(dsn, **_core_only(args))
    print(f"extensions installed: {', '.join(result.installed) or 'none'}", file=out)
    for notice in result.notices:
        # An absent optional extension gets its own line below: not said twice.
        if not any(f'"{name}"' in notice for name in result.unavailable_optional):
            print(f"notice: {notice}", file=out)
    for name in result.unavailable_optional:
        print(f"optional extension {name!r} is not available on this server: skipped", file=out)
    return console.EXIT_OK


async def _baseline(dsn: str, args: argparse.Namespace, out: TextIO) -> int:
    result = await commands.baseline(
        dsn, verify=args.verify, scratch_dsn=args.scratch_dsn, **_core_only(args)
    )
    print(f"baselined at version {version_label(result.version_after)}", file=out)
    return console.EXIT_OK


async def _partitions(dsn: str, args: argparse.Namespace, out: TextIO) -> int:
    from ..schema import jobs  # on first use: spares the other commands ~10 ms

    report = await jobs.maintain_partitions(dsn, ahead=args.ahead, connect=_connect(args))
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


async def _retention(dsn: str, args: argparse.Namespace, out: TextIO) -> int:
    from ..schema import jobs  # as in _partitions

    report = await jobs.enforce_retention(dsn, dry_run=args.dry_run, connect=_connect(args))
    for action in report.actions:
        print(f"{'(dry run) ' if report.dry_run else ''}{action}", file=out)
    if not report.actions:
        print("nothing has expired", file=out)
    return console.EXIT_OK


async def _distribute(dsn: str, args: argparse.Namespace, out: TextIO) -> int:
    if args.table not in (None, VERSION_TABLE):
        raise console.UsageError("distribute belongs to the packaged set: no --table")
    report = await commands.distribute(
        dsn,
        dry_run=args.dry_run,
        shard_count=args.shard_count,
        connect=_connect(args),
        migration_lock_timeout=args.migration_lock_timeout,
        ddl=DDLLimits(args.table_lock_timeout, args.ddl_retry_for),
    )
    print(format_distribution(report), file=out)
    return console.EXIT_OK


_COMMANDS: dict[str, Callable[[str, argparse.Namespace, TextIO], Awaitable[int]]] = {
    "up": _up,
    "down": _down,
    "goto": _goto,
    "force": _force,
    "version": _version,
    "status": _status,
    "check": _check,
    "drift": _drift,
    "prerequisites": _prerequisites,
    "baseline": _baseline,
    "partitions": _partitions,
    "retention": _retention,
    "distribute": _distribute,
}


def _source(args: argparse.Namespace) -> MigrationSource:
    if args.path is None:
        return load_source()
    if not Path(args.path).is_dir():
        raise ConfigurationError(f"--path {args.path!r} is not a directory")
    return load_source(Path(args.path))


def _report(result: MigrationResult, out: TextIO) -> int:
    for item in result.applied:
        print(
            f"{item.version}/{item.direction} {item.name} ({item.duration * 1000:.1f} ms)", file=out
        )
    if not result.applied:
        print("no change", file=out)
    print(f"version: {version_label(result.version_after)}", file=out)
    return console.EXIT_OK


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


_BY_HAND = {
    "missing": "create it as the files do",
    "unexpected": "remove it by hand",
    "changed": "drop it and create it as the files do",
}


def drift_json(report: DriftReport) -> str:
    """The report as JSON: what CI and monitoring read."""
    import dataclasses
    import json

    document = dataclasses.asdict(report)
    document["matches"] = report.matches
    document["checked_at"] = report.checked_at.isoformat()
    return json.dumps(document, indent=2)
