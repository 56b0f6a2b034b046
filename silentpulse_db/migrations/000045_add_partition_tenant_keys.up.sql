-- 000045_add_partition_tenant_keys: on each partition of alerts, asset_observations and
-- audit_logs (the default ones included), the unique index (tenant_id, id, <month column>)
-- that 000046 makes its primary key, as <partition>_tenant_key.
--
-- Not CONCURRENTLY, and the one step of issue 31 that is not fully online: which
-- partitions a database holds is known only when it runs (the partition job makes a month
-- at a time), and a migration file holds a CREATE INDEX CONCURRENTLY of a table it names;
-- PL/pgSQL cannot run one. So each partition's index is built in a transaction of its own
-- (this DO block commits after each), which holds that partition SHARE for the build:
-- reads go on, writes to that one partition wait for its build (docs/benchmarks.md has
-- the figures). The other partitions are not touched meanwhile. Each waits
-- 3 s at most for its lock, and is tried again (0.5 s doubling to 8 s, with jitter, for
-- 60 s) rather than queue writes behind it.
--
-- A database with partitions too large for that builds the indexes CONCURRENTLY itself
-- before it deploys (docs/tenancy.md, "Large partitions"): an index already there, valid
-- and as defined here, is kept and nothing is built. An INVALID one (a failed concurrent
-- build) is dropped and built again.
--
-- Idempotent: after a failure the version is dirty; `silentpulse-db force 44` then
-- `silentpulse-db up` finishes what is left.
DO $$
DECLARE
    part record;
    index_name text;
    expected text;
    found_def text;
    found_valid boolean;
    built boolean;
    started timestamptz;
    pause float8;
BEGIN
    FOR part IN
        SELECT n.nspname AS schema_name, c.relname AS name, a.attname AS key
        FROM pg_inherits i
        JOIN pg_class c ON c.oid = i.inhrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        JOIN pg_partitioned_table pt ON pt.partrelid = i.inhparent
        JOIN pg_attribute a ON a.attrelid = i.inhparent AND a.attnum = pt.partattrs[0]
        WHERE i.inhparent IN ('alerts'::regclass, 'asset_observations'::regclass, 'audit_logs'::regclass)
        ORDER BY i.inhparent::regclass::text, c.relname
    LOOP
        -- <partition>_tenant_key; a name too long for 63 bytes keeps a hash of the whole.
        index_name := CASE WHEN octet_length(part.name) <= 52 THEN part.name || '_tenant_key'
                           ELSE left(part.name, 43) || '_' || left(md5(part.name), 8) || '_tenant_key' END;
        expected := format('CREATE UNIQUE INDEX %I ON %I.%I USING btree (tenant_id, id, %I)',
                           index_name, part.schema_name, part.name, part.key);
        started := clock_timestamp();
        pause := 0.5;
        LOOP
            BEGIN
                PERFORM set_config('lock_timeout', '3s', true);
                SELECT pg_get_indexdef(x.indexrelid), x.indisvalid INTO found_def, found_valid
                FROM pg_index x
                WHERE x.indexrelid = to_regclass(format('%I.%I', part.schema_name, index_name));
                IF found_def IS NOT NULL AND found_def <> expected THEN
                    RAISE EXCEPTION 'index %.% is not the one 000045 builds: %', part.schema_name,
                        index_name, found_def
                        USING HINT = 'Drop or rename it, then force 44 and run up again',
                              ERRCODE = 'duplicate_object';
                END IF;
                IF found_def IS NOT NULL AND NOT found_valid THEN
                    EXECUTE format('DROP INDEX %I.%I', part.schema_name, index_name);
                END IF;
                IF found_def IS NULL OR NOT found_valid THEN
                    EXECUTE format('CREATE UNIQUE INDEX %I ON %I.%I (tenant_id, id, %I)',
                                   index_name, part.schema_name, part.name, part.key);
                END IF;
                built := true;
            EXCEPTION
                WHEN lock_not_available OR deadlock_detected THEN
                    built := false;
                WHEN undefined_table THEN
                    built := true;  -- retention dropped the partition meanwhile
            END;
            EXIT WHEN built;
            IF clock_timestamp() - started > interval '60 seconds' THEN
                RAISE EXCEPTION 'the lock on %.% stayed out of reach for 60 s (each try waits 3 s)',
                    part.schema_name, part.name
                    USING HINT = 'End the transaction that holds it, then force 44 and run up again: '
                                 'the partitions done so far are kept',
                          ERRCODE = 'lock_not_available';
            END IF;
            COMMIT;
            PERFORM pg_sleep(pause * (0.5 + random()));
            pause := least(pause * 2, 8);
        END LOOP;
        COMMIT;
    END LOOP;
END
$$;
