-- 0018_fewer_trigger_queries: the statement triggers of journal, postings
-- and usage_records, and the check at COMMIT, run fewer queries each.
--
-- Why: each query a PL/pgSQL trigger runs goes through SPI and starts its
-- own executor; at ~16 records a commit batch that start-up is as large as
-- the rows' own work.  Profiled on a kept `make bench` stack (64 connections
-- of single records, pg_stat_statements track = all, track_functions = all):
-- a batch ran 16 queries and 2 nested function calls in these triggers
-- (docs/benchmarks.md, "Fewer queries in the statement triggers").
--
-- Same checks, same SQLSTATEs, same messages, same order of precedence
-- between them, same locks; only how many queries carry them:
--   journal_after_insert        the customers' check (FOR KEY SHARE) inline
--                               instead of a call of ledger_customers_exist;
--                               the key rows and the pending check's row in
--                               one statement                       4 -> 2
--   usage_records_after_insert  the customers' check, the price versions and
--                               the journal keys in one query       4 -> 1
--   postings_after_insert       the ledger accounts, the journal keys and the
--                               balance in one query                5 -> 1
--                               (then the two balance writes, unchanged)
--   ledger_pending_check        the check and the DELETE of its row in one
--                               statement                           2 -> 1
-- A failing check still raises before the trigger returns, so the statement
-- (and anything the same query wrote) is undone as before.  The missing
-- customer's id is looked up only when the count says one is missing.
-- ledger_customers_exist stays (this schema's other callers may use it).

CREATE OR REPLACE FUNCTION journal_after_insert() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    ids bigint[];
    n bigint;
    bad bigint;
BEGIN
    -- its customers exist, locked FOR KEY SHARE (0011)
    SELECT a.ids, (SELECT count(*) FROM (SELECT 1 FROM customers c WHERE c.account_id = ANY (a.ids) FOR KEY SHARE) x)
      INTO ids, n
      FROM (SELECT ARRAY(SELECT DISTINCT account_id FROM new_rows WHERE account_id IS NOT NULL) AS ids) a;
    IF n <> cardinality(ids) THEN
        SELECT i INTO bad FROM unnest(ids) i WHERE NOT EXISTS (SELECT 1 FROM customers c WHERE c.account_id = i) LIMIT 1;
        RAISE EXCEPTION 'insert into journal refused: account_id % is not in customers', bad
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    -- its keys (0006) and its check at COMMIT (0012)
    WITH k AS (
        INSERT INTO ledger_idempotency (idempotency_key, txn_id, writer, seq, account_id, content_hash, created_at, hash)
            SELECT idempotency_key, txn_id, writer, seq, account_id, content_hash, created_at, hash FROM new_rows)
    INSERT INTO ledger_pending_checks (txn_ids, created_ats)
        SELECT array_agg(txn_id), array_agg(created_at) FROM new_rows HAVING count(*) > 0;
    RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION usage_records_after_insert() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    ids bigint[];
    n bigint;
    bad_price bigint;
    bad text;
    missing bigint;
BEGIN
    -- its customers exist (locked FOR KEY SHARE), its price versions exist
    -- (0011), it belongs to the journal transaction keyed 'usage:' ||
    -- request_id (0009)
    SELECT a.ids,
           (SELECT count(*) FROM (SELECT 1 FROM customers c WHERE c.account_id = ANY (a.ids) FOR KEY SHARE) x),
           (SELECT d.price_version
              FROM (SELECT DISTINCT price_version FROM new_rows) d
              LEFT JOIN LATERAL (SELECT 1 AS ok FROM prices p WHERE p.price_version = d.price_version LIMIT 1) p ON true
             WHERE p.ok IS NULL
             LIMIT 1),
           (SELECT n.request_id
              FROM new_rows n
              LEFT JOIN LATERAL (SELECT k.txn_id, k.created_at FROM ledger_idempotency k
                                  WHERE k.idempotency_key = 'usage:' || n.request_id LIMIT 1) k ON true
             WHERE k.txn_id IS DISTINCT FROM n.txn_id OR k.created_at IS DISTINCT FROM n.created_at
             LIMIT 1)
      INTO ids, n, bad_price, bad
      FROM (SELECT ARRAY(SELECT DISTINCT account_id FROM new_rows) AS ids) a;
    IF n <> cardinality(ids) THEN
        SELECT i INTO missing FROM unnest(ids) i WHERE NOT EXISTS (SELECT 1 FROM customers c WHERE c.account_id = i)
         LIMIT 1;
        RAISE EXCEPTION 'insert into usage_records refused: account_id % is not in customers', missing
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    IF bad_price IS NOT NULL THEN
        RAISE EXCEPTION 'insert into usage_records refused: price_version % is not in prices', bad_price
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    IF bad IS NOT NULL THEN
        RAISE EXCEPTION 'usage record % does not belong to the journal transaction keyed usage:%', bad, bad
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION postings_after_insert() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    bad_account bigint;
    bad_key bigint;
    bad_sum bigint;
    bad_few bigint;
BEGIN
    -- every ledger account exists (0011); the postings match their journal
    -- row (0006); each ledger transaction of the statement sums to zero and,
    -- with the postings before it, has at least two (0006)
    SELECT (SELECT d.ledger_account_id
              FROM (SELECT DISTINCT ledger_account_id FROM new_rows) d
              LEFT JOIN LATERAL (SELECT 1 AS ok FROM ledger_accounts la
                                  WHERE la.ledger_account_id = d.ledger_account_id LIMIT 1) la ON true
             WHERE la.ok IS NULL
             LIMIT 1),
           (SELECT t.txn_id
              FROM (SELECT txn_id, created_at FROM new_rows GROUP BY 1, 2) t
              LEFT JOIN LATERAL (SELECT k.created_at FROM ledger_idempotency k WHERE k.txn_id = t.txn_id LIMIT 1) k
                ON true
             WHERE k.created_at IS DISTINCT FROM t.created_at
             LIMIT 1),
           (SELECT txn_id FROM new_rows GROUP BY txn_id HAVING sum(amount) <> 0 LIMIT 1),
           (SELECT txn_id FROM new_rows GROUP BY txn_id HAVING count(*) < 2 LIMIT 1)
      INTO bad_account, bad_key, bad_sum, bad_few;
    -- a transaction with one posting in this statement may have others
    -- before it: only then are postings read (a query over the partitioned
    -- table starts a scan of every partition, run or not)
    IF bad_sum IS NULL AND bad_few IS NOT NULL THEN
        SELECT t.txn_id INTO bad_few
          FROM (SELECT txn_id, created_at FROM new_rows GROUP BY 1, 2 HAVING count(*) < 2) t,
               LATERAL (SELECT count(*) AS n FROM postings p
                         WHERE p.txn_id = t.txn_id AND p.created_at = t.created_at) x
         WHERE x.n < 2
         LIMIT 1;
    END IF;
    IF bad_account IS NOT NULL THEN
        RAISE EXCEPTION 'insert into postings refused: ledger_account_id % is not in ledger_accounts', bad_account
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    IF bad_key IS NOT NULL THEN
        RAISE EXCEPTION 'postings of ledger transaction % do not match a journal row (txn_id, created_at)', bad_key
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    IF coalesce(bad_sum, bad_few) IS NOT NULL THEN
        RAISE EXCEPTION 'ledger transaction % does not balance', coalesce(bad_sum, bad_few)
            USING ERRCODE = 'check_violation';
    END IF;
    -- the balances (0009): customer accounts in their row, system accounts
    -- in this backend's part, each in ledger account order
    INSERT INTO ledger_balance_rows AS b (ledger_account_id, balance)
        SELECT d.ledger_account_id, d.s
          FROM (SELECT ledger_account_id, sum(amount) AS s FROM new_rows GROUP BY 1) d
          JOIN LATERAL (SELECT r.account_id FROM ledger_balance_rows r
                         WHERE r.ledger_account_id = d.ledger_account_id LIMIT 1) r ON true
         WHERE r.account_id IS NOT NULL
         ORDER BY 1
    ON CONFLICT (ledger_account_id) DO UPDATE SET balance = b.balance + EXCLUDED.balance;
    INSERT INTO ledger_balance_parts AS b (ledger_account_id, part, balance)
        SELECT d.ledger_account_id, pg_backend_pid() % 64, d.s
          FROM (SELECT ledger_account_id, sum(amount) AS s FROM new_rows GROUP BY 1) d
          JOIN LATERAL (SELECT r.account_id FROM ledger_balance_rows r
                         WHERE r.ledger_account_id = d.ledger_account_id LIMIT 1) r ON true
         WHERE r.account_id IS NULL
         ORDER BY 1
    ON CONFLICT (ledger_account_id, part) DO UPDATE SET balance = b.balance + EXCLUDED.balance;
    RETURN NULL;
END $$;

-- the check at COMMIT (0012): its query and the DELETE of its row in one
-- statement (a failed check raises; the transaction, DELETE included, is
-- undone)
CREATE OR REPLACE FUNCTION ledger_pending_check() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp SET plan_cache_mode = force_generic_plan AS $$
DECLARE
    bad bigint;
    n bigint;
    s numeric;
BEGIN
    WITH done AS (DELETE FROM ledger_pending_checks WHERE check_id = NEW.check_id)
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
    RETURN NULL;
END $$;
