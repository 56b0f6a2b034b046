"""drift on a Citus coordinator (issue 31, 3): Citus's own objects are no drift, and what
the migration files made is compared as on plain PostgreSQL, distributed or not."""

from __future__ import annotations

from silentpulse_db import run_migrations
from silentpulse_db.migrate import apply_prerequisites, drift
from silentpulse_db.migrate.schema_diff.compare import RULE_CITUS

from helpers import execute, fetch

# The schema as released (000023), where tenants and ai_configs distribute.
RELEASED = 23


async def test_citus_own_objects_are_excused_and_the_schema_still_compared(
    silentpulse_citus_database: str,
) -> None:
    dsn = silentpulse_citus_database
    await apply_prerequisites(dsn)
    await run_migrations(dsn, target=RELEASED)
    # tenants a reference table (with a placement on the coordinator, hidden from the
    # catalog), ai_configs distributed by tenant.
    await execute(
        dsn,
        "SET citus.enable_local_reference_table_foreign_keys = off; "
        "SELECT create_reference_table('tenants')",
    )
    await execute(dsn, "SELECT create_distributed_table('ai_configs', 'tenant_id')")
    # What Citus made that drift used to report: schemas, views in public and tables
    # granted to PUBLIC, a sequence. Still there: excused by their extension, not absent.
    made = await fetch(
        dsn,
        "SELECT pg_describe_object(classid, objid, 0) AS what FROM pg_depend "
        "WHERE deptype = 'e' AND refobjid IN (SELECT oid FROM pg_extension "
        "WHERE extname IN ('citus', 'citus_columnar'))",
    )
    what = {r["what"] for r in made}
    assert {"schema citus", "schema columnar", "view citus_tables"} <= what

    report = await drift(dsn)
    assert report.differences == ()
    assert {(e.kind, e.key) for e in report.excused if e.rule == RULE_CITUS} == {
        ("extension", "citus"),
        ("extension", "citus_columnar"),
    }

    # A change to a distributed table, and to a reference table, is still drift, with
    # its fix; a grant to PUBLIC on Citus's view (there all along) is not.
    await execute(dsn, "GRANT SELECT ON ai_configs TO PUBLIC")
    await execute(dsn, "CREATE INDEX ai_configs_by_model ON ai_configs (model)")
    await execute(dsn, "ALTER TABLE tenants ALTER COLUMN name DROP NOT NULL")
    report = await drift(dsn)
    fixes = {(d.kind, d.key, d.change): d.fix or "" for d in report.differences}
    assert set(fixes) == {
        ("grant", "public.ai_configs to PUBLIC: SELECT", "unexpected"),
        ("index", "public.ai_configs_by_model", "unexpected"),
        ("column", "public.tenants.name", "changed"),
    }, fixes
    assert fixes["grant", "public.ai_configs to PUBLIC: SELECT", "unexpected"] == (
        "REVOKE SELECT ON public.ai_configs FROM PUBLIC"
    )
    assert fixes["index", "public.ai_configs_by_model", "unexpected"] == (
        "DROP INDEX CONCURRENTLY public.ai_configs_by_model"
    )
    assert (
        "ALTER TABLE public.tenants ALTER COLUMN name SET NOT NULL"
        in (fixes["column", "public.tenants.name", "changed"])
    )
