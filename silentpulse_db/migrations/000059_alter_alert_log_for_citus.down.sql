-- 000059_alter_alert_log_for_citus: reverses 000059_alter_alert_log_for_citus.up.sql:
-- 000051's trigger function, no silentpulse_node_group(), no log_nodes.
-- Run it only before the log is distributed: a shard's statement would be refused again.
SET LOCAL lock_timeout = '3s';

ALTER TABLE alert_changes_pruned DROP COLUMN log_nodes;
ALTER TABLE alert_listener_positions DROP COLUMN log_nodes;

DROP FUNCTION silentpulse_node_group();

-- 000051's function, as it was.
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
        FROM new_rows n JOIN old_rows o ON o.tenant_id = n.tenant_id AND o.id = n.id
        WHERE n.status IS DISTINCT FROM o.status;
        GET DIAGNOSTICS changed = ROW_COUNT;
        IF changed > 0 THEN
            SELECT min(n.status_changed_at), max(n.status_changed_at)
            INTO first_at, last_at
            FROM new_rows n JOIN old_rows o ON o.tenant_id = n.tenant_id AND o.id = n.id
            WHERE n.status IS DISTINCT FROM o.status;
        END IF;
        IF changed BETWEEN 1 AND 50 THEN
            SELECT jsonb_agg(jsonb_build_array(n.id, n.status, n.status_changed_at) ORDER BY n.id)
            INTO alerts
            FROM new_rows n JOIN old_rows o ON o.tenant_id = n.tenant_id AND o.id = n.id
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


-- Pinned, as 000022 pinned it (CREATE OR REPLACE resets what ALTER FUNCTION set): a
-- SECURITY DEFINER function must not resolve names through the caller's search_path.
DO $$
BEGIN
    EXECUTE format('ALTER FUNCTION silentpulse_alert_notify_statement() SET search_path = %I, pg_temp',
                   current_schema());
END
$$;
