"""The hand changes an on-call engineer makes, each with what drift must name."""

from __future__ import annotations

from datetime import datetime, timezone

MONTH = datetime.now(timezone.utc).strftime("%Y_%m")

# (what an operator did, the SQL, the kind and key drift must name, its change).
HAND_CHANGES = [
    (
        "an index created in a hurry",
        "CREATE INDEX alerts_severity_hurry ON alerts (severity)",
        ("index", "public.alerts_severity_hurry", "unexpected"),
    ),
    (
        "a column widened",
        "ALTER TABLE assets ALTER COLUMN hostname TYPE varchar(1000)",
        ("column", "public.assets.hostname", "changed"),
    ),
    (
        "a policy dropped to debug a tenant's report",
        "DROP POLICY tenant_isolation_assets ON assets",
        ("policy", "public.assets.tenant_isolation_assets", "missing"),
    ),
    (
        "a policy's expression loosened",
        "ALTER POLICY tenant_isolation_users ON users USING (true)",
        ("policy", "public.users.tenant_isolation_users", "changed"),
    ),
    (
        "a policy dropped on one partition only",
        f"DROP POLICY tenant_isolation_alerts ON alerts_p{MONTH}",
        ("policy", f"public.alerts_p{MONTH}.tenant_isolation_alerts", "missing"),
    ),
    (
        "a foreign key re-added NOT VALID",
        "ALTER TABLE users DROP CONSTRAINT users_tenant_id_fkey; "
        "ALTER TABLE users ADD CONSTRAINT users_tenant_id_fkey FOREIGN KEY (tenant_id) "
        "REFERENCES tenants (id) NOT VALID",
        ("constraint", "public.users.users_tenant_id_fkey", "changed"),
    ),
    (
        "an index left INVALID",
        "UPDATE pg_index SET indisvalid = false "
        "WHERE indexrelid = 'public.assets_tenant_region_idx'::regclass",
        ("index", "public.assets_tenant_region_idx", "changed"),
    ),
    (
        "row-level security switched off",
        "ALTER TABLE assets DISABLE ROW LEVEL SECURITY",
        ("relation", "public.assets", "changed"),
    ),
    (
        "the alert trigger disabled",
        "ALTER TABLE alerts DISABLE TRIGGER alerts_notify_insert",
        ("trigger", "public.alerts.alerts_notify_insert", "changed"),
    ),
    (
        "a function patched in place",
        "CREATE OR REPLACE FUNCTION silentpulse_alert_stamp() RETURNS trigger "
        "LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$",
        ("function", "public.silentpulse_alert_stamp()", "changed"),
    ),
    (
        "a NOT NULL dropped",
        "ALTER TABLE tenants ALTER COLUMN name DROP NOT NULL",
        ("column", "public.tenants.name", "changed"),
    ),
    (
        "everything granted to a reporting role",
        "DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'drift_reporting') "
        "THEN CREATE ROLE drift_reporting; END IF; END $$; "
        "GRANT ALL ON tenants TO drift_reporting",
        ("grant", "public.tenants to drift_reporting: SELECT", "unexpected"),
    ),
    (
        "one partition given to another owner",
        "DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'drift_other') "
        "THEN CREATE ROLE drift_other; END IF; END $$; "
        f"ALTER TABLE alerts_p{MONTH} OWNER TO drift_other",
        ("owner", f"relation public.alerts_p{MONTH}", "changed"),
    ),
    # What a first review of drift found unseen or excused wrongly:
    (
        "a month detached by hand, its row-level security off",
        f"ALTER TABLE alerts DETACH PARTITION alerts_p{MONTH}; "
        f"ALTER TABLE alerts_p{MONTH} DISABLE ROW LEVEL SECURITY",
        ("partition", f"public.alerts_p{MONTH}", "changed"),
    ),
    (
        "this month dropped by hand",
        f"DROP TABLE audit_logs_p{MONTH}",
        ("partition", f"public.audit_logs_p{MONTH}", "missing"),
    ),
    (
        "every table granted to PUBLIC",
        "GRANT SELECT ON ALL TABLES IN SCHEMA public TO PUBLIC",
        ("grant", "public.tenants to PUBLIC: SELECT", "unexpected"),
    ),
    (
        "a default privilege for PUBLIC",
        "ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO PUBLIC",
        ("default privilege", ": SELECT on tables to PUBLIC", "unexpected"),
    ),
    (
        "the foreign keys' triggers disabled",
        "ALTER TABLE assets DISABLE TRIGGER ALL",
        ("relation", "public.assets", "changed"),
    ),
    (
        "a partitioned table's column retyped",
        "ALTER TABLE alerts ALTER COLUMN severity TYPE varchar(40)",
        ("column", "public.alerts.severity", "changed"),
    ),
]
