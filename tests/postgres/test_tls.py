"""TLS outcomes, against a real server with a self-signed certificate (issue 21).

Each failure is typed and permanent (never retried), says what failed and what to
change, and never shows the password: a certificate that fails verification is a
connection error (exit 1), a TLS file that is not there a configuration error (exit 2).
"""

from __future__ import annotations

import datetime
import logging
import os
import secrets
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode, urlsplit

import asyncpg
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from silentpulse_db import ConfigurationError, DatabaseConnectionError, SilentPulseDBError
from silentpulse_db.migrate import version
from silentpulse_db.postgres.connect import connect
from silentpulse_db.settings import ONE_ATTEMPT, ConnectRetry
from silentpulse_db.testing import PostgresServer
from silentpulse_db.testing.server import ENV_DSN, run_sync

from helpers import cli, execute, fetchval, login_role

CERT_HOST = "db.example"  # the only name the server's certificate holds: not 127.0.0.1
RETRIED = "not reachable yet"  # what connect() logs before each retry
WAIT = 3.0  # between attempts: a failure retried even once takes longer than this


@dataclass(frozen=True)
class TLSServer:
    dsn: str  # a login role's, with its password; TCP to 127.0.0.1, no sslmode
    password: str
    rootcert: Path  # the server's own (self-signed) certificate
    other: Path  # another self-signed certificate for the same name


def self_signed(host: str) -> tuple[bytes, bytes]:
    """A self-signed certificate naming ``host`` only, and its key (PEM)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
        # Its own CA: the client trusts it as the root (sslrootcert).
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def with_query(dsn: str, **params: str) -> str:
    return urlsplit(dsn)._replace(query=urlencode(params, safe="/~")).geturl()


def _enable_tls(server: PostgresServer) -> Path:
    """Write the certificate and key into the data directory, turn ssl on, reload;
    returns the certificate."""
    cert, key = self_signed(CERT_HOST)
    cert_file, key_file = server.datadir / "server.crt", server.datadir / "server.key"
    cert_file.write_bytes(cert)
    key_file.write_bytes(key)
    key_file.chmod(0o600)  # PostgreSQL refuses a key others may read
    if os.geteuid() == 0:
        # The server runs as `postgres` (the harness's user when we are root).
        for path in (cert_file, key_file):
            shutil.chown(path, user=server.user)
    # One statement a call: ALTER SYSTEM refuses to run in a (implicit) transaction block.
    for sql in (
        "ALTER SYSTEM SET ssl = on",
        f"ALTER SYSTEM SET ssl_cert_file = '{cert_file}'",
        f"ALTER SYSTEM SET ssl_key_file = '{key_file}'",
        "SELECT pg_reload_conf()",
    ):
        run_sync(execute(server.dsn, sql))
    return cert_file


def _wait_for_tls(dsn: str) -> None:
    """The reload is asynchronous: wait until a new connection gets TLS."""
    deadline = time.monotonic() + 20
    while True:
        try:
            if run_sync(fetchval(dsn, "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")):
                return
        except (OSError, asyncpg.PostgresError):
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"the server did not turn TLS on: {dsn}")
        time.sleep(0.1)


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TLSServer]:
    """A throwaway server of this module's own (the session's is left as it is), with
    ssl on and a self-signed certificate for db.example, and a login role with a password."""
    server = PostgresServer()
    if server.external:
        pytest.skip(f"{ENV_DSN} names a server whose TLS this test cannot set up")
    with server:
        cert = _enable_tls(server)
        # TCP host connections go through pg_hba's `host ... scram-sha-256` line (initdb's
        # --auth-host), which matches TLS and plain TCP alike.
        _wait_for_tls(with_query(server.dsn, sslmode="require"))
        password = "Tls-" + secrets.token_hex(12)
        run_sync(execute(server.dsn, f"CREATE ROLE tls_app LOGIN PASSWORD '{password}'"))
        folder = tmp_path_factory.mktemp("tls")
        rootcert = folder / "root.crt"
        rootcert.write_bytes(cert.read_bytes())
        other = folder / "other.crt"
        other.write_bytes(self_signed(CERT_HOST)[0])
        yield TLSServer(
            dsn=f"postgresql://tls_app:{password}@127.0.0.1:{server.port}/postgres",
            password=password,
            rootcert=rootcert,
            other=other,
        )


@pytest.fixture(autouse=True)
def no_tls_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty HOME and no PGSSL* variables: asyncpg would otherwise take the caller's
    ~/.postgresql/root.crt or $PGSSLROOTCERT (and verify under sslmode=require).
    Returns the HOME (for the CLI's subprocess too: it inherits the environment)."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for name in ("PGSSLMODE", "PGSSLROOTCERT", "PGSSLCERT", "PGSSLKEY", "PGSSLCRL"):
        monkeypatch.delenv(name, raising=False)
    return home


async def fails_at_once(dsn: str, caplog: pytest.LogCaptureFixture) -> SilentPulseDBError:
    """The error of ``version(dsn)`` given 3 attempts: asserting it came from the first
    (no retry logged, sooner than the wait between two) and is not of the transient kind."""
    started = time.monotonic()
    with (
        caplog.at_level(logging.DEBUG, logger="silentpulse_db"),
        pytest.raises(SilentPulseDBError) as info,
    ):
        await version(dsn, connect=ConnectRetry(attempts=3, wait=WAIT))
    assert RETRIED not in caplog.text
    assert time.monotonic() - started < WAIT
    assert not getattr(info.value, "transient", False)
    assert info.value.__cause__ is None  # asyncpg's exception (and its traceback) is not kept
    return info.value


def cli_fails(dsn: str, password: str, code: int) -> str:
    """``silentpulse-db version`` on ``dsn``: exits ``code`` at the first attempt, one line
    of error and no traceback, no password; returns stderr."""
    r = cli("version", "--attempts", "2", dsn=dsn)
    assert r.returncode == code, r.stderr
    assert RETRIED not in r.stderr and "Traceback" not in r.stderr
    assert password not in r.stderr + r.stdout
    assert r.stderr.startswith("silentpulse-db version: error: "), r.stderr
    return r.stderr


# --- what works ----------------------------------------------------------------------


async def test_require_encrypts(tls_server: TLSServer) -> None:
    dsn = with_query(tls_server.dsn, sslmode="require")
    conn = await connect(dsn, ONE_ATTEMPT)
    try:
        assert await conn.fetchval("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        assert await conn.fetchval("SELECT current_user") == "tls_app"
    finally:
        await conn.close()
    assert (await version(dsn, connect=ConnectRetry(attempts=1))).version is None


def test_require_through_the_cli(tls_server: TLSServer) -> None:
    r = cli("version", "--attempts", "1", dsn=with_query(tls_server.dsn, sslmode="require"))
    assert r.returncode == 0, r.stderr
    assert tls_server.password not in r.stderr + r.stdout


async def test_verify_ca_with_the_servers_certificate_works(tls_server: TLSServer) -> None:
    # The control of the failures below: this root does verify the server's certificate.
    dsn = with_query(tls_server.dsn, sslmode="verify-ca", sslrootcert=str(tls_server.rootcert))
    assert (await version(dsn, connect=ConnectRetry(attempts=1))).version is None
    assert cli("version", "--attempts", "1", dsn=dsn).returncode == 0


# --- the server's certificate fails verification: a connection error, exit 1 --------------


async def test_verify_full_with_a_host_name_the_certificate_lacks(
    tls_server: TLSServer, caplog: pytest.LogCaptureFixture
) -> None:
    dsn = with_query(tls_server.dsn, sslmode="verify-full", sslrootcert=str(tls_server.rootcert))
    error = await fails_at_once(dsn, caplog)
    assert isinstance(error, DatabaseConnectionError), error
    message = str(error)
    assert "TLS certificate verification failed" in message
    assert "sslmode=verify-full" in message and "127.0.0.1" in message
    assert "mismatch" in message and "sslmode=verify-ca" in message  # what to change
    assert "invalid DSN" not in message
    assert tls_server.password not in message + caplog.text and "***" in message

    stderr = cli_fails(dsn, tls_server.password, 1)
    assert "TLS certificate verification failed" in stderr and "mismatch" in stderr


@pytest.mark.parametrize("sslmode", ["verify-ca", "verify-full", "require"])
async def test_a_root_certificate_that_did_not_sign_the_servers(
    tls_server: TLSServer, caplog: pytest.LogCaptureFixture, sslmode: str
) -> None:
    # require too: with a root certificate asyncpg (as libpq) verifies the CA.
    dsn = with_query(tls_server.dsn, sslmode=sslmode, sslrootcert=str(tls_server.other))
    error = await fails_at_once(dsn, caplog)
    assert isinstance(error, DatabaseConnectionError), error
    message = str(error)
    assert "TLS certificate verification failed" in message and "self-signed" in message
    assert f"sslmode={sslmode}" in message and f"sslrootcert={tls_server.other}" in message
    assert tls_server.password not in message + caplog.text

    stderr = cli_fails(dsn, tls_server.password, 1)
    assert "TLS certificate verification failed" in stderr


async def test_verify_ca_with_the_default_root_certificate_of_another_ca(
    tls_server: TLSServer, no_tls_defaults: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # No sslrootcert: asyncpg, as libpq, trusts ~/.postgresql/root.crt.
    (no_tls_defaults / ".postgresql").mkdir()
    (no_tls_defaults / ".postgresql" / "root.crt").write_bytes(tls_server.other.read_bytes())
    dsn = with_query(tls_server.dsn, sslmode="verify-ca")
    error = await fails_at_once(dsn, caplog)
    assert isinstance(error, DatabaseConnectionError), error
    assert "~/.postgresql/root.crt" in str(error) and "self-signed" in str(error)
    cli_fails(dsn, tls_server.password, 1)


# --- a root certificate that is not there: a configuration error, exit 2 ------------------


async def test_verify_ca_without_any_root_certificate(
    tls_server: TLSServer, caplog: pytest.LogCaptureFixture
) -> None:
    dsn = with_query(tls_server.dsn, sslmode="verify-ca")  # and no ~/.postgresql/root.crt
    error = await fails_at_once(dsn, caplog)
    assert isinstance(error, ConfigurationError), error
    assert ".postgresql/root.crt" in str(error)
    assert ".postgresql/root.crt" in cli_fails(dsn, tls_server.password, 2)


async def test_a_missing_sslrootcert_file(
    tls_server: TLSServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    missing = tmp_path / "no-such-root.crt"
    dsn = with_query(tls_server.dsn, sslmode="verify-full", sslrootcert=str(missing))
    error = await fails_at_once(dsn, caplog)
    assert isinstance(error, ConfigurationError), error
    assert "sslrootcert" in str(error) and str(missing) in str(error)
    assert tls_server.password not in str(error)
    assert str(missing) in cli_fails(dsn, tls_server.password, 2)


async def test_a_missing_file_named_by_pgsslrootcert(
    tls_server: TLSServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # asyncpg raises a bare FileNotFoundError for it, as for a Unix socket not there yet:
    # it was retried, then reported as a server not reachable.
    missing = tmp_path / "no-such-root.crt"
    monkeypatch.setenv("PGSSLROOTCERT", str(missing))
    dsn = with_query(tls_server.dsn, sslmode="verify-ca")
    error = await fails_at_once(dsn, caplog)
    assert isinstance(error, ConfigurationError), error
    assert "$PGSSLROOTCERT" in str(error) and str(missing) in str(error)
    assert "$PGSSLROOTCERT" in cli_fails(dsn, tls_server.password, 2)


async def test_sslrootcert_system_is_refused_with_what_to_give(
    tls_server: TLSServer, caplog: pytest.LogCaptureFixture
) -> None:
    # libpq's "the system's CA store"; asyncpg opens a file named "system".
    dsn = with_query(tls_server.dsn, sslmode="verify-full", sslrootcert="system")
    error = await fails_at_once(dsn, caplog)
    assert isinstance(error, ConfigurationError), error
    assert "sslrootcert=system" in str(error) and "not supported" in str(error)
    cli_fails(dsn, tls_server.password, 2)


# --- a server without TLS ------------------------------------------------------------------


@pytest.mark.parametrize("sslmode", ["require", "verify-full"])
async def test_a_server_without_tls(
    silentpulse_database: str, caplog: pytest.LogCaptureFixture, tmp_path: Path, sslmode: str
) -> None:
    if await fetchval(silentpulse_database, "SHOW ssl") == "on":
        pytest.skip("the session's server accepts TLS")
    rootcert = tmp_path / "root.crt"
    rootcert.write_bytes(self_signed(CERT_HOST)[0])
    async with login_role(silentpulse_database, prefix="tls") as (_, role_dsn):
        password = urlsplit(role_dsn).password
        assert password
        dsn = with_query(role_dsn, sslmode=sslmode, sslrootcert=str(rootcert))
        error = await fails_at_once(dsn, caplog)
        assert isinstance(error, DatabaseConnectionError), error
        message = str(error)
        assert "rejected SSL upgrade" in message and "does not accept SSL" in message
        assert f"sslmode={sslmode}" in message
        assert password not in message + caplog.text
        cli_fails(dsn, password, 1)
