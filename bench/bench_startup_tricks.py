"""What each start-up trick of the package buys, in milliseconds of a process's start.

A trick (an import deferred to first use, a record type chosen for its creation
cost, argparse sized by hand) stays only where it pays (docs/architecture.md).
Each row measures what the trick avoids, in the context where it applies:

- an import deferred: ``python -X importtime`` of that import after what the
  process has already loaded there (the CLI and the engine for ``up``), the sum of
  its top-level entries, median of ROUNDS processes;
- the rest: the cost it avoids, timed in this process (best of several repeats).

No database is involved: these are the parts of the CLI and no-op benchmarks'
figures that the package's own code decides.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import statistics
import subprocess
import sys
import timeit
from collections.abc import Callable
from typing import NamedTuple

from common import machine, write_section

ROUNDS = 9
# What `silentpulse-db up` imports: the CLI's words and the module that runs up.
CLI_UP = "silentpulse_db.migrate.cli, silentpulse_db.migrate.cli.migrating"


def import_cost(before: str, module: str) -> float:
    """Milliseconds of ``import module`` in a process that has imported ``before``."""
    code = f"import {before}\nimport sys\nsys.stderr.write('MARK\\n')\nimport {module}"
    samples = []
    for _ in range(ROUNDS):
        done = subprocess.run(
            [sys.executable, "-X", "importtime", "-c", code],
            capture_output=True,
            text=True,
            check=True,
        )
        after = done.stderr.split("MARK\n", 1)[1].splitlines()
        total = 0
        for line in after:
            if not line.startswith("import time:") or "cumulative" in line:
                continue
            _, cumulative, name = line.split("|")
            if len(name) - len(name.lstrip()) == 1:  # a top-level entry, not a nested one
                total += int(cumulative)
        samples.append(total / 1000)
    return statistics.median(samples)


def best_ms(statement: Callable[[], object], number: int = 20) -> float:
    """Best per-call milliseconds of ``statement`` over several repeats."""
    return min(timeit.repeat(statement, number=number, repeat=7)) / number * 1000


def record_costs() -> tuple[float, float, float]:
    """Milliseconds to create one 3-field record class: frozen dataclass, NamedTuple,
    plain class with __slots__ (what every import of a module defining one pays)."""

    def frozen() -> None:
        @dataclasses.dataclass(frozen=True)
        class R:
            a: int
            b: str
            c: bool = False

    def named() -> None:
        class R(NamedTuple):
            a: int
            b: str
            c: bool = False

    def slotted() -> None:
        class R:
            __slots__ = ("a", "b", "c")

            def __init__(self, a: int, b: str, c: bool = False) -> None:
                self.a, self.b, self.c = a, b, c

    return best_ms(frozen, 200), best_ms(named, 200), best_ms(slotted, 200)


def parser_costs() -> tuple[float, float, float, float]:
    """Milliseconds: the CLI's full parser, one command's parser and the router that
    names it, the full parser with argparse's own formatter, and one get_terminal_size."""
    import shutil

    from silentpulse_db import console
    from silentpulse_db.migrate.cli import parser as cli

    def one_command() -> None:
        cli.command_named(["up"])
        cli.build_parser("up")

    full = best_ms(cli.build_parser)
    one = best_ms(one_command)
    own = console.HelpFormatter
    try:
        console.HelpFormatter = argparse.HelpFormatter  # type: ignore[misc,assignment]
        default = best_ms(cli.build_parser)
    finally:
        console.HelpFormatter = own  # type: ignore[misc]
    size = best_ms(shutil.get_terminal_size, 200)
    return full, one, default, size


def regex_cost() -> float:
    """Milliseconds to compile postgres/dsn.py's redaction patterns (re's cache purged)."""
    from silentpulse_db.postgres import dsn

    compiled = (
        dsn._URL_USERINFO,
        dsn._URL_USERINFO_SPACES,
        dsn._KW_PASSWORD,
        dsn._QUERY_PASSWORD,
        dsn._URL_PASSWORD,
    )
    patterns = [(p.pattern, p.flags) for p in compiled]

    def compile_all() -> None:
        re.purge()
        for pattern, flags in patterns:
            re.compile(pattern, flags)

    return best_ms(compile_all, 50)


def main() -> None:
    deferred = [
        # (what is deferred, where, context, module)
        (
            "the engine (asyncpg)",
            "`__init__.py`",
            "silentpulse_db",
            "silentpulse_db.migrate.commands",
        ),
        ("crypto, credentials", "`__init__.py`", CLI_UP, "silentpulse_db.credentials"),
        (
            "the proofs' and jobs' results",
            "`results/__init__.py`",
            CLI_UP,
            "silentpulse_db.results.proofs, silentpulse_db.results.schema_jobs",
        ),
        (
            "start-up's partition hook (the schema jobs went with it)",
            "`commands.py`",
            CLI_UP,
            "silentpulse_db.schema.partitions",
        ),
        (
            "the runner (tenacity, pglast)",
            "`engine.py`",
            CLI_UP,
            "silentpulse_db.migrate.run.applier",
        ),
        ("pglast alone", "`files/statements.py`", CLI_UP, "pglast.parser"),
        ("tenacity (connect's retry: a plain loop)", "`postgres/connect.py`", CLI_UP, "tenacity"),
        ("the dry run", "`cli/planning.py`", CLI_UP, "silentpulse_db.migrate.dryrun.preview"),
        (
            "status's records and its reading",
            "`commands.py` (status)",
            CLI_UP,
            "silentpulse_db.migrate.status_reading",
        ),
        (
            "prerequisites (and the role and database helpers)",
            "`engine.py`, `commands.py`",
            CLI_UP,
            "silentpulse_db.migrate.prerequisites",
        ),
        (
            "status's audits",
            "`status_reading.py`",
            CLI_UP,
            "silentpulse_db.postgres.indexes, silentpulse_db.schema.partitions, "
            "silentpulse_db.schema.tenancy",
        ),
        (
            "the proofs",
            "`commands.py` (check, baseline)",
            CLI_UP,
            "silentpulse_db.migrate.proofs.check",
        ),
        ("importlib_resources", "`files/source.py`", CLI_UP, "importlib_resources"),
        # Tricks that went: what they saved, measured where they applied (before what
        # now imports them at the top).
        (
            "retention (went)",
            "`schema/jobs.py`",
            f"{CLI_UP}, silentpulse_db.schema.partitions",
            "silentpulse_db.schema.retention",
        ),
        (
            "the verbs and the driver, for `create` (its own module)",
            "`cli/creating.py`",
            "silentpulse_db.migrate.cli, silentpulse_db.migrate.cli.creating",
            "silentpulse_db.migrate.commands",
        ),
        ("zlib, not binascii, for crc32 (went)", "`session.py`", "asyncpg", "zlib"),
        ("shutil (argparse's default width)", "`console.py`", CLI_UP, "shutil"),
    ]
    rows = []
    for what, where, before, module in deferred:
        cost = import_cost(before, module)
        rows.append(f"| {what} | {where} | import | {cost:.1f} |")
    frozen, named, slotted = record_costs()
    full, one, default, size = parser_costs()
    compiled = regex_cost()
    rows += [
        f"| a frozen dataclass / a NamedTuple / a slotted class, each | records | class creation | {frozen:.3f} / {named:.3f} / {slotted:.3f} |",
        f"| the full parser / one command's (and its router) | `cli/parser.py` | build | {full:.2f} / {one:.2f} |",
        f"| the full parser with argparse's own formatter | `console.py` | build | {default:.2f} (one `get_terminal_size`: {size:.3f}) |",
        f"| the DSN redaction patterns, compiled at first use (went) | `postgres/dsn.py` | compile | {compiled:.3f} |",
    ]
    table = "\n".join(rows)
    write_section(
        "startup-tricks",
        f"""## What each start-up trick buys

What each trick avoids, in milliseconds, in the process it applies to (an import
after the CLI and the engine are loaded, as in `silentpulse-db up`); imports: the
median of {ROUNDS} `python -X importtime` processes; the rest timed in-process, best of 7;
{machine()}. Reproduce: `.venv/bin/python bench/bench_startup_tricks.py`.
The verdicts (which stayed, which went) are under "Issue 19" at the top of this page.

| trick: deferred or avoided | where | kind | ms |
|---|---|---|---|
{table}
""",
    )


if __name__ == "__main__":
    main()
