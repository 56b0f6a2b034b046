-- 000005_add_partition_lifecycle: reverses 000005_add_partition_lifecycle.up.sql exactly,
-- restoring 000001's silentpulse_ensure_monthly_partitions() (unpinned, as it was).
SET LOCAL lock_timeout = '3s';

CREATE OR REPLACE FUNCTION silentpulse_ensure_monthly_partitions(parent regclass, months_ahead integer DEFAULT 3)
RETURNS integer
LANGUAGE plpgsql
AS $$
DECLARE
    -- Months are UTC months, whatever the session's TimeZone: boundaries must
    -- not depend on who runs this.
    month_start date := date_trunc('month', now() AT TIME ZONE 'UTC')::date;
    parent_schema text;
    parent_name text;
    part_name text;
    created integer := 0;
BEGIN
    -- Partitions go beside their parent, whatever the caller's search_path.
    SELECT n.nspname, c.relname INTO parent_schema, parent_name
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE c.oid = parent;
    FOR i IN 0 .. months_ahead LOOP
        part_name := format('%s_p%s', parent_name, to_char(month_start + make_interval(months => i), 'YYYY_MM'));
        IF to_regclass(format('%I.%I', parent_schema, part_name)) IS NULL THEN
            EXECUTE format(
                'CREATE TABLE %I.%I PARTITION OF %s FOR VALUES FROM (%L) TO (%L)',
                parent_schema, part_name, parent,
                (month_start + make_interval(months => i)) AT TIME ZONE 'UTC',
                (month_start + make_interval(months => i + 1)) AT TIME ZONE 'UTC'
            );
            created := created + 1;
        END IF;
    END LOOP;
    RETURN created;
END
$$;

DROP FUNCTION IF EXISTS silentpulse_create_monthly_partition(regclass, date);
