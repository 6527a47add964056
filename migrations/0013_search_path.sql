-- 0013_search_path: every SECURITY DEFINER function of the schema searches
-- pg_temp last.
--
-- Why: the guards of the books (journal_after_insert, postings_after_insert,
-- usage_records_after_insert, ledger_pending_check, ledger_customers_exist,
-- ...) run as the schema owner with `SET search_path = public`.  A
-- search_path that does not name pg_temp searches the session's temporary
-- schema FIRST for tables, and every role may create temporary tables (the
-- default TEMPORARY privilege of PUBLIC on a database) and grant them to
-- the owner.  The service role could so hand the guards its own
-- ledger_pending_checks (a journal row without postings committed),
-- customers (a reference to a missing customer accepted), ledger_idempotency
-- (an idempotency key used twice: a charge twice), postings,
-- ledger_balance_rows (postings that move no stored balance) or audit_log.
-- PostgreSQL's documented remedy ("Writing SECURITY DEFINER Functions
-- Safely"): pg_temp written last.  Functions and operators are never looked
-- up in pg_temp.  (Test: test_guard_bypass.py.)  Any SECURITY DEFINER
-- function added later must say `SET search_path = public, pg_temp`
-- (test_every_security_definer_function_searches_pg_temp_last).
DO $$
DECLARE
    f regprocedure;
BEGIN
    FOR f IN SELECT p.oid::regprocedure FROM pg_proc p
              WHERE p.pronamespace = 'public'::regnamespace AND p.prosecdef
              ORDER BY 1
    LOOP
        EXECUTE format('ALTER FUNCTION %s SET search_path = public, pg_temp', f);
    END LOOP;
END $$;
