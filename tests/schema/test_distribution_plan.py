"""distribute's plan, from a catalog described by hand: what goes where, in which order,
what is already done, and what it refuses before changing anything (the real cluster's
tests are tests/citus/test_distribute.py)."""

from __future__ import annotations

from typing import Any

import pytest

from silentpulse_db.errors import (
    CitusRequiredError,
    ConfigurationError,
    DirtyDatabaseError,
    DistributionError,
    SchemaVersionError,
)
from silentpulse_db.migrate.cli.distributing import format_distribution
from silentpulse_db.results.migrations import VersionState
from silentpulse_db.results.placement import (
    COORDINATOR,
    DISTRIBUTED,
    REFERENCE,
    DistributionReport,
)
from silentpulse_db.schema.distribution import (
    TENANT_FIRST_VERSION,
    Table,
    build_plan,
    check_version,
    coordinator_nodes,
    referenced_first,
)

KEEP = {"schema_migrations": "the runner's"}


def table(name: str, *refs: str, tenant: bool = True, **state: Any) -> Table:
    fields: dict[str, Any] = {
        "name": name,
        "qualified": f"public.{name}",
        "tenant": tenant,
        "refs": refs,
        "platform_keys": (),
        "owned": True,
        "method": None,
        "replication": None,
        "colocation": 0,
        "column": None,
        "shards": None,
        "local_bytes": 0,
    }
    fields.update(state)
    return Table(**fields)


def schema(**changed: dict[str, Any]) -> list[Table]:
    tables = [
        table("tenants", tenant=False),
        table("lookups", tenant=False),
        table("schema_migrations", tenant=False),
        table("users", "tenants", platform_keys=("users_email_key (lower(email))",)),
        table("assets", "tenants", "lookups"),
        table("alerts", "assets", "tenants"),
        table("alert_changes"),
        table("notes", "users", "assets"),
    ]
    return [t._replace(**changed.get(t.name, {})) for t in tables]


def plan(tables: list[Table], shard_count: int | None = None) -> Any:
    return build_plan(tables, KEEP, shard_count=shard_count, server_shards=32)


def test_what_goes_where_and_in_which_order() -> None:
    planned = plan(schema(assets={"local_bytes": 8192}, tenants={"local_bytes": 8192}))
    where = {t.table: t.placement for t in planned.tables}
    assert where == {
        "tenants": REFERENCE,
        "users": REFERENCE,  # its platform-wide key
        "lookups": REFERENCE,
        "alert_changes": DISTRIBUTED,
        "assets": DISTRIBUTED,
        "alerts": DISTRIBUTED,
        "notes": DISTRIBUTED,
        "schema_migrations": COORDINATOR,
    }
    reasons = {t.table: t.reason for t in planned.tables}
    assert "users_email_key (lower(email))" in reasons["users"]
    assert "referenced by assets" in reasons["lookups"]
    steps = [(s.action, s.table) for s in planned.steps]
    assert steps == [
        ("reference", "lookups"),
        ("reference", "tenants"),
        ("reference", "users"),
        ("distribute", "assets"),
        ("distribute", "notes"),
        # alerts and its log in one step, colocated with the others (citus_alerts.py)
        ("prepare the alert stream", "alerts"),
        # the coordinator's copies, referencing tables before the ones they reference
        ("free local copy", "assets"),
        ("free local copy", "tenants"),
    ]
    first, *rest = [s for s in planned.steps if s.action == "distribute"]
    assert first.statements[-1].endswith("shard_count => 32, colocate_with => 'none')")
    assert all(s.statements[-1].endswith("colocate_with => 'public.assets')") for s in rest)
    assert planned.anchor == "assets" and planned.shard_count == 32
    assert [s.name for s in planned.settings] == [
        "citus.enable_local_reference_table_foreign_keys",
        "shard_count",
        "citus.enable_unsafe_triggers",
    ]


def test_a_half_done_placement_goes_on_where_it_stopped() -> None:
    done = {"method": "h", "replication": "s", "colocation": 7, "column": "tenant_id", "shards": 16}
    tables = schema(
        tenants={"method": "n", "replication": "t"},
        lookups={"method": "n", "replication": "t"},
        users={"method": "n", "replication": "t"},
        assets=done,
        alerts={"method": "n", "replication": "s"},  # a Citus local table: still to do
    )
    planned = plan(tables)
    assert [(s.action, s.table) for s in planned.steps] == [
        ("distribute", "notes"),
        ("prepare the alert stream", "alerts"),
    ]
    assert planned.anchor == "assets" and planned.shard_count == 16
    assert "colocate_with => 'public.assets'" in planned.steps[0].statements[-1]
    with pytest.raises(ConfigurationError, match="have 16 shards"):
        plan(tables, shard_count=32)

    everything = schema(
        **{n: {"method": "n", "replication": "t"} for n in ("tenants", "lookups", "users")},
        **{n: done for n in ("assets", "alerts", "alert_changes", "notes")},
    )
    assert plan(everything).steps == ()
    assert plan(everything, shard_count=16).steps == ()


@pytest.mark.parametrize(
    ("name", "state", "says"),
    [
        ("assets", {"method": "h", "column": "id", "colocation": 1}, "distributed by id"),
        ("assets", {"method": "n", "replication": "t"}, "is a reference table"),
        ("users", {"method": "h", "column": "tenant_id", "colocation": 1}, "reference table"),
        ("assets", {"method": "n", "replication": "s", "colocation": 3}, "single-shard"),
    ],
)
def test_a_placement_distribute_does_not_make_is_refused(
    name: str, state: dict[str, Any], says: str
) -> None:
    with pytest.raises(DistributionError, match=says) as caught:
        plan(schema(**{name: state}))
    assert "undistribute_table('public." in str(caught.value)
    assert caught.value.step == "plan" and caught.value.table == name


def test_tenant_tables_in_two_colocation_groups_are_refused() -> None:
    hashed = {"method": "h", "column": "tenant_id", "shards": 32}
    tables = schema(assets={**hashed, "colocation": 1}, alerts={**hashed, "colocation": 2})
    with pytest.raises(DistributionError, match="2 colocation groups"):
        plan(tables)


def test_referenced_first_keeps_cycles_and_strangers_out_of_the_way() -> None:
    refs = {"a": ["b"], "b": ["a", "c"], "c": [], "d": ["elsewhere"]}
    assert referenced_first(refs, ["a", "b", "c", "d"]) == ["c", "b", "a", "d"]


def test_the_schema_version_it_needs() -> None:
    with pytest.raises(SchemaVersionError, match="never migrated") as caught:
        check_version(None, "db")
    assert (caught.value.required, caught.value.found) == (TENANT_FIRST_VERSION, None)
    with pytest.raises(SchemaVersionError, match=f"is at version 23: .* {TENANT_FIRST_VERSION}"):
        check_version(VersionState(23, False), "db")
    with pytest.raises(DirtyDatabaseError, match="dirty at version 48"):
        check_version(VersionState(48, True), "db")
    assert check_version(VersionState(TENANT_FIRST_VERSION, False), "db") == TENANT_FIRST_VERSION


class Answers:
    """A connection that answers coordinator_nodes' two questions."""

    def __init__(self, *rows: dict[str, Any]) -> None:
        self.rows = list(rows)

    async def fetchrow(self, sql: str) -> dict[str, Any]:
        return self.rows.pop(0)


@pytest.mark.parametrize(
    ("rows", "found"),
    [
        ([{"created": False, "available": False}], "plain PostgreSQL"),
        ([{"created": False, "available": True}], "citus extension in this database"),
        (
            [{"created": True}, {"coordinator": False, "nodes": 2, "shard_count": 32}],
            "a Citus worker",
        ),
        (
            [{"created": True}, {"coordinator": True, "nodes": 0, "shard_count": 32}],
            "without nodes for shards",
        ),
    ],
)
async def test_what_is_not_a_coordinator_says_what_it_is(
    rows: list[dict[str, Any]], found: str
) -> None:
    with pytest.raises(CitusRequiredError, match="distribute|citus_add_node") as caught:
        await coordinator_nodes(Answers(*rows), "postgresql://h/db")
    assert found in caught.value.found


async def test_a_coordinator_with_nodes() -> None:
    answers = Answers({"created": True}, {"coordinator": True, "nodes": 2, "shard_count": 32})
    assert await coordinator_nodes(answers, "db") == (2, 32)


def test_the_report_of_a_run_with_nothing_to_do() -> None:
    planned = plan(schema())
    report = DistributionReport(
        dry_run=False,
        version=48,
        shard_count=32,
        colocated_with="alert_changes",
        nodes=2,
        tables=planned.tables,
        steps=(),
        settings=(),
    )
    text = format_distribution(report)
    assert "nothing to do" in text and "steps" not in text
    shown = format_distribution(
        DistributionReport(True, 48, 32, None, 2, planned.tables, planned.steps, planned.settings)
    )
    assert "dry run: nothing changed" in shown
    assert "       SELECT create_reference_table('public.tenants');" in shown
