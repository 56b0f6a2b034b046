"""``silentpulse-db`` (also ``python -m silentpulse_db``): a thin shell over commands.py.

Plain like dbmate: one command a line, results on stdout, errors on stderr.
Exit codes, the DSN and the error format are those of silentpulse_db.console.

``parser.py`` holds the words (options, commands); each command runs in the module its
row names, and only that module is imported, with what its commands need: `create`
starts without the driver, `up` without the proofs or the dry run's SQL parser.

- ``migrating.py``: up, down, goto, force, baseline, prerequisites;
- ``planning.py``: up, down and goto with --dry-run (the plan, statement by statement);
- ``inspecting.py``: version, status;
- ``proving.py``: check, drift;
- ``maintaining.py``: partitions, retention;
- ``distributing.py``: distribute;
- ``creating.py``: create;
- ``keywords.py``: the parsed options as the verbs' keyword arguments.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import TextIO

from ... import console
from ...errors import SilentPulseDBError
from .parser import COMMANDS, PROG, build_parser, command_named

# A command's handler: the parsed arguments, where its output goes -> the exit code
# (a handler reads the DSN itself: `create` takes none).
Handler = Callable[[argparse.Namespace, TextIO], Awaitable[int]]

# up, down and goto with --dry-run run in planning.py: their plan, nothing changed.
DRY_RUN_COMMANDS = ("up", "down", "goto")


def main(argv: Sequence[str] | None = None) -> int:
    words = sys.argv[1:] if argv is None else list(argv)
    command = command_named(words)
    parser = build_parser(only=command)
    args = console.parse(
        parser, words, on_refused=lambda message: _json_usage_error(command, words, message)
    )
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
        lambda: _json_errors(args, handler(args)(args, sys.stdout)),
        debug=args.debug,
        database=args.database,
        other_dsns=(getattr(args, "scratch_dsn", None),),
        failure_exit=failure_exit(args.command),
    )


def handler(args: argparse.Namespace) -> Handler:
    """The function that runs ``args.command``, from its module (imported now)."""
    module = COMMANDS[args.command].module
    if args.command in DRY_RUN_COMMANDS and args.dry_run:
        module = "planning"
    handlers: dict[str, Handler] = importlib.import_module(f"{__name__}.{module}").HANDLERS
    return handlers[args.command]


def failure_exit(command: str) -> int:
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
        given = (args.database, getattr(args, "scratch_dsn", None))
        _print_json_error(
            type(exc).__name__,
            console.scrubbed(str(exc), given),
            console.exit_code(exc, failure_exit(args.command)),
        )
        raise


def _json_usage_error(command: str | None, words: list[str], message: str) -> None:
    """``drift --json`` whose words argparse refused: the error as JSON too (its message,
    already printed on stderr, holds no password)."""
    # The first word that names a command when the router was not sure of it.
    command = command or next((word for word in words if word in COMMANDS), None)
    if command == "drift" and any(_is_json_option(word) for word in _after(command, words)):
        _print_json_error(console.UsageError.__name__, message, console.EXIT_USAGE)


def _after(command: str, words: list[str]) -> list[str]:
    return words[words.index(command) + 1 :]


def _is_json_option(word: str) -> bool:
    # argparse takes any unambiguous prefix: --j is drift's --json alone.
    return len(word) >= 3 and "--json".startswith(word)


def _print_json_error(kind: str, message: str, code: int) -> None:
    import json  # drift --json's failure alone

    error = {"type": kind, "message": message, "exit": code}
    print(json.dumps({"error": error}, indent=2), file=sys.stdout)


__all__ = ["main"]
