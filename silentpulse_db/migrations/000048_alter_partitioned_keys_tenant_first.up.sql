-- 000048_alter_partitioned_keys_tenant_first: the primary keys of alerts,
-- asset_observations and audit_logs lead with tenant_id: (tenant_id, id, <month column>)
-- in place of (id, <month column>), on the parent and on every partition (issue 31;
-- docs/tenancy.md, "Keys that lead with tenant_id").
--
-- Catalog work only. Each partition's key takes over the index 000045-000047 built
-- concurrently (ADD CONSTRAINT ... PRIMARY KEY USING INDEX: renamed to the key's name, which stays
-- <partition>_pkey), and then the parent's: PostgreSQL attaches to a partitioned table's
-- new key the partition index that matches it *and backs a constraint of the partition*,
-- instead of building one. A plain unique index of the partition is not taken: adding the
-- parent's key with no constraint on the partitions builds a new index on each, under this
-- lock (tests/schema/test_tenant_keys.py holds both facts with the catalog); and one
-- attached to another index (as a concurrent build on a partitioned table leaves them
-- without "partitions only") is never taken. A partition made after 000045-000047 (the
-- partition job's next month, empty) gets its index built here, under this lock.
-- Partitions made later inherit the key from the parent (CREATE TABLE ... PARTITION OF,
-- and ATTACH PARTITION for a month moved out of the default partition).
--
-- Locks: each parent first (writes through it wait there holding no partition, as in
-- 000022), then its partitions, ACCESS EXCLUSIVE until the commit, each under the file's
-- lock_timeout (the runner retries the file when one waits longer).
-- Breaking: an older service's `ON CONFLICT (id, started_at)` finds no key to match.
-- silentpulse: breaking
SET LOCAL lock_timeout = '3s';

LOCK TABLE ONLY alerts, asset_observations, audit_logs IN ACCESS EXCLUSIVE MODE;

DO $$
DECLARE
    parent record;
    parts text[];
    schemas text[];
    pkeys text[];
    indexes text[];
    found_def text;
    found_valid boolean;
BEGIN
    FOR parent IN
        SELECT p.tbl::regclass AS tbl, a.attname AS key
        FROM (VALUES ('alerts'), ('asset_observations'), ('audit_logs')) AS p (tbl)
        JOIN pg_partitioned_table pt ON pt.partrelid = p.tbl::regclass
        JOIN pg_attribute a ON a.attrelid = pt.partrelid AND a.attnum = pt.partattrs[0]
        ORDER BY p.tbl
    LOOP
        -- Each partition's key name, read before the parent's key takes them all along.
        SELECT array_agg(c.relname ORDER BY c.relname), array_agg(n.nspname ORDER BY c.relname),
               array_agg(con.conname ORDER BY c.relname),
               array_agg(CASE WHEN octet_length(c.relname) <= 52 THEN c.relname || '_tenant_key'
                              ELSE left(c.relname, 43) || '_' || left(md5(c.relname), 8) || '_tenant_key' END
                         ORDER BY c.relname)
        INTO parts, schemas, pkeys, indexes
        FROM pg_inherits i
        JOIN pg_class c ON c.oid = i.inhrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        JOIN pg_constraint con ON con.conrelid = c.oid AND con.contype = 'p'
        WHERE i.inhparent = parent.tbl;
        EXECUTE format('ALTER TABLE %s DROP CONSTRAINT %I', parent.tbl, parent.tbl::text || '_pkey');
        FOR i IN 1 .. coalesce(array_length(parts, 1), 0) LOOP
            SELECT pg_get_indexdef(x.indexrelid), x.indisvalid INTO found_def, found_valid
            FROM pg_index x WHERE x.indexrelid = to_regclass(format('%I.%I', schemas[i], indexes[i]));
            IF found_def IS DISTINCT FROM format('CREATE UNIQUE INDEX %I ON %I.%I USING btree (tenant_id, id, %I)',
                                                 indexes[i], schemas[i], parts[i], parent.key)
               OR NOT found_valid THEN
                EXECUTE format('DROP INDEX IF EXISTS %I.%I', schemas[i], indexes[i]);
                EXECUTE format('CREATE UNIQUE INDEX %I ON %I.%I (tenant_id, id, %I)',
                               indexes[i], schemas[i], parts[i], parent.key);
            END IF;
            EXECUTE format('ALTER TABLE %I.%I ADD CONSTRAINT %I PRIMARY KEY USING INDEX %I',
                           schemas[i], parts[i], pkeys[i], indexes[i]);
        END LOOP;
        EXECUTE format('ALTER TABLE %s ADD CONSTRAINT %I PRIMARY KEY (tenant_id, id, %I)',
                       parent.tbl, parent.tbl::text || '_pkey', parent.key);
    END LOOP;
END
$$;
