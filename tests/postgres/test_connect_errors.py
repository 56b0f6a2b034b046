"""What a failure to connect becomes (connect_error), for the TLS cases a test server
cannot easily produce; tests/postgres/test_tls.py has the real ones."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from silentpulse_db import ConfigurationError, DatabaseConnectionError
from silentpulse_db.postgres.connect import connect_error, is_transient

PASSWORD = "Unit-S3cret-pw"
DSN = f"postgresql://app:{PASSWORD}@db.example:5432/app"


@pytest.fixture(autouse=True)
def no_pgssl_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("PGSSLMODE", "PGSSLROOTCERT", "PGSSLCERT", "PGSSLKEY", "PGSSLCRL"):
        monkeypatch.delenv(name, raising=False)


def verification_error(code: int, reason: str) -> ssl.SSLCertVerificationError:
    """As ssl raises it from a handshake (it sets verify_code and verify_message)."""
    exc = ssl.SSLCertVerificationError(
        1, f"[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: {reason} (_ssl.c:1006)"
    )
    exc.verify_code = code
    exc.verify_message = reason
    return exc


def test_a_failed_verification_is_permanent() -> None:
    assert not is_transient(verification_error(18, "self-signed certificate"))


@pytest.mark.parametrize(
    ("code", "reason", "fix"),
    [
        (10, "certificate has expired", "renew the server's certificate"),
        (62, "Hostname mismatch, certificate is not valid for 'db.example'.", "verify-ca"),
        (20, "unable to get local issuer certificate", "set sslrootcert to the certificate"),
    ],
)
def test_a_failed_verification_says_what_to_change(code: int, reason: str, fix: str) -> None:
    dsn = f"{DSN}?sslmode=verify-full&sslrootcert=/etc/app/root.crt"
    error = connect_error(verification_error(code, reason), dsn, attempts=30)
    assert isinstance(error, DatabaseConnectionError) and not error.transient
    message = str(error)
    assert "TLS certificate verification failed" in message and reason.rstrip(".") in message
    assert "sslmode=verify-full" in message and "sslrootcert=/etc/app/root.crt" in message
    assert fix in message
    assert PASSWORD not in message and "after 30 attempts" not in message


def test_the_sslmode_and_root_certificate_of_the_environment_are_named(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    root = tmp_path / "ca.crt"
    monkeypatch.setenv("PGSSLMODE", "require")
    monkeypatch.setenv("PGSSLROOTCERT", str(root))
    message = str(connect_error(verification_error(18, "self-signed certificate"), DSN))
    assert "sslmode=require" in message and f"$PGSSLROOTCERT={root}" in message
    assert "verifies it as verify-ca does" in message  # why require checked it at all


def test_a_file_not_found_without_tls_files_is_still_waited_for() -> None:
    # A Unix socket not there yet (the server starting) raises it too.
    error = connect_error(FileNotFoundError(2, "No such file or directory"), DSN, attempts=30)
    assert isinstance(error, DatabaseConnectionError) and error.transient
    assert "after 30 attempts" in str(error)


@pytest.mark.parametrize("variable", ["PGSSLROOTCERT", "PGSSLCERT", "PGSSLKEY", "PGSSLCRL"])
def test_a_tls_file_of_the_environment_that_is_not_there(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, variable: str
) -> None:
    missing = tmp_path / "missing.pem"
    monkeypatch.setenv(variable, str(missing))
    error = connect_error(FileNotFoundError(2, "No such file or directory"), DSN, attempts=30)
    assert isinstance(error, ConfigurationError)
    assert f"${variable}" in str(error) and str(missing) in str(error)


def test_the_dsn_s_parameter_wins_over_the_variable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    present = tmp_path / "root.crt"
    present.write_text("")
    monkeypatch.setenv("PGSSLROOTCERT", str(tmp_path / "missing.crt"))
    # asyncpg reads the variable only when the DSN does not say: here it is not the cause.
    dsn = f"{DSN}?sslmode=verify-ca&sslrootcert={present}"
    error = connect_error(FileNotFoundError(2, "No such file or directory"), dsn, attempts=3)
    assert isinstance(error, DatabaseConnectionError) and error.transient
