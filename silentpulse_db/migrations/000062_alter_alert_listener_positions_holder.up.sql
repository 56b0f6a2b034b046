-- 000062_alter_alert_listener_positions_holder: which session delivers under each
-- consumer name, where only the listeners' role may write it.
--
-- Until now a named consumer elected its one delivering process with a session
-- advisory lock keyed by the name: any role that can connect may take an advisory
-- lock, so the application's role could hold it in an idle session and keep every
-- listener of that name standing by, delivering nothing. The election is now a claim
-- on the consumer's row, which forced row-level security with no policy (000021)
-- leaves to a role with BYPASSRLS, whatever blanket grant the application's role has.
-- holder_pid is the backend that delivers; holder_lock the second key of a
-- session-level advisory lock it holds while it lives (pg_try_advisory_lock(1397768520,
-- holder_lock), a random key taken before the claim): a standby takes the row over once
-- that backend no longer holds that lock (its session ended, or a pooler's DISCARD ALL
-- released it). NULL: no listener of this version has claimed the row.
--
-- Nullable, no default, no constraint: a change of the catalog only (no rewrite, no
-- scan), under 000021's brief lock.
--
-- TRUNCATE is not subject to row-level security: a role with a blanket GRANT ALL could
-- empty the table, and a standby that finds no row creates it, claimed; the holder
-- notices at its next round and stops, but the two may deliver a round alike. A guard
-- trigger refuses TRUNCATE but to the owner and roles that bypass row-level security,
-- as 000022's does for alert_changes.
SET LOCAL lock_timeout = '3s';

ALTER TABLE alert_listener_positions
    ADD COLUMN holder_pid integer,
    ADD COLUMN holder_lock integer,
    ADD COLUMN holder_since timestamptz;
COMMENT ON COLUMN alert_listener_positions.holder_pid
    IS 'The backend (pg_backend_pid()) of the listener that delivers under this name, while it holds holder_lock';
COMMENT ON COLUMN alert_listener_positions.holder_lock
    IS 'The second key of the advisory lock the holder holds while it lives: pg_locks classid 1397768520, objid holder_lock, objsubid 2';
COMMENT ON COLUMN alert_listener_positions.holder_since
    IS 'When the holder claimed the row';

CREATE FUNCTION silentpulse_alert_listener_positions_guard() RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    IF NOT pg_has_role((SELECT c.relowner FROM pg_class c WHERE c.oid = TG_RELID), 'USAGE')
       AND NOT (SELECT r.rolbypassrls FROM pg_roles r WHERE r.rolname = current_user) THEN
        RAISE EXCEPTION 'role % may not % %: the alert listeners write it, and elect by it the process that delivers',
            current_user, TG_OP, TG_TABLE_NAME USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NULL;
END
$$;
-- Pinned, as 000022's functions: no name resolved through the caller's search_path.
DO $$
BEGIN
    EXECUTE format('ALTER FUNCTION silentpulse_alert_listener_positions_guard() SET search_path = %I, pg_temp',
                   current_schema());
END
$$;
COMMENT ON FUNCTION silentpulse_alert_listener_positions_guard() IS 'Refuses TRUNCATE of alert_listener_positions but to its owner and roles that bypass row-level security';
CREATE TRIGGER alert_listener_positions_truncate_guard
    BEFORE TRUNCATE ON alert_listener_positions
    FOR EACH STATEMENT EXECUTE FUNCTION silentpulse_alert_listener_positions_guard();
