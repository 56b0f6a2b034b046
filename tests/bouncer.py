"""Debian's PgBouncer in front of a throwaway server, for the tests of the topologies
services connect through (issue 21). .ci/run installs it."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest

from silentpulse_db.testing import PostgresServer
from silentpulse_db.testing.server import free_port

PGBOUNCER = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
needs_pgbouncer = pytest.mark.skipif(
    not Path(PGBOUNCER).exists(), reason="pgbouncer is not installed (apt-get install pgbouncer)"
)


@contextlib.contextmanager
def running_bouncer(
    server: PostgresServer,
    database: str,
    user: str,
    password: str,
    *,
    pool_mode: str = "session",
    pool_size: int = 50,
) -> Iterator[str]:
    """PgBouncer in ``pool_mode`` in front of ``server``, logging in as ``user``, with its
    defaults otherwise (no ignore_startup_parameters); yields the DSN of ``database``."""
    folder = Path(tempfile.mkdtemp(prefix="silentpulse-pgbouncer-"))
    port = free_port()
    target = f"host=127.0.0.1 port={server.port} user={user} password={password}"
    (folder / "pgbouncer.ini").write_text(
        "[databases]\n"
        f"* = {target}\n"
        "[pgbouncer]\n"
        f"listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n"
        f"auth_type = any\npool_mode = {pool_mode}\nmax_client_conn = 200\n"
        f"default_pool_size = {pool_size}\n"
        f"logfile = {folder}/pgbouncer.log\npidfile = {folder}/pgbouncer.pid\n"
    )
    as_root = os.geteuid() == 0
    if as_root:  # PgBouncer refuses to run as root
        shutil.chown(folder, "postgres")
        for item in folder.iterdir():
            shutil.chown(item, "postgres")
    argv = [PGBOUNCER, "-d", str(folder / "pgbouncer.ini")]
    subprocess.run(["runuser", "-u", "postgres", "--", *argv] if as_root else argv, check=True)
    try:
        deadline = time.monotonic() + 10
        while not (folder / "pgbouncer.pid").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        yield f"postgresql://{quote(user)}@127.0.0.1:{port}/{database}"
    finally:
        os.kill(int((folder / "pgbouncer.pid").read_text()), 15)
        shutil.rmtree(folder, ignore_errors=True)
