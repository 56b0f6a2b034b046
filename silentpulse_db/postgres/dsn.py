"""Validating a DSN and showing it without its password."""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import parse_qs, parse_qsl, quote, unquote, urlencode, urlsplit

from ..defaults import DSN_ENV_VARS
from ..errors import ConfigurationError

_SCHEMES = ("postgres", "postgresql")
_FILE_PARAMETERS = frozenset({"sslrootcert", "sslcert", "sslkey", "sslcrl", "passfile"})
# A URL's userinfo runs to the LAST "@" of its token: a password may hold "@",
# ":", "/", "%", "#", "?" unencoded. Greedy on purpose: hiding too much is safe.
_URL_USERINFO = re.compile(r"(?i)(postgres(?:ql)?://[^:@\s/]*:)[^\s]*(@)")
# ... and a password with a space in it stretches over several tokens.
_URL_USERINFO_SPACES = re.compile(r"(postgres(?:ql)?://[^:@\s/]*:)[^@]*?(@[\w.\[\]-]+[:/])")
_KW_PASSWORD = re.compile(r"(?i)(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)")
_QUERY_PASSWORD = re.compile(r"(?i)([?&]password=)[^&#\s]*")
_URL_PASSWORD = re.compile(r"postgres(?:ql)?://([^:@/]*):(.*)@", re.IGNORECASE | re.DOTALL)
_MIN_SECRET = 3  # shorter "passwords" would blank out ordinary words


def passwords_of(dsn: str) -> frozenset[str]:
    """Every form in which ``dsn``'s password could be printed: as written, decoded, encoded."""
    found: set[str] = set()
    match = _URL_PASSWORD.match(dsn)
    if match:
        found.add(match[2])
    for kw in _KW_PASSWORD.finditer(dsn):
        found.add(kw[2].strip("'"))
    for query in _QUERY_PASSWORD.finditer(dsn + "&"):
        found.add(dsn[query.end() : dsn.find("&", query.end()) % (len(dsn) + 1)].split("#")[0])
    with contextlib.suppress(ValueError):
        if (parts := urlsplit(dsn)).password:
            found.add(parts.password)
        found.update(v for values in parse_qs(parts.query).get("password", []) for v in [values])
    forms = set()
    for secret in found:
        forms |= {secret, unquote(secret), quote(secret, safe=""), quote(unquote(secret), safe="")}
    return frozenset(f for f in forms if len(f) >= _MIN_SECRET)


def redact(text: str, *dsns: str) -> str:
    """``text`` with every DSN password in it replaced by ``***``.

    Passwords are found by their place in any DSN written in ``text`` (URL
    userinfo, ``password=`` keywords and query parameters), and, for each of
    ``dsns``, wherever its password appears in any encoding: asyncpg's own
    messages included.
    """
    for dsn in dsns:
        for secret in sorted(passwords_of(dsn), key=len, reverse=True):
            text = text.replace(secret, "***")
    text = _URL_USERINFO_SPACES.sub(r"\1***\2", text)
    text = _URL_USERINFO.sub(r"\1***\2", text)
    text = _QUERY_PASSWORD.sub(r"\1***", text)
    return _KW_PASSWORD.sub(r"\1***", text)


MIGRATIONS_TABLE_PARAMETER = "x-migrations-table"


def split_migrations_table(dsn: str) -> tuple[str, str | None]:
    """golang-migrate's ``?x-migrations-table=NAME`` taken out of ``dsn`` (asyncpg would
    send it to the server as a setting): the DSN without it, and NAME (None: absent)."""
    parts = urlsplit(dsn)
    if MIGRATIONS_TABLE_PARAMETER not in parts.query:
        return dsn, None
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    table = next((v for k, v in pairs if k == MIGRATIONS_TABLE_PARAMETER), None)
    rest = urlencode([(k, v) for k, v in pairs if k != MIGRATIONS_TABLE_PARAMETER])
    return parts._replace(query=rest).geturl(), table


def validate_dsn(dsn: str, *, setting: str = "dsn") -> str:
    """Check that ``dsn`` is a postgres URL asyncpg can use; raise ConfigurationError if not.

    The error names the setting and shows the DSN with its password hidden.
    """
    if not isinstance(dsn, str) or not dsn.strip():
        raise ConfigurationError(f"{setting} is empty: expected postgresql://user@host:port/db")
    try:
        parts = urlsplit(dsn)
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError:
        raise ConfigurationError(
            f"{setting} is not a valid PostgreSQL URL (its host or port cannot be read; "
            f"percent-encode special characters in the password): {redact(dsn, dsn)}"
        ) from None
    if parts.scheme not in _SCHEMES:
        # Without a scheme nothing tells where a password would be: show the scheme only.
        shown = f"{parts.scheme}://..." if parts.scheme and "://" in dsn else "no scheme"
        raise ConfigurationError(
            f"{setting} must start with postgresql:// or postgres://, got {shown} "
            f"(the rest is not shown: it may hold a password)"
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
