-- 000021_create_alert_listener_positions: where each named alert listener got to.
--
-- listen_alerts(dsn, consumer="notifications") keeps its position here, so
-- that a restarted notifications service resumes right after the last alert
-- change it delivered: nothing missed while it was down, nothing delivered
-- twice. since is where the consumer first started (it delivers nothing
-- older); changed_at is the latest status_changed_at delivered; delivered lists
-- the changes ([alert id, status, status_changed_at]) delivered within the
-- listener's catch-up margin before it, which a catch-up finds again and skips.
--
-- No tenant column, but alert ids and statuses of every tenant: row-level
-- security is forced with no policy, so that only a role that bypasses it (the
-- listener's, which must anyway) reads or writes a row, whatever blanket GRANT
-- an operator runs for the application's role.
SET LOCAL lock_timeout = '3s';
CREATE TABLE alert_listener_positions (
    consumer    text PRIMARY KEY CONSTRAINT alert_listener_positions_consumer_check
                CHECK (consumer ~ '^[A-Za-z0-9_.:-]{1,100}$'),
    since       timestamptz NOT NULL,
    changed_at  timestamptz NOT NULL,
    delivered   jsonb NOT NULL DEFAULT '[]'::jsonb,
    updated_at  timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE alert_listener_positions IS 'The position of each named alert listener (listen_alerts consumer=)';
ALTER TABLE alert_listener_positions ENABLE ROW LEVEL SECURITY;
ALTER TABLE alert_listener_positions FORCE ROW LEVEL SECURITY;
