"""Reading and applying one large migration: seconds per MB at 2 MB and 20 MB.

Linear when the two per-MB figures match (their ratio near 1.0). Parsing (pglast,
statement split, line numbers, classification) is what used to be quadratic;
applying runs each statement in the migration's one transaction.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from silentpulse_db import run_migrations
from silentpulse_db.migrate.files.statements import analyze

from common import create_database, drop_database, machine, run, server_dsn, write_section

STATEMENT = "INSERT INTO big (id, note) VALUES ({i}, 'a row of a large data migration');\n"


def migration(megabytes: int) -> str:
    lines, size, i = ["CREATE TABLE big (id int, note text);\n"], 0, 0
    while size < megabytes * 1024 * 1024:
        line = STATEMENT.format(i=i)
        lines.append(line)
        size += len(line)
        i += 1
    return "".join(lines)


async def main(admin: str) -> None:
    rows = []
    for megabytes in (2, 20):
        sql = migration(megabytes)
        started = time.perf_counter()
        statements = len(analyze(sql, "big.up.sql").statements)
        parse = time.perf_counter() - started
        with tempfile.TemporaryDirectory() as folder:
            (Path(folder) / "000001_add_big.up.sql").write_text(sql)
            (Path(folder) / "000001_add_big.down.sql").write_text("DROP TABLE big;\n")
            dsn = await create_database(admin)
            try:
                started = time.perf_counter()
                await run_migrations(dsn, source=Path(folder), partitions_ahead=None)
                apply = time.perf_counter() - started
            finally:
                await drop_database(admin, dsn)
        rows.append((megabytes, statements, parse / megabytes, apply / megabytes))
    (_, _, parse2, apply2), (_, _, parse20, apply20) = rows
    table = "\n".join(f"| {mb} MB | {n:,} | {p:.2f} s | {a:.2f} s |" for mb, n, p, a in rows)
    write_section(
        "bigfile",
        f"""## One large migration file

| file | statements | parse and check, per MB | run_migrations, per MB |
|---|---|---|---|
{table}
| **20 MB / 2 MB, per MB** | | **{parse20 / parse2:.2f}** | **{apply20 / apply2:.2f}** |

Near 1.0 means linear (before the fix, parsing alone took 531 s for 20 MB).
{machine()}. Reproduce: `python bench/bench_big_file.py`.
""",
    )


if __name__ == "__main__":
    with server_dsn() as admin_dsn:
        run(main(admin_dsn))
