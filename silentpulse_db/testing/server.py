"""A throwaway PostgreSQL server for tests: initdb + pg_ctl on a free port.

As root (CI containers), the server runs as the ``postgres`` OS user, since
PostgreSQL refuses to run as root; otherwise as the current user. The
superuser gets a random password and TCP connections use scram-sha-256, so
tests exercise real authentication (and can prove a password never leaks).
``SILENTPULSE_TEST_DSN`` names an existing server to use instead.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import getpass
import glob
import logging
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import threading
from collections.abc import Coroutine, Mapping
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote, urlsplit

from ..errors import ConfigurationError, InvalidArgumentError, TestServerError
from ..postgres import databases

logger = logging.getLogger("silentpulse_db.testing")

T = TypeVar("T")
ENV_DSN = "SILENTPULSE_TEST_DSN"
ENV_BINDIR = "PG_BINDIR"
ENV_DIR = "SILENTPULSE_TEST_DIR"
# Memory, where the machine has it to spare: creating a database there costs a tenth
# of what it costs on ext4 (bench/bench_harness.py), and tests create hundreds.
MEMORY_DIR = Path("/dev/shm")  # noqa: S108 (each server's folder: mkdtemp's, mode 0700)
MEMORY_FREE = 1 << 30  # this suite's 4 workers' servers peaked at 403 MB together
_RUN_AS = "postgres"
DIR_PREFIX = "silentpulse-pg-"
OWNER_FILE = "owner.pid"
_SETTINGS = {
    # Durability is worthless for a server that lives as long as a test session.
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "300",
    "shared_buffers": "128MB",
    "listen_addresses": "127.0.0.1",
}


def find_bindir() -> Path:
    """$PG_BINDIR, else `pg_config --bindir`, else the newest /usr/lib/postgresql/*/bin."""
    candidates: list[str] = []
    if os.environ.get(ENV_BINDIR):
        candidates.append(os.environ[ENV_BINDIR])
    with contextlib.suppress(OSError, subprocess.CalledProcessError):
        out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True, check=True)
        candidates.append(out.stdout.strip())
    candidates += sorted(
        glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2]), reverse=True
    )
    candidates += ["/usr/local/pgsql/bin", "/opt/homebrew/bin", "/usr/local/bin"]
    for candidate in candidates:
        if (Path(candidate) / "initdb").is_file() and (Path(candidate) / "pg_ctl").is_file():
            return Path(candidate)
    raise ConfigurationError(
        "PostgreSQL server binaries (initdb, pg_ctl) not found: looked in $PG_BINDIR, "
        "`pg_config --bindir`, /usr/lib/postgresql/*/bin; install the postgresql package "
        f"or set {ENV_BINDIR}, or point {ENV_DSN} at a running server"
    )


def server_parent() -> Path:
    """Where a throwaway server's folder goes: $SILENTPULSE_TEST_DIR, else /dev/shm where
    it is a writable memory file system with 1 GiB free (a container's default 64 MB is
    not), else the temporary directory."""
    if os.environ.get(ENV_DIR):
        return Path(os.environ[ENV_DIR])
    with contextlib.suppress(OSError):
        if os.access(MEMORY_DIR, os.W_OK) and shutil.disk_usage(MEMORY_DIR).free >= MEMORY_FREE:
            return MEMORY_DIR
    return Path(tempfile.gettempdir())


def _server_parents() -> list[Path]:
    """Every folder a throwaway server may have been put in, by this setting or another."""
    parents = [MEMORY_DIR, Path(tempfile.gettempdir())]
    if os.environ.get(ENV_DIR):
        parents.insert(0, Path(os.environ[ENV_DIR]))
    return list(dict.fromkeys(parents))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion from sync code, even inside a running event loop."""
    result: list[T] = []
    error: list[BaseException] = []

    def target() -> None:
        try:
            result.append(asyncio.run(coro))
        except BaseException as exc:  # re-raised in the caller's thread
            error.append(exc)

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    if error:
        raise error[0]
    return result[0]


class PostgresServer:
    """A PostgreSQL server for the length of a test session (or a ``with`` block)."""

    def __init__(
        self,
        *,
        dsn: str | None = None,
        bindir: Path | None = None,
        settings: Mapping[str, str] | None = None,
        environ: Mapping[str, str] | None = None,
        owner: int | None = None,
    ) -> None:
        """``settings``: postgresql.conf lines beyond the harness's own; ``environ``: variables
        for the server's processes. Either makes it a throwaway server whatever
        SILENTPULSE_TEST_DSN says: an external server's configuration is not the harness's
        to choose (and ``dsn`` with either is an error). ``owner``: the process whose end
        stops it (default: this one, at exit; else that one, or the next session)."""
        self._external = _external(dsn, own_configuration=bool(settings or environ))
        self._owner = owner
        self._settings = dict(settings or {})
        self._environ = dict(environ or {})
        self._bindir = bindir
        self._dir: Path | None = None
        self.port = 0
        self.password = ""
        self.user = _RUN_AS if as_root() else getpass.getuser()
        self._running = False
        if self._external:
            parts = urlsplit(self._external)
            self.port = parts.port or 5432
            self.password = parts.password or ""
            self.user = parts.username or self.user

    # --- lifecycle -------------------------------------------------------------

    def __enter__(self) -> PostgresServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def external(self) -> bool:
        return self._external is not None

    @property
    def bindir(self) -> Path:
        if self._bindir is None:
            self._bindir = find_bindir()
        return self._bindir

    @property
    def datadir(self) -> Path:
        if self._dir is None:
            raise TestServerError("the server has not been initialised")
        return self._dir / "data"

    def start(self) -> None:
        """initdb (once) and start; a no-op for an external server."""
        if self.external or self._running:
            return
        if self._dir is None:
            self._init()
        self._pg_ctl("start", "-w", "-t", "60", "-l", str(self._dir_path() / "server.log"))
        self._running = True
        if self._owner in (None, os.getpid()):
            atexit.register(self.stop)
        logger.info("throwaway PostgreSQL running on port %d (%s)", self.port, self._dir)

    def stop(self, *, remove: bool = True) -> None:
        """Stop the server (fast shutdown) and, by default, delete its files."""
        if self.external:
            return
        if self._running:
            with contextlib.suppress(subprocess.CalledProcessError):
                self._pg_ctl("stop", "-m", "fast", "-w", "-t", "60")
            self._running = False
        if remove and self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def pause(self) -> None:
        """Stop the server but keep its data, to start it again on the same port."""
        self.stop(remove=False)

    # --- connecting ------------------------------------------------------------------

    @property
    def dsn(self) -> str:
        """DSN of the server's `postgres` database, as the superuser (with password)."""
        if self._external:
            return self._external
        return self.admin_dsn("postgres")

    def admin_dsn(self, dbname: str) -> str:
        """DSN of database ``dbname`` as the superuser."""
        if self._external:
            return urlsplit(self._external)._replace(path=f"/{dbname}").geturl()
        return (
            f"postgresql://{quote(self.user)}:{quote(self.password)}@127.0.0.1:{self.port}/{dbname}"
        )

    # --- internals ---------------------------------------------------------------------

    def _dir_path(self) -> Path:
        assert self._dir is not None
        return self._dir

    def _init(self) -> None:
        reap_stale_servers(as_root())
        self._dir = Path(tempfile.mkdtemp(prefix=DIR_PREFIX, dir=server_parent()))
        # Whose it is: a later session stops the server if that process is gone.
        (self._dir / OWNER_FILE).write_text(f"{self._owner or os.getpid()}\n")
        self.port = free_port()
        self.password = secrets.token_urlsafe(18)
        pwfile = self._dir / "pwfile"
        pwfile.write_text(self.password + "\n")
        if as_root():
            # The postgres user must own the directory (and read the pwfile).
            shutil.chown(self._dir, user=_RUN_AS)
            shutil.chown(pwfile, user=_RUN_AS)
        try:
            self._run(*_initdb(self.bindir, self.datadir, self.user, pwfile))
        finally:
            pwfile.unlink(missing_ok=True)
        settings = {**_SETTINGS, **self._settings, "port": str(self.port)}
        settings["unix_socket_directories"] = str(self._dir)
        conf = "".join(f"{k} = '{_quoted(v)}'\n" for k, v in settings.items())
        with (self.datadir / "postgresql.conf").open("a") as handle:
            handle.write("\n" + conf)

    def _pg_ctl(self, *args: str) -> None:
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.datadir), *args)

    def _run(self, *command: str) -> None:
        argv = ["runuser", "-u", _RUN_AS, "--", *command] if as_root() else list(command)
        # cwd: the postgres user may not be allowed into the caller's directory.
        env = {**os.environ, **self._environ} if self._environ else None
        done = subprocess.run(
            argv, capture_output=True, text=True, check=False, timeout=120, cwd=self._dir, env=env
        )
        if done.returncode != 0:
            log = ""
            if self._dir is not None and (self._dir / "server.log").exists():
                log = (self._dir / "server.log").read_text()[-2000:]
            raise TestServerError(
                f"{Path(command[0]).name} failed (exit {done.returncode}): "
                f"{done.stderr.strip()[-2000:]}\n{log}"
            )


class AttachedServer(PostgresServer):
    """A handle on a running throwaway server that another process started (its folder,
    port and superuser password): it connects as the starter's does; start() and stop()
    leave the server to the process that owns it."""

    def __init__(
        self, folder: Path, port: int, password: str, *, bindir: Path | None = None
    ) -> None:
        super().__init__(bindir=bindir)
        self._external = None  # a throwaway server, whatever SILENTPULSE_TEST_DSN says
        self._dir, self.port, self.password = folder, port, password
        self._running = True

    def start(self) -> None:
        pass

    def stop(self, *, remove: bool = True) -> None:
        pass


def as_root() -> bool:
    """Is this process root (the servers then run as the ``postgres`` user)?"""
    return hasattr(os, "geteuid") and os.geteuid() == 0


def _external(dsn: str | None, *, own_configuration: bool) -> str | None:
    """The existing server to use: ``dsn``, else $SILENTPULSE_TEST_DSN; None for a
    throwaway one, always when the caller sets the server's own configuration."""
    if not own_configuration:
        return dsn if dsn is not None else os.environ.get(ENV_DSN) or None
    if dsn is not None:
        raise InvalidArgumentError(
            "settings and environ are for a throwaway server: pass no dsn with them"
        )
    return None


def _initdb(bindir: Path, datadir: Path, user: str, pwfile: Path) -> list[str]:
    """initdb's command: scram over TCP (tests exercise real authentication), trust on
    the server's own socket, no fsync (a server that lives as long as a test session)."""
    return [
        str(bindir / "initdb"),
        *("-D", str(datadir), "-U", user, "--pwfile", str(pwfile)),
        *("--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8", "--locale=C"),
        "--no-sync",
    ]


def _quoted(value: str) -> str:
    """``value`` inside a postgresql.conf single-quoted string."""
    return value.replace("\\", "\\\\").replace("'", "''")


def reap_stale_servers(as_root: bool) -> list[Path]:
    """Stop and delete the throwaway servers whose starting process is gone (a session
    killed outright leaves its server running and its files behind); returns their
    directories. A server whose process lives, or that says nothing of it, is left."""
    reaped = []
    for folder in (f for parent in _server_parents() for f in parent.glob(DIR_PREFIX + "*")):
        try:
            owner = int((folder / OWNER_FILE).read_text())
        except (OSError, ValueError):
            continue
        if _alive(owner):
            continue
        remove_server_folder(folder, as_root, mode="immediate")
        logger.info("removed the throwaway PostgreSQL left by process %d (%s)", owner, folder)
        reaped.append(folder)
    return reaped


def remove_server_folder(folder: Path, as_postgres: bool, *, mode: str = "fast") -> None:
    """Stop the throwaway server of ``folder``, if one runs there (as the ``postgres`` user
    when ``as_postgres``), and delete the folder."""
    data = folder / "data"
    if (data / "postmaster.pid").exists():
        pg_ctl = str(find_bindir() / "pg_ctl")
        argv = [pg_ctl, "-D", str(data), "stop", "-m", mode, "-w", "-t", "30"]
        if as_postgres:
            argv = ["runuser", "-u", _RUN_AS, "--", *argv]
        subprocess.run(argv, capture_output=True, check=False, timeout=60, cwd=folder)
    shutil.rmtree(folder, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


def create_database(admin_dsn: str, name: str, *, template: str | None = None) -> str:
    """Create database ``name`` (optionally from ``template``); return its DSN."""
    return run_sync(databases.create_database(admin_dsn, name, template=template))


def drop_database(admin_dsn: str, name: str) -> None:
    run_sync(databases.drop_database(admin_dsn, name))
