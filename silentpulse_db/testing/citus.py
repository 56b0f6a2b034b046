"""A throwaway Citus cluster for tests: a coordinator and two workers on 127.0.0.1.

Each node is a :class:`PostgresServer` (runs as the ``postgres`` OS user when root,
scram passwords, memory folder) with ``citus`` preloaded. A database "across the
cluster" is one of the same name on every node, the extension created in each, the
coordinator registered and the workers added (:meth:`CitusCluster.create_database`).

Nodes log in to one another (the coordinator to the workers to create shards and sync
metadata, the workers to each other and to the coordinator once they have the metadata)
as the superuser, with libpq's password file: ``citus.node_conninfo`` refuses
``password`` and ``passfile``, ``pg_dist_authinfo`` would put a password in every test
database's tables, and ``trust`` for 127.0.0.1 would let any local process in. So each
server's processes get ``PGPASSFILE`` naming one file of the cluster's, which lists every
node's port and password; scram stays on everywhere. The superuser has one password on
every node, the coordinator's: ``citus_add_node`` copies the coordinator's roles to the
node it adds, passwords included.

A database made once can be copied across the cluster (:meth:`CitusCluster.make_template`,
:meth:`CitusCluster.copy_database`, :mod:`.citus_databases`). One process of a test run
can start the cluster for the others (``owner``, :meth:`CitusCluster.describe`,
:meth:`CitusCluster.attach`; :mod:`.shared`).

Citus is not in Debian's archive: ``../shared/citus/build.sh`` builds 12.1.12 into
PostgreSQL 15 (.ci/run does when it is missing); :func:`citus_missing` says why tests skip.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from ..errors import ConfigurationError, TestServerError
from ..postgres.databases import execute_sql
from . import citus_databases as databases
from .citus_databases import HOST
from .server import (
    _RUN_AS,
    DIR_PREFIX,
    OWNER_FILE,
    AttachedServer,
    PostgresServer,
    as_root,
    find_bindir,
    remove_server_folder,
    run_sync,
)
from .server import server_parent as _server_parent

WORKERS = 2
CITUS_LIBRARY = "citus.so"
BUILD_HINT = "build it with ../shared/citus/build.sh (as root: it installs its build tools)"
CITUS_SETTINGS = {
    "shared_preload_libraries": "citus",
    # The default, sslmode=require, makes CREATE EXTENSION turn ssl on and write a
    # self-signed certificate on each node; nodes on one loopback gain nothing from it.
    "citus.node_conninfo": "sslmode=disable",
    # A node's connections to itself: its listen address, not "localhost" (which may be ::1).
    "citus.local_hostname": HOST,
    # Citus runs a maintenance daemon (a background worker) for each database that has
    # the extension; a run's workers share the nodes, several test databases at once,
    # beyond the default 8 that parallel queries draw on too.
    "max_worker_processes": "32",
}


def citus_pkglibdir(bindir: Path | None = None) -> Path:
    """Where the PostgreSQL of ``bindir`` (default: the harness's) loads extensions from:
    its own pg_config's --pkglibdir, else the lib folder beside bin (Debian's layout)."""
    bindir = bindir or find_bindir()
    pg_config = bindir / "pg_config"
    with contextlib.suppress(OSError, subprocess.CalledProcessError):
        if pg_config.is_file():
            out = subprocess.run(
                [str(pg_config), "--pkglibdir"], capture_output=True, text=True, check=True
            )
            return Path(out.stdout.strip())
    return bindir.parent / "lib"


def citus_missing(bindir: Path | None = None) -> str | None:
    """Why a Citus cluster cannot start here, or None when it can (``citus.so`` is in the
    package library folder of the PostgreSQL the harness runs)."""
    try:
        bindir = bindir or find_bindir()
    except ConfigurationError as exc:
        return f"Citus tests need PostgreSQL: {exc}"
    libdir = citus_pkglibdir(bindir)
    if not (libdir / CITUS_LIBRARY).is_file():
        return (
            f"Citus is not installed: no {CITUS_LIBRARY} in {libdir} "
            f"(the PostgreSQL of {bindir}); {BUILD_HINT}"
        )
    return None


class CitusCluster:
    """A coordinator and ``workers`` workers, started together (or in a ``with`` block)."""

    def __init__(
        self, *, workers: int = WORKERS, bindir: Path | None = None, owner: int | None = None
    ) -> None:
        """``owner``: the process the nodes belong to (default: this one), as
        :class:`PostgresServer` takes it."""
        self._bindir = bindir
        self._folder: Path | None = None
        self.coordinator: PostgresServer | None = None
        self.workers: list[PostgresServer] = []
        self._count = workers
        self._owner = owner

    @classmethod
    def attach(cls, described: Mapping[str, Any], *, bindir: Path | None = None) -> CitusCluster:
        """A handle on the running cluster :meth:`describe` described, in another process of
        the test run: its nodes are :class:`AttachedServer`'s, stop() leaves them."""
        cluster = cls(workers=len(described["nodes"]) - 1, bindir=bindir)
        nodes: list[PostgresServer] = [
            AttachedServer(Path(n["folder"]), n["port"], n["password"], bindir=bindir)
            for n in described["nodes"]
        ]
        cluster.coordinator, *cluster.workers = nodes
        return cluster

    def describe(self) -> dict[str, Any]:
        """What another process needs to use the running cluster, and its owner to stop it
        (:meth:`attach`, :func:`remove_described`): JSON, the superuser's password in it."""
        return {
            "folder": str(self._folder) if self._folder else None,
            "nodes": [
                {"folder": str(n.datadir.parent), "port": n.port, "password": n.password}
                for n in self.nodes
            ],
        }

    def __enter__(self) -> CitusCluster:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def nodes(self) -> list[PostgresServer]:
        """The coordinator first, then the workers."""
        return [self.coordinator, *self.workers] if self.coordinator else []

    def start(self) -> None:
        """Start every node; raises TestServerError, the reason with it, when Citus is missing."""
        if self.coordinator is not None:
            return
        reason = citus_missing(self._bindir)
        if reason:
            raise TestServerError(reason)
        self._folder = self._make_folder()
        passfile = self._folder / "pgpass"
        environ = {"PGPASSFILE": str(passfile)}
        nodes = [
            PostgresServer(
                bindir=self._bindir, settings=CITUS_SETTINGS, environ=environ, owner=self._owner
            )
            for _ in range(1 + self._count)
        ]
        self.coordinator, *self.workers = nodes
        try:
            # Together: each is mostly initdb and waiting on pg_ctl.
            with ThreadPoolExecutor(len(nodes)) as pool:
                list(pool.map(PostgresServer.start, nodes))
            run_sync(self._share_password())
        except BaseException:
            self.stop()
            raise
        # libpq reads the file at each connection, so it can be written after the start;
        # the ports and the password are only known then.
        passfile.write_text("".join(_passfile_line(node) for node in nodes))
        passfile.chmod(0o600)  # libpq ignores a password file others may read
        if as_root():
            shutil.chown(passfile, user=_RUN_AS)

    async def _share_password(self) -> None:
        """Give the workers' superuser the coordinator's password: adding a node copies the
        coordinator's roles to it, passwords included, so a worker's own would stop working
        (for the nodes and for the tests) at the first ``citus_add_node``."""
        coordinator = self._running()
        for worker in self.workers:
            await execute_sql(
                worker.dsn, f"ALTER ROLE \"{worker.user}\" PASSWORD '{coordinator.password}'"
            )
            worker.password = coordinator.password

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
        self.coordinator, self.workers = None, []
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)
            self._folder = None

    def _make_folder(self) -> Path:
        # Named like a server's folder, with its owner's pid: reap_stale_servers deletes it
        # when a killed session leaves it behind.
        folder = Path(tempfile.mkdtemp(prefix=DIR_PREFIX + "citus-", dir=_server_parent()))
        (folder / OWNER_FILE).write_text(f"{self._owner or os.getpid()}\n")
        if as_root():  # the servers' processes read the password file inside
            shutil.chown(folder, user=_RUN_AS)
        return folder

    def _running(self) -> PostgresServer:
        if self.coordinator is None:
            raise TestServerError("the Citus cluster has not been started")
        return self.coordinator

    def dsn(self, dbname: str) -> str:
        """DSN of database ``dbname`` on the coordinator, as the superuser."""
        return self._running().admin_dsn(dbname)

    def create_database(self, name: str) -> str:
        """Database ``name`` across the cluster, the workers added; returns the coordinator's
        DSN of it. The cluster is left as it was when a step fails."""
        self._running()
        return run_sync(databases.create_across(self.nodes, name))

    def drop_database(self, name: str) -> None:
        run_sync(databases.drop_across(self.nodes, name))

    def make_template(self, name: str) -> None:
        """Make database ``name`` a template for :meth:`copy_database`: no one may connect
        to it any more (:func:`.citus_databases.make_template`)."""
        run_sync(databases.make_template(self.nodes, name))

    def copy_database(self, template: str, name: str) -> str:
        """Database ``name`` across the cluster, a copy of ``template`` on each node (made by
        :meth:`make_template`): shards, metadata and all. Returns the coordinator's DSN."""
        self._running()
        return run_sync(databases.copy_across(self.nodes, template, name))


def remove_described(described: Mapping[str, Any]) -> None:
    """Stop the nodes of a cluster :meth:`CitusCluster.describe` described, and delete
    their folders and the cluster's: what its owner does at the end of a test run."""
    for node in described["nodes"]:
        remove_server_folder(Path(node["folder"]), as_root())
    if described.get("folder"):
        shutil.rmtree(described["folder"], ignore_errors=True)


def _passfile_line(node: PostgresServer) -> str:
    """The .pgpass line for ``node``: any host (Citus connects by the name in its metadata,
    or citus.local_hostname), its port, any database, the superuser."""
    fields = [_pgpass_escaped(field) for field in (node.user, node.password)]
    return f"*:{node.port}:*:{fields[0]}:{fields[1]}\n"


def _pgpass_escaped(field: str) -> str:
    return field.replace("\\", "\\\\").replace(":", "\\:")
