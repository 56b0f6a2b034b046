"""The ``migrate-credentials`` console script.

    ENCRYPTION_KEY=... DATABASE_URL=... [HKDF_SALT=...] migrate-credentials [--dry-run]
    OLD_ENCRYPTION_KEY=... ENCRYPTION_KEY=... DATABASE_URL=... \
        migrate-credentials --rotate [--dry-run]
    ENCRYPTION_KEY=... DATABASE_URL=... migrate-credentials --verify

Progress goes to stderr, the summary to stdout. Exit codes, the DSN
(--database, DATABASE_URL or POSTGRES_DSN) and the error format are those of
silentpulse_db.console: 0 success (a dry run: every value can be opened), 1
failure (nothing changed; or, after a commit, values left under another key;
or --verify found values the key alone cannot open), 2 usage or settings error
(including a role that row-level security limits). No key, plaintext or DSN
password is ever printed.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Sequence
from typing import TextIO

from .. import console
from ..crypto.keyring import Keyring, parse_flag, parse_key, salt_from
from ..defaults import CONNECT_WAIT, ROTATION_CONNECT_ATTEMPTS, ROTATION_LOCK_TIMEOUT
from ..settings import ConnectRetry
from .rotation import DEFAULT_BATCH, RotationReport, migrate_credentials
from .sealing import Mode
from .verify import VerifyReport, verify_credentials

PROG = "migrate-credentials"
logger = logging.getLogger("silentpulse_db.credentials")


def build_parser() -> argparse.ArgumentParser:
    parser = console.ArgumentParser(
        prog="migrate-credentials",
        description="Move credential envelopes from v1 to v2 (default), or re-encrypt them "
        "from OLD_ENCRYPTION_KEY to ENCRYPTION_KEY (--rotate), in one transaction.",
        epilog="Settings: ENCRYPTION_KEY, OLD_ENCRYPTION_KEY (--rotate), HKDF_SALT, "
        "DATABASE_URL (or POSTGRES_DSN).",
    )
    console.add_connection_options(parser)
    what = parser.add_mutually_exclusive_group()
    what.add_argument("--rotate", action="store_true", help="re-encrypt with the new master key")
    what.add_argument(
        "--verify",
        action="store_true",
        help="open every value with ENCRYPTION_KEY alone and count those that still need "
        "another key (run it, and pass it, before retiring OLD_ENCRYPTION_KEY)",
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="read and re-seal in memory in a READ ONLY transaction, report what would change",
    )
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH, help=argparse.SUPPRESS)
    parser.add_argument(
        "--lock-timeout",
        type=float,
        default=ROTATION_LOCK_TIMEOUT,
        metavar="SECONDS",
        help=(
            "how long to wait for each lock: another run's, and (run as the tables' owner) "
            f"the credential tables' (default {ROTATION_LOCK_TIMEOUT:g})"
        ),
    )
    parser.add_argument(
        "--attempts",
        type=int,
        default=ROTATION_CONNECT_ATTEMPTS,
        metavar="N",
        help=f"connection attempts while the server starts (default {ROTATION_CONNECT_ATTEMPTS})",
    )
    parser.add_argument(
        "--wait",
        type=float,
        default=CONNECT_WAIT,
        metavar="SECONDS",
        help=f"seconds between two connection attempts (default {CONNECT_WAIT:g})",
    )
    return parser


class _Progress:
    """Rows done per table and the rate, at most every second, on stderr."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.last = 0.0

    def __call__(self, table: str, done: int, rate: float) -> None:
        now = time.monotonic()
        if now - self.last >= 1.0:
            self.last = now
            print(f"  {table}: {done:,} rows ({rate:,.0f} rows/s)", file=self.stream, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    args = console.parse(build_parser(), None if argv is None else list(argv))
    if isinstance(args, int):
        return args
    console.configure_logging(verbose=False)
    return console.run(PROG, "", lambda: _migrate(args), debug=args.debug, database=args.database)


async def _migrate(args: argparse.Namespace) -> int:
    environ = os.environ
    dsn = console.database(args.database)
    salt = salt_from(environ.get("HKDF_SALT"))
    keyring = Keyring(parse_key(environ.get("ENCRYPTION_KEY"), "ENCRYPTION_KEY"), salt=salt)
    if environ.get("PER_TENANT_ENCRYPTION"):  # the services' setting: checked, not used
        parse_flag(environ.get("PER_TENANT_ENCRYPTION"), "PER_TENANT_ENCRYPTION")
    old = None
    known: tuple[bytes, ...] = ()  # key ids --verify may name besides ENCRYPTION_KEY's
    if args.rotate:
        old_key = parse_key(environ.get("OLD_ENCRYPTION_KEY"), "OLD_ENCRYPTION_KEY")
        old = Keyring(old_key, salt=salt)
        if old.kid == keyring.kid:
            raise console.UsageError(
                "OLD_ENCRYPTION_KEY and ENCRYPTION_KEY are the same key (same key id): "
                "nothing to rotate"
            )
    elif environ.get("OLD_ENCRYPTION_KEY") and args.verify:
        # Not to open anything: its key id lets the counts name the values still under it.
        old_key = parse_key(environ["OLD_ENCRYPTION_KEY"], "OLD_ENCRYPTION_KEY")
        known = (Keyring(old_key, salt=salt).kid,)
        logger.warning(
            "OLD_ENCRYPTION_KEY is set but not used to open values: --verify checks "
            "ENCRYPTION_KEY alone (and names the values still under OLD_ENCRYPTION_KEY's key id)"
        )
    elif environ.get("OLD_ENCRYPTION_KEY"):
        logger.warning("OLD_ENCRYPTION_KEY is set but not used: only --rotate reads it")
    if args.verify:
        return await _verify(args, dsn, keyring, known)
    mode: Mode = "rotate" if args.rotate else "v2"
    what = (
        f"rotate key {old.kid.hex()} -> {keyring.kid.hex()}"
        if old
        else f"v1 -> v2 under key {keyring.kid.hex()}"
    )
    print(f"{PROG}: {what}{' (dry run)' if args.dry_run else ''}", file=sys.stderr)
    try:
        report = await migrate_credentials(
            dsn,
            keyring=keyring,
            old_keyring=old,
            mode=mode,
            dry_run=args.dry_run,
            batch_size=args.batch_size,
            lock_timeout=args.lock_timeout,
            progress=_Progress(sys.stderr),
            connect=ConnectRetry(args.attempts, args.wait),
        )
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted; nothing was changed", file=sys.stderr)
        return console.EXIT_INTERRUPTED
    print(format_report(report))
    if report.cannot_write:
        print(
            f"{PROG}: note: role {report.role!r} may read but not update "
            f"{', '.join(report.cannot_write)}: run the real job as a role that may "
            f"(GRANT SELECT, UPDATE ON {', '.join(report.cannot_write)} TO <role>)",
            file=sys.stderr,
        )
    if report.left_behind:
        print(left_behind_message(report), file=sys.stderr)
        return console.EXIT_FAILURE
    return console.EXIT_OK


async def _verify(
    args: argparse.Namespace, dsn: str, keyring: Keyring, known: tuple[bytes, ...]
) -> int:
    print(f"{PROG}: verify every value opens with key {keyring.kid.hex()} alone", file=sys.stderr)
    report = await verify_credentials(
        dsn,
        keyring=keyring,
        batch_size=args.batch_size,
        progress=_Progress(sys.stderr),
        known_kids=known,
        lock_timeout=args.lock_timeout,
        connect=ConnectRetry(args.attempts, args.wait),
    )
    print(format_verify(report))
    return console.EXIT_OK if report.passed else console.EXIT_FAILURE


def left_behind_message(report: RotationReport) -> str:
    where = ", ".join(f"{name}: {count:,}" for name, count in report.left_behind.items())
    total = sum(report.left_behind.values())
    return (
        f"{PROG}: after the commit, {total:,} value(s) are still not under key "
        f"{report.target_kid} ({where}). Services still running with the old key wrote "
        f"them after the job read their table. Stop those services (or give them the new "
        f"ENCRYPTION_KEY) and run the same command again; keep OLD_ENCRYPTION_KEY until "
        f"`{PROG} --verify` passes."
    )


def format_verify(report: VerifyReport) -> str:
    rows: list[tuple[str, ...]] = [
        ("column", "open with key", "of which v1", "need another key", "plaintext", "cannot open")
    ]
    for c in report.columns:
        counts = (c.opened, c.v1, c.other_key, c.plaintext, c.problems)
        rows.append((c.name, *(f"{n:,}" for n in counts)))
    lines = _table(rows)
    lines += [f"  {p}" for p in report.problems[:100]]
    if report.passed:
        lines.append(
            f"verified: every value opens with key {report.kid} alone "
            f"({sum(c.opened for c in report.columns):,} values in {report.seconds:.2f}s); "
            f"OLD_ENCRYPTION_KEY can be retired"
        )
    else:
        named = [f"key id {kid}: {n:,}" for kid, n in report.other_kids.most_common()]
        if report.unknown_key:
            # Never the bytes: such a "key id" may be a plaintext's own (docs/encryption.md).
            named.append(
                f"an unknown key id: {report.unknown_key:,} (a lost key, or not an envelope; "
                f"docs/encryption.md finds them)"
            )
        kids = "; ".join(named)
        opened = sum(c.opened for c in report.columns)
        advice = (
            "Keep OLD_ENCRYPTION_KEY; run the rotation (or v1 -> v2) again"
            if opened
            else f"No value opens with key {report.kid}: is ENCRYPTION_KEY the key the values "
            f"were rotated to? Keep every key until this passes"
        )
        lines.append(
            f"NOT verified: {report.need_other_key:,} value(s) need another key or are "
            f"plaintext{f' [{kids}]' if kids else ''}, {len(report.problems):,} cannot "
            f"be opened. {advice}"
        )
    return "\n".join(lines)


def _table(rows: Sequence[tuple[str, ...]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]


def format_report(report: RotationReport) -> str:
    verb = "would change" if report.dry_run else "changed"
    rows = [("column", verb, "already current", "empty", "cannot open")]
    for t in report.tables:
        rows.append((t.name, str(t.rewritten), str(t.current), str(t.empty), str(t.problems)))
    lines = _table(rows)
    rate = report.rows / report.seconds if report.seconds else 0.0
    if report.dry_run:
        how = (
            "the tables held while FORCE ROW LEVEL SECURITY was lifted, rolled back"
            if report.held_tables
            else "READ ONLY"
        )
        outcome = (
            f"dry run: nothing changed, no row locked ({report.rows:,} rows read in "
            f"{report.seconds:.2f}s, {how}, as role {report.role})"
        )
    elif report.rewritten == 0:
        outcome = f"nothing to do: every value is already current ({report.rows:,} rows checked)"
    else:
        outcome = (
            f"committed: {report.rewritten:,} value(s) rewritten in {report.seconds:.2f}s "
            f"({rate:,.0f} rows/s)"
        )
    return "\n".join([*lines, outcome])


if __name__ == "__main__":
    raise SystemExit(main())
