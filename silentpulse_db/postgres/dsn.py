"""Validating a DSN, showing it without its password, and taking golang-migrate's ``x-``
options out of it."""

from __future__ import annotations

import contextlib
import logging
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import NamedTuple
from urllib.parse import parse_qs, parse_qsl, quote, unquote, unquote_plus, urlsplit

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
    # As repr() shows each (argparse's "invalid choice: 'x'"): a quote or a backslash escaped.
    forms |= {repr(form)[1:-1] for form in forms}
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


_URL_START = re.compile(r"(?i)postgres(?:ql)?://")


def redact_arguments(text: str, words: Iterable[str]) -> str:
    """``text``, a message about the command-line ``words`` (argparse's errors), with no
    DSN password any word holds: a word may be a DSN, or carry one after an option's name
    (``--database=URL``, ``-dURL``), and the message may show it as written or as repr()
    does; ``redact``'s patterns catch those the words do not give away."""
    dsns: list[str] = []
    for word in words:
        dsns.append(word)
        dsns.extend(word[start.start() :] for start in _URL_START.finditer(word))
        if "=" in word:
            dsns.append(word.split("=", 1)[1])
    return redact(text, *dsns)


# golang-migrate's own URL options: every query parameter whose name starts with "x-"
# (migrate.FilterCustomQuery takes them all out before connecting). asyncpg would send
# each to the server as a setting, which refuses it ("unrecognized configuration
# parameter"), so every connection this library makes with a user's DSN drops them.
X_OPTION_PREFIX = "x-"
MIGRATIONS_TABLE_PARAMETER = "x-migrations-table"
TABLE_QUOTED_PARAMETER = "x-migrations-table-quoted"
STATEMENT_TIMEOUT_PARAMETER = "x-statement-timeout"
LOCK_STRATEGY_PARAMETER = "x-lock-strategy"
# Understood, and with no effect here: the engine splits a file into statements itself
# (x-multi-statement*); x-lock-table names the pgx driver's lock table, which only
# x-lock-strategy=table uses.
_WITHOUT_EFFECT = frozenset({"x-multi-statement", "x-multi-statement-max-size", "x-lock-table"})
_KNOWN = _WITHOUT_EFFECT | {
    MIGRATIONS_TABLE_PARAMETER,
    TABLE_QUOTED_PARAMETER,
    STATEMENT_TIMEOUT_PARAMETER,
    LOCK_STRATEGY_PARAMETER,
}
# Go's strconv.ParseBool and strconv.Atoi, which golang-migrate reads them with.
_GO_BOOLS = {v: True for v in ("1", "t", "T", "TRUE", "true", "True")} | {
    v: False for v in ("0", "f", "F", "FALSE", "false", "False")
}
_GO_INT = re.compile(r"^[+-]?[0-9]+$")
_MAX_TIMEOUT_MS = 2_147_483_647  # PostgreSQL's largest statement_timeout
_LOCK_STRATEGIES = ("advisory", "table")
# Unknown options already warned about in this process: one warning each, not one per
# connection (a pool opens many).
_warned: set[str] = set()
logger = logging.getLogger("silentpulse_db.postgres")


class MigrateOptions(NamedTuple):
    """golang-migrate's ``x-`` options of a DSN, read as its postgres and pgx drivers
    read them (the first value of each; an empty value is the default)."""

    # x-migrations-table as written (None: absent), and x-migrations-table-quoted.
    migrations_table: str | None = None
    table_quoted: bool = False
    # x-statement-timeout, in seconds (the URL gives milliseconds); None: no limit.
    statement_timeout: float | None = None
    # x-lock-strategy (golang-migrate's pgx driver): "advisory" or "table".
    lock_strategy: str = "advisory"
    # Every other x- option given: names only (a value may be anything).
    unknown: tuple[str, ...] = ()


_NO_OPTIONS = MigrateOptions()


def _is_x_option(piece: str) -> bool:
    return unquote_plus(piece.partition("=")[0]).startswith(X_OPTION_PREFIX)


def split_options(dsn: str) -> tuple[str, MigrateOptions]:
    """``dsn`` without golang-migrate's ``x-`` options, and those options.

    The rest of the DSN is kept as written, byte for byte. A value golang-migrate
    would refuse (x-statement-timeout=abc), or one that cannot mean anything
    (a negative timeout), is a ConfigurationError naming the option (never the DSN).
    """
    if X_OPTION_PREFIX not in dsn and "x%2d" not in dsn.lower():
        return dsn, _NO_OPTIONS  # the usual DSN: no parsing at start-up
    parts = urlsplit(dsn)
    pieces = parts.query.split("&")
    if not any(_is_x_option(piece) for piece in pieces):
        return dsn, _NO_OPTIONS
    values: dict[str, str] = {}
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if name.startswith(X_OPTION_PREFIX):
            values.setdefault(name, value)  # golang-migrate reads the first
    kept = "&".join(piece for piece in pieces if piece and not _is_x_option(piece))
    at = dsn.find("?")
    if at >= 0 and dsn.startswith(parts.query, at + 1):
        rest = dsn[at + 1 + len(parts.query) :]  # the fragment, if any
        clean = dsn[:at] + (f"?{kept}" if kept else "") + rest
    else:  # urlsplit dropped characters (tabs, newlines) from the query it read
        clean = parts._replace(query=kept).geturl()
    return clean, _read_options(values)


def _read_options(values: Mapping[str, str]) -> MigrateOptions:
    """The options' meaning; ConfigurationError for a value that has none."""
    for name in ("x-multi-statement", TABLE_QUOTED_PARAMETER):
        if values.get(name) and values[name] not in _GO_BOOLS:
            raise _malformed(name, values[name], "true or false (as Go's strconv.ParseBool)")
    size = values.get("x-multi-statement-max-size")
    if size and not _GO_INT.match(size):
        raise _malformed("x-multi-statement-max-size", size, "a whole number of bytes")
    timeout: float | None = None
    if milliseconds := values.get(STATEMENT_TIMEOUT_PARAMETER):
        if not _GO_INT.match(milliseconds) or not 0 <= int(milliseconds) <= _MAX_TIMEOUT_MS:
            raise _malformed(
                STATEMENT_TIMEOUT_PARAMETER,
                milliseconds,
                f"milliseconds, a whole number from 0 (no limit) to {_MAX_TIMEOUT_MS}",
            )
        timeout = int(milliseconds) / 1000 or None
    strategy = values.get(LOCK_STRATEGY_PARAMETER) or "advisory"
    if strategy not in _LOCK_STRATEGIES:
        raise _malformed(LOCK_STRATEGY_PARAMETER, strategy, "advisory or table")
    return MigrateOptions(
        migrations_table=values.get(MIGRATIONS_TABLE_PARAMETER) or None,
        table_quoted=_GO_BOOLS.get(values.get(TABLE_QUOTED_PARAMETER, ""), False),
        statement_timeout=timeout,
        lock_strategy=strategy,
        unknown=tuple(sorted(name for name in values if name not in _KNOWN)),
    )


_SHOWN_VALUE = re.compile(r"^[\w.+-]{1,40}$")


def _malformed(name: str, value: str, expected: str) -> ConfigurationError:
    # A value that could be part of a password misread as the query (a "?" left
    # unencoded in it) is not shown.
    shown = repr(value) if _SHOWN_VALUE.match(value) else "(a value not shown)"
    return ConfigurationError(f"the DSN's ?{name}={shown}: expected {expected}")


def warn_unknown(options: MigrateOptions) -> None:
    """One warning per process for the ``x-`` options that mean nothing here, by name."""
    new = [name for name in options.unknown if name not in _warned]
    if new:
        _warned.update(new)
        logger.warning(
            "ignoring the DSN's %s: golang-migrate URL option(s) with no meaning in "
            "silentpulse-db (taken out of the DSN before connecting, as golang-migrate does)",
            ", ".join(new),
        )


def connection_dsn(dsn: str) -> str:
    """``dsn`` as the server may see it, for a connection other than the migration
    engine's (the engine reads the options it honours first): golang-migrate's ``x-``
    options taken out, those that mean nothing here warned about once."""
    clean, options = split_options(dsn)
    warn_unknown(options)
    return clean


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
    if parts.netloc.count("@") > 1:
        # urlsplit reads the userinfo to the last "@", asyncpg to the first: it would try
        # the rest of the password as a host name (a DNS failure, retried for a minute).
        raise ConfigurationError(
            f"{setting} is not a valid PostgreSQL URL: an '@' in its user name or password "
            f"must be percent-encoded (%40), as '/', '#' and '?' must (%2F, %23, %3F): "
            f"{redact(dsn, dsn)}"
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
