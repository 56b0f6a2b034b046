CALL backfill(3);
