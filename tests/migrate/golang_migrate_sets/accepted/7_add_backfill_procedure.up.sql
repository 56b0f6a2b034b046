CREATE TABLE backfill_log (batch int PRIMARY KEY);
-- Commits after each batch: it runs alone in its file (8), outside a transaction.
CREATE PROCEDURE backfill(batches int)
LANGUAGE plpgsql
AS $$
BEGIN
    FOR i IN 1..batches LOOP
        INSERT INTO backfill_log VALUES (i);
        COMMIT;
    END LOOP;
END
$$;
