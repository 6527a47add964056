-- 0012_commit_check: the check at COMMIT that every journal row has
-- balanced postings runs once per INSERT statement into journal, not once
-- per row.
--
-- Why: the check was a deferred constraint trigger FOR EACH ROW of journal
-- (0001, 0006): at COMMIT one PL/pgSQL call and one query, with its own
-- executor start over the partitioned postings, per journal row, so per
-- usage record.  Measured on a kept `make bench` stack, 1000-record batches
-- (perf on the writers' backends): 14% of PostgreSQL's CPU, the largest
-- single item after the index inserts.  PostgreSQL has no deferred
-- statement-level triggers, hence:
--
--   ledger_pending_checks  one row per INSERT (or COPY) into journal, written
--                          by journal's statement trigger (SECURITY DEFINER;
--                          no other role may read or write it): the
--                          statement's (txn_id, created_at) pairs as arrays.
--                          UNLOGGED: a row lives only until its own COMMIT
--                          (it is deleted by its check), so it needs no WAL,
--                          and after a crash there is nothing to keep.
--   ledger_pending_check   the deferred constraint trigger of that table: at
--                          COMMIT it refuses the transaction unless each of
--                          those journal rows has at least two postings
--                          summing to zero (the former check's condition and
--                          SQLSTATE), one query for the whole statement;
--                          then deletes its row.
--
-- Same meaning for every role: the row is written by the journal
-- statement's own trigger, so an INSERT into journal cannot skip it; a
-- savepoint rolled back takes the journal rows and their pending row with
-- it; SET CONSTRAINTS ALL IMMEDIATE still checks at the end of the
-- statement (and refuses a journal row whose postings come later, as
-- before).

CREATE UNLOGGED TABLE ledger_pending_checks (
    check_id    bigserial PRIMARY KEY,
    txn_ids     bigint[] NOT NULL,
    created_ats timestamptz[] NOT NULL
);
REVOKE ALL ON ledger_pending_checks FROM PUBLIC;
-- a pending row is written and deleted by the functions below only; the
-- deferred check reads the row as inserted, whatever happens to it later
CREATE TRIGGER pending_checks_no_update BEFORE UPDATE ON ledger_pending_checks
    FOR EACH ROW EXECUTE FUNCTION ledger_refuse_change();
CREATE TRIGGER pending_checks_no_truncate BEFORE TRUNCATE ON ledger_pending_checks
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_refuse_change();

CREATE FUNCTION ledger_pending_check() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public SET plan_cache_mode = force_generic_plan AS $$
DECLARE
    bad bigint;
    n bigint;
    s numeric;
BEGIN
    SELECT t.id, x.n, x.s INTO bad, n, s
      FROM unnest(NEW.txn_ids, NEW.created_ats) AS t(id, at)
      CROSS JOIN LATERAL (SELECT count(*) AS n, coalesce(sum(p.amount), 0) AS s FROM postings p
                           WHERE p.txn_id = t.id AND p.created_at = t.at) x
     WHERE x.n < 2 OR x.s <> 0
     LIMIT 1;
    IF bad IS NOT NULL THEN
        RAISE EXCEPTION 'ledger transaction % has % postings summing to %', bad, n, s
            USING ERRCODE = 'check_violation';
    END IF;
    DELETE FROM ledger_pending_checks WHERE check_id = NEW.check_id;
    RETURN NULL;
END $$;
CREATE CONSTRAINT TRIGGER ledger_pending_check AFTER INSERT ON ledger_pending_checks
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION ledger_pending_check();
REVOKE ALL ON FUNCTION ledger_pending_check() FROM PUBLIC;

-- journal: its customers exist (0011); its keys (0006); its check at COMMIT
CREATE OR REPLACE FUNCTION journal_after_insert() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
BEGIN
    PERFORM ledger_customers_exist(ARRAY(SELECT DISTINCT account_id FROM new_rows WHERE account_id IS NOT NULL),
                                   'journal');
    INSERT INTO ledger_idempotency (idempotency_key, txn_id, writer, seq, account_id, content_hash, created_at, hash)
        SELECT idempotency_key, txn_id, writer, seq, account_id, content_hash, created_at, hash FROM new_rows;
    INSERT INTO ledger_pending_checks (txn_ids, created_ats)
        SELECT array_agg(txn_id), array_agg(created_at) FROM new_rows HAVING count(*) > 0;
    RETURN NULL;
END $$;

-- the per-row check it replaces (on the parent: its clones on every partition go with it)
DROP TRIGGER journal_has_postings ON journal;
