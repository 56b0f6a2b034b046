-- 000002_audit_log_context: the operational context of each audit entry, who
-- acted and from where. Columns are nullable: entries written before this
-- migration have no context. (audit_logs is partitioned: ADD COLUMN reaches
-- every partition.)

ALTER TABLE audit_logs ADD COLUMN IF NOT EXISTS actor_type text;
ALTER TABLE audit_logs ADD COLUMN IF NOT EXISTS actor_api_key_id uuid;
ALTER TABLE audit_logs ADD COLUMN IF NOT EXISTS request_id text;
ALTER TABLE audit_logs ADD COLUMN IF NOT EXISTS session_id text;
ALTER TABLE audit_logs ADD COLUMN IF NOT EXISTS client_addr inet;
ALTER TABLE audit_logs ADD COLUMN IF NOT EXISTS user_agent text;
ALTER TABLE audit_logs ADD COLUMN IF NOT EXISTS service text;

-- NOT VALID: existing rows hold NULL in the new columns, which both checks
-- accept, so there is nothing to scan for; new rows are checked.
ALTER TABLE audit_logs ADD CONSTRAINT audit_logs_actor_type_check
    CHECK (actor_type IN ('user', 'api_key', 'system', 'auditor', 'support')) NOT VALID;
-- An api_key actor names its key.
ALTER TABLE audit_logs ADD CONSTRAINT audit_logs_actor_api_key_check
    CHECK (actor_type IS DISTINCT FROM 'api_key' OR actor_api_key_id IS NOT NULL) NOT VALID;

COMMENT ON COLUMN audit_logs.actor_type IS 'user, api_key, system (jobs), auditor or support';
COMMENT ON COLUMN audit_logs.actor_api_key_id IS 'api_keys.id when actor_type = api_key (no FK: keys are deleted, logs stay)';
COMMENT ON COLUMN audit_logs.request_id IS 'Correlates the entry with the request''s logs and traces';
COMMENT ON COLUMN audit_logs.client_addr IS 'Client address as seen by the API (after trusted proxies)';
COMMENT ON COLUMN audit_logs.service IS 'Which service wrote the entry: api, worker, notifications';

CREATE INDEX IF NOT EXISTS audit_logs_request_id_idx ON audit_logs (request_id);
CREATE INDEX IF NOT EXISTS audit_logs_actor_api_key_id_idx ON audit_logs (actor_api_key_id);
