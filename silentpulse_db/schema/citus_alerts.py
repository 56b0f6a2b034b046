"""The alert stream on Citus: what distributing ``alerts`` and ``alert_changes`` needs.

``silentpulse-db distribute`` (issue 31) calls :func:`prepare_alert_stream_for_citus` on
the coordinator, on the connection it distributes with, where ``alerts`` comes in
foreign-key order (after ``assets`` and ``flow_pulses``, which it references), **in place
of** ``create_distributed_table`` for ``alert_changes`` and ``alerts``. It is idempotent
(run again, it only checks), and ``dry_run`` lists its steps. Decision record and
promises: docs/notifications.md, "On Citus".

What it does, each step only where it is not done yet:

1. checks that this is a Citus coordinator at migration 000059 or later (the trigger
   function that writes beside a shard, ``silentpulse_node_group()``, ``log_nodes``);
2. ``SET citus.enable_unsafe_triggers = on`` for the session: Citus distributes a table
   with triggers (``alerts``; ``alert_changes``' TRUNCATE guard) only so. The partition
   job needs it too, on Citus, to give a new month of ``alerts`` its statement triggers;
3. makes ``silentpulse_node_group()`` a function of every node
   (``create_distributed_function``: a database that had the function before the
   extension did not propagate it), for the listener's reads;
4. builds ``alert_changes_node_xid_seq_idx`` on ``((seq >> 48), xid, seq)`` (each node's
   order, which the listener reads) and drops ``alert_changes_xid_seq_idx`` (one order for
   all nodes' xids means nothing once they are several), both CONCURRENTLY;
5. gives ``alert_changes``' INSERT policy (only its owner writes the log) the owner by
   name, in place of 000022's subquery on ``pg_class``: Citus refuses a policy with a
   subquery on a distributed table. The same roles pass (the owner and its members); it
   no longer follows an ``ALTER TABLE ... OWNER TO`` by itself (run this again after one);
6. distributes ``alert_changes`` by ``tenant_id``, colocated with ``alerts`` (or with
   ``colocate_with`` while ``alerts`` is not distributed yet): first, so that a write to a
   shard of ``alerts`` always finds the shard of the log beside it;
7. distributes ``alerts`` by ``tenant_id`` beside it, in one transaction with its log
   triggers disabled and enabled again: Citus copies the rows already there into the
   shards with COPY, which would fire the shards' triggers and log every existing alert
   a second time. Writers wait on the table's lock meanwhile, as they do for any
   ``create_distributed_table``; no write goes unlogged;
8. checks that each worker draws the log's identity from its group's range (``seq >> 48``
   names the node a row's xid belongs to) and that both tables are colocated.

``alert_listener_positions`` and ``alert_changes_pruned`` (:data:`COORDINATOR_TABLES`)
stay plain tables of the coordinator: only the listener and retention use them, there;
a reference table would make every position the listener writes a two-phase commit on
every node.
"""

from __future__ import annotations

from typing import Any

from ..errors import ConfigurationError, RequiredVersionError
from ..migrate.version_table import VERSION_TABLE
from ..postgres.literals import quote_literal

LOG_VERSION = 59  # the migration that readies the log for Citus
NODE_INDEX = "alert_changes_node_xid_seq_idx"
PLAIN_INDEX = "alert_changes_xid_seq_idx"
# What a session that distributes alerts, or adds a month to it, needs on Citus.
SESSION_SETTINGS = {"citus.enable_unsafe_triggers": "on"}
# Left plain tables on the coordinator (not reference tables), on purpose.
COORDINATOR_TABLES = ("alert_listener_positions", "alert_changes_pruned")
ALERT_TABLES = ("alert_changes", "alerts")  # distributed by tenant_id, in this order

_STATE = """
    SELECT
        EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'citus') AS citus,
        (SELECT p.polroles = ARRAY[c.relowner]
         FROM pg_policy p JOIN pg_class c ON c.oid = p.polrelid
         WHERE p.polrelid = to_regclass('alert_changes')
           AND p.polname = 'alert_changes_written_by_owner') AS owner_policy,
        to_regprocedure('silentpulse_node_group()') IS NOT NULL AS prepared,
        (SELECT x.indisvalid FROM pg_index x WHERE x.indexrelid = to_regclass($1)) AS node_index,
        to_regclass($2) IS NOT NULL AS plain_index
"""
_DISTRIBUTED = """
    SELECT c.relname, p.colocationid
    FROM pg_catalog.pg_dist_partition p JOIN pg_class c ON c.oid = p.logicalrelid
    WHERE p.logicalrelid IN ('alerts'::regclass, 'alert_changes'::regclass)
"""
# The rows already in alerts are copied into its shards with COPY, which fires the shards'
# statement triggers: logged again, they would reach every consumer twice. Off for the
# copy, in the transaction that distributes (writers wait on its lock, as for any
# create_distributed_table), and on again before it commits, on the shards too.
_TOGGLE = """
DO $$
DECLARE
    r record;
BEGIN
    FOR r IN
        SELECT t.tgrelid::regclass AS tbl, t.tgname FROM pg_trigger t
        WHERE t.tgfoid = 'silentpulse_alert_notify_statement()'::regprocedure AND NOT t.tgisinternal
        ORDER BY t.tgrelid, t.tgname
    LOOP
        EXECUTE format('ALTER TABLE %s {0} TRIGGER %I', r.tbl, r.tgname);
    END LOOP;
END
$$;
"""
_DISTRIBUTE_ALERTS = (
    "BEGIN; SET LOCAL citus.multi_shard_modify_mode = 'sequential'; "
    + _TOGGLE.format("DISABLE")
    + "SELECT create_distributed_table('alerts', 'tenant_id', colocate_with => 'alert_changes'); "
    + _TOGGLE.format("ENABLE")
    + "COMMIT;"
)
# Who may write the log, as 000022's policy says it (pg_has_role(owner, 'USAGE'): the owner
# and its members), with no subquery: a policy TO a role admits its members.
_OWNER_POLICY = """
DO $$
BEGIN
    DROP POLICY alert_changes_written_by_owner ON alert_changes;
    EXECUTE format(
        'CREATE POLICY alert_changes_written_by_owner ON alert_changes FOR INSERT TO %I '
        'WITH CHECK (true)',
        (SELECT pg_get_userbyid(c.relowner) FROM pg_class c
         WHERE c.oid = 'alert_changes'::regclass));
END
$$
"""
_FUNCTION_EVERYWHERE = """
    SELECT count(*) FROM pg_catalog.pg_dist_object
    WHERE classid = 'pg_proc'::regclass AND objid = 'silentpulse_node_group()'::regprocedure
"""
# Each worker's group and the first value of its range of the log's identity.
_RANGES = """
    SELECT n.groupid, r.success, r.result
    FROM run_command_on_workers($$
        SELECT seqmin FROM pg_sequence
        WHERE seqrelid = pg_get_serial_sequence('alert_changes', 'seq')::regclass$$) r
    JOIN pg_catalog.pg_dist_node n ON n.nodename = r.nodename AND n.nodeport = r.nodeport
"""


async def prepare_alert_stream_for_citus(
    conn: Any, *, colocate_with: str = "default", dry_run: bool = False
) -> list[str]:
    """Ready the alert stream for Citus on ``conn``'s coordinator (an asyncpg connection,
    outside a transaction: the indexes are built CONCURRENTLY); returns the steps taken,
    in words (with ``dry_run``: the steps it would take, changing nothing).

    Raises ConfigurationError on plain PostgreSQL, RequiredVersionError before migration
    000059, ConfigurationError too when the cluster breaks what the listener relies on."""
    state = await conn.fetchrow(_STATE, NODE_INDEX, PLAIN_INDEX)
    if not state["citus"]:
        raise ConfigurationError(
            "prepare_alert_stream_for_citus runs on a Citus coordinator, and this database "
            "has no citus extension: on plain PostgreSQL the alert stream needs nothing"
        )
    if not state["prepared"]:
        raise RequiredVersionError(
            f"the alert stream is distributed from migration {LOG_VERSION:06d} on (its "
            f"trigger writes beside a shard and notifies no one): run `silentpulse-db up` "
            f"first",
            file="prepare_alert_stream_for_citus",
            table=VERSION_TABLE,
            version=LOG_VERSION,
            found="no silentpulse_node_group()",
        )
    if conn.is_in_transaction() and not dry_run:
        raise ConfigurationError(
            "prepare_alert_stream_for_citus builds an index CONCURRENTLY: call it outside "
            "a transaction"
        )
    distributed = {row["relname"]: row["colocationid"] for row in await conn.fetch(_DISTRIBUTED)}
    steps = _plan(state, distributed, await conn.fetchval(_FUNCTION_EVERYWHERE), colocate_with)
    if dry_run:
        return [text for text, _ in steps]
    for _, sql in steps:
        try:
            await conn.execute(sql)
        except BaseException:
            if conn.is_in_transaction():  # the step that distributes alerts is a script
                await conn.execute("ROLLBACK")
            raise
    await _check(conn)
    return [text for text, _ in steps]


def _plan(
    state: Any, distributed: dict[str, int], everywhere: int, colocate_with: str
) -> list[tuple[str, str]]:
    """(what, SQL) of each step not done yet, in order."""
    settings = "; ".join(f"SET {name} = {value}" for name, value in SESSION_SETTINGS.items())
    steps = [(f"{settings} (this session: distributing alerts needs it)", settings)]
    if not everywhere:
        steps.append(
            (
                "silentpulse_node_group() made a function of every node",
                "SELECT create_distributed_function('silentpulse_node_group()')",
            )
        )
    if state["node_index"] is False:  # a failed concurrent build left it INVALID
        steps.append((f"drop the INVALID {NODE_INDEX}", f"DROP INDEX CONCURRENTLY {NODE_INDEX}"))
    if not state["node_index"]:
        steps.append(
            (
                f"build {NODE_INDEX} on alert_changes ((seq >> 48), xid, seq), CONCURRENTLY",
                f"CREATE INDEX CONCURRENTLY {NODE_INDEX} ON alert_changes ((seq >> 48), xid, seq)",
            )
        )
    if state["plain_index"]:
        steps.append(
            (
                f"drop {PLAIN_INDEX} (one xid order across nodes means nothing), CONCURRENTLY",
                f"DROP INDEX CONCURRENTLY {PLAIN_INDEX}",
            )
        )
    if not state["owner_policy"]:
        steps.append(
            (
                "alert_changes_written_by_owner: for the owner by name, not by a subquery "
                "(Citus refuses one in a distributed table's policy)",
                _OWNER_POLICY,
            )
        )
    if "alert_changes" not in distributed:
        anchor = "alerts" if "alerts" in distributed else colocate_with
        steps.append(
            (
                f"distribute alert_changes by tenant_id, colocated with {anchor}",
                "SELECT create_distributed_table('alert_changes', 'tenant_id', "
                f"colocate_with => {quote_literal(anchor)})",
            )
        )
    if "alerts" not in distributed:
        steps.append(
            (
                "distribute alerts by tenant_id, colocated with alert_changes (its log "
                "triggers off while Citus copies its rows, in the same transaction)",
                _DISTRIBUTE_ALERTS,
            )
        )
    return steps


async def _check(conn: Any) -> None:
    """What the listener relies on: each worker's identity range, colocation."""
    for row in await conn.fetch(_RANGES):
        expected = (row["groupid"] << 48) + 1
        if not row["success"] or int(row["result"]) != expected:
            raise ConfigurationError(
                f"the worker of node group {row['groupid']} draws alert_changes.seq from "
                f"{row['result']}, not from {expected} (group << 48 + 1, as Citus sets a "
                f"bigint identity on a worker): the listener tells nodes apart by seq >> 48. "
                f"Let Citus set the sequence (do not ALTER it by hand)"
            )
    distributed = {row["relname"]: row["colocationid"] for row in await conn.fetch(_DISTRIBUTED)}
    if len(distributed) == 2 and distributed["alerts"] != distributed["alert_changes"]:
        raise ConfigurationError(
            "alerts and alert_changes are distributed in different colocation groups: the "
            "trigger of a shard of alerts writes into the shard of alert_changes beside it. "
            "Run SELECT update_distributed_table_colocation('alert_changes', "
            "colocate_with => 'alerts')"
        )
