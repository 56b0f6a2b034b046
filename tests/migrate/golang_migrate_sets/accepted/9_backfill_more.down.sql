DELETE FROM backfill_log WHERE batch >= 100;
