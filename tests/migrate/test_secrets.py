"""No DSN password in any output, whatever it holds and however the DSN is written
(issue 10, 4): the library's errors, reprs and log records, and both CLIs' output,
with the DSN given on the command line or in the environment."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from silentpulse_db import SilentPulseDBError, run_migrations
from silentpulse_db.migrate import status
from silentpulse_db.settings import ConnectRetry
from silentpulse_db.testing import PostgresServer

from helpers import simple_set, write_migrations

# Every password below starts with one marker and ends with the other: neither may be
# printed, so that a leak of any part of the password shows.
MARKERS = ("Sekr3t", "Ta1lz")

# {host} and {port} are filled in.
CORPUS = [
    "postgresql://u:Sekr3t@ss:w/rd%Ta1lz@{host}:{port}/db",
    "postgresql://u:Sekr3t%20%40%3A%2F%25%23%3FTa1lz@{host}:{port}/db",
    "postgresql://u:Sekr3t pa ssTa1lz@{host}:{port}/db",
    "postgresql://u@{host}:{port}/db?password=Sekr3t%40xTa1lz",
    "postgresql://u@{host}:{port}/db?sslmode=disable&password=Sekr3t-Ta1lz",
    "postgres://u:Sekr3t:colonTa1lz@{host}:{port}/db",
    "postgresql://u:Sekr3t#frag?xTa1lz@{host}:{port}/db",
    "host={host} port={port} user=u password=Sekr3tTa1lz dbname=db",
    "host={host} port={port} user=u password='Sekr3t with spaceTa1lz' dbname=db",
]


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize("template", CORPUS)
async def test_library_errors_and_logs(
    template: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A closed port: the connection is refused and retried, so retry lines are logged too.
    dsn = template.format(host="127.0.0.1", port=closed_port())
    source = write_migrations(tmp_path, simple_set(1))
    for call in (
        run_migrations(dsn, source=source, connect=ConnectRetry(attempts=2, wait=0.01)),
        status(dsn, source=source, connect=ConnectRetry(attempts=2, wait=0.01)),
    ):
        with (
            caplog.at_level(logging.DEBUG, logger="silentpulse_db"),
            pytest.raises(SilentPulseDBError) as info,
        ):
            await call
        for text in (str(info.value), repr(info.value), caplog.text):
            assert not any(marker in text for marker in MARKERS), text
        # The driver's exception, whose text may hold the DSN, is not chained to it.
        error = info.value
        assert error.__cause__ is None
        assert error.__context__ is None or error.__suppress_context__


def without_dsn(environ: os._Environ[str]) -> dict[str, str]:
    return {k: v for k, v in environ.items() if k not in ("DATABASE_URL", "POSTGRES_DSN")}


def run_cli(args: list[str], env: dict[str, str]) -> str:
    done = subprocess.run(
        [sys.executable, "-m", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={
            k: v
            for k, v in {**os.environ, **env}.items()
            if k not in ("DATABASE_URL", "POSTGRES_DSN") or k in env
        },
    )
    assert done.returncode in (1, 2), done
    return done.stdout + done.stderr


@pytest.mark.slow
@pytest.mark.parametrize("template", CORPUS)
def test_both_clis(template: str, silentpulse_postgres: PostgresServer, tmp_path: Path) -> None:
    # The real server: a wrong password for a role that does not exist, so asyncpg's
    # own authentication errors are part of what is printed.
    port = silentpulse_postgres.port
    dsn = template.format(host="127.0.0.1", port=port)
    key = {"ENCRYPTION_KEY": bytes(range(32)).hex()}
    path = str(write_migrations(tmp_path, simple_set(1)))
    outputs = [
        run_cli(
            ["silentpulse_db", "status", "--path", path, "--attempts", "1", "--database", dsn], {}
        ),
        run_cli(
            ["silentpulse_db", "up", "--path", path, "--attempts", "1", "--debug"],
            {"DATABASE_URL": dsn},
        ),
        # The scratch database's DSN, given on the command line or in its variable.
        run_cli(
            [
                *("silentpulse_db", "drift", "--database", silentpulse_postgres.dsn),
                *("--debug", "--scratch-dsn", dsn),
            ],
            {},
        ),
        run_cli(
            ["silentpulse_db", "drift", "--database", silentpulse_postgres.dsn, "--json"],
            {"SCRATCH_DATABASE_URL": dsn},
        ),
        run_cli(["silentpulse_db.credentials.cli", "--database", dsn, "--debug"], key),
        run_cli(["silentpulse_db.credentials.cli"], {**key, "POSTGRES_DSN": dsn}),
    ]
    for output in outputs:
        assert not any(marker in output for marker in MARKERS), output


# Command lines that argparse refuses, a DSN in the wrong place (DSN): each error quotes the
# words it refuses (invalid choice, unrecognized arguments, a value of the wrong type).
BAD_COMMAND_LINES = {
    "silentpulse-db": [
        ["version", "DSN"],
        ["DSN", "version"],
        ["DSN"],
        ["up", "DSN"],
        ["down", "DSN"],
        ["goto", "DSN"],
        ["force", "DSN"],
        ["status", "--bogus", "DSN"],
        ["--attempts", "DSN", "up"],
        ["--attempts=DSN", "up"],
        ["--wait", "DSN", "up"],
        ["--migration-lock-timeout", "DSN", "up"],
        ["--lock-timeout", "DSN", "status"],
        ["--table-lock-timeout", "DSN", "up"],
        ["--ddl-lock-timeout", "DSN", "up"],
        ["--ddl-retry-for", "DSN", "down", "1"],
        ["up", "--attempts", "DSN"],
        ["up", "--migration-lock-timeout=DSN"],
        ["partitions", "--ahead", "DSN"],
        ["distribute", "--shard-count", "DSN"],
        ["--scratch-dsn", "DSN", "check"],
        ["drift", "--json", "DSN"],
        ["drift", "--json", "--migration-lock-timeout", "DSN"],
        ["-d", "DSN", "version", "DSN"],
        ["--d=DSN", "version"],  # ambiguous option: --d=... could match --database, --debug
    ],
    "migrate-credentials": [
        ["DSN"],
        ["--lock-timeout", "DSN"],
        ["--lock-timeout=DSN"],
        ["--attempts", "DSN"],
        ["--wait", "DSN"],
        ["--batch-size", "DSN"],
        ["--rotate", "DSN"],
        ["--verify", "DSN"],
        ["--d=DSN"],
    ],
}


@pytest.mark.parametrize("template", CORPUS)
@pytest.mark.parametrize(
    ("tool", "words"),
    [(tool, words) for tool, lines in BAD_COMMAND_LINES.items() for words in lines],
    ids=lambda value: " ".join(value) if isinstance(value, list) else value,
)
def test_argument_errors_never_show_a_password(
    tool: str,
    words: list[str],
    template: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """argparse's own errors quoted the DSN a user put in the wrong place, password and
    all (`silentpulse-db version "$DATABASE_URL"`), in both tools and any subparser."""
    from silentpulse_db.credentials.cli import main as credentials_main
    from silentpulse_db.migrate.cli import main as migrate_main

    for name in ("DATABASE_URL", "POSTGRES_DSN", "SCRATCH_DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)  # the words alone give the password away
    dsn = template.format(host="127.0.0.1", port=5432)
    argv = [word.replace("DSN", dsn) for word in words]
    main = migrate_main if tool == "silentpulse-db" else credentials_main
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert "error:" in err, err
    assert not any(marker in out + err for marker in MARKERS), out + err
