DROP PROCEDURE backfill(int);
DROP TABLE backfill_log;
