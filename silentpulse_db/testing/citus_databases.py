"""Databases across a Citus cluster (:class:`~.citus.CitusCluster`'s): one of the same name
on every node, made afresh, made a template, copied from one, dropped. ``nodes``: the
coordinator first, then the workers.

A copy is ``CREATE DATABASE ... TEMPLATE`` on every node: the coordinator's metadata and
the workers' shards alike, node by node. It costs 0.2-0.8 s where migrating the packaged
schema takes 2-6 s and distributing it 15-30 s (docs/benchmarks.md, "The suite").
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence

import asyncpg

from ..postgres.databases import create_database as _create
from ..postgres.databases import drop_database as _drop
from ..postgres.databases import execute_sql, quote_ident
from ..postgres.literals import quote_literal
from .server import PostgresServer

HOST = "127.0.0.1"

# Citus lists the database it was created in among its distributed objects, by oid (what
# it sends the workers for ALTER DATABASE depends on it): in a copy, the template's.
_OWN_DATABASE = """
UPDATE pg_catalog.pg_dist_object
   SET objid = (SELECT oid FROM pg_database WHERE datname = current_database())
 WHERE classid = 'pg_database'::regclass
   AND objid = (SELECT oid FROM pg_database WHERE datname = {})
"""

# DROP DATABASE ... WITH (FORCE) ends the sessions it finds and waits 5 s for them to go.
# A maintenance daemon that Citus started moments before (a database just copied, a test
# that took less) may come, or go, later than that on a loaded machine: asked again.
DROP_ATTEMPTS = 6


async def create_across(nodes: Sequence[PostgresServer], name: str) -> str:
    """Database ``name`` on every node with the extension, the coordinator and the workers
    in its metadata; the coordinator's DSN of it. Nothing is left when a step fails."""
    coordinator, *workers = nodes
    try:
        # Citus needs the database and its extension on every node before it adds one.
        await asyncio.gather(*(_create(node.dsn, name) for node in nodes))
        await asyncio.gather(
            *(execute_sql(node.admin_dsn(name), "CREATE EXTENSION citus") for node in nodes)
        )
        dsn = coordinator.admin_dsn(name)
        # The coordinator in the metadata (group 0): reference tables get a placement
        # on it, so that its local tables may reference them.
        await execute_sql(dsn, f"SELECT citus_set_coordinator_host('{HOST}', {coordinator.port})")
        for worker in workers:  # one at a time: each syncs the metadata to the others
            await execute_sql(dsn, f"SELECT citus_add_node('{HOST}', {worker.port})")
    except BaseException:
        with contextlib.suppress(Exception):
            await drop_across(nodes, name)
        raise
    return dsn


async def make_template(nodes: Sequence[PostgresServer], name: str) -> None:
    """On every node, no one may connect to database ``name`` any more and its sessions are
    ended, Citus's maintenance daemon among them: CREATE DATABASE copies only a database
    no one is in (the daemon exits for good on SIGTERM, and starts again only with a
    session there)."""
    for node in nodes:  # the coordinator first: its sessions reach the workers'
        await execute_sql(
            node.dsn,
            f"ALTER DATABASE {quote_ident(name)} ALLOW_CONNECTIONS false; "
            f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            f"WHERE datname = {quote_literal(name)} AND pid <> pg_backend_pid()",
        )


async def copy_across(nodes: Sequence[PostgresServer], template: str, name: str) -> str:
    """Database ``name``, a copy of ``template`` (a :func:`make_template`) on every node,
    Citus's record of its database its own; the coordinator's DSN of it."""
    try:
        await asyncio.gather(*(_create(n.dsn, name, template=template) for n in nodes))
        own = _OWN_DATABASE.format(quote_literal(template))
        await asyncio.gather(*(execute_sql(node.admin_dsn(name), own) for node in nodes))
    except BaseException:
        with contextlib.suppress(Exception):
            await drop_across(nodes, name)
        raise
    return nodes[0].admin_dsn(name)


async def drop_across(nodes: Sequence[PostgresServer], name: str) -> None:
    # Shut first, everywhere: the nodes' Citus sessions connect to one another's copies of
    # the database (transaction recovery), and one arriving while DROP DATABASE waits for
    # the sessions it ended starts the maintenance daemon there again (drops of a database
    # copied moments before failed for 30 s and more without this).
    await asyncio.gather(*(execute_sql(node.dsn, _shut(name)) for node in nodes))
    await asyncio.gather(*(_drop_on(node, name) for node in nodes))


def _shut(name: str) -> str:
    """No new session in database ``name``, if there is one (a failed create may have left
    it on some nodes only)."""
    alter = quote_literal(f"ALTER DATABASE {quote_ident(name)} ALLOW_CONNECTIONS false")
    return (
        f"DO $$ BEGIN IF EXISTS (SELECT 1 FROM pg_database WHERE datname = "
        f"{quote_literal(name)}) THEN EXECUTE {alter}; END IF; END $$"
    )


async def _drop_on(node: PostgresServer, name: str) -> None:
    for attempt in range(1, DROP_ATTEMPTS + 1):
        try:
            await _drop(node.dsn, name)
            return
        except asyncpg.ObjectInUseError:
            if attempt == DROP_ATTEMPTS:
                raise
