DROP INDEX CONCURRENTLY IF EXISTS alert_changes_xid_seq_idx;
