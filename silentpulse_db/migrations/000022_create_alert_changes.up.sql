-- 000022_create_alert_changes: an append-only log of alert changes, which the
-- listener reads; NOTIFY only wakes it.
--
-- Until now the listener trusted the notification's payload (any role that can
-- connect may pg_notify on the channel) and caught up by status_changed_at
-- (which a tenant's INSERT may set to any date). Both are gone from the path:
-- the statement trigger that notifies (000019) now also writes one row here
-- for each alert created and each status change, in the same transaction.
--
-- Position: (xid, seq). xid is the writing transaction's id
-- (pg_current_xact_id()), seq an identity: both assigned by the server, no
-- caller's value takes part. A reader reads in (xid, seq) order only below
-- pg_snapshot_xmin(pg_current_snapshot()), the horizon under which no open
-- transaction can still commit: a transaction that commits late is never
-- skipped, and one that rolled back leaves nothing to wait for. Each row
-- carries tenant_id and no order across nodes is needed, so the log can be
-- distributed beside alerts by tenant later. changed_at is the alert's
-- status_changed_at (data, shown to handlers); recorded_at is the server's
-- now() (listen_alerts(since=) and retention's age).
--
-- Who may do what, whatever blanket GRANT an operator runs:
-- - rows are written by the trigger function, SECURITY DEFINER, as the table's
--   owner; the INSERT policy admits the owner (and its members) alone;
-- - a tenant's role reads its own tenant's rows (the usual policy) and can
--   neither update nor delete (no policy), nor TRUNCATE (a guard trigger);
-- - the listener and retention run as the jobs role, which bypasses RLS.
--
-- The 000019 payload is kept as it is, so that a listener of an older library
-- version keeps delivering during a rolling deploy; the new listener reads
-- nothing from it. A direct write to a partition (which fires the partition's
-- statement triggers, not the parent's) is logged too: the partitions get the
-- parent's statement triggers, here and in silentpulse_secure_partition().
-- Positions of named consumers (000021) gain the log position; a consumer
-- with none yet is carried over by the listener (docs/notifications.md).
SET LOCAL lock_timeout = '3s';

CREATE TABLE alert_changes (
    xid         xid8 NOT NULL DEFAULT pg_current_xact_id(),
    seq         bigint GENERATED ALWAYS AS IDENTITY,
    tenant_id   uuid NOT NULL,
    alert_id    uuid NOT NULL,
    started_at  timestamptz NOT NULL,
    operation   text CONSTRAINT alert_changes_operation_check
                CHECK (operation IN ('INSERT', 'UPDATE')),
    status      text NOT NULL,
    changed_at  timestamptz NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT alert_changes_pkey PRIMARY KEY (xid, seq)
);
COMMENT ON TABLE alert_changes IS 'Append-only log of alert creations and status changes, read by listen_alerts in (xid, seq) order';
COMMENT ON COLUMN alert_changes.operation IS 'INSERT: created with this status; UPDATE: its status changed; NULL: carried over, unknown';

ALTER TABLE alert_changes ENABLE ROW LEVEL SECURITY;
ALTER TABLE alert_changes FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation_alert_changes ON alert_changes FOR SELECT
    USING (tenant_id = NULLIF(current_setting('app.current_tenant', true), '')::uuid);
-- An uncorrelated subquery: evaluated once per statement, not per row.
CREATE POLICY alert_changes_written_by_owner ON alert_changes FOR INSERT
    WITH CHECK ((SELECT pg_has_role(c.relowner, 'USAGE') FROM pg_class c
                 WHERE c.oid = 'alert_changes'::regclass));

-- Retention's mark: the highest position it deleted. A listener behind it has
-- missed changes and says so (AlertGapError) instead of skipping them.
CREATE TABLE alert_changes_pruned (
    one         boolean PRIMARY KEY DEFAULT true CONSTRAINT alert_changes_pruned_one_row CHECK (one),
    xid         xid8 NOT NULL,
    seq         bigint NOT NULL,
    pruned_at   timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE alert_changes_pruned IS 'The highest alert_changes position retention deleted (one row)';
ALTER TABLE alert_changes_pruned ENABLE ROW LEVEL SECURITY;
ALTER TABLE alert_changes_pruned FORCE ROW LEVEL SECURITY;

-- TRUNCATE is not subject to row-level security: a blanket GRANT ALL would let
-- a tenant's role empty the log under every listener.
CREATE FUNCTION silentpulse_alert_changes_guard() RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    IF NOT pg_has_role((SELECT c.relowner FROM pg_class c WHERE c.oid = TG_RELID), 'USAGE')
       AND NOT (SELECT r.rolbypassrls FROM pg_roles r WHERE r.rolname = current_user) THEN
        RAISE EXCEPTION 'role % may not % %: it is written by the alerts trigger and pruned by silentpulse-db retention',
            current_user, TG_OP, TG_TABLE_NAME USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION silentpulse_alert_changes_guard() IS 'Refuses TRUNCATE of alert_changes but to its owner and roles that bypass row-level security';
CREATE TRIGGER alert_changes_truncate_guard
    BEFORE TRUNCATE ON alert_changes
    FOR EACH STATEMENT EXECUTE FUNCTION silentpulse_alert_changes_guard();

-- 000019's function, writing the log before it notifies (payload unchanged).
CREATE OR REPLACE FUNCTION silentpulse_alert_notify_statement() RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
AS $$
DECLARE
    changed integer;
    first_at timestamptz;
    last_at timestamptz;
    alerts jsonb;
BEGIN
    -- As the owner: only for alerts and its partitions, not for a table of the
    -- caller's own (a temporary one, with forged rows in its transition table).
    IF TG_RELID <> 'alerts'::regclass
       AND NOT EXISTS (SELECT 1 FROM pg_inherits i
                       WHERE i.inhrelid = TG_RELID AND i.inhparent = 'alerts'::regclass) THEN
        RAISE EXCEPTION 'silentpulse_alert_notify_statement() logs changes of alerts only, not of %', TG_RELID::regclass
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF TG_OP = 'INSERT' THEN
        INSERT INTO alert_changes (tenant_id, alert_id, started_at, operation, status, changed_at)
        SELECT tenant_id, id, started_at, 'INSERT', status, status_changed_at FROM new_rows;
        SELECT count(*), min(status_changed_at), max(status_changed_at)
        INTO changed, first_at, last_at FROM new_rows;
        IF changed BETWEEN 1 AND 50 THEN
            SELECT jsonb_agg(jsonb_build_array(id, status, status_changed_at) ORDER BY id)
            INTO alerts FROM new_rows;
        END IF;
    ELSE
        INSERT INTO alert_changes (tenant_id, alert_id, started_at, operation, status, changed_at)
        SELECT n.tenant_id, n.id, n.started_at, 'UPDATE', n.status, n.status_changed_at
        FROM new_rows n JOIN old_rows o ON o.id = n.id
        WHERE n.status IS DISTINCT FROM o.status;
        GET DIAGNOSTICS changed = ROW_COUNT;
        IF changed > 0 THEN
            SELECT min(n.status_changed_at), max(n.status_changed_at)
            INTO first_at, last_at
            FROM new_rows n JOIN old_rows o ON o.id = n.id
            WHERE n.status IS DISTINCT FROM o.status;
        END IF;
        IF changed BETWEEN 1 AND 50 THEN
            SELECT jsonb_agg(jsonb_build_array(n.id, n.status, n.status_changed_at) ORDER BY n.id)
            INTO alerts
            FROM new_rows n JOIN old_rows o ON o.id = n.id
            WHERE n.status IS DISTINCT FROM o.status;
        END IF;
    END IF;
    IF changed > 0 THEN
        PERFORM pg_notify('silentpulse_alerts', jsonb_strip_nulls(jsonb_build_object(
            'op', TG_OP, 'count', changed, 'since', first_at, 'until', last_at, 'alerts', alerts))::text);
    END IF;
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION silentpulse_alert_notify_statement()
    IS 'Per statement that creates alerts or changes their status: one row per alert in alert_changes, one pg_notify on silentpulse_alerts';

-- A partition gets its parent's statement-level triggers as well as its
-- row-level security (000004's function, extended): a statement that names a
-- partition fires the partition's statement triggers, never the parent's.
CREATE OR REPLACE FUNCTION silentpulse_secure_partition(part regclass) RETURNS integer
LANGUAGE plpgsql
AS $$
DECLARE
    parent oid;
    pol record;
    trg record;
    created integer := 0;
BEGIN
    SELECT i.inhparent INTO parent FROM pg_inherits i WHERE i.inhrelid = part;
    IF parent IS NULL THEN
        RETURN 0;  -- not a partition
    END IF;
    FOR trg IN
        -- pg_get_triggerdef names the table schema-qualified: ON "schema"."table"
        SELECT t.tgname, pg_get_triggerdef(t.oid) AS def,
               format(' ON %I.%I ', n.nspname, c.relname) AS on_parent
        FROM pg_trigger t
        JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE t.tgrelid = parent AND NOT t.tgisinternal AND (t.tgtype & 1) = 0  -- statement-level
          AND NOT EXISTS (SELECT 1 FROM pg_trigger u WHERE u.tgrelid = part AND u.tgname = t.tgname)
        ORDER BY t.tgname
    LOOP
        EXECUTE replace(trg.def, trg.on_parent, format(' ON %s ', part));
        created := created + 1;
    END LOOP;
    IF NOT (SELECT c.relrowsecurity FROM pg_class c WHERE c.oid = parent) THEN
        RETURN created;  -- its parent has no row-level security to copy
    END IF;
    IF NOT (SELECT c.relrowsecurity AND c.relforcerowsecurity FROM pg_class c WHERE c.oid = part) THEN
        EXECUTE format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', part);
        EXECUTE format('ALTER TABLE %s FORCE ROW LEVEL SECURITY', part);
    END IF;
    FOR pol IN
        SELECT p.polname, p.polpermissive, p.polcmd,
               CASE WHEN p.polroles = '{0}' THEN 'PUBLIC'
                    ELSE (SELECT string_agg(quote_ident(r.rolname), ', ')
                          FROM pg_roles r WHERE r.oid = ANY (p.polroles)) END AS roles,
               pg_get_expr(p.polqual, p.polrelid) AS qual,
               pg_get_expr(p.polwithcheck, p.polrelid) AS with_check
        FROM pg_policy p
        WHERE p.polrelid = parent
          AND NOT EXISTS (SELECT 1 FROM pg_policy q WHERE q.polrelid = part AND q.polname = p.polname)
        ORDER BY p.polname
    LOOP
        EXECUTE format(
            'CREATE POLICY %I ON %s AS %s FOR %s TO %s%s%s',
            pol.polname, part,
            CASE WHEN pol.polpermissive THEN 'PERMISSIVE' ELSE 'RESTRICTIVE' END,
            CASE pol.polcmd WHEN 'r' THEN 'SELECT' WHEN 'a' THEN 'INSERT' WHEN 'w' THEN 'UPDATE'
                            WHEN 'd' THEN 'DELETE' ELSE 'ALL' END,
            pol.roles,
            coalesce(' USING (' || pol.qual || ')', ''),
            coalesce(' WITH CHECK (' || pol.with_check || ')', '')
        );
        created := created + 1;
    END LOOP;
    RETURN created;
END
$$;
COMMENT ON FUNCTION silentpulse_secure_partition(regclass)
    IS 'Gives a partition its parent''s statement-level triggers and row-level security (enabled, forced, same policies); idempotent';

-- Pinned: a function must not resolve names through the caller's search_path
-- (pg_catalog, not listed, is searched first; pg_temp last). A SECURITY
-- DEFINER function above all.
DO $$
BEGIN
    EXECUTE format('ALTER FUNCTION silentpulse_alert_notify_statement() SET search_path = %I, pg_temp',
                   current_schema());
    EXECUTE format('ALTER FUNCTION silentpulse_alert_changes_guard() SET search_path = %I, pg_temp',
                   current_schema());
    EXECUTE format('ALTER FUNCTION silentpulse_secure_partition(regclass) SET search_path = %I, pg_temp',
                   current_schema());
END
$$;

-- The existing partitions of alerts (the default one included). Each CREATE TRIGGER
-- holds its partition (SHARE ROW EXCLUSIVE) to the commit, in OID order, while a write
-- through alerts locks the partitions in bound order: with a month created after later
-- ones, the two deadlocked. The parent first: writes through it wait there, holding no
-- partition; reads go on.
LOCK TABLE ONLY alerts IN SHARE ROW EXCLUSIVE MODE;
SELECT silentpulse_secure_partition(i.inhrelid::regclass)
FROM pg_inherits i
WHERE i.inhparent = 'alerts'::regclass
ORDER BY i.inhrelid;

-- Named consumers: the log position they reached. NULL: not carried over yet.
ALTER TABLE alert_listener_positions ADD COLUMN log_xid xid8, ADD COLUMN log_seq bigint;
COMMENT ON COLUMN alert_listener_positions.log_xid IS 'With log_seq: the last alert_changes row delivered (NULL: not carried over from changed_at yet)';
