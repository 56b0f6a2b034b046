-- 000059_alter_alert_log_for_citus: the alert change log as it must be before Citus
-- distributes alerts and alert_changes by tenant (issue 31; docs/notifications.md,
-- "On Citus"). On plain PostgreSQL nothing a listener, a writer or a tenant sees changes.
--
-- On Citus the statement triggers of alerts fire on its shards, on the workers: there
-- TG_RELID is a shard (alerts_102008, alerts_p2026_01_102040), which the function refused,
-- and a NOTIFY there reaches no listener and makes any transaction that writes on two
-- nodes fail at PREPARE ("cannot PREPARE a transaction that has executed LISTEN,
-- UNLISTEN, or NOTIFY"). So, for a shard of alerts or of one of its months, placed on this
-- node, the function writes the rows into the shard of alert_changes beside it (colocated
-- by tenant_id: the same node), and notifies no one. Its position is the node's: xid is
-- the node's transaction id, seq comes from the node's own range of the identity (Citus
-- gives node group g the values from g << 48 + 1), so seq >> 48 names the node whose xids
-- they are. The listener reads each node's changes in that node's order, below that
-- node's horizon.
--
-- silentpulse_node_group() says which node group runs it (0 on plain PostgreSQL and on
-- the coordinator), for the listener's reads. Named consumers (alert_listener_positions)
-- and retention's mark (alert_changes_pruned) gain log_nodes: their positions on the
-- nodes other than 0, NULL until the log is distributed.
SET LOCAL lock_timeout = '3s';

CREATE OR REPLACE FUNCTION silentpulse_alert_notify_statement() RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
AS $$
DECLARE
    changed integer;
    first_at timestamptz;
    last_at timestamptz;
    alerts jsonb;
    log_shard text;
BEGIN
    -- As the owner: only for alerts and its partitions, not for a table of the
    -- caller's own (a temporary one, with forged rows in its transition table).
    IF TG_RELID <> 'alerts'::regclass
       AND NOT EXISTS (SELECT 1 FROM pg_inherits i
                       WHERE i.inhrelid = TG_RELID AND i.inhparent = 'alerts'::regclass) THEN
        -- On a Citus node: a shard of alerts or of one of its months (its name ends with
        -- its shard id), in alerts' schema, and the shard of alert_changes for the same
        -- tenants (the same hash range) placed on this node. One query: each statement run
        -- on a shard pays Citus's hooks. The catalog is read only here.
        IF to_regclass('pg_catalog.pg_dist_shard') IS NOT NULL THEN
            SELECT shard_name('alert_changes'::regclass, l.shardid) INTO log_shard
            FROM pg_class c
            JOIN pg_catalog.pg_dist_shard s
              ON s.shardid = substring(c.relname FROM '_([0-9]{1,18})$')::bigint
            JOIN pg_catalog.pg_dist_shard l
              ON l.logicalrelid = 'alert_changes'::regclass AND l.shardminvalue = s.shardminvalue
            JOIN pg_catalog.pg_dist_placement p ON p.shardid = l.shardid
            WHERE c.oid = TG_RELID
              AND c.relnamespace = (SELECT a.relnamespace FROM pg_class a WHERE a.oid = 'alerts'::regclass)
              AND to_regclass(shard_name(s.logicalrelid, s.shardid)) = TG_RELID
              AND (s.logicalrelid = 'alerts'::regclass
                   OR EXISTS (SELECT 1 FROM pg_inherits i
                              WHERE i.inhrelid = s.logicalrelid AND i.inhparent = 'alerts'::regclass))
              AND p.groupid = (SELECT g.groupid FROM pg_catalog.pg_dist_local_group g);
        END IF;
        IF log_shard IS NULL THEN
            RAISE EXCEPTION 'silentpulse_alert_notify_statement() logs changes of alerts only, not of %', TG_RELID::regclass
                USING ERRCODE = 'insufficient_privilege';
        END IF;
        -- Straight into the shard beside it: no distributed planning inside the trigger.
        -- No NOTIFY: it would reach no listener (they are on the coordinator) and a
        -- transaction that writes on two nodes could not PREPARE.
        IF TG_OP = 'INSERT' THEN
            EXECUTE format(
                'INSERT INTO %s (xid, seq, tenant_id, alert_id, started_at, operation, status, changed_at) '
                'SELECT pg_current_xact_id(), nextval(%L), tenant_id, id, started_at, ''INSERT'', '
                'status, status_changed_at FROM new_rows',
                log_shard, pg_get_serial_sequence('alert_changes', 'seq'));
        ELSE
            EXECUTE format(
                'INSERT INTO %s (xid, seq, tenant_id, alert_id, started_at, operation, status, changed_at) '
                'SELECT pg_current_xact_id(), nextval(%L), n.tenant_id, n.id, n.started_at, ''UPDATE'', '
                'n.status, n.status_changed_at FROM new_rows n JOIN old_rows o ON o.tenant_id = n.tenant_id AND o.id = n.id '
                'WHERE n.status IS DISTINCT FROM o.status',
                log_shard, pg_get_serial_sequence('alert_changes', 'seq'));
        END IF;
        RETURN NULL;
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
    IS 'Per statement that creates alerts or changes their status: one row per alert in alert_changes, and one pg_notify on silentpulse_alerts (none on a Citus shard)';

-- Which node group runs the statement: 0 on plain PostgreSQL and on a Citus coordinator.
-- The listener reads it beside each row of a distributed read, to know on which node a
-- row was read (and so under which node's horizon).
CREATE FUNCTION silentpulse_node_group() RETURNS integer
LANGUAGE plpgsql
STABLE
AS $$
BEGIN
    IF to_regclass('pg_catalog.pg_dist_local_group') IS NULL THEN
        RETURN 0;
    END IF;
    RETURN (SELECT g.groupid FROM pg_catalog.pg_dist_local_group g);
END
$$;
COMMENT ON FUNCTION silentpulse_node_group()
    IS 'The Citus node group this runs on (0 on plain PostgreSQL and on the coordinator)';

DO $$
BEGIN
    EXECUTE format('ALTER FUNCTION silentpulse_alert_notify_statement() SET search_path = %I, pg_temp',
                   current_schema());
    EXECUTE format('ALTER FUNCTION silentpulse_node_group() SET search_path = %I, pg_temp',
                   current_schema());
END
$$;

ALTER TABLE alert_listener_positions ADD COLUMN log_nodes jsonb;
COMMENT ON COLUMN alert_listener_positions.log_nodes
    IS 'On Citus: the last change delivered from each node group but 0, {"<group>": ["<xid>", <seq>] or null}; NULL on plain PostgreSQL';
ALTER TABLE alert_changes_pruned ADD COLUMN log_nodes jsonb;
COMMENT ON COLUMN alert_changes_pruned.log_nodes
    IS 'On Citus: the highest position retention deleted on each node group but 0, {"<group>": ["<xid>", <seq>]}';
