"""The command line's words: the options a command shares with others (global before
it), each command's own, and the table of commands (its help line, its arguments, the
option groups it uses, the module that runs it).

Only the command being run gets its parser: building all of them costs every start-up
~1.7 ms more (bench/bench_startup_tricks.py). Top-level help, or a doubt, gets them all
(same output: tested).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Callable
from typing import Any, NamedTuple, NoReturn

from ... import console
from ..._version import __version__
from ...defaults import (
    CLI_CONNECT_ATTEMPTS,
    CONNECT_ATTEMPTS,
    CONNECT_WAIT,
    DDL_RETRY_FOR,
    MIGRATION_LOCK_TIMEOUT,
    PARTITIONS_AHEAD,
    SCRATCH_DSN_ENV,
    TABLE_LOCK_TIMEOUT,
)
from ...settings import REMOVED_IN

PROG = "silentpulse-db"


# The option groups a command's own parser may list besides the set (--path, --table),
# --database, --debug and --verbose. Given before the command they are global, as
# golang-migrate's flags are (a wrapper passes the same ones to every command, each uses
# what it needs); after it, a command's help lists the groups it uses, and an option of
# another group does nothing: a warning says so until REMOVED_IN, then it is refused
# (drift refused the lock options already).
CONNECT, MIGRATION_LOCK, TABLE_LOCKS = "connect", "migration lock", "table locks"
EVERY_GROUP = frozenset({CONNECT, MIGRATION_LOCK, TABLE_LOCKS})


def _common_options(
    parser: argparse.ArgumentParser, *, suppress: bool, groups: frozenset[str] = EVERY_GROUP
) -> None:
    # Before the command, and after it for a command's own ``groups``; SUPPRESS keeps a
    # subcommand from overwriting a value given before it.
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
    if MIGRATION_LOCK in groups:
        _migration_lock_option(parser, default)
    if TABLE_LOCKS in groups:
        _table_lock_options(parser, default)
    if CONNECT in groups:
        _connect_options(parser, default)
    parser.add_argument(
        "-v", "--verbose", action="store_true", default=default(False), help="log each step"
    )


def _connect_options(parser: argparse.ArgumentParser, default: Callable[[object], Any]) -> None:
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


def _migration_lock_option(
    parser: argparse.ArgumentParser, default: Callable[[object], Any]
) -> None:
    # --lock-timeout is golang-migrate's name for the same wait: its operators keep it.
    parser.add_argument(
        "--migration-lock-timeout",
        "--lock-timeout",
        dest="migration_lock_timeout",
        metavar="SECONDS",
        type=_seconds,
        default=default(MIGRATION_LOCK_TIMEOUT),
        help=f"how long to wait for the migration lock, held by another runner "
        f"(default {MIGRATION_LOCK_TIMEOUT:g}; --lock-timeout: golang-migrate's name for it)",
    )


def _table_lock_options(parser: argparse.ArgumentParser, default: Callable[[object], Any]) -> None:
    parser.add_argument(
        "--table-lock-timeout",
        dest="table_lock_timeout",
        metavar="SECONDS",
        type=_seconds,
        default=default(TABLE_LOCK_TIMEOUT),
        help=f"how long each migration statement may wait for a table lock, holding up "
        f"the queries behind it (default {TABLE_LOCK_TIMEOUT:g}; 0: no limit)",
    )
    parser.add_argument(  # the name before 0.2.0: it said "lock" twice
        "--ddl-lock-timeout",
        dest="table_lock_timeout",
        metavar="SECONDS",
        type=_seconds,
        action=_DeprecatedName,
        default=default(TABLE_LOCK_TIMEOUT),
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


# Each group's options after a command that does not use them (see EVERY_GROUP).
_GROUP_OPTIONS: dict[str, tuple[tuple[str, ...], ...]] = {
    CONNECT: (("--attempts",), ("--wait",)),
    MIGRATION_LOCK: (("--migration-lock-timeout", "--lock-timeout"),),
    TABLE_LOCKS: (("--table-lock-timeout",), ("--ddl-lock-timeout",), ("--ddl-retry-for",)),
}


class _DeprecatedName(argparse._StoreAction):
    """An option's old name: stored as the new one, with a warning that names it (once:
    not when command_named's router reads the same words first)."""

    def __call__(self, parser: Any, namespace: Any, values: Any, option: Any = None) -> None:
        if not isinstance(parser, _Router):
            print(
                f"warning: {option} is deprecated and goes in 0.3.0: use --table-lock-timeout",
                file=sys.stderr,
            )
        super().__call__(parser, namespace, values, option)


class _DoesNothing(argparse.Action):
    """An option given after a command that does not use it: a warning, no value."""

    def __call__(self, parser: Any, namespace: Any, values: Any, option: Any = None) -> None:
        print(
            f"warning: {option} does nothing after `{parser.prog}`: give it before the "
            f"command (after it, it is refused from {REMOVED_IN})",
            file=sys.stderr,
        )


class _Refused(argparse.Action):
    """An option given after a command that does not use it, and refuses it (_REFUSED):
    the same advice as the warning of _DoesNothing, as a usage error."""

    def __call__(self, parser: Any, namespace: Any, values: Any, option: Any = None) -> None:
        parser.error(
            f"{option} does nothing after `{parser.prog}`, which refuses it: give it "
            f"before the command"
        )


def _options_that_do_nothing(
    parser: argparse.ArgumentParser, groups: frozenset[str], refused: frozenset[str]
) -> None:
    for group in sorted(groups):
        for names in _GROUP_OPTIONS[group]:
            parser.add_argument(
                *names,
                dest=f"ignored_{names[0][2:].replace('-', '_')}",
                action=_Refused if group in refused else _DoesNothing,
                default=argparse.SUPPRESS,
                help=argparse.SUPPRESS,
            )


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The CLI's parser; with ``only``, that command's and no other (see main)."""
    parser = console.ArgumentParser(
        prog=PROG,
        description="Migrations for the SilentPulse database (golang-migrate compatible).",
        formatter_class=console.HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    _common_options(parser, suppress=False)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, command in COMMANDS.items():
        if only is None or name == only:
            cmd = sub.add_parser(
                name,
                help=command.help,
                description=command.help,
                formatter_class=console.HelpFormatter,
            )
            _common_options(cmd, suppress=True, groups=command.groups)
            _options_that_do_nothing(
                cmd, EVERY_GROUP - command.groups, _REFUSED.get(name, frozenset())
            )
            command.arguments(cmd)
    return parser


def command_named(argv: list[str]) -> str | None:
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
    if known.top_level or not known.words or known.words[0] not in COMMANDS:
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


# Options refused after a command rather than ignored with a warning: drift refused them
# before the warning came (with the warning's advice).
_REFUSED = {"drift": frozenset({MIGRATION_LOCK, TABLE_LOCKS})}

# What each kind of command uses (see EVERY_GROUP).
_CONNECTS = frozenset({CONNECT})  # version, status, check, drift, partitions, retention
_LOCKS = _CONNECTS | {MIGRATION_LOCK}  # force, baseline, prerequisites
_MIGRATES = _LOCKS | {TABLE_LOCKS}  # up, down, goto, distribute


class Command(NamedTuple):
    """A command: its help line, what it takes besides the common options, and the module
    of this package that runs it (imported for that command alone: each imports what its
    commands need, so that `create` starts without the driver and `up` without the
    proofs)."""

    help: str
    arguments: Callable[[argparse.ArgumentParser], None]
    module: str
    groups: frozenset[str]  # the common options it uses (EVERY_GROUP)


COMMANDS: dict[str, Command] = {
    "up": Command(
        "apply all pending migrations, or the next N", _up_arguments, "migrating", _MIGRATES
    ),
    "down": Command(
        "revert the last N migrations (or all with --all)",
        _down_arguments,
        "migrating",
        _MIGRATES,
    ),
    "goto": Command("migrate up or down to version V", _goto_arguments, "migrating", _MIGRATES),
    "force": Command(
        "record version V as clean without running anything (-1: none)",
        _force_arguments,
        "migrating",
        _LOCKS,
    ),
    "version": Command(
        "print the current version: 3, or 3 (dirty)",
        _no_arguments,
        "inspecting",
        _CONNECTS,
    ),
    "status": Command(
        "one row a version: applied or pending, when, checksum",
        _no_arguments,
        "inspecting",
        _CONNECTS,
    ),
    "prerequisites": Command(
        "run prerequisites.sql (extensions); exit 3: what an administrator must run",
        _no_arguments,
        "migrating",
        _LOCKS,
    ),
    "baseline": Command(
        "adopt a database created before migrations (version 1)",
        _baseline_arguments,
        "migrating",
        _LOCKS,
    ),
    "create": Command(
        "write the next NNNNNN_name.up.sql / .down.sql pair",
        _create_arguments,
        "creating",
        frozenset(),
    ),
    "check": Command(
        "prove on a scratch database that every down undoes its up",
        _check_arguments,
        "proving",
        _CONNECTS,
    ),
    "drift": Command(
        "compare the live schema with what the files build at its version; exit 0 "
        "matches, 1 drift, 2 error",
        _drift_arguments,
        "proving",
        _CONNECTS,
    ),
    "partitions": Command(
        "create the monthly partitions ahead, empty the default partitions",
        _partitions_arguments,
        "maintaining",
        _CONNECTS,
    ),
    "retention": Command(
        "drop expired partitions (alerts, audit logs, observations)",
        _retention_arguments,
        "maintaining",
        _CONNECTS,
    ),
    "distribute": Command(
        "on a Citus coordinator: reference tables, tenant tables distributed by tenant_id "
        "and colocated (docs/scaling.md); --dry-run: the plan",
        _distribute_arguments,
        "distributing",
        _MIGRATES,
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


_positive = _at_least(1)
_non_negative = _at_least(0)
