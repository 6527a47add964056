-- 0009_usage_path: the insert path of the books, cheaper for the usage writer.
--   1. the statement triggers' look-ups are index probes;
--   2. the balances of the system accounts are kept in parts (below).
--
-- ---- 1. the statement triggers' look-ups become index probes
--
-- Under 0006 the statement triggers of postings and usage_records joined
-- their transition table to ledger_idempotency with a plan PL/pgSQL cached
-- at the first call: a hash join that, once the key table had grown,
-- scanned all of it for every statement (measured: 1.7 s of every 10 s of
-- the usage writers' statement time at 64 connections, and growing with the
-- table).  Every look-up is now a LATERAL probe with LIMIT 1: one index
-- probe per distinct key, whatever plan is cached.
--
-- The foreign keys of journal, postings and usage_records stay.  Replacing
-- them with the same kind of set-based checks was measured (about 6% of the
-- writers' statement time) and left out: the guard would change mechanism
-- for little, and the planner uses the foreign keys for its join estimates
-- (each posting has exactly one ledger account) in export and statements.

-- usage_records: the record belongs to the journal transaction keyed
-- 'usage:' || request_id (0006)
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
    RETURN NULL;
END $$;

-- ---- 2. the balances of the system accounts (revenue, promo
-- expense, breakage, cash clearing, adjustments) are kept in parts, so that
-- writers on different connections do not queue on one row.
--
-- Why: every usage record credits revenue.  The posting trigger moved the
-- one ledger_balances row of revenue, so each transaction that charged usage
-- held that row's lock from its postings to the end of its COMMIT (the WAL
-- flush included), and every other writer (the second writer thread, a
-- second billingd instance) waited for it: measured at 64 connections, a
-- third of all statement time of the usage writers was this wait.
--
-- Now:
--   ledger_balance_rows   the former table: one row per ledger account.
--                         Customer accounts (account_id set) are moved here
--                         as before; for system accounts (account_id NULL)
--                         it keeps the balance they had when this migration
--                         ran, and never changes again.
--   ledger_balance_parts  (ledger_account_id, part): what postings to a
--                         system account added since; part is the writing
--                         backend's pid modulo 64, so concurrent writers
--                         touch different rows.  At most 5 x 64 rows.
--   ledger_balances       a view with the former table's columns and
--                         meaning: balance = the row's balance, plus the
--                         account's parts for a system account.  Readers are
--                         unchanged; it is not updatable (nobody may write
--                         balances but the posting trigger).
-- The finance views of 0004 read customer and grant balances only; they keep
-- reading ledger_balance_rows (PostgreSQL bound them to the table), whose
-- customer rows are exact.

ALTER TABLE ledger_balances RENAME TO ledger_balance_rows;
ALTER INDEX ledger_balances_pkey RENAME TO ledger_balance_rows_pkey;

-- balances are moved by the posting trigger only (UPDATE); a row never goes
CREATE TRIGGER balance_rows_no_delete BEFORE DELETE ON ledger_balance_rows
    FOR EACH ROW EXECUTE FUNCTION ledger_refuse_change();

CREATE TABLE ledger_balance_parts (
    ledger_account_id bigint NOT NULL REFERENCES ledger_accounts,
    part              integer NOT NULL CHECK (part BETWEEN 0 AND 63),
    balance           bigint NOT NULL,
    PRIMARY KEY (ledger_account_id, part)
);
CREATE TRIGGER balance_parts_no_truncate BEFORE TRUNCATE ON ledger_balance_parts
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_refuse_change();
CREATE TRIGGER balance_parts_no_delete BEFORE DELETE ON ledger_balance_parts
    FOR EACH ROW EXECUTE FUNCTION ledger_refuse_change();

CREATE VIEW ledger_balances AS
SELECT b.ledger_account_id,
       CASE WHEN b.account_id IS NULL
            THEN (b.balance + coalesce((SELECT sum(p.balance) FROM ledger_balance_parts p
                                         WHERE p.ledger_account_id = b.ledger_account_id), 0))::bigint
            ELSE b.balance END AS balance,
       b.account_id
  FROM ledger_balance_rows b;

-- a new ledger account gets its row (as under 0006)
CREATE OR REPLACE FUNCTION ledger_accounts_after_insert() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
BEGIN
    INSERT INTO ledger_balance_rows (ledger_account_id, account_id) SELECT ledger_account_id, account_id FROM new_rows;
    RETURN NULL;
END $$;

-- the posting checks of 0006 (the journal row's key an index probe); then the balances: customer accounts in their
-- row, system accounts in this backend's part (each in ledger account order:
-- no deadlock between writers)
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

REVOKE ALL ON ledger_balance_parts, ledger_balances FROM PUBLIC;
GRANT SELECT ON ledger_balance_parts, ledger_balances TO billing;
