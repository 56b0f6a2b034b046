BEGIN ISOLATION LEVEL SERIALIZABLE;
CREATE TABLE isolation_seen AS SELECT current_setting('transaction_isolation') AS level;
COMMIT;
