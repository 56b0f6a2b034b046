-- 000004_enable_partition_rls: row-level security on every partition, like its parent.
--
-- A partition is a table of its own. The parent's policies do not apply to a
-- query that names the partition, and the usual blanket
-- `GRANT ... ON ALL TABLES IN SCHEMA public` grants the partitions too: a
-- tenant's role could read every tenant's rows from alerts_default. Every
-- partition of a table with row-level security now has it as well, enabled and
-- forced, with copies of the parent's policies. silentpulse_secure_partition()
-- does that for one partition; the partition job (silentpulse-db partitions,
-- and run_migrations at start-up) calls it for every partition it creates and
-- for any partition it finds unguarded.
SET LOCAL lock_timeout = '3s';

CREATE FUNCTION silentpulse_secure_partition(part regclass) RETURNS integer
LANGUAGE plpgsql
AS $$
DECLARE
    parent oid;
    pol record;
    created integer := 0;
BEGIN
    SELECT i.inhparent INTO parent FROM pg_inherits i WHERE i.inhrelid = part;
    IF parent IS NULL OR NOT (SELECT c.relrowsecurity FROM pg_class c WHERE c.oid = parent) THEN
        RETURN 0;  -- not a partition, or its parent has no row-level security to copy
    END IF;
    IF NOT (SELECT c.relrowsecurity AND c.relforcerowsecurity FROM pg_class c WHERE c.oid = part) THEN
        EXECUTE format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', part);
        EXECUTE format('ALTER TABLE %s FORCE ROW LEVEL SECURITY', part);
    END IF;
    FOR pol IN
        SELECT p.polname, p.polpermissive, p.polcmd,
               CASE WHEN p.polroles = '{0}' THEN 'PUBLIC'
                    ELSE (SELECT string_agg(quote_ident(r.rolname), ', ')
                          FROM pg_roles r WHERE r.oid = ANY (p.polroles)) END AS roles,
               pg_get_expr(p.polqual, p.polrelid) AS qual,
               pg_get_expr(p.polwithcheck, p.polrelid) AS with_check
        FROM pg_policy p
        WHERE p.polrelid = parent
          AND NOT EXISTS (SELECT 1 FROM pg_policy q WHERE q.polrelid = part AND q.polname = p.polname)
        ORDER BY p.polname
    LOOP
        EXECUTE format(
            'CREATE POLICY %I ON %s AS %s FOR %s TO %s%s%s',
            pol.polname, part,
            CASE WHEN pol.polpermissive THEN 'PERMISSIVE' ELSE 'RESTRICTIVE' END,
            CASE pol.polcmd WHEN 'r' THEN 'SELECT' WHEN 'a' THEN 'INSERT' WHEN 'w' THEN 'UPDATE'
                            WHEN 'd' THEN 'DELETE' ELSE 'ALL' END,
            pol.roles,
            coalesce(' USING (' || pol.qual || ')', ''),
            coalesce(' WITH CHECK (' || pol.with_check || ')', '')
        );
        created := created + 1;
    END LOOP;
    RETURN created;
END
$$;
COMMENT ON FUNCTION silentpulse_secure_partition(regclass)
    IS 'Gives a partition its parent''s row-level security (enabled, forced, same policies); idempotent';
-- Pinned: a function must not resolve names through the caller's search_path
-- (pg_catalog, not listed, is searched first; pg_temp last).
DO $$
BEGIN
    EXECUTE format('ALTER FUNCTION silentpulse_secure_partition(regclass) SET search_path = %I, pg_temp',
                   current_schema());
END
$$;

-- Every existing partition (the *_default ones included) of this schema's tables.
SELECT silentpulse_secure_partition(i.inhrelid::regclass)
FROM pg_inherits i
JOIN pg_class parent ON parent.oid = i.inhparent
WHERE parent.relkind = 'p' AND parent.relrowsecurity
  AND parent.relnamespace = current_schema()::regnamespace
ORDER BY i.inhrelid;
