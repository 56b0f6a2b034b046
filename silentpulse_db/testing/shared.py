"""One Citus cluster for a whole test run, and its template databases, shared by the run's
processes through a folder: pytest-xdist's workers each used to start a cluster of their
own (three servers), which cost more than most of the tests on it.

The folder holds, per thing shared, a lock file and a JSON file saying what was made. The
first process that needs a thing makes it holding that thing's lock (``flock``: released
when the holder ends, however it ends); the others wait on the lock, then read the JSON.
Nothing here stops what was made: the folder's owner does, with :meth:`RunCluster.remove`,
once every process is done (under xdist, the main process at the end of the run).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from .citus import CitusCluster, remove_described
from .server import DIR_PREFIX, OWNER_FILE
from .server import server_parent as _server_parent

CLUSTER = "citus"


def run_folder(owner: int) -> Path:
    """A new folder for what a run shares, named like a throwaway server's with its owner's
    pid: a later session deletes it when that process is gone without doing so."""
    folder = Path(tempfile.mkdtemp(prefix=DIR_PREFIX + "run-", dir=_server_parent()))
    (folder / OWNER_FILE).write_text(f"{owner}\n")
    return folder


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class RunCluster:
    """The cluster of the run whose shared folder is ``folder``, owned by process ``owner``
    (the one that created the folder, and removes it)."""

    def __init__(self, folder: Path, owner: int) -> None:
        self.folder = folder
        self.owner = owner
        self._cluster: CitusCluster | None = None
        self._started: CitusCluster | None = None  # when this process started it
        self._templates: dict[str, str] = {}

    def cluster(self) -> CitusCluster:
        """The running cluster: started by the first process that asks, attached by the others."""
        if self._cluster is None:
            described = self._made(CLUSTER, self._start)
            self._cluster = CitusCluster.attach(described)
        return self._cluster

    def template(self, kind: str, build: Callable[[CitusCluster, str], None]) -> str:
        """The name of template database ``kind`` on the cluster: made once for the run by
        ``build(cluster, name)`` (a database ``name`` across the cluster, filled), then
        :meth:`CitusCluster.make_template`."""
        if kind in self._templates:
            return self._templates[kind]
        cluster = self.cluster()

        def make() -> dict[str, Any]:
            name = f"silentpulse_citus_{kind}_{uuid.uuid4().hex[:12]}"
            build(cluster, name)
            cluster.make_template(name)
            return {"name": name}

        self._templates[kind] = str(self._made(f"template-{kind}", make)["name"])
        return self._templates[kind]

    def remove(self) -> None:
        """Stop the cluster, if one was started, and delete the folder (the owner's part)."""
        if self._started is not None:  # the session's own: its handles stop it
            self._started.stop()
        else:
            described = self._read(CLUSTER)
            if described is not None:
                remove_described(described)
        shutil.rmtree(self.folder, ignore_errors=True)

    def _start(self) -> dict[str, Any]:
        cluster = CitusCluster(owner=self.owner)
        cluster.start()
        self._started = cluster
        return cluster.describe()

    def _made(self, name: str, make: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        with _locked(self.folder / f"{name}.lock"):
            found = self._read(name)
            if found is None:
                found = make()
                state = self.folder / f"{name}.json"
                # Written whole, then renamed: a reader never sees half of it.
                state.with_suffix(".tmp").write_text(json.dumps(found))
                os.replace(state.with_suffix(".tmp"), state)
            return found

    def _read(self, name: str) -> dict[str, Any] | None:
        try:
            found: dict[str, Any] = json.loads((self.folder / f"{name}.json").read_text())
        except FileNotFoundError:
            return None
        return found
