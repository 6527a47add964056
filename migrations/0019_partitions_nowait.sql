-- 0019_partitions_nowait: making partitions never waits while holding a
-- parent table.
--
-- Why: ledger_ensure_partitions (0006) made journal's partitions, then
-- postings', then usage_records', in one transaction.  Creating a partition
-- takes an ACCESS EXCLUSIVE lock on its parent, so the function held journal
-- while it waited for postings.  A reader that held postings and then wanted
-- journal (a statement, an export) and the function then waited for each
-- other: a deadlock, resolved only by the function's lock_timeout (200 ms)
-- or the deadlock detector (1 s).  Meanwhile every writer and reader of
-- journal queued behind the held lock.  Under libfaketime (the calendar
-- suite) PostgreSQL's timeouts never fire, and the deadlock hung the suite
-- for as long as it ran.
--
-- What changes: when there is anything to make, the function first takes
-- all three parents at once, with NOWAIT.  If a reader holds any of them, it
-- fails at once with SQLSTATE 55P03 (lock_not_available, the same code
-- lock_timeout gave), holding nothing, and billingd tries again on its next
-- maintenance tick.  When every partition exists it takes no lock at all, as
-- before.  ledger_create_partition is unchanged.  Like every SECURITY
-- DEFINER function since 0013, it searches pg_temp last.
CREATE OR REPLACE FUNCTION ledger_ensure_partitions(months_ahead integer DEFAULT 3) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp SET lock_timeout = '200ms' AS $$
DECLARE
    t text;
    m integer;
    n integer := 0;
    missing boolean := false;
    this_month timestamptz := date_trunc('month', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC';
BEGIN
    IF months_ahead < 0 OR months_ahead > 120 THEN
        RAISE EXCEPTION 'months_ahead must be 0 to 120, not %', months_ahead;
    END IF;
    FOREACH t IN ARRAY ARRAY['journal', 'postings', 'usage_records'] LOOP
        FOR m IN 0 .. months_ahead LOOP
            IF to_regclass(t || '_' || to_char((this_month + make_interval(months => m)) AT TIME ZONE 'UTC',
                                               '"y"YYYY"m"MM')) IS NULL THEN
                missing := true;
            END IF;
        END LOOP;
    END LOOP;
    IF NOT missing THEN
        RETURN 0;
    END IF;
    -- all three or none: never hold one parent while waiting for another
    LOCK TABLE ONLY journal, ONLY postings, ONLY usage_records IN ACCESS EXCLUSIVE MODE NOWAIT;
    FOREACH t IN ARRAY ARRAY['journal', 'postings', 'usage_records'] LOOP
        FOR m IN 0 .. months_ahead LOOP
            IF ledger_create_partition(t::regclass, this_month + make_interval(months => m)) THEN
                n := n + 1;
            END IF;
        END LOOP;
    END LOOP;
    RETURN n;
END $$;
REVOKE ALL ON FUNCTION ledger_ensure_partitions(integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION ledger_ensure_partitions(integer) TO billing;
