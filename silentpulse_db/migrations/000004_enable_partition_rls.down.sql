-- 000004_enable_partition_rls: reverses 000004_enable_partition_rls.up.sql exactly.
SET LOCAL lock_timeout = '3s';

DO $$
DECLARE
    part regclass;
    pol record;
BEGIN
    FOR part IN
        SELECT i.inhrelid::regclass
        FROM pg_inherits i
        JOIN pg_class parent ON parent.oid = i.inhparent
        WHERE parent.relkind = 'p' AND parent.relrowsecurity
          AND parent.relnamespace = current_schema()::regnamespace
    LOOP
        FOR pol IN SELECT p.polname FROM pg_policy p WHERE p.polrelid = part LOOP
            EXECUTE format('DROP POLICY %I ON %s', pol.polname, part);
        END LOOP;
        EXECUTE format('ALTER TABLE %s NO FORCE ROW LEVEL SECURITY', part);
        EXECUTE format('ALTER TABLE %s DISABLE ROW LEVEL SECURITY', part);
    END LOOP;
END
$$;

DROP FUNCTION IF EXISTS silentpulse_secure_partition(regclass);
