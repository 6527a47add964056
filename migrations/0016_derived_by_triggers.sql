-- 0016_derived_by_triggers: the key table and the stored balances are
-- written by the books' own triggers only, for every role.
--
-- Why: since 0006 a posting's reference to its journal row is checked
-- against ledger_idempotency (postings_after_insert: the key row with the
-- same (txn_id, created_at)), and that table had no guard against INSERT:
-- the owner (or a superuser) could write a key row by hand and then
-- balanced postings whose journal row does not exist, moving customers'
-- money outside the hash chain.  Likewise ledger_balance_rows and
-- ledger_balance_parts (0009), which billingd spends from, took INSERT and
-- UPDATE from them: a balance changed with no posting.  (The service role
-- has no such privilege; DELETE and TRUNCATE were refused already.)
--
-- Now a statement trigger refuses INSERT into those tables (and UPDATE of
-- the balances; a key row's UPDATE is refused row by row since 0006) unless
-- it runs inside another trigger (pg_trigger_depth() >= 2: journal's
-- statement trigger writes the keys; the posting and ledger-account
-- triggers the balances).  Once per statement: the usage path's cost is one
-- call per statement, not per row.  ENABLE ALWAYS, as every trigger (0014).
-- (Test: test_guard_bypass.py.)
CREATE FUNCTION ledger_refuse_direct_write() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF pg_trigger_depth() < 2 THEN
        RAISE EXCEPTION '% on % refused: written by the books'' own triggers only', TG_OP, TG_TABLE_NAME
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER idempotency_by_journal BEFORE INSERT ON ledger_idempotency
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_refuse_direct_write();
CREATE TRIGGER balance_rows_by_postings BEFORE INSERT OR UPDATE ON ledger_balance_rows
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_refuse_direct_write();
CREATE TRIGGER balance_parts_by_postings BEFORE INSERT OR UPDATE ON ledger_balance_parts
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_refuse_direct_write();
ALTER TABLE ledger_idempotency ENABLE ALWAYS TRIGGER idempotency_by_journal;
ALTER TABLE ledger_balance_rows ENABLE ALWAYS TRIGGER balance_rows_by_postings;
ALTER TABLE ledger_balance_parts ENABLE ALWAYS TRIGGER balance_parts_by_postings;
