-- 000049_alter_released_references_no_action: the nullable references that
-- `ON DELETE SET NULL (column)` nulled are NO ACTION now, and the deletes that relied on
-- it null them first, with silentpulse_release_references().
--
-- Citus refuses SET NULL (and SET DEFAULT) in a foreign key that holds the distribution
-- column (issue 31), and PostgreSQL 15's column list, which kept tenant_id, is ignored by
-- it. The meaning stays: deleting a user leaves the rows that named it as creator,
-- acknowledger, resolver or responder in place, with that column NULL; deleting an
-- availability snapshot, the breaches that named it. The deleting transaction says so
-- first:
--     SELECT silentpulse_release_references('users', tenant_id, ARRAY[id, ...]);
--     DELETE FROM users WHERE tenant_id = ... AND id = ANY (...);
-- (the purge of soft-deleted users: docs/tenancy.md). A delete that does not is refused
-- (23503) while a row still names the user. Deleting a whole tenant, or an asset group
-- with its snapshots and breaches, needs nothing: NO ACTION is checked at the end of the
-- statement, after the cascade took the referencing rows too.
--
-- Online: each key is dropped and added again NOT VALID (new rows are checked at once;
-- SHARE ROW EXCLUSIVE on both tables for an instant, under the file's lock_timeout);
-- 000050 validates them (SHARE UPDATE EXCLUSIVE: reads and writes go on).
-- Breaking: an older service that deletes a user (or a snapshot) that such a row names,
-- counting on SET NULL, gets 23503.
-- silentpulse: breaking
SET LOCAL lock_timeout = '3s';

ALTER TABLE anomaly_events DROP CONSTRAINT anomaly_events_acknowledged_by_tenant_fkey,
    ADD CONSTRAINT anomaly_events_acknowledged_by_tenant_fkey FOREIGN KEY (tenant_id, acknowledged_by)
        REFERENCES users (tenant_id, id) NOT VALID;
ALTER TABLE audit_tasks DROP CONSTRAINT audit_tasks_created_by_tenant_fkey,
    ADD CONSTRAINT audit_tasks_created_by_tenant_fkey FOREIGN KEY (tenant_id, created_by)
        REFERENCES users (tenant_id, id) NOT VALID;
ALTER TABLE compliance_breaches DROP CONSTRAINT compliance_breaches_acknowledged_by_tenant_fkey,
    ADD CONSTRAINT compliance_breaches_acknowledged_by_tenant_fkey FOREIGN KEY (tenant_id, acknowledged_by)
        REFERENCES users (tenant_id, id) NOT VALID,
    DROP CONSTRAINT compliance_breaches_resolved_by_tenant_fkey,
    ADD CONSTRAINT compliance_breaches_resolved_by_tenant_fkey FOREIGN KEY (tenant_id, resolved_by)
        REFERENCES users (tenant_id, id) NOT VALID,
    DROP CONSTRAINT compliance_breaches_snapshot_id_tenant_fkey,
    ADD CONSTRAINT compliance_breaches_snapshot_id_tenant_fkey FOREIGN KEY (tenant_id, snapshot_id)
        REFERENCES availability_snapshots (tenant_id, id) NOT VALID;
ALTER TABLE exclusion_windows DROP CONSTRAINT exclusion_windows_created_by_tenant_fkey,
    ADD CONSTRAINT exclusion_windows_created_by_tenant_fkey FOREIGN KEY (tenant_id, created_by)
        REFERENCES users (tenant_id, id) NOT VALID;
ALTER TABLE threshold_suggestions DROP CONSTRAINT threshold_suggestions_responded_by_tenant_fkey,
    ADD CONSTRAINT threshold_suggestions_responded_by_tenant_fkey FOREIGN KEY (tenant_id, responded_by)
        REFERENCES users (tenant_id, id) NOT VALID;

-- As the caller (SECURITY INVOKER): the application's role inside tenant_transaction
-- releases its own tenant's rows, row-level security as for any UPDATE; the jobs role,
-- which bypasses it, those of any tenant.
CREATE FUNCTION silentpulse_release_references(target regclass, tenant uuid, ids uuid[])
RETURNS bigint
LANGUAGE plpgsql
AS $$
DECLARE
    ref record;
    changed bigint;
    released bigint := 0;
BEGIN
    -- What ON DELETE SET NULL (column) did until 000049: keep this list in step with the
    -- nullable references to a table whose rows are deleted.
    FOR ref IN
        SELECT r.tbl, r.col FROM (VALUES
            ('users', 'anomaly_events', 'acknowledged_by'),
            ('users', 'audit_tasks', 'created_by'),
            ('users', 'compliance_breaches', 'acknowledged_by'),
            ('users', 'compliance_breaches', 'resolved_by'),
            ('users', 'exclusion_windows', 'created_by'),
            ('users', 'threshold_suggestions', 'responded_by'),
            ('availability_snapshots', 'compliance_breaches', 'snapshot_id')
        ) AS r (referenced, tbl, col)
        WHERE r.referenced::regclass = target
        ORDER BY r.tbl, r.col
    LOOP
        EXECUTE format('UPDATE %I SET %I = NULL WHERE tenant_id = $1 AND %I = ANY ($2)',
                       ref.tbl, ref.col, ref.col)
            USING tenant, ids;
        GET DIAGNOSTICS changed = ROW_COUNT;
        released := released + changed;
    END LOOP;
    IF NOT FOUND THEN  -- the loop ran for no reference
        RAISE EXCEPTION 'no reference to % is released: only users and availability_snapshots have nullable ones', target
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN released;
END
$$;
COMMENT ON FUNCTION silentpulse_release_references(regclass, uuid, uuid[])
    IS 'Nulls the nullable references to rows of users or availability_snapshots about to be deleted (ON DELETE SET NULL until 000049); returns the rows changed';
-- Pinned: a function must not resolve names through the caller's search_path
-- (pg_catalog, not listed, is searched first; pg_temp last).
DO $$
BEGIN
    EXECUTE format('ALTER FUNCTION silentpulse_release_references(regclass, uuid, uuid[]) '
                   'SET search_path = %I, pg_temp', current_schema());
END
$$;
