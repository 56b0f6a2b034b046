-- 000002_audit_log_context (down): removes the audit context columns, in
-- reverse order.

DROP INDEX IF EXISTS audit_logs_actor_api_key_id_idx;
DROP INDEX IF EXISTS audit_logs_request_id_idx;

ALTER TABLE audit_logs DROP CONSTRAINT IF EXISTS audit_logs_actor_api_key_check;
ALTER TABLE audit_logs DROP CONSTRAINT IF EXISTS audit_logs_actor_type_check;

ALTER TABLE audit_logs DROP COLUMN IF EXISTS service;
ALTER TABLE audit_logs DROP COLUMN IF EXISTS user_agent;
ALTER TABLE audit_logs DROP COLUMN IF EXISTS client_addr;
ALTER TABLE audit_logs DROP COLUMN IF EXISTS session_id;
ALTER TABLE audit_logs DROP COLUMN IF EXISTS request_id;
ALTER TABLE audit_logs DROP COLUMN IF EXISTS actor_api_key_id;
ALTER TABLE audit_logs DROP COLUMN IF EXISTS actor_type;
