"""Grants in drift: which ones the runbook gives, so that they are no drift.

The files grant nothing; the runbook has operators give the application role its
privileges, before the first deploy by default privileges (ALTER DEFAULT
PRIVILEGES: every table the owner creates gets them) or, on a database that
predates them, by a blanket ``GRANT ... ON ALL TABLES IN SCHEMA``. Only what the
runbook gives is excused: table privileges SELECT, INSERT, UPDATE, DELETE and
sequence privileges USAGE, SELECT, to a role other than PUBLIC. Anything wider
(PUBLIC, TRUNCATE, a default privilege the runbook does not set) stays drift.

A blanket grant is excused only to a role the runbook names (the app role,
``silentpulse_app`` unless the operator names its own) or the database's own default
privileges name: any role holding SELECT on every table may set
``app.current_tenant`` itself and read every tenant's rows, so a new one is drift.
"""

from __future__ import annotations

from ...results.proofs import DriftDifference, DriftExcuse
from ..catalog.reader import Catalog, CatalogObject

OWNER = "<owner>"
RULE_DEFAULT_PRIVILEGES = "granted by the default privileges (ALTER DEFAULT PRIVILEGES, runbook)"
RULE_BLANKET = "a blanket grant on every table (GRANT ... ON ALL TABLES IN SCHEMA, runbook)"

# What the runbook grants, by pg_default_acl's object type ('r' tables, 'S' sequences).
# The application role the runbook (docs/operations.md) names.
RUNBOOK_APP_ROLES = ("silentpulse_app",)

RUNBOOK = {
    "r": frozenset({"SELECT", "INSERT", "UPDATE", "DELETE"}),
    "S": frozenset({"USAGE", "SELECT"}),
}
_KINDS = {"r": ("kind r", "kind p"), "S": ("kind S",)}

Objects = dict[str, dict[str, CatalogObject]]


def runbook_grant(grantee: str, privilege: str, objtype: str) -> bool:
    return grantee not in ("PUBLIC", OWNER) and privilege in RUNBOOK.get(objtype, frozenset())


def expect_default_grants(
    want: Objects, have: Objects, live: Catalog, excused: list[DriftExcuse]
) -> tuple[dict[str, str], list[DriftDifference]]:
    """Add to ``want`` the runbook's grants that live's default privileges give on what
    its owner made. Returns those on tables ("grantee: privilege" -> rule, for the
    partitions), and the default privileges the runbook does not set, as drift."""
    table_wide: dict[str, str] = {}
    extra: list[DriftDifference] = []
    for role, grantee, privilege, objtype in live.default_privileges:
        if role != live.owner:
            continue
        if not runbook_grant(grantee, privilege, objtype):
            extra.append(_default_privilege(role, grantee, privilege, objtype))
            continue
        if objtype == "r":
            table_wide[f"{grantee}: {privilege}"] = RULE_DEFAULT_PRIVILEGES
        for relation in _owned(have, objtype):
            key = f"{relation} to {grantee}: {privilege}"
            if key in want.setdefault("grant", {}):
                continue
            found = have.get("grant", {}).get(key)
            want["grant"][key] = found or CatalogObject(
                "granted", relation, f"GRANT {privilege} ON {relation} TO {grantee}", None
            )
            if found is not None:
                excused.append(DriftExcuse("grant", key, RULE_DEFAULT_PRIVILEGES))
    return table_wide, extra


def _owned(have: Objects, objtype: str) -> list[str]:
    """The relations of ``objtype`` that the migrating role owns."""
    owners = have.get("owner", {})
    return [
        key
        for key, obj in have.get("relation", {}).items()
        if obj.value.startswith(_KINDS[objtype])
        and owners.get(f"relation {key}", CatalogObject("", None, None, None)).value == OWNER
    ]


def _default_privilege(role: str, grantee: str, privilege: str, objtype: str) -> DriftDifference:
    on = {"r": "TABLES", "S": "SEQUENCES", "f": "FUNCTIONS", "T": "TYPES", "n": "SCHEMAS"}
    what = on.get(objtype, objtype)
    return DriftDifference(
        kind="default privilege",
        key=f"{role}: {privilege} on {what.lower()} to {grantee}",
        change="unexpected",
        expected=None,
        actual="granted",
        fix=(
            f"ALTER DEFAULT PRIVILEGES FOR ROLE {role} IN SCHEMA public "
            f"REVOKE {privilege} ON {what} FROM {grantee}"
        ),
    )


def named_roles(live: Catalog, app_roles: tuple[str, ...]) -> frozenset[str]:
    """The roles a blanket grant may be excused to: ``app_roles`` (the runbook's) and
    those the migrating role's default privileges grant the runbook's privileges to."""
    named = {
        grantee
        for role, grantee, privilege, objtype in live.default_privileges
        if role == live.owner and runbook_grant(grantee, privilege, objtype)
    }
    return frozenset(named | set(app_roles))


def expect_blanket_grants(
    want: Objects, have: Objects, excused: list[DriftExcuse], named: frozenset[str]
) -> dict[str, str]:
    """Add to ``want`` a runbook grant the live database holds on every one of its
    tables (or sequences) to a role in ``named``: one table's extra grant is drift, a
    named role's on all of them is the runbook's, another role's is drift (it reads
    every tenant). Returns those on tables ("grantee: privilege" -> rule)."""
    blanket: dict[str, str] = {}
    for objtype, kinds in _KINDS.items():
        relations = {
            key for key, obj in have.get("relation", {}).items() if obj.value.startswith(kinds)
        }
        holders: dict[str, set[str]] = {}
        for key in have.get("grant", {}):
            relation, _, rest = key.partition(" to ")
            grantee, _, privilege = rest.rpartition(": ")
            if (
                relation in relations
                and grantee in named
                and runbook_grant(grantee, privilege, objtype)
            ):
                holders.setdefault(rest, set()).add(relation)
        for rest in (rest for rest, on in holders.items() if on == relations):
            for relation in relations:
                key = f"{relation} to {rest}"
                if key not in want.setdefault("grant", {}):
                    want["grant"][key] = have["grant"][key]
                    excused.append(DriftExcuse("grant", key, RULE_BLANKET))
            if objtype == "r":
                blanket[rest] = RULE_BLANKET
    return blanket
