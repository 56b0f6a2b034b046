-- 000023_alter_monthly_partition_grants: a month made by the jobs role gets the
-- grants a month made by the owner gets.
--
-- The app role's grants on new tables come from the owner's default privileges
-- (docs/operations.md: ALTER DEFAULT PRIVILEGES FOR ROLE <owner>), which apply to
-- what the owner itself creates. The jobs role, a member of the owner, runs
-- `silentpulse-db partitions`: silentpulse_create_monthly_partition() (000005)
-- created the month as the jobs role and then gave it to the owner, so the owner's
-- default privileges never applied and the app role got no grant on that month,
-- while a month the owner made has them. The function now gives the month those
-- grants explicitly, as the owner. Months made before stay as they are:
-- `silentpulse-db drift` names a month missing one, with its GRANT.
SET LOCAL lock_timeout = '3s';

CREATE OR REPLACE FUNCTION silentpulse_create_monthly_partition(parent regclass, month date)
RETURNS bigint
LANGUAGE plpgsql
AS $$
DECLARE
    -- Months are UTC months, whatever the session's TimeZone.
    lo timestamptz := date_trunc('month', month)::timestamp AT TIME ZONE 'UTC';
    hi timestamptz := (date_trunc('month', month) + interval '1 month')::timestamp AT TIME ZONE 'UTC';
    parent_schema text;
    parent_name text;
    part_name text;
    key_column text;
    default_part regclass;
    forced boolean;
    columns text;
    moved bigint := 0;
    granted record;
BEGIN
    SELECT n.nspname, c.relname INTO parent_schema, parent_name
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = parent;
    part_name := format('%s_p%s', parent_name, to_char(date_trunc('month', month), 'YYYY_MM'));
    IF to_regclass(format('%I.%I', parent_schema, part_name)) IS NOT NULL THEN
        RETURN NULL;  -- the month has its partition already
    END IF;
    SELECT a.attname INTO key_column
    FROM pg_partitioned_table pt
    JOIN pg_attribute a ON a.attrelid = pt.partrelid AND a.attnum = pt.partattrs[0]
    WHERE pt.partrelid = parent AND pt.partstrat = 'r' AND pt.partnatts = 1;
    IF key_column IS NULL THEN
        RAISE EXCEPTION '% is not partitioned by range on one column', parent;
    END IF;
    SELECT i.inhrelid::regclass INTO default_part
    FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
    WHERE i.inhparent = parent AND pg_get_expr(c.relpartbound, c.oid) = 'DEFAULT';

    IF default_part IS NULL THEN
        EXECUTE format('CREATE TABLE %I.%I PARTITION OF %s FOR VALUES FROM (%L) TO (%L)',
                       parent_schema, part_name, parent, lo, hi);
    ELSE
        -- FORCE ROW LEVEL SECURITY hides every row from the owner too, and the
        -- move must see them all. Lifted for this transaction only: the ALTER
        -- locks the default partition, which the ATTACH below locks anyway.
        SELECT c.relforcerowsecurity INTO forced FROM pg_class c WHERE c.oid = default_part;
        IF forced THEN
            EXECUTE format('ALTER TABLE %s NO FORCE ROW LEVEL SECURITY', default_part);
        END IF;
        EXECUTE format('CREATE TABLE %I.%I (LIKE %s INCLUDING DEFAULTS INCLUDING CONSTRAINTS)',
                       parent_schema, part_name, parent);
        SELECT string_agg(quote_ident(a.attname), ', ' ORDER BY a.attnum) INTO columns
        FROM pg_attribute a WHERE a.attrelid = parent AND a.attnum > 0 AND NOT a.attisdropped;
        EXECUTE format(
            'WITH moved AS (DELETE FROM %s WHERE %I >= %L AND %I < %L RETURNING %s) '
            'INSERT INTO %I.%I (%s) SELECT %s FROM moved',
            default_part, key_column, lo, key_column, hi, columns,
            parent_schema, part_name, columns, columns);
        GET DIAGNOSTICS moved = ROW_COUNT;
        EXECUTE format('ALTER TABLE %s ATTACH PARTITION %I.%I FOR VALUES FROM (%L) TO (%L)',
                       parent, parent_schema, part_name, lo, hi);
        IF forced THEN
            EXECUTE format('ALTER TABLE %s FORCE ROW LEVEL SECURITY', default_part);
        END IF;
    END IF;
    -- The parent's owner owns its partitions, whoever runs the job (a jobs role
    -- that is a member of the owner's): otherwise the owner's next ALTER TABLE
    -- on the parent fails on this partition, and default privileges miss it.
    EXECUTE format('ALTER TABLE %I.%I OWNER TO %I', parent_schema, part_name,
                   (SELECT pg_get_userbyid(c.relowner) FROM pg_class c WHERE c.oid = parent));
    -- And it gets what the owner's default privileges give a table the owner creates
    -- (those for this schema and those for every schema): they applied to the
    -- CREATE TABLE only if the owner ran it. Given as the owner (a member of the
    -- owning role grants as that role), so the grants come out the same whoever
    -- runs the job; those already there are left as they are.
    FOR granted IN
        SELECT a.privilege_type, a.is_grantable,
               CASE WHEN a.grantee = 0 THEN 'PUBLIC'
                    ELSE quote_ident(pg_get_userbyid(a.grantee)) END AS grantee
        FROM pg_class c
        JOIN pg_default_acl d ON d.defaclrole = c.relowner AND d.defaclobjtype = 'r'
                             AND d.defaclnamespace IN (0, c.relnamespace)
        CROSS JOIN LATERAL aclexplode(d.defaclacl) AS a
        WHERE c.oid = parent AND a.grantee <> c.relowner
        ORDER BY 3, 1
    LOOP
        EXECUTE format('GRANT %s ON %I.%I TO %s%s', granted.privilege_type, parent_schema,
                       part_name, granted.grantee,
                       CASE WHEN granted.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END);
    END LOOP;
    PERFORM silentpulse_secure_partition(format('%I.%I', parent_schema, part_name)::regclass);
    RETURN moved;
END
$$;
COMMENT ON FUNCTION silentpulse_create_monthly_partition(regclass, date)
    IS 'Creates <table>_pYYYY_MM for the UTC month of month, moving its rows out of the default partition, with the grants its owner''s default privileges give whoever runs it; returns the rows moved, NULL if it existed';

DO $$
BEGIN
    EXECUTE format('ALTER FUNCTION silentpulse_create_monthly_partition(regclass, date) '
                   'SET search_path = %I, pg_temp', current_schema());
END
$$;
