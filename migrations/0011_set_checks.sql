-- 0011_set_checks: the references of the books' partitioned tables are
-- checked once per statement over its transition table, not row by row.
--
-- Why: a foreign key checks each inserted row on its own (an SPI query with
-- its own executor start and a FOR KEY SHARE per row).  The usage writer
-- inserts per record one journal row (-> customers), two postings (->
-- ledger_accounts) and one usage record (-> customers, prices): five such
-- checks a record.  Measured on a kept `make bench` stack, 1000-record
-- batches (perf on the writers' backends): 20% of PostgreSQL's CPU went to
-- them.  (0009 measured 6% of the statement time for single records and
-- kept them; statement time leaves out each check's executor start.)
--
-- What replaces them, with the same meaning (docs/ledger.md, "Guards"):
--   journal.account_id        -> customers      journal_after_insert
--   usage_records.account_id  -> customers      usage_records_after_insert
--   usage_records.price_version -> prices       usage_records_after_insert
--   postings.ledger_account_id -> ledger_accounts  postings_after_insert
-- Each statement trigger (they exist since 0006; COPY fires them too)
-- probes the index of the referenced table once per distinct value of the
-- statement and refuses the whole statement with SQLSTATE 23503
-- (foreign_key_violation) naming the table, as the foreign key did.  The
-- customers named are locked FOR KEY SHARE, as the foreign key locked them,
-- so a concurrent DELETE waits for this transaction and then sees its rows.
-- The other side of a foreign key (a referenced row may not go): prices and
-- ledger_accounts refuse UPDATE, DELETE and TRUNCATE for every role already
-- (0001, 0002); customers get a trigger that refuses DELETE, or a change of
-- account_id, of a customer the journal or a usage record names (TRUNCATE
-- of customers stays refused by the foreign keys of the other tables).

DO $$
DECLARE
    c record;
BEGIN
    FOR c IN SELECT conrelid::regclass AS t, conname FROM pg_constraint
              WHERE contype = 'f' AND conparentid = 0
                AND (conrelid, confrelid) IN (('journal'::regclass, 'customers'::regclass),
                                              ('usage_records'::regclass, 'customers'::regclass),
                                              ('usage_records'::regclass, 'prices'::regclass),
                                              ('postings'::regclass, 'ledger_accounts'::regclass))
    LOOP
        EXECUTE format('ALTER TABLE %s DROP CONSTRAINT %I', c.t, c.conname);
    END LOOP;
END $$;

-- Refuses the statement unless every id exists in customers; locks them
-- FOR KEY SHARE (the lock a foreign key takes).  ids: distinct, not null.
CREATE FUNCTION ledger_customers_exist(ids bigint[], tbl text) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
DECLARE
    n bigint;
    bad bigint;
BEGIN
    SELECT count(*) INTO n FROM (SELECT 1 FROM customers c WHERE c.account_id = ANY (ids) FOR KEY SHARE) x;
    IF n <> cardinality(ids) THEN
        SELECT i INTO bad FROM unnest(ids) i
         WHERE NOT EXISTS (SELECT 1 FROM customers c WHERE c.account_id = i) LIMIT 1;
        RAISE EXCEPTION 'insert into % refused: account_id % is not in customers', tbl, bad
            USING ERRCODE = 'foreign_key_violation';
    END IF;
END $$;
REVOKE ALL ON FUNCTION ledger_customers_exist(bigint[], text) FROM PUBLIC;

-- journal: its customer exists; then its keys (0006)
CREATE OR REPLACE FUNCTION journal_after_insert() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
BEGIN
    PERFORM ledger_customers_exist(ARRAY(SELECT DISTINCT account_id FROM new_rows WHERE account_id IS NOT NULL),
                                   'journal');
    INSERT INTO ledger_idempotency (idempotency_key, txn_id, writer, seq, account_id, content_hash, created_at, hash)
        SELECT idempotency_key, txn_id, writer, seq, account_id, content_hash, created_at, hash FROM new_rows;
    RETURN NULL;
END $$;

-- usage_records: its customer and its price version exist; the record
-- belongs to the journal transaction keyed 'usage:' || request_id (0009)
CREATE OR REPLACE FUNCTION usage_records_after_insert() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
DECLARE
    bad text;
BEGIN
    PERFORM ledger_customers_exist(ARRAY(SELECT DISTINCT account_id FROM new_rows), 'usage_records');
    SELECT d.price_version INTO bad
      FROM (SELECT DISTINCT price_version FROM new_rows) d
      LEFT JOIN LATERAL (SELECT 1 AS ok FROM prices p WHERE p.price_version = d.price_version LIMIT 1) p ON true
     WHERE p.ok IS NULL
     LIMIT 1;
    IF bad IS NOT NULL THEN
        RAISE EXCEPTION 'insert into usage_records refused: price_version % is not in prices', bad
            USING ERRCODE = 'foreign_key_violation';
    END IF;
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

-- postings: the checks and balances of 0009, and first: every ledger
-- account exists (its balance row does too: ledger_accounts_after_insert)
CREATE OR REPLACE FUNCTION postings_after_insert() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
DECLARE
    bad bigint;
    few bigint;
BEGIN
    SELECT d.ledger_account_id INTO bad
      FROM (SELECT DISTINCT ledger_account_id FROM new_rows) d
      LEFT JOIN LATERAL (SELECT 1 AS ok FROM ledger_accounts la
                          WHERE la.ledger_account_id = d.ledger_account_id LIMIT 1) la ON true
     WHERE la.ok IS NULL
     LIMIT 1;
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

-- the other side: a customer the books name does not go, nor change its id
CREATE FUNCTION customers_keep_referenced() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND NEW.account_id = OLD.account_id THEN
        RETURN NEW;
    END IF;
    IF EXISTS (SELECT 1 FROM journal j WHERE j.account_id = OLD.account_id)
       OR EXISTS (SELECT 1 FROM usage_records u WHERE u.account_id = OLD.account_id) THEN
        RAISE EXCEPTION '% of customer % refused: journal or usage_records name it', TG_OP, OLD.account_id
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    RETURN CASE TG_OP WHEN 'DELETE' THEN OLD ELSE NEW END;
END $$;
CREATE TRIGGER customers_keep_referenced BEFORE DELETE OR UPDATE OF account_id ON customers
    FOR EACH ROW EXECUTE FUNCTION customers_keep_referenced();
REVOKE ALL ON FUNCTION customers_keep_referenced() FROM PUBLIC;
