"""What both command-line tools (``silentpulse-db``, ``migrate-credentials``) share.

Exit codes (one table, docs/reference.md):

====  ==============================================================
0     success
1     the operation failed (the database, a migration, a value)
2     usage or configuration error (arguments, DSN, keys, paths)
3     an administrator must act first: the role lacks a privilege it cannot
      give itself (the message gives the exact statements); nothing changed
130   interrupted (Ctrl-C)
====  ==============================================================

The DSN comes from ``--database`` or the first set of DATABASE_URL,
POSTGRES_DSN. Errors print as ``<prog> <command>: error: <message>`` on
stderr, one line per line of the message, never a traceback unless
``--debug``, never a password.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import traceback
from collections.abc import Callable, Coroutine
from typing import Any, NoReturn
from urllib.parse import urlsplit

from .defaults import DSN_ENV_VARS, SECRET_ENV_VARS
from .errors import AdministratorRequiredError, ConfigurationError, SilentPulseDBError
from .postgres.dsn import dsn_from_env, redact, redact_arguments, validate_dsn

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_ADMINISTRATOR = 3
EXIT_INTERRUPTED = 130

logger = logging.getLogger("silentpulse_db.console")


class HelpFormatter(argparse.HelpFormatter):
    """argparse's, sized as shutil.get_terminal_size() would: argparse builds a formatter
    for every add_argument, and its own imports shutil (and lzma, bz2) for the width,
    about 2 ms of a command's start-up that prints no help (bench/bench_startup_tricks.py)."""

    def __init__(
        self,
        prog: str,
        indent_increment: int = 2,
        max_help_position: int = 24,
        width: int | None = None,
    ) -> None:
        if width is None:
            width = _terminal_columns() - 2
        super().__init__(prog, indent_increment, max_help_position, width)


def _terminal_columns() -> int:
    try:
        columns = int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        columns = 0
    if columns <= 0:
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns  # type: ignore[union-attr]
        except (AttributeError, ValueError, OSError):
            columns = 0
    return columns or 80


class UsageError(ConfigurationError):
    """Wrong words on the command line (exit 2)."""


class ArgumentsRefused(SystemExit):
    """argparse refused the command line (exit 2): its message, as printed (no password)."""

    def __init__(self, message: str) -> None:
        super().__init__(EXIT_USAGE)
        self.message = message


class ArgumentParser(argparse.ArgumentParser):
    """argparse's, whose errors never show a DSN password: argparse quotes the words it
    refuses (``invalid choice: 'postgresql://u:pw@h/db'``, ``unrecognized arguments:``,
    ``invalid int value:``), and a DSN given in the wrong place is such a word. Every
    text of the message is scrubbed of the passwords the words and the environment hold.
    A subparser is of the parser's class, so scrubs its errors too."""

    _words: tuple[str, ...] = ()

    def parse_known_args(self, args: Any = None, namespace: Any = None) -> Any:
        # Every parse, the subparsers' included (a subparser parses the words after its
        # command), goes through here with the words its errors may quote.
        self._words = tuple(sys.argv[1:] if args is None else args)
        return super().parse_known_args(args, namespace)

    def error(self, message: str) -> NoReturn:
        shown = scrubbed(redact_arguments(message, self._words))
        self.print_usage(sys.stderr)
        print(f"{self.prog}: error: {shown}", file=sys.stderr)
        raise ArgumentsRefused(shown)


def add_connection_options(parser: argparse.ArgumentParser, *, suppress: bool = False) -> None:
    """--database and --debug, the same in both tools.

    ``suppress`` (for a subcommand) keeps a value given before the command.
    """
    default: Any = argparse.SUPPRESS if suppress else None
    parser.add_argument(
        "--database",
        "-d",
        metavar="DSN",
        default=default,
        help=f"PostgreSQL URL (default: ${' or $'.join(DSN_ENV_VARS)}; "
        "prefer the environment: a password here is visible to ps)",
    )
    parser.add_argument(
        "--debug",
        action="store_true",
        default=argparse.SUPPRESS if suppress else False,
        help="print a traceback with errors",
    )


def database(option: str | None) -> str:
    """The DSN from ``--database`` or the environment, validated."""
    dsn = option or dsn_from_env()
    if not dsn:
        raise UsageError(f"no database: set {' or '.join(DSN_ENV_VARS)} or pass --database")
    if option and _has_password(option):
        logger.warning(
            "--database carries a password, which other users can see in the process list "
            "and which stays in shell history: prefer %s",
            DSN_ENV_VARS[0],
        )
    setting = "--database" if option else "the DSN environment variable"
    return validate_dsn(dsn, setting=setting)


def _has_password(dsn: str) -> bool:
    try:
        return bool(urlsplit(dsn).password) or "password=" in dsn.lower()
    except ValueError:
        return "password" in dsn.lower()


def configure_logging(*, verbose: bool) -> None:
    """The tools are applications: they may configure logging (the library never does)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("silentpulse_db")
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO if verbose else logging.WARNING)
    root.propagate = False


def run(
    prog: str,
    command: str,
    main: Callable[[], Coroutine[Any, Any, int]],
    *,
    debug: bool = False,
    database: str | None = None,
    other_dsns: tuple[str | None, ...] = (),
    failure_exit: int = EXIT_FAILURE,
) -> int:
    """Run ``main`` to completion and turn what it raises into a message and an exit code.

    ``database`` (the --database value) and ``other_dsns`` (a --scratch-dsn) join the
    environment's DSNs as secrets to scrub.
    ``failure_exit``: the exit code of a failure, for a command whose 1 means something
    else (drift: 1 is "drift found"); 2 and 3 keep their meanings whatever the command.
    """
    label = f"{prog} {command}".rstrip()
    try:
        return asyncio.run(main())
    except SilentPulseDBError as exc:
        _print_error(label, exc, debug, (database, *other_dsns))
        return exit_code(exc, failure_exit)
    except KeyboardInterrupt:
        print(f"{label}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def exit_code(exc: SilentPulseDBError, failure_exit: int = EXIT_FAILURE) -> int:
    """The exit code of an error: 3 when an administrator must act, 2 for a usage or
    configuration error, else ``failure_exit``."""
    if isinstance(exc, AdministratorRequiredError):
        # Not a failure to retry nor a usage error: a job waits for an administrator.
        return EXIT_ADMINISTRATOR
    return EXIT_USAGE if isinstance(exc, ConfigurationError) else failure_exit


def scrubbed(text: str, given: tuple[str | None, ...] = ()) -> str:
    """``text`` without the password of any DSN the environment (SECRET_ENV_VARS) or the
    command line (``given``) holds."""
    dsns = [os.environ[name] for name in SECRET_ENV_VARS if os.environ.get(name)]
    return redact(text, *dsns, *(dsn for dsn in given if dsn))


def _print_error(
    label: str, exc: BaseException, debug: bool, given: tuple[str | None, ...]
) -> None:
    if debug:
        print(scrubbed("".join(traceback.format_exception(exc)), given), file=sys.stderr, end="")
    print(f"{label}: error: {scrubbed(str(exc), given)}", file=sys.stderr)


def parse(
    parser: argparse.ArgumentParser,
    argv: list[str] | None,
    on_refused: Callable[[str], None] | None = None,
) -> argparse.Namespace | int:
    """Parse ``argv``; an exit code instead of SystemExit (0 for --help, 2 for usage errors).

    ``on_refused`` gets the message of a usage error, once printed (drift --json's object).
    """
    try:
        return parser.parse_args(argv)
    except ArgumentsRefused as exc:
        if on_refused is not None:
            on_refused(exc.message)
        return EXIT_USAGE
    except SystemExit as exc:
        return int(exc.code or 0)
