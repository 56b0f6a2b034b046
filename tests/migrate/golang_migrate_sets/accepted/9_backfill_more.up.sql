-- A DO block that commits, alone in its file.
DO $$
BEGIN
    INSERT INTO backfill_log VALUES (100);
    COMMIT;
    INSERT INTO backfill_log VALUES (101);
END
$$;
