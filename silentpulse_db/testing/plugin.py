"""pytest plugin (auto-loaded through the ``pytest11`` entry point).

Fixtures, for this project's tests and the services' own:

- ``silentpulse_postgres`` (session): a :class:`PostgresServer` — a throwaway
  PostgreSQL started on first use and stopped at the end of the session, or the
  server named by ``SILENTPULSE_TEST_DSN``.
- ``silentpulse_database``: DSN of a fresh, empty database, dropped after the test.
- ``silentpulse_migrated_database``: DSN of a fresh database with the prerequisites and every
  packaged migration applied (and the service's own sets the ini option
  ``silentpulse_migrations = PATH[:VERSION_TABLE]`` names). The migrations run once
  per session into a template database; each test gets a ``CREATE DATABASE ...
  TEMPLATE`` copy.
- ``silentpulse_app_database``: DSN of that same database as an application role (no
  SUPERUSER, no BYPASSRLS, the grants docs/operations.md gives the app role), so that
  row-level security applies as in production: act as a tenant with
  ``tenant_transaction``; set data up through ``silentpulse_migrated_database``.
- ``silentpulse_jobs_database``: the same database as a jobs role (BYPASSRLS, the app
  role's grants, no SUPERUSER): for the worker's and the alert listener's tests.
- ``silentpulse_alert_listener``: ``async with silentpulse_alert_listener() as alerts``
  starts ``listen_alerts`` on that database, entered once it is ready;
  ``await alerts.wait_for(alert_id)`` (:mod:`.alerts`).
- ``silentpulse_citus`` (session): a :class:`~.citus.CitusCluster`, a coordinator and two
  workers with Citus preloaded, started on first use, one for the whole run: under
  pytest-xdist the first worker that needs it starts it and the others use it (through
  a folder the main process gives them, :mod:`.shared`), and the main process stops it
  at the end. The tests that ask for it are skipped, with the reason, where Citus is not
  installed.
- ``silentpulse_citus_database``: DSN (on the coordinator, as the superuser) of a fresh
  database across that cluster: the extension on every node, the coordinator and the
  workers in its metadata. Dropped on every node after the test.
- ``silentpulse_citus_migrated_database``: the same with the prerequisites and the
  migrations ``silentpulse_migrated_database`` has; ``silentpulse_citus_distributed_database``:
  that schema distributed by ``distribute``. Each is a copy, on every node, of a template
  database made once per run (``silentpulse_citus_migrated_template``,
  ``silentpulse_citus_distributed_template``: their names, for a module's own copy).

Nothing starts unless a test asks for one of these.
"""

from __future__ import annotations

import os
import secrets
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractAsyncContextManager
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import quote, urlsplit

import pytest

from ..errors import ConfigurationError
from ..postgres.databases import execute_sql
from ..settings import ONE_ATTEMPT
from .alerts import ListeningAlerts, listening
from .citus import CitusCluster, citus_missing
from .server import PostgresServer, create_database, drop_database, run_sync
from .shared import RunCluster, run_folder

TEMPLATE_PREFIX = "silentpulse_template"


def _unique(prefix: str) -> str:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    return f"{prefix}_{worker}{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="session")
def silentpulse_postgres() -> Iterator[PostgresServer]:
    with PostgresServer() as server:
        yield server


@pytest.fixture
def silentpulse_database(silentpulse_postgres: PostgresServer) -> Iterator[str]:
    name = _unique("test")
    dsn = create_database(silentpulse_postgres.dsn, name)
    try:
        yield dsn
    finally:
        drop_database(silentpulse_postgres.dsn, name)


SERVICE_MIGRATIONS_INI = "silentpulse_migrations"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini(
        SERVICE_MIGRATIONS_INI,
        "a service's own migrations, applied to the test template after the packaged "
        "set: PATH[:VERSION_TABLE] (relative to the rootdir), one a line",
        type="linelist",
        default=[],
    )


def service_sets(config: pytest.Config) -> list[tuple[Path, str | None]]:
    """The ini's PATH[:VERSION_TABLE] entries, paths from the rootdir."""
    sets = []
    for entry in config.getini(SERVICE_MIGRATIONS_INI):
        path, _, table = str(entry).partition(":")
        folder = (config.rootpath / path).resolve()
        if not folder.is_dir():
            raise ConfigurationError(
                f"{SERVICE_MIGRATIONS_INI}: {path!r} is not a folder (from {config.rootpath})"
            )
        sets.append((folder, table or None))
    return sets


@pytest.fixture(scope="session")
def silentpulse_migrated_template(
    silentpulse_postgres: PostgresServer, request: pytest.FixtureRequest
) -> Iterator[str]:
    """Name of a database holding the fully migrated schema, built once per session: the
    packaged set, then the service sets the ini's silentpulse_migrations names."""
    from ..migrate.commands import apply_prerequisites, run_migrations

    name = _unique(TEMPLATE_PREFIX)
    dsn = create_database(silentpulse_postgres.dsn, name)
    services = service_sets(request.config)

    async def migrate() -> None:
        await apply_prerequisites(dsn)
        await run_migrations(dsn)
        for folder, table in services:
            await run_migrations(dsn, source=folder, table=table, connect=ONE_ATTEMPT)

    try:
        run_sync(migrate())
        yield name
    finally:
        drop_database(silentpulse_postgres.dsn, name)


@pytest.fixture
def silentpulse_migrated_database(
    silentpulse_postgres: PostgresServer, silentpulse_migrated_template: str
) -> Iterator[str]:
    name = _unique("migrated")
    dsn = create_database(silentpulse_postgres.dsn, name, template=silentpulse_migrated_template)
    try:
        yield dsn
    finally:
        drop_database(silentpulse_postgres.dsn, name)


class AppRole(NamedTuple):
    """A LOGIN role of the test server, like the deployment's app role (no SUPERUSER, no
    BYPASSRLS) or jobs role (BYPASSRLS)."""

    name: str
    password: str


# What docs/operations.md grants the app role, for the database at hand.
APP_GRANTS = (
    "GRANT USAGE ON SCHEMA public TO {role}; "
    "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {role}; "
    "GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO {role};"
)


@pytest.fixture(scope="session")
def silentpulse_app_role(silentpulse_postgres: PostgresServer) -> Iterator[AppRole]:
    """The session's application role (roles are the server's, not a database's)."""
    yield from _login_role(silentpulse_postgres, "silentpulse_app", "")


@pytest.fixture
def silentpulse_app_database(
    silentpulse_migrated_database: str, silentpulse_app_role: AppRole
) -> str:
    return _as_role(silentpulse_migrated_database, silentpulse_app_role, APP_GRANTS)


@pytest.fixture(scope="session")
def silentpulse_jobs_role(silentpulse_postgres: PostgresServer) -> Iterator[AppRole]:
    """The session's jobs role: BYPASSRLS, no SUPERUSER (docs/operations.md)."""
    yield from _login_role(silentpulse_postgres, "silentpulse_jobs", " BYPASSRLS")


@pytest.fixture
def silentpulse_jobs_database(
    silentpulse_migrated_database: str, silentpulse_jobs_role: AppRole
) -> str:
    """That database as the jobs role, with the app role's grants and BYPASSRLS: what the
    worker and the alert listener use. It is not a member of the tables' owner (the
    superuser here), so a test catches what only a superuser could do."""
    return _as_role(silentpulse_migrated_database, silentpulse_jobs_role, APP_GRANTS)


def _login_role(server: PostgresServer, prefix: str, attributes: str) -> Iterator[AppRole]:
    role = AppRole(_unique(prefix), secrets.token_urlsafe(18))
    create = f"CREATE ROLE {role.name} LOGIN PASSWORD '{role.password}'{attributes}"
    run_sync(execute_sql(server.dsn, create))
    try:
        yield role
    finally:
        # Every test database it had grants in is gone by now.
        run_sync(execute_sql(server.dsn, f"DROP ROLE IF EXISTS {role.name}"))


def _as_role(dsn: str, role: AppRole, grants: str) -> str:
    """``dsn``'s database as ``role``, given ``grants`` there first."""
    run_sync(execute_sql(dsn, grants.format(role=role.name)))
    parts = urlsplit(dsn)
    login = f"{quote(role.name)}:{quote(role.password)}"
    return parts._replace(netloc=f"{login}@{parts.hostname}:{parts.port}").geturl()


@pytest.fixture
def silentpulse_alert_listener(
    silentpulse_jobs_database: str,
) -> Callable[..., AbstractAsyncContextManager[ListeningAlerts]]:
    """``async with silentpulse_alert_listener(**options) as alerts``: an alert listener on
    the test database as the jobs role (BYPASSRLS, as in production), ready.
    A plain fixture returning an async context manager: it runs in the test's own event
    loop, whatever async plugin runs the test."""
    return partial(listening, silentpulse_jobs_database)


# What pytest-xdist's main process gives each worker: the folder through which the run's
# workers share one Citus cluster, and the process that owns it (the main one).
RUN_FOLDER = "silentpulse_run_folder"
RUN_OWNER = "silentpulse_run_owner"
_RUN = pytest.StashKey[RunCluster]()


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """pytest-xdist's main process, for each worker it starts: the run's shared folder
    (made at the first worker; nothing goes in it unless a test needs Citus)."""
    config: pytest.Config = node.config
    run = config.stash.get(_RUN, None)
    if run is None:
        run = config.stash[_RUN] = RunCluster(run_folder(os.getpid()), os.getpid())
    node.workerinput[RUN_FOLDER] = str(run.folder)
    node.workerinput[RUN_OWNER] = run.owner


def pytest_unconfigure(config: pytest.Config) -> None:
    """The main process, once every worker is done: stop the run's cluster."""
    run = config.stash.get(_RUN, None)
    if run is not None:
        run.remove()


@pytest.fixture(scope="session")
def _silentpulse_citus_run(request: pytest.FixtureRequest) -> Iterator[RunCluster]:
    """The run's cluster and templates: the main process's folder under pytest-xdist, else
    this session's own, removed at its end."""
    reason = citus_missing()
    if reason:
        pytest.skip(reason)
    given = getattr(request.config, "workerinput", {})
    if RUN_FOLDER in given:
        yield RunCluster(Path(given[RUN_FOLDER]), int(given[RUN_OWNER]))
        return
    run = RunCluster(run_folder(os.getpid()), os.getpid())
    try:
        yield run
    finally:
        run.remove()


@pytest.fixture(scope="session")
def silentpulse_citus(_silentpulse_citus_run: RunCluster) -> CitusCluster:
    return _silentpulse_citus_run.cluster()


def _create(cluster: CitusCluster, name: str) -> None:
    cluster.create_database(name)


def _citus_template(run: RunCluster) -> str:
    """A database across the cluster as silentpulse_citus_database gives it: the
    extension on every node, the nodes in its metadata."""
    return run.template("empty", _create)


@pytest.fixture(scope="session")
def silentpulse_citus_migrated_template(
    _silentpulse_citus_run: RunCluster, request: pytest.FixtureRequest
) -> str:
    """Name of a template database across the cluster with the migrations
    silentpulse_migrated_template applies, made once per run."""
    from ..migrate.commands import apply_prerequisites, run_migrations

    services = service_sets(request.config)
    empty = _citus_template(_silentpulse_citus_run)

    def build(cluster: CitusCluster, name: str) -> None:
        dsn = cluster.copy_database(empty, name)

        async def migrate() -> None:
            await apply_prerequisites(dsn)
            await run_migrations(dsn)
            for folder, table in services:
                await run_migrations(dsn, source=folder, table=table, connect=ONE_ATTEMPT)

        run_sync(migrate())

    return _silentpulse_citus_run.template("migrated", build)


@pytest.fixture(scope="session")
def silentpulse_citus_distributed_template(
    _silentpulse_citus_run: RunCluster, silentpulse_citus_migrated_template: str
) -> str:
    """Name of a template database across the cluster: the migrated one, distributed by
    ``distribute`` (Citus's default shard count), made once per run."""
    from ..migrate.commands import distribute

    def build(cluster: CitusCluster, name: str) -> None:
        run_sync(distribute(cluster.copy_database(silentpulse_citus_migrated_template, name)))

    return _silentpulse_citus_run.template("distributed", build)


def _copy(cluster: CitusCluster, template: str, prefix: str) -> Iterator[str]:
    name = _unique(prefix)
    dsn = cluster.copy_database(template, name)
    try:
        yield dsn
    finally:
        cluster.drop_database(name)


@pytest.fixture
def silentpulse_citus_database(
    silentpulse_citus: CitusCluster, _silentpulse_citus_run: RunCluster
) -> Iterator[str]:
    yield from _copy(silentpulse_citus, _citus_template(_silentpulse_citus_run), "citus")


@pytest.fixture
def silentpulse_citus_migrated_database(
    silentpulse_citus: CitusCluster, silentpulse_citus_migrated_template: str
) -> Iterator[str]:
    yield from _copy(silentpulse_citus, silentpulse_citus_migrated_template, "citus_migrated")


@pytest.fixture
def silentpulse_citus_distributed_database(
    silentpulse_citus: CitusCluster, silentpulse_citus_distributed_template: str
) -> Iterator[str]:
    yield from _copy(silentpulse_citus, silentpulse_citus_distributed_template, "citus_distributed")
