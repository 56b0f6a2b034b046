"""A fault campaign (issue 28): operations interrupted by one fault each at a random
point, recovered exactly as the docs say, then checked.

Each trial takes a fresh database copied from a template (prerequisites, migrations,
and rows enough in the big tables that their concurrent index builds take a while),
starts an operation as the operator or the orchestrator would (a process of its own),
injects one fault at a random moment, recovers as docs/migrations.md and
docs/encryption.md say (run the same command again; restart the failed replicas; a
`force` only if a message says so, and that counts as a violation), and checks:

- force: did any message send the operator to `force`;
- schema: the version table says the version the command was going to, clean; no
  INVALID index; no advisory lock left; `silentpulse-db drift` finds the schema the
  files build at that version (and for the partition job: the default partitions
  empty; for rotation: `migrate-credentials --verify` with the new key alone);
- unfinished: the recovery did not finish within BOUND seconds;
- rows: a seeded table's row count changed.

Faults: SIGKILL of the client (kill), pg_terminate_backend of every backend of the
trial's database (terminate), `pg_ctl restart -m immediate` (restart), SIGKILL of the
replica holding the migration lock (holder, replicas only), and a transaction that
holds ROW EXCLUSIVE on a table the operation touches for 1-10 s (blocker).

Usage: python bench/fault_campaign.py [--seed N] [--trials N | --minutes M] [--rows N]
[--clone wal_log|file_copy] [--faults kill,restart,...] [--no-write]. `--clone`: how each
trial's database is copied from its template; PostgreSQL's default, wal_log, leaves a
copy's sequences able to go back after a crash (docs/benchmarks.md says what that does
to the version history). The same seed draws the same operations, faults and delays (the delays
are fractions of each operation's own duration, measured once at the start).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg

from silentpulse_db import run_migrations
from silentpulse_db.crypto import Keyring
from silentpulse_db.migrate import apply_prerequisites, load_source
from silentpulse_db.testing.server import PostgresServer

from common import ROOT, machine, write_section

LATEST = load_source().latest or 0
BOUND = 120.0  # seconds a recovery may take
RERUNS = 3  # "run again" at most this many times
OLD_KEY, NEW_KEY = "a1c3" * 16, "b2d4" * 16
BIN = Path(sys.executable).parent
WORKER_TABLE = "worker_schema_migrations"
FAULTS = ("kill", "terminate", "restart", "holder", "blocker")
OPERATIONS = (
    "up",
    "goto up",
    "goto down",
    "run_migrations",
    "replicas",
    "partitions",
    "rotate",
    "service set",
)
CHECKS = ("force", "schema", "unfinished", "rows")
FORCE_ADVICE = re.compile(r"`force -?\d|silentpulse-db force|\bforce \d")
COUNTED = (
    "tenants",
    "users",
    "assets",
    "asset_groups",
    "integration_points",
    "notification_channels",
    "report_definitions",
    "exclusion_windows",
    "flows",
    "flow_pulses",
    "alerts",
    "ai_configs",
    "audit_logs",
    "asset_observations",
)


# --- the child that stands for a service (run_migrations at start-up) ---------------


def child(argv: Sequence[str]) -> None:
    """`fault_campaign.py --child SOURCE|- TABLE|-`: run_migrations as a service does."""
    source = None if argv[0] == "-" else Path(argv[0])
    table = None if argv[1] == "-" else argv[1]
    asyncio.run(
        run_migrations(
            os.environ["DATABASE_URL"], source=source, table=table, migration_lock_timeout=120
        )
    )


# --- the database: templates and trials --------------------------------------------


async def seed(dsn: str, rows: int, tenants: int = 20) -> None:
    """Tenants with one row in every table, real envelopes under OLD_KEY, then ``rows``
    more in each table whose unique index 000006-000015 builds concurrently, and alerts
    in a month that only the default partition holds (the partition job's work)."""
    sys.path.insert(0, str(ROOT / "tests"))
    from schema.seed import seed_tenant  # the schema tests' one row a table

    keyring = Keyring(bytes.fromhex(OLD_KEY), per_tenant=True)
    secret = os.urandom(64).hex().encode()
    conn = await asyncpg.connect(dsn)
    try:
        ids = [await seed_tenant(conn, f"t{i:03d}") for i in range(tenants)]
        for one in ids:
            t = one["tenants"]
            for table, column in (("integration_points", "connection_config"),):
                row = one[table]
                sealed = keyring.encrypt(
                    secret, tenant_id=t, table=table, column=column, row_id=row
                )
                await conn.execute(f"UPDATE {table} SET {column} = $1 WHERE id = $2", sealed, row)
            sealed = keyring.encrypt(
                secret,
                tenant_id=t,
                table="notification_channels",
                column="config",
                row_id=one["notification_channels"],
            )
            await conn.execute(
                "UPDATE notification_channels SET config = $1 WHERE id = $2",
                sealed,
                one["notification_channels"],
            )
            sealed = keyring.encrypt(
                secret, tenant_id=t, table="ai_configs", column="api_key_enc", row_id=t
            )
            await conn.execute(
                "UPDATE ai_configs SET api_key_enc = $1, encryption_version = 2 "
                "WHERE tenant_id = $2",
                sealed,
                t,
            )
        each = max(1, rows // tenants)
        for sql in AMPLIFY:
            await conn.execute(sql, each)
        for table, column, extra in (
            ("integration_points", "connection_config", ("kafka",)),
            ("notification_channels", "config", ("webhook",)),
        ):
            records = []
            for one in ids:
                t = one["tenants"]
                for i in range(each // 4):  # sealing is the slow part: a quarter
                    row = uuid.uuid4()
                    sealed = keyring.encrypt(
                        secret, tenant_id=t, table=table, column=column, row_id=row
                    )
                    records.append((row, t, f"x{i}", *extra, sealed))
            await conn.copy_records_to_table(
                table, records=records, columns=["id", "tenant_id", "name", "type", column]
            )
        await conn.execute("VACUUM ANALYZE")
    finally:
        await conn.close()


AMPLIFY = (
    "INSERT INTO users (id, tenant_id, email, password_hash, role) SELECT gen_random_uuid(), "
    "t.id, 'u' || g || '@' || t.handle || '.example', 'x', 'admin' "
    "FROM tenants t, generate_series(1, $1) g",
    "INSERT INTO assets (id, tenant_id, external_id, hostname, vendor) SELECT "
    "gen_random_uuid(), t.id, 'cmdb-' || g, 'host-' || g, 'acme' "
    "FROM tenants t, generate_series(1, $1) g",
    "INSERT INTO asset_groups (id, tenant_id, name, filters) SELECT gen_random_uuid(), t.id, "
    "'g' || g, '{}' FROM tenants t, generate_series(1, $1 / 2) g",
    "INSERT INTO report_definitions (id, tenant_id, name, type, period, format) SELECT "
    "gen_random_uuid(), t.id, 'r' || g, 'asset_coverage', 'last_7d', 'pdf' "
    "FROM tenants t, generate_series(1, $1 / 2) g",
    "INSERT INTO exclusion_windows (id, tenant_id, name, start_time, end_time, created_by) "
    "SELECT gen_random_uuid(), e.tenant_id, 'w' || g, e.start_time, e.end_time, e.created_by "
    "FROM exclusion_windows e, generate_series(1, $1 / 2) g",
    # Six months ahead: beyond the partitions made at start-up, so the default
    # partition holds them until the partition job moves them.
    "INSERT INTO alerts (id, tenant_id, flow_pulse_id, asset_id, alert_type, severity, "
    "status, started_at) SELECT gen_random_uuid(), a.tenant_id, a.flow_pulse_id, a.asset_id, "
    "a.alert_type, a.severity, a.status, now() + interval '200 days' + g * interval '1 s' "
    "FROM (SELECT DISTINCT ON (tenant_id) * FROM alerts) a, generate_series(1, $1 / 10) g",
)


async def counts(dsn: str) -> dict[str, int]:
    conn = await asyncpg.connect(dsn)
    try:
        return {t: int(await conn.fetchval(f"SELECT count(*) FROM {t}")) for t in COUNTED}
    finally:
        await conn.close()


async def admin(dsn: str, sql: str, *args: object) -> object:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetchval(sql, *args)
    finally:
        await conn.close()


# --- running the commands -------------------------------------------------------------


@dataclass
class Run:
    proc: subprocess.Popen[str]
    started: float

    def finish(self, timeout: float) -> tuple[int | None, str]:
        """The exit status (None: still running after ``timeout``, then killed) and stderr."""
        try:
            out, err = self.proc.communicate(timeout=max(timeout, 0.01))
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, err = self.proc.communicate()
            return None, (err or "") + (out or "")
        return self.proc.returncode, (err or "") + (out or "")


def start(argv: list[str], dsn: str, extra_env: dict[str, str] | None = None) -> Run:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "POSTGRES_DSN")}
    env.update(DATABASE_URL=dsn, **(extra_env or {}))
    proc = subprocess.Popen(
        argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    return Run(proc, time.monotonic())


@dataclass
class Operation:
    name: str
    template: str  # "v5" or "latest"
    argv: list[str]
    target: int
    table: str = "schema_migrations"
    env: dict[str, str] = field(default_factory=dict)
    processes: int = 1
    path: str | None = None
    touches: tuple[str, ...] = ("users", "assets", "integration_points")


def operation(name: str, rng: random.Random, worker_dir: Path) -> Operation:
    cli = [str(BIN / "silentpulse-db")]
    service = [sys.executable, str(Path(__file__).resolve()), "--child"]
    if name == "up":
        return Operation(name, "v5", [*cli, "up"], LATEST)
    if name == "goto up":
        v = rng.randint(6, LATEST - 1)
        return Operation(name, "v5", [*cli, "goto", str(v)], v)
    if name == "goto down":
        v = rng.randint(5, LATEST - 1)
        return Operation(name, "latest", [*cli, "goto", str(v)], v)
    if name == "run_migrations":
        return Operation(name, "v5", [*service, "-", "-"], LATEST)
    if name == "replicas":
        return Operation(name, "v5", [*service, "-", "-"], LATEST, processes=3)
    if name == "partitions":
        return Operation(name, "latest", [*cli, "partitions"], LATEST, touches=("alerts",))
    if name == "rotate":
        keys = {"OLD_ENCRYPTION_KEY": OLD_KEY, "ENCRYPTION_KEY": NEW_KEY}
        return Operation(
            name,
            "latest",
            [str(BIN / "migrate-credentials"), "--rotate"],
            LATEST,
            env=keys,
            touches=("integration_points", "notification_channels", "ai_configs"),
        )
    assert name == "service set"
    argv = [*cli, "--path", str(worker_dir), "--table", WORKER_TABLE, "up"]
    return Operation(name, "latest", argv, 3, table=WORKER_TABLE, path=str(worker_dir))


def share(op: Operation) -> float:
    """The part of the whole way (5 to LATEST) that a goto goes: its delays are drawn
    over that part of the calibrated duration."""
    if op.name == "goto up":
        return (op.target - 5) / (LATEST - 5)
    if op.name == "goto down":
        return (LATEST - op.target) / (LATEST - 5)
    return 1.0


def write_worker_set(directory: Path) -> Path:
    """A service's own set: a table of its own filled from users, a concurrent unique
    index on it (a while to build), a column."""
    files = {
        1: (
            "create_worker_jobs",
            f"-- silentpulse: requires schema_migrations >= {LATEST}\n"
            "CREATE TABLE worker_jobs (id uuid PRIMARY KEY, tenant_id uuid NOT NULL);\n"
            "INSERT INTO worker_jobs SELECT id, tenant_id FROM users;\n",
            "DROP TABLE worker_jobs;\n",
        ),
        2: (
            "create_index_worker_jobs_tenant_id_id",
            "CREATE UNIQUE INDEX CONCURRENTLY worker_jobs_tenant_id_id_key "
            "ON worker_jobs (tenant_id, id);\n",
            "DROP INDEX CONCURRENTLY IF EXISTS worker_jobs_tenant_id_id_key;\n",
        ),
        3: (
            "add_worker_jobs_state",
            "ALTER TABLE worker_jobs ADD COLUMN state text;\n",
            "ALTER TABLE worker_jobs DROP COLUMN state;\n",
        ),
    }
    directory.mkdir(parents=True, exist_ok=True)
    for v, (name, up, down) in files.items():
        (directory / f"{v:06d}_{name}.up.sql").write_text(up)
        (directory / f"{v:06d}_{name}.down.sql").write_text(down)
    return directory


# --- one trial ------------------------------------------------------------------------


@dataclass
class Trial:
    number: int
    operation: str
    fault: str
    delay: float
    violations: set[str] = field(default_factory=set)
    notes: list[str] = field(default_factory=list)
    injected: bool = False


class Campaign:
    def __init__(
        self, server: PostgresServer, rng: random.Random, worker_dir: Path, clone: str
    ) -> None:
        self.server = server
        self.clone = clone
        self.rng = rng
        self.worker_dir = worker_dir
        self.durations: dict[str, float] = {}
        self.before: dict[str, dict[str, int]] = {}

    def dsn(self, db: str) -> str:
        return self.server.admin_dsn(db)

    def restart(self) -> None:
        log = str(self.server.datadir.parent / "server.log")
        self.server._pg_ctl("restart", "-m", "immediate", "-w", "-t", "60", "-l", log)

    async def templates(self, rows: int) -> None:
        for db in ("fc_latest", "fc_v5"):
            await admin(self.server.dsn, f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
        await admin(self.server.dsn, "CREATE DATABASE fc_latest")
        latest = self.dsn("fc_latest")
        await apply_prerequisites(latest)
        await run_migrations(latest)
        await seed(latest, rows)
        await admin(self.server.dsn, "CREATE DATABASE fc_v5 TEMPLATE fc_latest")
        done = start([str(BIN / "silentpulse-db"), "goto", "5"], self.dsn("fc_v5"))
        rc, err = done.finish(600)
        if rc != 0:
            raise SystemExit(f"goto 5 on the template failed: {err}")
        for name in ("latest", "v5"):
            self.before[name] = await counts(self.dsn(f"fc_{name}"))

    async def fresh(self, template: str) -> str:
        name = f"fc_trial_{uuid.uuid4().hex[:8]}"
        await admin(
            self.server.dsn, f"CREATE DATABASE {name} TEMPLATE fc_{template} STRATEGY {self.clone}"
        )
        return name

    async def calibrate(self) -> None:
        """Each operation's own duration, once, without a fault: the range of delays."""
        for name in OPERATIONS:
            op = operation(name, random.Random(0), self.worker_dir)
            if name.startswith("goto"):  # the whole way, which share() divides
                op.argv[-1] = str(LATEST if name == "goto up" else 5)
            db = await self.fresh(op.template)
            began = time.monotonic()
            runs = [start(op.argv, self.dsn(db), op.env) for _ in range(op.processes)]
            for run in runs:
                rc, err = run.finish(600)
                if rc != 0:
                    raise SystemExit(f"{name} without a fault failed: {err}")
            self.durations[name] = time.monotonic() - began
            await admin(self.server.dsn, f"DROP DATABASE {db} WITH (FORCE)")
            print(f"calibrate {name}: {self.durations[name]:.2f} s", flush=True)

    async def sanity(self) -> None:
        """The checks can fail: a stray index (drift), a dirty flag, a lost row."""
        op = operation("up", random.Random(0), self.worker_dir)
        op.template = "latest"
        for breakage, expected in (
            ("CREATE INDEX fc_stray ON users (email)", "schema"),
            ("UPDATE schema_migrations SET dirty = true", "schema"),
            ("DELETE FROM users WHERE email LIKE 'u1@t000.%'", "rows"),
        ):
            db = await self.fresh("latest")
            await admin(self.dsn(db), breakage)
            trial = Trial(0, "up", "none", 0.0)
            await self.check(trial, op, db, self.dsn(db))
            await admin(self.server.dsn, f"DROP DATABASE {db} WITH (FORCE)")
            if expected not in trial.violations:
                raise SystemExit(f"the checks missed {breakage!r}: {trial}")
        if not FORCE_ADVICE.search("... `force 2` if none of version 3 took effect"):
            raise SystemExit("FORCE_ADVICE misses the documented message")

    async def trial(self, number: int, name: str, fault: str) -> Trial:
        op = operation(name, self.rng, self.worker_dir)
        delay = self.rng.uniform(0.0, 1.1 * self.durations[name] * share(op))
        hold = self.rng.uniform(1.0, 10.0)
        blocked = self.rng.choice(op.touches)
        pick = self.rng.randrange(op.processes)
        trial = Trial(number, name, fault, delay)
        db = await self.fresh(op.template)
        dsn = self.dsn(db)
        try:
            runs = [start(op.argv, dsn, op.env) for _ in range(op.processes)]
            await self.inject(trial, op, runs, dsn, db, hold, blocked, pick)
            results = [run.finish(BOUND) for run in runs]
            await self.recover(trial, op, dsn, results)
            await self.check(trial, op, db, dsn)
        finally:
            await admin(self.server.dsn, f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
        return trial

    async def inject(
        self,
        trial: Trial,
        op: Operation,
        runs: list[Run],
        dsn: str,
        db: str,
        hold: float,
        blocked: str,
        pick: int,
    ) -> None:
        deadline = time.monotonic() + trial.delay
        while time.monotonic() < deadline and any(r.proc.poll() is None for r in runs):
            await asyncio.sleep(0.01)
        if trial.fault == "blocker":
            conn = await asyncpg.connect(dsn)
            await conn.execute(f"BEGIN; LOCK TABLE {blocked} IN ROW EXCLUSIVE MODE")
            trial.injected = any(r.proc.poll() is None for r in runs)
            await asyncio.sleep(hold)
            await conn.close()
            return
        if all(r.proc.poll() is not None for r in runs):
            return  # finished before the fault: evaluated all the same
        trial.injected = True
        if trial.fault == "kill":
            runs[pick].proc.kill()
        elif trial.fault == "holder":
            victim = await lock_holder(dsn, db, [r.proc.pid for r in runs])
            if victim is None:  # nobody holds it at this moment: one of them, at random
                runs[pick].proc.kill()
            else:
                os.kill(victim, signal.SIGKILL)
        elif trial.fault == "terminate":
            await admin(
                self.server.dsn,
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = $1 AND pid <> pg_backend_pid()",
                db,
            )
        else:
            await asyncio.to_thread(self.restart)

    async def recover(
        self, trial: Trial, op: Operation, dsn: str, results: list[tuple[int | None, str]]
    ) -> None:
        """As the docs say: run the same command again (the orchestrator restarts each
        failed replica), while it fails with a message that says to run again."""
        for attempt in range(RERUNS + 1):
            failed = [(rc, err) for rc, err in results if rc != 0]
            if not failed:
                return
            for rc, err in failed:
                if FORCE_ADVICE.search(err):
                    trial.violations.add("force")
                    trial.notes.append(last_line(err))
                    return
                if rc is None:
                    trial.violations.add("unfinished")
                    trial.notes.append(f"did not finish in {BOUND:.0f} s: {last_line(err)}")
                    return
            if attempt == RERUNS:
                trial.violations.add("unfinished")
                trial.notes.append(
                    f"still failing after {RERUNS} reruns: {last_line(failed[0][1])}"
                )
                return
            if attempt:
                trial.notes.append(f"rerun {attempt} failed: {last_line(failed[0][1])}")
            runs = [start(op.argv, dsn, op.env) for _ in failed]
            results = [run.finish(BOUND) for run in runs]

    async def check(self, trial: Trial, op: Operation, db: str, dsn: str) -> None:
        if trial.violations & {"force", "unfinished"}:
            return  # the recovery stopped: what follows would report the same trial again
        conn = await asyncpg.connect(dsn)
        try:
            row = await conn.fetchrow(f"SELECT version, dirty FROM {op.table}")
            invalid = await conn.fetch(
                "SELECT indexrelid::regclass::text AS name FROM pg_index WHERE NOT indisvalid"
            )
            locks = await locks_left(conn, db)
            defaults = 0
            if op.name == "partitions":
                defaults = await conn.fetchval(
                    "SELECT (SELECT count(*) FROM alerts_default) + "
                    "(SELECT count(*) FROM audit_logs_default) + "
                    "(SELECT count(*) FROM asset_observations_default)"
                )
        finally:
            await conn.close()
        problems = []
        if row is None or (row["version"], row["dirty"]) != (op.target, False):
            problems.append(f"{op.table} says {row and tuple(row)}, expected ({op.target}, False)")
        if invalid:
            problems.append(f"INVALID: {[r['name'] for r in invalid]}")
        if locks:
            problems.append(f"{locks} advisory lock(s) left")
        if defaults:
            problems.append(f"{defaults} row(s) left in default partitions")
        problems += self.drift(op, dsn)
        if op.name == "rotate":
            verify = start(
                [str(BIN / "migrate-credentials"), "--verify"], dsn, {"ENCRYPTION_KEY": NEW_KEY}
            )
            rc, err = verify.finish(BOUND)
            if rc != 0:
                problems.append(f"--verify with the new key: {last_line(err)}")
        if problems:
            trial.violations.add("schema")
            trial.notes += problems
        after = await counts(dsn)
        lost = {
            t: (self.before[op.template][t], n)
            for t, n in after.items()
            if n != self.before[op.template][t]
        }
        if lost:
            trial.violations.add("rows")
            trial.notes.append(f"row counts (before, after): {lost}")

    def drift(self, op: Operation, dsn: str) -> list[str]:
        argv = [str(BIN / "silentpulse-db")]
        if op.path:
            argv += ["--path", op.path, "--table", op.table]
        rc, err = start([*argv, "drift"], dsn).finish(BOUND)
        return [] if rc == 0 else [f"drift exit {rc}: {last_line(err)}"]


async def lock_holder(dsn: str, db: str, pids: list[int]) -> int | None:
    """The process among ``pids`` whose backend holds an advisory lock in ``db``."""
    port = await admin(
        dsn,
        "SELECT a.client_port FROM pg_locks l JOIN pg_stat_activity a USING (pid) "
        "WHERE l.locktype = 'advisory' AND l.granted AND a.datname = $1 LIMIT 1",
        db,
    )
    if not isinstance(port, int):
        return None
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[1].split(":")[1], 16) == port:
            inodes.add(f"socket:[{fields[9]}]")
    for pid in pids:
        try:
            links = {os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")}
        except OSError:
            continue
        if links & inodes:
            return pid
    return None


async def locks_left(conn: asyncpg.Connection, db: str) -> int:
    """Advisory locks still held in ``db`` once its backends have gone (a killed
    client's backend may take a moment to notice)."""
    for _ in range(100):
        n = int(
            await conn.fetchval(
                "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a USING (pid) "
                "WHERE l.locktype = 'advisory' AND a.datname = $1 AND a.pid <> pg_backend_pid()",
                db,
            )
        )
        if not n:
            return 0
        await asyncio.sleep(0.1)
    return n


def last_line(text: str) -> str:
    """The error's line (a traceback's or the CLI's), else the last line."""
    lines = [line for line in text.strip().splitlines() if line.strip()]
    errors = [line for line in lines if "error" in line.lower()]
    return (errors or lines or ["(no output)"])[-1][:400]


# --- the campaign ---------------------------------------------------------------------


def draw(rng: random.Random) -> tuple[str, str]:
    """An operation and a fault, weighted about as the issue's campaign was."""
    name = rng.choice(OPERATIONS)
    faults = ["kill"] * 4 + ["terminate"] * 2 + ["restart", "blocker"]
    if name == "replicas":
        faults += ["holder"] * 4
    return name, rng.choice(faults)


def table(trials: list[Trial]) -> str:
    by: dict[tuple[str, str], list[Trial]] = collections.defaultdict(list)
    for t in trials:
        by[(t.fault, t.operation)].append(t)
    head = "| fault | operation | trials | fault landed | " + " | ".join(CHECKS) + " |"
    lines = [head, "|" + "---|" * (4 + len(CHECKS))]
    for fault in FAULTS:
        for name in OPERATIONS:
            group = by.get((fault, name))
            if not group:
                continue
            cells = [str(sum(c in t.violations for t in group)) for c in CHECKS]
            landed = sum(t.injected for t in group)
            lines.append(
                f"| {fault} | {name} | {len(group)} | {landed} | " + " | ".join(cells) + " |"
            )
    cells = [f"**{sum(c in t.violations for t in trials)}**" for c in CHECKS]
    landed = sum(t.injected for t in trials)
    lines.append(f"| all | all | {len(trials)} | {landed} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


async def main(args: argparse.Namespace) -> None:
    rng = random.Random(args.seed)
    trials: list[Trial] = []
    with PostgresServer() as server, tempfile.TemporaryDirectory() as tmp:
        worker_dir = write_worker_set(Path(tmp) / "worker")
        os.chmod(tmp, 0o755)
        campaign = Campaign(server, rng, worker_dir, args.clone)
        began = time.monotonic()
        await campaign.templates(args.rows)
        await campaign.sanity()
        await campaign.calibrate()
        setup = time.monotonic() - began
        print(f"templates and calibration: {setup:.0f} s", flush=True)
        stop = time.monotonic() + args.minutes * 60
        number = 0
        while number < args.trials and time.monotonic() < stop:
            number += 1
            name, fault = draw(rng)
            while fault not in args.faults:  # a campaign of some faults only
                name, fault = draw(rng)
            trial = await campaign.trial(number, name, fault)
            trials.append(trial)
            verdict = ",".join(sorted(trial.violations)) or "ok"
            print(
                f"{number:4d} {fault:9s} {name:14s} delay {trial.delay:5.2f} "
                f"landed={int(trial.injected)} {verdict} {'; '.join(trial.notes)}",
                flush=True,
            )
        spent = time.monotonic() - began
    report(args, trials, campaign.durations, spent)


def report(
    args: argparse.Namespace, trials: list[Trial], durations: dict[str, float], spent: float
) -> None:
    violating = [t for t in trials if t.violations]
    details = "\n".join(
        f"- trial {t.number} ({t.fault}, {t.operation}, {t.delay:.2f} s): "
        f"{', '.join(sorted(t.violations))}: {'; '.join(t.notes)}"
        for t in violating
    )
    timing = ", ".join(f"{k} {v:.1f} s" for k, v in durations.items())
    title = "" if args.clone == "wal_log" else f", copies made with {args.clone}"
    text = f"""
## A fault campaign (issue 28){title}

{len(trials)} trials in {spent / 60:.0f} min, seed {args.seed}, {args.rows} rows in each big
table, each trial's database copied with `CREATE DATABASE ... STRATEGY {args.clone}`
({machine()}). Each trial: a fresh database from a template, one operation as its
own process, one fault at a random moment in the operation's own duration (without a
fault: {timing}), the recovery the docs give (run the same command again, at most
{RERUNS} times; restart the failed replicas), then the checks. "fault landed": the
operation was still running when the fault came (the others finished first, and are
checked all the same). Violations, target 0 in each column: **force** a message sent
the operator to `force`; **schema** the version table is not the target version clean,
or an INVALID index, an advisory lock, drift, rows in a default partition after the
partition job, or a credential that the new key alone does not open; **unfinished** the
recovery did not finish within {BOUND:.0f} s; **rows** a seeded table's row count
changed ({len(COUNTED)} tables). Reproduce: `python bench/fault_campaign.py --seed
{args.seed} --rows {args.rows} --trials {len(trials)} --clone {args.clone}`.

{table(trials)}

{details or "No violation."}
"""
    if args.no_write:
        print(text)
    else:
        suffix = "" if args.clone == "wal_log" else "-file-copy"
        write_section(f"fault-campaign{suffix}", text)
    print(json.dumps({"trials": len(trials), "violating": len(violating)}))


def parse(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=28)
    parser.add_argument("--trials", type=int, default=10_000)
    parser.add_argument("--minutes", type=float, default=20.0, help="stop starting trials after")
    parser.add_argument("--rows", type=int, default=400_000)
    parser.add_argument(
        "--clone",
        choices=("wal_log", "file_copy"),
        default="wal_log",
        help="CREATE DATABASE's STRATEGY for each trial's copy (PostgreSQL's default: "
        "wal_log, whose copies' sequences can go back after a crash)",
    )
    parser.add_argument(
        "--faults",
        type=lambda text: set(text.split(",")),
        default=set(FAULTS),
        help=f"comma-separated, of {','.join(FAULTS)} (default: all)",
    )
    parser.add_argument("--no-write", action="store_true", help="print, leave docs alone")
    args = parser.parse_args(argv)
    if not args.faults or args.faults - set(FAULTS):
        parser.error(f"--faults: each of {','.join(FAULTS)}")
    return args


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        child(sys.argv[2:])
    else:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        asyncio.run(main(parse(sys.argv[1:])))
