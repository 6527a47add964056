-- 0007_set_guards: the insert path of the books checks references once per
-- statement, over its transition table, instead of once per row.
--
-- Why: a foreign key is a per-row trigger that runs
--   SELECT 1 FROM ONLY customers x WHERE account_id = $1 FOR KEY SHARE OF x
-- for every inserted row: a usage record paid three of them (journal ->
-- customers, postings -> ledger_accounts twice, usage_records -> customers
-- and -> prices), each an index probe plus a row lock written into the
-- referenced row.  Under 0006 the statement triggers of postings and
-- usage_records also joined their transition table to ledger_idempotency
-- with a plan cached at the first call (a hash join that scanned the whole
-- key table once the table had grown): now every lookup is a LATERAL probe
-- with LIMIT 1, an index probe per distinct key whatever the plan cache
-- holds.
--
-- What replaces which foreign key (same refusal: SQLSTATE 23503
-- foreign_key_violation, for every role, in the statement that inserts):
--   journal.account_id           -> customers       journal_after_insert
--   postings.ledger_account_id   -> ledger_accounts postings_after_insert
--   usage_records.account_id     -> customers       usage_records_after_insert
--   usage_records.price_version  -> prices          usage_records_after_insert
-- A foreign key also locks the referenced row so that it cannot be deleted
-- before the inserting transaction commits.  These rows cannot be deleted
-- at all: ledger_accounts and prices refuse DELETE for every role
-- (ledger_refuse_change, 0001/0002), and a customer is referenced by its
-- paid ledger account (a real foreign key, ledger_accounts -> customers), so
-- a customer the books name cannot be deleted either.  The check without a
-- lock is therefore as strong as the foreign key was.

DO $$
DECLARE
    f record;
BEGIN
    FOR f IN SELECT c.conrelid::regclass AS t, c.conname
               FROM pg_constraint c
              WHERE c.contype = 'f' AND c.conparentid = 0
                AND ((c.conrelid = 'journal'::regclass AND c.confrelid = 'customers'::regclass)
                  OR (c.conrelid = 'postings'::regclass AND c.confrelid = 'ledger_accounts'::regclass)
                  OR (c.conrelid = 'usage_records'::regclass AND c.confrelid IN ('customers'::regclass, 'prices'::regclass)))
    LOOP
        EXECUTE format('ALTER TABLE %s DROP CONSTRAINT %I', f.t, f.conname);
    END LOOP;
END $$;

-- journal: its keys (0006) and now its customer
CREATE OR REPLACE FUNCTION journal_after_insert() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
DECLARE
    bad bigint;
BEGIN
    SELECT n.account_id INTO bad
      FROM (SELECT DISTINCT account_id FROM new_rows WHERE account_id IS NOT NULL) n
      LEFT JOIN LATERAL (SELECT 1 AS ok FROM customers c WHERE c.account_id = n.account_id LIMIT 1) x ON true
     WHERE x.ok IS NULL
     LIMIT 1;
    IF bad IS NOT NULL THEN
        RAISE EXCEPTION 'journal row names customer %, which does not exist', bad
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    INSERT INTO ledger_idempotency (idempotency_key, txn_id, writer, seq, account_id, content_hash, created_at, hash)
        SELECT idempotency_key, txn_id, writer, seq, account_id, content_hash, created_at, hash FROM new_rows;
    RETURN NULL;
END $$;

-- postings: the checks of 0006, each lookup an index probe; the ledger
-- accounts must exist; then the balances move (one row per ledger account
-- per statement)
CREATE OR REPLACE FUNCTION postings_after_insert() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
DECLARE
    bad bigint;
    few bigint;
BEGIN
    SELECT t.txn_id INTO bad
      FROM (SELECT txn_id, created_at FROM new_rows GROUP BY 1, 2) t
      LEFT JOIN LATERAL (SELECT k.created_at FROM ledger_idempotency k WHERE k.txn_id = t.txn_id LIMIT 1) k ON true
     WHERE k.created_at IS DISTINCT FROM t.created_at
     LIMIT 1;
    IF bad IS NOT NULL THEN
        RAISE EXCEPTION 'postings of ledger transaction % do not match a journal row (txn_id, created_at)', bad
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    SELECT n.ledger_account_id INTO bad
      FROM (SELECT DISTINCT ledger_account_id FROM new_rows) n
      LEFT JOIN LATERAL (SELECT 1 AS ok FROM ledger_accounts la
                          WHERE la.ledger_account_id = n.ledger_account_id LIMIT 1) x ON true
     WHERE x.ok IS NULL
     LIMIT 1;
    IF bad IS NOT NULL THEN
        RAISE EXCEPTION 'posting to ledger account %, which does not exist', bad
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    SELECT txn_id INTO bad FROM new_rows GROUP BY txn_id HAVING sum(amount) <> 0 LIMIT 1;
    IF bad IS NULL THEN
        SELECT txn_id INTO few FROM new_rows GROUP BY txn_id HAVING count(*) < 2 LIMIT 1;
        IF few IS NOT NULL THEN
            SELECT t.txn_id INTO bad
              FROM (SELECT txn_id, created_at FROM new_rows GROUP BY 1, 2 HAVING count(*) < 2) t,
                   LATERAL (SELECT count(*) AS n FROM postings p
                             WHERE p.txn_id = t.txn_id AND p.created_at = t.created_at) x
             WHERE x.n < 2
             LIMIT 1;
        END IF;
    END IF;
    IF bad IS NOT NULL THEN
        RAISE EXCEPTION 'ledger transaction % does not balance', bad USING ERRCODE = 'check_violation';
    END IF;
    INSERT INTO ledger_balances AS b (ledger_account_id, balance)
        SELECT ledger_account_id, sum(amount) FROM new_rows GROUP BY ledger_account_id ORDER BY ledger_account_id
    ON CONFLICT (ledger_account_id) DO UPDATE SET balance = b.balance + EXCLUDED.balance;
    RETURN NULL;
END $$;

-- usage_records: the record belongs to the journal transaction keyed
-- 'usage:' || request_id (0006); its customer and price version exist
CREATE OR REPLACE FUNCTION usage_records_after_insert() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
DECLARE
    bad text;
BEGIN
    SELECT n.request_id INTO bad
      FROM new_rows n
      LEFT JOIN LATERAL (SELECT k.txn_id, k.created_at FROM ledger_idempotency k
                          WHERE k.idempotency_key = 'usage:' || n.request_id LIMIT 1) k ON true
     WHERE k.txn_id IS DISTINCT FROM n.txn_id OR k.created_at IS DISTINCT FROM n.created_at
     LIMIT 1;
    IF bad IS NOT NULL THEN
        RAISE EXCEPTION 'usage record % does not belong to the journal transaction keyed usage:%', bad, bad
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    SELECT n.account_id::text INTO bad
      FROM (SELECT DISTINCT account_id FROM new_rows) n
      LEFT JOIN LATERAL (SELECT 1 AS ok FROM customers c WHERE c.account_id = n.account_id LIMIT 1) x ON true
     WHERE x.ok IS NULL
     LIMIT 1;
    IF bad IS NOT NULL THEN
        RAISE EXCEPTION 'usage record names customer %, which does not exist', bad
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    SELECT n.price_version::text INTO bad
      FROM (SELECT DISTINCT price_version FROM new_rows) n
      LEFT JOIN LATERAL (SELECT 1 AS ok FROM prices p WHERE p.price_version = n.price_version LIMIT 1) x ON true
     WHERE x.ok IS NULL
     LIMIT 1;
    IF bad IS NOT NULL THEN
        RAISE EXCEPTION 'usage record names price version %, which does not exist', bad
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    RETURN NULL;
END $$;
