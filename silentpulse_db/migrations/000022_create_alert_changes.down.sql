-- 000022_create_alert_changes: reverses 000022_create_alert_changes.up.sql exactly:
-- 000019's notifying function, 000004's silentpulse_secure_partition(), no log.
SET LOCAL lock_timeout = '3s';

ALTER TABLE alert_listener_positions DROP COLUMN log_seq, DROP COLUMN log_xid;

-- The statement triggers the up gave the partitions of alerts. DROP TRIGGER holds its
-- partition ACCESS EXCLUSIVE to the commit, in OID order; reads and writes through
-- alerts lock the partitions in bound order. The parent first, as the up does: they
-- wait there, holding no partition, instead of a deadlock.
LOCK TABLE ONLY alerts IN ACCESS EXCLUSIVE MODE;
DO $$
DECLARE
    trg record;
BEGIN
    FOR trg IN
        SELECT t.tgname, t.tgrelid::regclass AS part
        FROM pg_trigger t JOIN pg_inherits i ON i.inhrelid = t.tgrelid
        WHERE i.inhparent = 'alerts'::regclass AND NOT t.tgisinternal AND (t.tgtype & 1) = 0
          AND t.tgname IN ('alerts_notify_insert', 'alerts_notify_update')
        ORDER BY t.tgrelid, t.tgname
    LOOP
        EXECUTE format('DROP TRIGGER %I ON %s', trg.tgname, trg.part);
    END LOOP;
END
$$;

-- 000019's function, as it was.
CREATE OR REPLACE FUNCTION silentpulse_alert_notify_statement() RETURNS trigger
LANGUAGE plpgsql
AS $$
DECLARE
    changed integer;
    first_at timestamptz;
    last_at timestamptz;
    alerts jsonb;
BEGIN
    IF TG_OP = 'INSERT' THEN
        SELECT count(*), min(status_changed_at), max(status_changed_at)
        INTO changed, first_at, last_at FROM new_rows;
        IF changed BETWEEN 1 AND 50 THEN
            SELECT jsonb_agg(jsonb_build_array(id, status, status_changed_at) ORDER BY id)
            INTO alerts FROM new_rows;
        END IF;
    ELSE
        SELECT count(*), min(n.status_changed_at), max(n.status_changed_at)
        INTO changed, first_at, last_at
        FROM new_rows n JOIN old_rows o ON o.id = n.id
        WHERE n.status IS DISTINCT FROM o.status;
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
    IS 'One pg_notify on silentpulse_alerts per statement that creates alerts or changes their status';

-- 000004's function, as it was.
CREATE OR REPLACE FUNCTION silentpulse_secure_partition(part regclass) RETURNS integer
LANGUAGE plpgsql
AS $$
DECLARE
    parent oid;
    pol record;
    created integer := 0;
BEGIN
    SELECT i.inhparent INTO parent FROM pg_inherits i WHERE i.inhrelid = part;
    IF parent IS NULL OR NOT (SELECT c.relrowsecurity FROM pg_class c WHERE c.oid = parent) THEN
        RETURN 0;  -- not a partition, or its parent has no row-level security to copy
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
    IS 'Gives a partition its parent''s row-level security (enabled, forced, same policies); idempotent';

-- Pinned as 000019 and 000004 left them (CREATE OR REPLACE resets them).
DO $$
BEGIN
    EXECUTE format('ALTER FUNCTION silentpulse_alert_notify_statement() SET search_path = %I, pg_temp',
                   current_schema());
    EXECUTE format('ALTER FUNCTION silentpulse_secure_partition(regclass) SET search_path = %I, pg_temp',
                   current_schema());
END
$$;

DROP TABLE alert_changes_pruned;
DROP TABLE alert_changes;
DROP FUNCTION silentpulse_alert_changes_guard();
