"""`python -c "import silentpulse_db"` wall time vs `python -c "pass"`."""

from __future__ import annotations

import statistics
import subprocess
import sys
import time

from common import machine, write_section

ROUNDS = 30


def wall(code: str) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True)
    return time.perf_counter() - started


def main() -> None:
    samples: dict[str, list[float]] = {"pass": [], "import": [], "import+run": []}
    codes = {
        "pass": "pass",
        "import": "import silentpulse_db",
        "import+run": "from silentpulse_db import run_migrations",
    }
    for _ in range(ROUNDS):
        for name, code in codes.items():
            samples[name].append(wall(code))
    med = {k: statistics.median(v) for k, v in samples.items()}
    write_section(
        "import",
        f"""## Import time

{ROUNDS} alternating runs of each command, wall time medians; {machine()}.
Reproduce: `.venv/bin/python bench/bench_import.py`.

| | median | vs `pass` |
|---|---|---|
| `python -c "pass"` | {med["pass"] * 1000:.1f} ms | 1.00 |
| `python -c "import silentpulse_db"` | {med["import"] * 1000:.1f} ms | {med["import"] / med["pass"]:.2f} |
| `python -c "from silentpulse_db import run_migrations"` | {med["import+run"] * 1000:.1f} ms | {med["import+run"] / med["pass"]:.2f} |

`import silentpulse_db` loads only the error and result types; asyncpg,
tenacity and the engine load when `run_migrations` (or another operation) is
first used, so the crypto-only users do not pay for them.
""",
    )


if __name__ == "__main__":
    main()
