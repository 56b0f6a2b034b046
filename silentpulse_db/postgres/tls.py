"""What a TLS failure to connect means, in the words of the setting to change.

asyncpg reads sslmode and the certificate files from the DSN or, when it does not
set them, from the PGSSL* variables; its errors name neither. These name the
setting (and where it came from) and what to change.
"""

from __future__ import annotations

import os
import ssl
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

# The DSN parameters naming a file asyncpg opens, and the variable it reads when absent.
_TLS_FILE_VARIABLES = {
    "sslrootcert": "PGSSLROOTCERT",
    "sslcert": "PGSSLCERT",
    "sslkey": "PGSSLKEY",
    "sslcrl": "PGSSLCRL",
}
_DEFAULT_ROOTCERT = "~/.postgresql/root.crt"
_NAME_MISMATCH = frozenset({62, 64})  # X509_V_ERR_HOSTNAME_MISMATCH, ..._IP_ADDRESS_MISMATCH
_OUT_OF_DATE = frozenset({9, 10})  # X509_V_ERR_CERT_NOT_YET_VALID, ..._CERT_HAS_EXPIRED


def tls_setting(dsn: str, name: str) -> tuple[str, str]:
    """Where ``name`` comes from (the DSN's parameter, or its PG* variable) and its value
    ("" if neither sets it; sslmode then defaults to prefer, as asyncpg's does)."""
    try:
        query = parse_qs(urlsplit(dsn).query)
    except ValueError:
        query = {}
    if query.get(name):
        return name, query[name][-1]
    variable = "PGSSLMODE" if name == "sslmode" else _TLS_FILE_VARIABLES[name]
    if os.environ.get(variable):
        return f"${variable}", os.environ[variable]
    return name, "prefer" if name == "sslmode" else ""


def missing_tls_file(exc: BaseException, dsn: str) -> str | None:
    """Why ``exc`` is a TLS file that is not there, naming its setting; None if it is not.

    validate_dsn checked the files the DSN names, but asyncpg also reads them from the
    PGSSL* variables, and takes libpq's ``sslrootcert=system`` for a file name. asyncpg
    then raises a bare FileNotFoundError, which a Unix socket not there yet raises too:
    without this it would be retried for a minute and reported as unreachable.
    """
    if not isinstance(exc, (FileNotFoundError, NotADirectoryError)):
        return None
    for name in _TLS_FILE_VARIABLES:
        setting, value = tls_setting(dsn, name)
        if value == "system":
            return (
                f"{setting}=system (the system's CA store, as libpq reads it) is not supported "
                "by asyncpg, which opens a file of that name: give the CA bundle's path, "
                "e.g. sslrootcert=/etc/ssl/certs/ca-certificates.crt"
            )
        if value and not Path(value).expanduser().is_file():
            return f"{setting}={value!r} names a file that does not exist"
    return None


def certificate_failure(exc: ssl.SSLCertVerificationError, dsn: str) -> str:
    """What failed when the server's certificate was checked, and what to change."""
    sslmode = tls_setting(dsn, "sslmode")[1]
    setting, rootcert = tls_setting(dsn, "sslrootcert")
    trusted = f"{setting}={rootcert}" if rootcert else _DEFAULT_ROOTCERT
    # getattr: ssl sets these on the errors it raises, not on one made by hand.
    code = getattr(exc, "verify_code", None)
    reason = str(getattr(exc, "verify_message", None) or exc).rstrip(".")
    if code in _NAME_MISMATCH:
        fix = (
            "connect by a host name that the certificate names, or use sslmode=verify-ca "
            "(checks who signed the certificate, not the name)"
        )
    elif code in _OUT_OF_DATE:
        fix = "renew the server's certificate (or check the clocks)"
    elif sslmode == "require":
        # asyncpg, like libpq, verifies the CA under require once a root certificate is set.
        fix = (
            f"with a root certificate, sslmode=require verifies it as verify-ca does: set "
            f"sslrootcert to the certificate of the CA that signed the server's, or remove "
            f"{trusted} to encrypt without verifying the server"
        )
    else:
        fix = (
            "set sslrootcert to the certificate of the CA that signed the server's (the "
            "server's own, if it is self-signed), or use sslmode=require to encrypt without "
            "verifying the server"
        )
    return (
        f"TLS certificate verification failed (sslmode={sslmode}, root certificate from "
        f"{trusted}): {reason}; {fix}"
    )
