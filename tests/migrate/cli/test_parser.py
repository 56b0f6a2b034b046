"""The CLI builds only the invoked command's parser: it must read argv as the full one does."""

from __future__ import annotations

import contextlib
import io
import json

import pytest

from silentpulse_db.migrate.cli.parser import (
    COMMANDS,
    CONNECT,
    EVERY_GROUP,
    MIGRATION_LOCK,
    TABLE_LOCKS,
    build_parser,
    command_named,
)

ARGVS = [
    [],
    ["up"],
    ["up", "2", "--dry-run"],
    ["--path", "up", "up"],
    ["--pa", "status", "up"],
    ["-d", "postgresql://x@h/db", "version"],
    ["-dpostgresql://x@h/db", "version", "-v"],
    ["--database=up", "down", "--all"],
    ["--attempts", "3", "goto", "1", "--lock-timeout", "2"],
    ["--wait", "0.5", "up", "--migration-lock-timeout", "2", "--table-lock-timeout", "0"],
    ["down", "1", "--ddl-lock-timeout", "4"],
    ["version", "--wait", "inf"],
    ["force", "1", "--allow-missing"],
    ["partitions", "--ahead", "2"],
    ["retention", "--dry-run"],
    ["distribute", "--dry-run", "--shard-count", "64", "--table-lock-timeout", "0"],
    ["distribute", "--shard-count", "0"],
    ["create", "add_tags_table"],
    ["bogus"],
    ["u"],
    ["--", "up"],
    ["--bogus", "up"],
    ["up", "--bogus"],
    ["up", "0"],
    ["--attempts", "x", "up"],
    ["--ver", "up"],
    ["--help", "up"],
    ["-vh", "up"],
    ["up", "--help"],
    ["--version", "up"],
    ["--path"],
    ["--ahead", "3", "partitions"],
]


def _parse(only: str | None, argv: list[str]) -> tuple[object, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            result: object = vars(build_parser(only=only).parse_args(argv))
        except SystemExit as exc:
            result = ("exit", exc.code)
    return result, out.getvalue(), err.getvalue()


@pytest.mark.parametrize("argv", ARGVS, ids=" ".join)
def test_the_command_parser_reads_argv_as_the_full_parser(
    argv: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "100")
    assert _parse(command_named(argv), argv) == _parse(None, argv)


@pytest.mark.parametrize(
    ("argv", "command"),
    [
        (["up"], "up"),
        (["--path", "status", "up"], "up"),
        (["-v", "version", "--help"], "version"),
        (["--help", "up"], None),
        (["--version"], None),
        (["--attempts", "x", "up"], None),
        (["--ver", "up"], None),
        (["nope"], None),
        ([], None),
    ],
)
def test_which_command_argv_names(argv: list[str], command: str | None) -> None:
    assert command_named(argv) == command


# Each group's options, as an operator spells them (a deprecated name included).
GROUP_OPTIONS = {
    CONNECT: ("--attempts", "--wait"),
    MIGRATION_LOCK: ("--migration-lock-timeout", "--lock-timeout"),
    TABLE_LOCKS: ("--table-lock-timeout", "--ddl-lock-timeout", "--ddl-retry-for"),
}
WORDS = {"goto": ["1"], "force": ["1"], "create": ["add_tags_table"]}


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_after_a_command_an_option_it_does_not_use_warns(name: str) -> None:
    """`check --attempts 30` was listed and did nothing, as were the table-lock limits of
    force, baseline and prerequisites, which run no migration: after a command, its help
    lists what it uses, and another option warns that it does nothing (refused from
    0.3.0; drift refused its lock options already); before it, every option is global
    (golang-migrate's)."""
    assert set(GROUP_OPTIONS) == EVERY_GROUP
    words = [name, *WORDS.get(name, [])]
    _, shown, _ = _parse(name, [*words, "--help"])
    for group, options in GROUP_OPTIONS.items():
        for option in options:
            given = [*words, option, "5"]
            after, _, err = _parse(name, given)
            before, _, before_err = _parse(name, [option, "5", *words])
            assert isinstance(before, dict) and "nothing" not in before_err, (option, before_err)
            listed = f"{option} " in shown or f"{option}," in shown
            hidden = option == "--ddl-lock-timeout"  # the old name, hidden everywhere
            assert listed == (group in COMMANDS[name].groups and not hidden), (option, shown)
            if group in COMMANDS[name].groups:
                assert isinstance(after, dict) and "nothing" not in err, (option, err)
            elif name == "drift":  # refused, with the same advice
                assert after == ("exit", 2), (option, after)
                assert (
                    f"error: {option} does nothing after `silentpulse-db drift`, which "
                    f"refuses it: give it before the command" in err
                ), err
            else:
                assert isinstance(after, dict), (option, err)
                assert after == _parse(name, words)[0], option  # no value taken
                assert f"warning: {option} does nothing after `silentpulse-db {name}`" in err


@pytest.mark.parametrize(
    "argv",
    [
        ["--ddl-lock-timeout", "5", "up"],
        ["up", "--ddl-lock-timeout", "5"],
        ["--ddl-lock-timeout=5", "down", "1"],
        ["--ddl-lock", "5", "goto", "1"],
    ],
    ids=" ".join,
)
def test_a_deprecated_name_warns_once(argv: list[str]) -> None:
    """Before the command it warned twice: command_named's router read it too."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        args = build_parser(only=command_named(argv)).parse_args(argv)
    assert args.table_lock_timeout == 5
    warning = (
        "warning: --ddl-lock-timeout is deprecated and goes in 0.3.0: use --table-lock-timeout"
    )
    assert err.getvalue().count(warning) == 1, err.getvalue()


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["drift", "--json", "--migration-lock-timeout", "5"], "--migration-lock-timeout does"),
        (["drift", "--table-lock-timeout", "5", "--js"], "--table-lock-timeout does nothing"),
        (["drift", "--json", "--bogus"], "unrecognized arguments: --bogus"),
        (["drift", "--json", "--attempts", "x"], "argument --attempts: expected a whole number"),
        (["--attempts", "x", "drift", "--json"], "argument --attempts: expected a whole number"),
    ],
)
def test_drift_json_says_an_argument_error_as_json_too(
    argv: list[str], said: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """docs/reference.md: with --json an error is also a JSON object on stdout; argparse's
    errors printed nothing there."""
    from silentpulse_db.migrate.cli import main

    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert said in err
    error = json.loads(out)["error"]
    assert error["type"] == "UsageError" and error["exit"] == 2, error
    assert said in error["message"] and error["message"] in err, (error, err)


@pytest.mark.parametrize(
    "argv", [["drift", "--migration-lock-timeout", "5"], ["status", "--json"], ["bogus", "--json"]]
)
def test_without_drift_json_an_argument_error_prints_nothing_on_stdout(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    from silentpulse_db.migrate.cli import main

    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert out == "" and "error:" in err
