-- 0020_balance_update: the posting trigger moves customers' balances with a
-- plain UPDATE by index, and finds whose each ledger account is with the
-- probe that checks it exists.
--
-- Why: postings_after_insert (0009, 0011) probed ledger_accounts once per
-- distinct ledger account of the statement (the reference check), then
-- moved the balances with two INSERT ... ON CONFLICT DO UPDATE statements,
-- each joining the statement's ledger accounts to ledger_balance_rows to
-- tell customer accounts (the row has account_id) from system accounts:
--   - customer rows: per account a probe of ledger_balance_rows, then ON
--     CONFLICT's own probe of the arbiter index, a row lock (a WAL record of
--     its own) and the update; the insert could never happen (the probe had
--     just found the row, and balance rows are never deleted);
--   - system parts: the same probe again for every account of the
--     statement, to find the one or two system accounts among them.
-- Three probes and a lock per customer account.  On a kept `make bench`
-- stack (1000-record batches; the writer's commit batches carry ~200
-- records and ~200 customer accounts; pg_stat_statements) the two upserts
-- were 1.98 ms and 2,390 buffer accesses of each commit batch, the parts'
-- upsert 600 of them for one or two rows.
--
-- Now, same meaning: the reference check's probe of ledger_accounts also
-- reads the account's account_id, which is its balance row's (the row is
-- made from it by ledger_accounts_after_insert, 0006 filled the older ones,
-- and neither table's account_id ever changes), and the statement's sums go
-- into sorted customer and system arrays; customer rows get one UPDATE (one
-- index probe and the update each, no lock record); the system parts keep
-- their upsert (a part row may be missing: it is inserted then), from the
-- sums already found.  A customer ledger account without a balance row
-- (never made since 0001) is an error (XX000) where the join skipped it.
-- The reference check names the smallest missing ledger account (it named
-- any one of them).
--
-- Row locks stay in ledger account order (no deadlock between writers, as
-- the ORDER BY of the upsert ensured): the UPDATE joins the sorted sums to
-- ledger_balance_rows, and this function plans without hash joins, bitmap
-- scans or sequential scans, so that join is a nested loop over the sorted
-- sums probing the primary key, or walks that key in order (a merge join, or
-- a nested loop under a full index scan): every plan it may take updates
-- the rows in ledger_account_id order.  None of the function's other
-- queries uses those plan types (each is an index probe per distinct value,
-- or reads only the transition table).

CREATE OR REPLACE FUNCTION postings_after_insert() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp
SET enable_hashjoin = off SET enable_bitmapscan = off SET enable_seqscan = off AS $$
DECLARE
    bad bigint;
    few bigint;
    c_ids bigint[];
    c_sums numeric[];
    s_ids bigint[];
    s_sums numeric[];
    n bigint;
BEGIN
    -- each ledger account's sum, sorted, and whose it is: one probe of
    -- ledger_accounts per distinct account, which is also the reference check
    SELECT min(d.ledger_account_id) FILTER (WHERE la.ok IS NULL),
           array_agg(d.ledger_account_id ORDER BY d.ledger_account_id) FILTER (WHERE la.account_id IS NOT NULL),
           array_agg(d.s ORDER BY d.ledger_account_id) FILTER (WHERE la.account_id IS NOT NULL),
           array_agg(d.ledger_account_id ORDER BY d.ledger_account_id) FILTER (WHERE la.ok AND la.account_id IS NULL),
           array_agg(d.s ORDER BY d.ledger_account_id) FILTER (WHERE la.ok AND la.account_id IS NULL)
      INTO bad, c_ids, c_sums, s_ids, s_sums
      FROM (SELECT ledger_account_id, sum(amount) AS s FROM new_rows GROUP BY 1) d
      LEFT JOIN LATERAL (SELECT true AS ok, la.account_id FROM ledger_accounts la
                          WHERE la.ledger_account_id = d.ledger_account_id LIMIT 1) la ON true;
    IF bad IS NOT NULL THEN
        RAISE EXCEPTION 'insert into postings refused: ledger_account_id % is not in ledger_accounts', bad
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    SELECT t.txn_id INTO bad
      FROM (SELECT txn_id, created_at FROM new_rows GROUP BY 1, 2) t
      LEFT JOIN LATERAL (SELECT k.created_at FROM ledger_idempotency k WHERE k.txn_id = t.txn_id LIMIT 1) k ON true
     WHERE k.created_at IS DISTINCT FROM t.created_at
     LIMIT 1;
    IF bad IS NOT NULL THEN
        RAISE EXCEPTION 'postings of ledger transaction % do not match a journal row (txn_id, created_at)', bad
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
    -- customer accounts: their balance row exists (made with the ledger
    -- account, never deleted), so a plain UPDATE, in ledger account order
    IF c_ids IS NOT NULL THEN
        UPDATE ledger_balance_rows b SET balance = b.balance + x.s
          FROM unnest(c_ids, c_sums) AS x(id, s)
         WHERE b.ledger_account_id = x.id;
        GET DIAGNOSTICS n = ROW_COUNT;
        IF n <> cardinality(c_ids) THEN
            RAISE EXCEPTION 'balances of % customer ledger accounts moved, % expected', n, cardinality(c_ids)
                USING ERRCODE = 'internal_error';
        END IF;
    END IF;
    -- system accounts: this backend's part, inserted when it has none yet
    IF s_ids IS NOT NULL THEN
        INSERT INTO ledger_balance_parts AS b (ledger_account_id, part, balance)
            SELECT x.id, pg_backend_pid() % 64, x.s FROM unnest(s_ids, s_sums) AS x(id, s) ORDER BY 1
        ON CONFLICT (ledger_account_id, part) DO UPDATE SET balance = b.balance + EXCLUDED.balance;
    END IF;
    RETURN NULL;
END $$;
