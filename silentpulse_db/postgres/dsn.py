"""Validating a DSN and showing it without its password."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from ..defaults import DSN_ENV_VARS
from ..errors import ConfigurationError

_SCHEMES = ("postgres", "postgresql")
_FILE_PARAMETERS = frozenset({"sslrootcert", "sslcert", "sslkey", "sslcrl", "passfile"})
# user:password@ in a URL, and password=... in a libpq keyword string.
_URL_PASSWORD = re.compile(r"(://[^:/@\s]*:)[^@\s]*(@)")
_KW_PASSWORD = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE)
_QUERY_PASSWORD = re.compile(r"([?&]password=)[^&#\s]*", re.IGNORECASE)


def redact(text: str) -> str:
    """Return ``text`` with every DSN password in it replaced by ``***``."""
    text = _URL_PASSWORD.sub(r"\1***\2", text)
    text = _QUERY_PASSWORD.sub(r"\1***", text)
    return _KW_PASSWORD.sub(r"\1***", text)


def validate_dsn(dsn: str, *, setting: str = "dsn") -> str:
    """Check that ``dsn`` is a postgres URL asyncpg can use; raise ConfigurationError if not.

    The error names the setting and shows the DSN with its password hidden.
    """
    if not isinstance(dsn, str) or not dsn.strip():
        raise ConfigurationError(f"{setting} is empty: expected postgresql://user@host:port/db")
    try:
        parts = urlsplit(dsn)
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError as exc:
        raise ConfigurationError(
            f"{setting} is not a valid PostgreSQL URL ({exc}): {redact(dsn)}"
        ) from None
    if parts.scheme not in _SCHEMES:
        raise ConfigurationError(
            f"{setting} must start with postgresql:// or postgres://, got {redact(dsn)!r}"
        )
    # A file the TLS setup needs and cannot find would otherwise look like a
    # socket that is not there yet, and be retried for a minute.
    for name, values in parse_qs(parts.query).items():
        if name in _FILE_PARAMETERS and values[-1] not in ("", "system"):
            path = Path(values[-1]).expanduser()
            if not path.is_file():
                raise ConfigurationError(
                    f"{setting}: {name}={values[-1]!r} names a file that does not exist"
                )
    return dsn


def dsn_from_env(environ: Mapping[str, str] | None = None) -> str | None:
    """The DSN from the first of DSN_ENV_VARS (DATABASE_URL, POSTGRES_DSN) that is set."""
    env = os.environ if environ is None else environ
    for name in DSN_ENV_VARS:
        value = env.get(name)
        if value:
            return value
    return None
