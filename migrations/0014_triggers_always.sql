-- 0014_triggers_always: every trigger of the schema's tables fires in every
-- session_replication_role (ENABLE ALWAYS), so the guards of the books hold
-- for a superuser too.
--
-- Why: triggers created plainly are ENABLE ORIGIN: a session with
-- session_replication_role = replica skips them.  Only a superuser may set
-- it, but it is the usual switch of a bulk load or a logical-replication
-- tool, and under it postgres could UPDATE, DELETE and TRUNCATE journal,
-- postings and the rest, and commit a journal row without postings or
-- naming a missing customer (0011 and 0012 made those checks triggers).
-- Now the triggers fire there as everywhere (test_guard_bypass.py).
-- ALTER TABLE ... DISABLE TRIGGER stays possible for the tables' owner and
-- superusers only: that is a change of the schema, not a write to the books.
--
-- Consequence: the database cannot be a logical-replication subscriber of
-- the books (its apply worker runs as replica and would fire them a second
-- time); our standbys are physical (docs/deployment.md).  The foreign keys
-- that remain (ledger_accounts, grants, api_keys ... -> customers) are
-- PostgreSQL's internal triggers, which only a superuser can alter; they
-- keep their default.
--
-- The parent of a partitioned table passes ALWAYS on to its partitions'
-- clones (and to partitions made later); the statement triggers each
-- partition gets of its own are made ALWAYS by ledger_create_partition.

DO $$
DECLARE
    t record;
BEGIN
    FOR t IN SELECT c.oid::regclass AS rel, tg.tgname
               FROM pg_trigger tg JOIN pg_class c ON c.oid = tg.tgrelid
              WHERE c.relnamespace = 'public'::regnamespace AND NOT tg.tgisinternal AND tg.tgparentid = 0
                AND tg.tgenabled <> 'A'
              ORDER BY 1, 2
    LOOP
        EXECUTE format('ALTER TABLE %s ENABLE ALWAYS TRIGGER %I', t.rel, t.tgname);
    END LOOP;
END $$;

-- the partitions' own guards (0006), and ALWAYS for those made from now on
CREATE OR REPLACE FUNCTION ledger_create_partition(parent regclass, month_start timestamptz) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    base text := parent::text;
    lo timestamptz := date_trunc('month', month_start AT TIME ZONE 'UTC') AT TIME ZONE 'UTC';
    hi timestamptz := (date_trunc('month', month_start AT TIME ZONE 'UTC') + interval '1 month') AT TIME ZONE 'UTC';
    name text;
    busy boolean;
BEGIN
    IF base NOT IN ('journal', 'postings', 'usage_records') THEN
        RAISE EXCEPTION 'ledger_create_partition: % is not a partitioned ledger table', base;
    END IF;
    IF month_start IS NULL THEN
        name := base || '_default';
    ELSE
        name := base || '_' || to_char(lo AT TIME ZONE 'UTC', '"y"YYYY"m"MM');
    END IF;
    IF to_regclass(name) IS NOT NULL THEN
        RETURN false;
    END IF;
    IF month_start IS NULL THEN
        EXECUTE format('CREATE TABLE %I PARTITION OF %I DEFAULT', name, base);
    ELSE
        IF to_regclass(base || '_default') IS NOT NULL THEN
            EXECUTE format('SELECT EXISTS (SELECT 1 FROM %I WHERE created_at >= $1 AND created_at < $2)',
                           base || '_default') INTO busy USING lo, hi;
            IF busy THEN
                RAISE WARNING 'partition % not created: rows of that month are in %_default', name, base;
                RETURN false;
            END IF;
        END IF;
        EXECUTE format('CREATE TABLE %I PARTITION OF %I FOR VALUES FROM (%L) TO (%L)', name, base, lo, hi);
    END IF;
    EXECUTE format('REVOKE ALL ON %I FROM PUBLIC', name);
    EXECUTE format('CREATE TRIGGER %I BEFORE TRUNCATE ON %I FOR EACH STATEMENT EXECUTE FUNCTION ledger_refuse_change()',
                   name || '_no_truncate', name);
    EXECUTE format('CREATE TRIGGER %I BEFORE INSERT ON %I FOR EACH STATEMENT EXECUTE FUNCTION ledger_refuse_direct_insert()',
                   name || '_via_parent', name);
    -- (the row triggers cloned from the parent are ENABLE ALWAYS as the parent's are)
    EXECUTE format('ALTER TABLE %I ENABLE ALWAYS TRIGGER %I', name, name || '_no_truncate');
    EXECUTE format('ALTER TABLE %I ENABLE ALWAYS TRIGGER %I', name, name || '_via_parent');
    RETURN true;
END $$;
