-- 0006_partitioning: the three large, append-only, time-ordered ledger
-- tables (journal, postings, usage_records) become declaratively
-- RANGE-partitioned by month on created_at (UTC months), and keys that must
-- stay globally unique move to a narrow non-partitioned table.
--
-- Why a separate key table: PostgreSQL requires every unique index of a
-- partitioned table to contain the partition key, so journal's UNIQUE
-- (idempotency_key), UNIQUE (writer, seq) and its txn_id primary key, and
-- usage_records' PRIMARY KEY (request_id), could only be enforced per month.
-- ledger_idempotency holds one row per journal transaction, written only by
-- a trigger on journal in the same statement (the service role may not
-- write it), and enforces them globally:
--
--   idempotency_key  PRIMARY KEY  (a replay/conflict is found here; a racing
--                                  duplicate fails with 23505 as before)
--   txn_id           UNIQUE       (grants.txn_id references it)
--   (writer, seq)    UNIQUE       (one hash chain link per seq; with the
--                                  link's hash, the writer's chain head is
--                                  one index probe, not one per partition)
--
-- What replaced which key or foreign key (foreign keys INTO a partitioned
-- table cost a partition-routed lookup per row; the key table answers the
-- same question with one plain index probe per transaction):
--   journal        PK (txn_id, created_at); txn_id, key and (writer, seq)
--                  unique through ledger_idempotency.
--   postings       gets created_at (= its journal row's created_at, the
--                  partition key; DEFAULT now() only for hand-written SQL).
--                  FK txn_id -> journal replaced by the posting statement
--                  trigger: each (txn_id, created_at) must have its key row,
--                  i.e. its journal row.  (txn_id, line) is unique because
--                  (txn_id, line, created_at) is and a txn_id has one
--                  created_at.
--   usage_records  created_at = its journal row's created_at (existing rows
--                  take it from the journal: they differed by the
--                  milliseconds between BEGIN and the charge).  FK txn_id ->
--                  journal replaced by a statement trigger: a record's
--                  (txn_id, created_at) must be those of the transaction
--                  keyed 'usage:' || request_id.  request_id is unique: keys
--                  are, so two records of one request_id would share
--                  created_at and collide on PRIMARY KEY (request_id,
--                  created_at).
--   grants.txn_id  FK -> ledger_idempotency (txn_id) instead of journal.
--
-- Partitions: ledger_ensure_partitions(months_ahead) creates the current UTC
-- month and the next months_ahead months of each table (idempotent); this
-- migration calls it with 3, and billingd calls it on every expiry tick.  A
-- DEFAULT partition per table takes any row no monthly partition covers (a
-- date far in the past or future, or a month nobody created in time), so a
-- write never fails for lack of a partition.  A month whose rows already sit
-- in the default partition is not created later (PostgreSQL would refuse:
-- the default partition's rows may not move, the ledger being append-only);
-- ledger_ensure_partitions skips it with a warning and those rows stay in the
-- default partition, where every query still finds them.
--
-- Guards kept: every trigger of 0001-0005 is re-created on the partitioned
-- tables; row triggers (append-only, deferred journal check) are cloned to
-- every partition by PostgreSQL; statement triggers (TRUNCATE refusal) are
-- added to each partition by ledger_create_partition, which also refuses
-- INSERT addressed to a partition directly (it would skip the parent's
-- statement triggers: balance check, balances, keys).  The service role has
-- no privilege on partitions, only on the parent tables.

-- ---- 1. the old tables step aside ----
DROP VIEW finance_usage_daily;
ALTER TABLE grants DROP CONSTRAINT grants_txn_id_fkey;
ALTER TABLE journal RENAME TO journal_old;
ALTER TABLE postings RENAME TO postings_old;
ALTER TABLE usage_records RENAME TO usage_records_old;
DO $$
DECLARE
    i record;
BEGIN
    FOR i IN SELECT c.relname FROM pg_index x JOIN pg_class c ON c.oid = x.indexrelid
              WHERE x.indrelid IN ('journal_old'::regclass, 'postings_old'::regclass, 'usage_records_old'::regclass)
    LOOP
        EXECUTE format('ALTER INDEX %I RENAME TO %I', i.relname, i.relname || '_old');
    END LOOP;
END $$;

-- ---- 2. the key table ----
CREATE TABLE ledger_idempotency (
    idempotency_key text PRIMARY KEY,
    txn_id          bigint NOT NULL UNIQUE,
    writer          text NOT NULL,
    seq             bigint NOT NULL,
    account_id      bigint,             -- the journal row's customer, if any (queries, sharding)
    content_hash    bytea NOT NULL,
    created_at      timestamptz NOT NULL,
    hash            bytea NOT NULL,      -- the journal row's chain hash
    UNIQUE (writer, seq)
);

-- ---- 3. the partitioned tables (same columns, same order; postings gains created_at) ----
CREATE TABLE journal (
    txn_id          bigint NOT NULL DEFAULT nextval('journal_txn_id_seq'),
    writer          text NOT NULL,
    seq             bigint NOT NULL CHECK (seq >= 1),
    kind            text NOT NULL,
    idempotency_key text NOT NULL,
    content_hash    bytea NOT NULL,
    account_id      bigint REFERENCES customers,
    actor           text NOT NULL,
    reason          text NOT NULL,
    details         text NOT NULL,
    created_at      timestamptz NOT NULL,
    prev_hash       bytea NOT NULL,
    hash            bytea NOT NULL,
    PRIMARY KEY (txn_id, created_at)
) PARTITION BY RANGE (created_at);
ALTER SEQUENCE journal_txn_id_seq OWNED BY journal.txn_id;
CREATE INDEX journal_writer_seq ON journal (writer, seq);
CREATE INDEX journal_created ON journal (created_at);
CREATE INDEX journal_account ON journal (account_id, created_at);

CREATE TABLE postings (
    posting_id        bigint NOT NULL DEFAULT nextval('postings_posting_id_seq'),
    txn_id            bigint NOT NULL,
    line              smallint NOT NULL,
    ledger_account_id bigint NOT NULL REFERENCES ledger_accounts,
    account_id        bigint,      -- the customer of the ledger account, if any (queries, sharding)
    amount            bigint NOT NULL,
    created_at        timestamptz NOT NULL DEFAULT now(),   -- its journal row's created_at
    PRIMARY KEY (posting_id, created_at),
    UNIQUE (txn_id, line, created_at)
) PARTITION BY RANGE (created_at);
ALTER SEQUENCE postings_posting_id_seq OWNED BY postings.posting_id;
CREATE INDEX postings_ledger_account ON postings (ledger_account_id);

CREATE TABLE usage_records (
    request_id          text NOT NULL,
    account_id          bigint NOT NULL REFERENCES customers,
    txn_id              bigint NOT NULL,
    body_hash           bytea NOT NULL,
    model               text NOT NULL,
    input_tokens        bigint NOT NULL,
    cached_input_tokens bigint NOT NULL,
    output_tokens       bigint NOT NULL,
    started_at          timestamptz NOT NULL,
    cost_nanos          bigint NOT NULL,
    price_version       bigint NOT NULL REFERENCES prices,
    hold_id             text,
    status              text,
    response            text NOT NULL,     -- the JSON answered first, replayed on duplicates
    created_at          timestamptz NOT NULL DEFAULT now(),   -- its journal row's created_at
    PRIMARY KEY (request_id, created_at)
) PARTITION BY RANGE (created_at);
CREATE INDEX usage_records_account ON usage_records (account_id, started_at);


-- ---- 4. partitions ----
-- Inserts must go through the parent table (its statement triggers guard the books).
CREATE FUNCTION ledger_refuse_direct_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'INSERT into partition % refused: insert into its parent table', TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END $$;

-- Creates the partition of parent (journal, postings or usage_records) for
-- the UTC month starting at month_start, or its DEFAULT partition when
-- month_start is NULL, with the guards every partition needs.  Returns
-- true if it created one; false if it existed, or if rows of that month
-- already sit in the default partition (then it warns and leaves them).
CREATE FUNCTION ledger_create_partition(parent regclass, month_start timestamptz) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
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
    RETURN true;
END $$;

-- The current UTC month and the next months_ahead months, for each table.
-- Idempotent; returns how many partitions it created.  Creating a partition
-- takes an ACCESS EXCLUSIVE lock on the parent (and on its default
-- partition), so it waits behind a long reader (an export) and writers queue
-- behind it: it gives up after 200 ms (lock_timeout) and the caller tries
-- again later; months are made 3 ahead, so there is plenty of time.
CREATE FUNCTION ledger_ensure_partitions(months_ahead integer DEFAULT 3) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public SET lock_timeout = '200ms' AS $$
DECLARE
    t text;
    m integer;
    n integer := 0;
    this_month timestamptz := date_trunc('month', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC';
BEGIN
    IF months_ahead < 0 OR months_ahead > 120 THEN
        RAISE EXCEPTION 'months_ahead must be 0 to 120, not %', months_ahead;
    END IF;
    FOREACH t IN ARRAY ARRAY['journal', 'postings', 'usage_records'] LOOP
        FOR m IN 0 .. months_ahead LOOP
            IF ledger_create_partition(t::regclass, this_month + make_interval(months => m)) THEN
                n := n + 1;
            END IF;
        END LOOP;
    END LOOP;
    RETURN n;
END $$;
REVOKE ALL ON FUNCTION ledger_create_partition(regclass, timestamptz) FROM PUBLIC;
REVOKE ALL ON FUNCTION ledger_ensure_partitions(integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION ledger_ensure_partitions(integer) TO billing;

-- months that already hold rows, then the default partitions and now .. now+3
SELECT ledger_create_partition(t::regclass, m)
  FROM unnest(ARRAY['journal', 'postings', 'usage_records']) t,
       (SELECT DISTINCT date_trunc('month', created_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' AS m FROM journal_old) ms
 ORDER BY t, m;
SELECT ledger_create_partition(t::regclass, NULL) FROM unnest(ARRAY['journal', 'postings', 'usage_records']) t;
SELECT ledger_ensure_partitions(3);

-- ---- 5. copy, in order; the triggers come after (the balances are already right) ----
INSERT INTO journal SELECT * FROM journal_old ORDER BY txn_id;
INSERT INTO ledger_idempotency (idempotency_key, txn_id, writer, seq, account_id, content_hash, created_at, hash)
    SELECT idempotency_key, txn_id, writer, seq, account_id, content_hash, created_at, hash
      FROM journal_old ORDER BY txn_id;
INSERT INTO postings (posting_id, txn_id, line, ledger_account_id, account_id, amount, created_at)
    SELECT p.posting_id, p.txn_id, p.line, p.ledger_account_id, p.account_id, p.amount, j.created_at
      FROM postings_old p JOIN journal_old j USING (txn_id) ORDER BY p.posting_id;
INSERT INTO usage_records (request_id, account_id, txn_id, body_hash, model, input_tokens, cached_input_tokens,
                           output_tokens, started_at, cost_nanos, price_version, hold_id, status, response, created_at)
    SELECT u.request_id, u.account_id, u.txn_id, u.body_hash, u.model, u.input_tokens, u.cached_input_tokens,
           u.output_tokens, u.started_at, u.cost_nanos, u.price_version, u.hold_id, u.status, u.response, j.created_at
      FROM usage_records_old u JOIN journal_old j USING (txn_id) ORDER BY j.txn_id;
DO $$
BEGIN
    IF (SELECT count(*) FROM postings) <> (SELECT count(*) FROM postings_old)
       OR (SELECT count(*) FROM usage_records) <> (SELECT count(*) FROM usage_records_old) THEN
        RAISE EXCEPTION '0006: postings or usage records without a journal row; nothing migrated';
    END IF;
END $$;
ALTER TABLE grants ADD FOREIGN KEY (txn_id) REFERENCES ledger_idempotency (txn_id);
DROP TABLE usage_records_old;
DROP TABLE postings_old;
DROP TABLE journal_old;

-- ---- 6. the guards of 0001/0002 on the new tables ----
-- every journal row's keys, in the same statement
CREATE FUNCTION journal_after_insert() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
BEGIN
    INSERT INTO ledger_idempotency (idempotency_key, txn_id, writer, seq, account_id, content_hash, created_at, hash)
        SELECT idempotency_key, txn_id, writer, seq, account_id, content_hash, created_at, hash FROM new_rows;
    RETURN NULL;
END $$;
CREATE TRIGGER journal_keys AFTER INSERT ON journal
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION journal_after_insert();
CREATE CONSTRAINT TRIGGER journal_has_postings AFTER INSERT ON journal
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION journal_check_postings();
CREATE TRIGGER journal_append_only BEFORE UPDATE OR DELETE ON journal
    FOR EACH ROW EXECUTE FUNCTION ledger_refuse_change();
CREATE TRIGGER journal_no_truncate BEFORE TRUNCATE ON journal
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_refuse_change();

CREATE TRIGGER postings_balance AFTER INSERT ON postings
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION postings_after_insert();
CREATE TRIGGER postings_append_only BEFORE UPDATE OR DELETE ON postings
    FOR EACH ROW EXECUTE FUNCTION ledger_refuse_change();
CREATE TRIGGER postings_no_truncate BEFORE TRUNCATE ON postings
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_refuse_change();

-- The balance check of 0001, cheaper: every statement leaves each
-- transaction it touches balanced, so before a statement a transaction's
-- postings sum to zero (or it has none), and after it they sum to what the
-- statement added: the sum is checked on the new rows alone, and the
-- postings table (partitioned) is read only for a transaction that got fewer
-- than two postings from this statement.  The journal row must exist (this
-- replaces the foreign key): its key row has the same (txn_id, created_at).
-- The deferred check at commit still counts and sums every transaction's
-- postings in full.
CREATE OR REPLACE FUNCTION postings_after_insert() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
DECLARE
    bad bigint;
    few bigint;
BEGIN
    SELECT t.txn_id INTO bad
      FROM (SELECT txn_id, created_at FROM new_rows GROUP BY 1, 2) t
      LEFT JOIN ledger_idempotency k ON k.txn_id = t.txn_id
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
    INSERT INTO ledger_balances AS b (ledger_account_id, balance)
        SELECT ledger_account_id, sum(amount) FROM new_rows GROUP BY ledger_account_id ORDER BY ledger_account_id
    ON CONFLICT (ledger_account_id) DO UPDATE SET balance = b.balance + EXCLUDED.balance;
    RETURN NULL;
END $$;
CREATE OR REPLACE FUNCTION journal_check_postings() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
DECLARE
    n bigint;
    s numeric;
BEGIN
    SELECT count(*), coalesce(sum(amount), 0) INTO n, s FROM postings
     WHERE txn_id = NEW.txn_id AND created_at = NEW.created_at;
    IF n < 2 OR s <> 0 THEN
        RAISE EXCEPTION 'ledger transaction % has % postings summing to %', NEW.txn_id, n, s
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
END $$;

-- a usage record belongs to the journal transaction keyed 'usage:' || request_id
CREATE FUNCTION usage_records_after_insert() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
DECLARE
    bad text;
BEGIN
    SELECT n.request_id INTO bad
      FROM new_rows n LEFT JOIN ledger_idempotency k ON k.idempotency_key = 'usage:' || n.request_id
     WHERE k.txn_id IS DISTINCT FROM n.txn_id OR k.created_at IS DISTINCT FROM n.created_at
     LIMIT 1;
    IF bad IS NOT NULL THEN
        RAISE EXCEPTION 'usage record % does not belong to the journal transaction keyed usage:%', bad, bad
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER usage_records_key AFTER INSERT ON usage_records
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION usage_records_after_insert();
CREATE TRIGGER usage_append_only BEFORE UPDATE OR DELETE ON usage_records
    FOR EACH ROW EXECUTE FUNCTION ledger_refuse_change();
CREATE TRIGGER usage_no_truncate BEFORE TRUNCATE ON usage_records
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_refuse_change();

CREATE TRIGGER idempotency_append_only BEFORE UPDATE OR DELETE ON ledger_idempotency
    FOR EACH ROW EXECUTE FUNCTION ledger_refuse_change();
CREATE TRIGGER idempotency_no_truncate BEFORE TRUNCATE ON ledger_idempotency
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_refuse_change();

-- ---- 7. every ledger table carries account_id: balances too ----
ALTER TABLE ledger_balances ADD COLUMN account_id bigint;
UPDATE ledger_balances b SET account_id = la.account_id
  FROM ledger_accounts la WHERE la.ledger_account_id = b.ledger_account_id AND la.account_id IS NOT NULL;
CREATE OR REPLACE FUNCTION ledger_accounts_after_insert() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
BEGIN
    INSERT INTO ledger_balances (ledger_account_id, account_id) SELECT ledger_account_id, account_id FROM new_rows;
    RETURN NULL;
END $$;

-- ---- 8. the view of 0004 (a refund is found by its key) and the grants ----
CREATE VIEW finance_usage_daily AS
SELECT (u.started_at AT TIME ZONE 'UTC')::date                   AS day,
       u.model,
       count(*)                                                   AS records,
       count(DISTINCT u.account_id)                               AS accounts,
       sum(u.input_tokens)::bigint                                AS input_tokens,
       sum(u.cached_input_tokens)::bigint                         AS cached_input_tokens,
       sum(u.output_tokens)::bigint                               AS output_tokens,
       sum(u.cost_nanos)::bigint                                  AS cost_nanos,
       coalesce(sum(x.paid), 0)::bigint                           AS paid_nanos,
       coalesce(sum(x.promo), 0)::bigint                          AS promo_nanos,
       count(r.txn_id)                                            AS refunded_records,
       coalesce(sum(u.cost_nanos) FILTER (WHERE r.txn_id IS NOT NULL), 0)::bigint AS refunded_nanos,
       (sum(u.cost_nanos) - coalesce(sum(u.cost_nanos) FILTER (WHERE r.txn_id IS NOT NULL), 0))::bigint
                                                                  AS net_cost_nanos
  FROM usage_records u
  LEFT JOIN ledger_idempotency r ON r.idempotency_key = 'refund:' || u.request_id
  LEFT JOIN LATERAL (SELECT sum(-p.amount) FILTER (WHERE la.type = 'customer_paid')  AS paid,
                            sum(-p.amount) FILTER (WHERE la.type = 'customer_promo') AS promo
                       FROM postings p JOIN ledger_accounts la USING (ledger_account_id)
                      WHERE p.txn_id = u.txn_id AND p.created_at = u.created_at) x ON true
 GROUP BY 1, 2;

GRANT SELECT, INSERT ON journal, postings, usage_records TO billing;
GRANT SELECT ON ledger_idempotency, finance_usage_daily TO billing;
