-- 0001_ledger: customers, keys, the double-entry ledger and its guards.
--
-- Sign convention: a posting's amount > 0 credits its ledger account, < 0
-- debits it.  Customer balances (paid, promotional buckets) and revenue are
-- therefore positive; cash clearing and promotional expense negative.  The
-- postings of every transaction sum to zero.
--
-- Roles: the owner (who runs migrations) owns everything; the service role
-- `billing` (billingd and the CLIs) may SELECT and INSERT the ledger tables,
-- never UPDATE, DELETE or TRUNCATE them.  Triggers refuse UPDATE, DELETE and
-- TRUNCATE of ledger tables for every role.

CREATE TABLE customers (
    account_id     bigserial PRIMARY KEY,
    external_id    text NOT NULL UNIQUE CHECK (length(external_id) BETWEEN 1 AND 200),
    status         text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'frozen')),
    verified       boolean NOT NULL DEFAULT false,
    tier           text NOT NULL DEFAULT 'default',
    referral_code  text NOT NULL UNIQUE,
    referred_by    bigint REFERENCES customers,
    identity       text[] NOT NULL DEFAULT '{}',
    request_hash   bytea,          -- BLAKE2b of the signup body: a replay must match
    created_at     timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE api_keys (
    key_id      bigserial PRIMARY KEY,
    account_id  bigint NOT NULL REFERENCES customers,
    name        text NOT NULL DEFAULT '',
    key_hash    bytea NOT NULL UNIQUE,   -- keyed BLAKE2b-256 (server pepper); the key itself is never stored
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);
CREATE INDEX api_keys_account ON api_keys (account_id);

-- Ledger accounts: per customer one paid balance and one bucket per grant;
-- system accounts with fixed ids 1..5.
CREATE TABLE ledger_accounts (
    ledger_account_id bigserial PRIMARY KEY,
    type        text NOT NULL CHECK (type IN ('customer_paid', 'customer_promo', 'revenue',
                     'promo_expense', 'breakage', 'cash_clearing', 'adjustments')),
    account_id  bigint REFERENCES customers,
    created_at  timestamptz NOT NULL DEFAULT now(),
    CHECK ((type IN ('customer_paid', 'customer_promo')) = (account_id IS NOT NULL))
);
CREATE UNIQUE INDEX ledger_accounts_paid ON ledger_accounts (account_id) WHERE type = 'customer_paid';
CREATE INDEX ledger_accounts_customer ON ledger_accounts (account_id);
INSERT INTO ledger_accounts (ledger_account_id, type) VALUES
    (1, 'revenue'), (2, 'promo_expense'), (3, 'breakage'), (4, 'cash_clearing'), (5, 'adjustments');
SELECT setval('ledger_accounts_ledger_account_id_seq', 100);

-- Promotional credit buckets.  A grant is its own ledger account.
CREATE TABLE grants (
    grant_id          bigserial PRIMARY KEY,
    account_id        bigint NOT NULL REFERENCES customers,
    ledger_account_id bigint NOT NULL UNIQUE REFERENCES ledger_accounts,
    kind              text NOT NULL,          -- signup, referral, admin
    amount_nanos      bigint NOT NULL CHECK (amount_nanos > 0),
    priority          integer NOT NULL DEFAULT 100,
    expires_at        timestamptz,
    campaign          text,
    txn_id            bigint NOT NULL,       -- the journal transaction that funded it
    created_at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX grants_account ON grants (account_id);
CREATE INDEX grants_expiry ON grants (expires_at) WHERE expires_at IS NOT NULL;

-- Journal: one row per transaction, linked into one hash chain per writer.
CREATE TABLE journal (
    txn_id          bigserial PRIMARY KEY,
    writer          text NOT NULL,
    seq             bigint NOT NULL CHECK (seq >= 1),
    kind            text NOT NULL,
    idempotency_key text NOT NULL UNIQUE,
    content_hash    bytea NOT NULL,     -- of what the caller asked for: same key, other content = conflict
    account_id      bigint REFERENCES customers,
    actor           text NOT NULL,
    reason          text NOT NULL,
    details         text NOT NULL,      -- canonical JSON text, hashed byte for byte
    created_at      timestamptz NOT NULL,
    prev_hash       bytea NOT NULL,
    hash            bytea NOT NULL,
    UNIQUE (writer, seq)
);
ALTER TABLE grants ADD FOREIGN KEY (txn_id) REFERENCES journal;
CREATE INDEX journal_created ON journal (created_at);
CREATE INDEX journal_account ON journal (account_id, created_at);

CREATE TABLE postings (
    posting_id        bigserial PRIMARY KEY,
    txn_id            bigint NOT NULL REFERENCES journal,
    line              smallint NOT NULL,
    ledger_account_id bigint NOT NULL REFERENCES ledger_accounts,
    account_id        bigint,      -- the customer of the ledger account, if any (queries, sharding)
    amount            bigint NOT NULL,
    UNIQUE (txn_id, line)
);
CREATE INDEX postings_ledger_account ON postings (ledger_account_id);

-- Balances, maintained by the posting trigger in the same transaction.
-- Nobody but that trigger writes here.
CREATE TABLE ledger_balances (
    ledger_account_id bigint PRIMARY KEY REFERENCES ledger_accounts,
    balance           bigint NOT NULL DEFAULT 0
);
INSERT INTO ledger_balances (ledger_account_id) SELECT ledger_account_id FROM ledger_accounts;

CREATE FUNCTION ledger_accounts_after_insert() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
BEGIN
    INSERT INTO ledger_balances (ledger_account_id) SELECT ledger_account_id FROM new_rows;
    RETURN NULL;
END $$;
CREATE TRIGGER ledger_accounts_balance AFTER INSERT ON ledger_accounts
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION ledger_accounts_after_insert();

-- Every statement that inserts postings must leave each transaction it
-- touched balanced (sum zero, two or more postings); then the balances move.
CREATE FUNCTION postings_after_insert() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
DECLARE
    bad bigint;
BEGIN
    SELECT t.txn_id INTO bad
      FROM (SELECT DISTINCT txn_id FROM new_rows) t,
           LATERAL (SELECT count(*) AS n, sum(p.amount) AS s FROM postings p WHERE p.txn_id = t.txn_id) x
     WHERE x.s <> 0 OR x.n < 2
     LIMIT 1;
    IF bad IS NOT NULL THEN
        RAISE EXCEPTION 'ledger transaction % does not balance', bad USING ERRCODE = 'check_violation';
    END IF;
    INSERT INTO ledger_balances AS b (ledger_account_id, balance)
        SELECT ledger_account_id, sum(amount) FROM new_rows GROUP BY ledger_account_id ORDER BY ledger_account_id
    ON CONFLICT (ledger_account_id) DO UPDATE SET balance = b.balance + EXCLUDED.balance;
    RETURN NULL;
END $$;
CREATE TRIGGER postings_balance AFTER INSERT ON postings
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION postings_after_insert();

-- A journal row without postings is refused at commit.
CREATE FUNCTION journal_check_postings() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
DECLARE
    n bigint;
    s numeric;
BEGIN
    SELECT count(*), coalesce(sum(amount), 0) INTO n, s FROM postings WHERE txn_id = NEW.txn_id;
    IF n < 2 OR s <> 0 THEN
        RAISE EXCEPTION 'ledger transaction % has % postings summing to %', NEW.txn_id, n, s
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
END $$;
CREATE CONSTRAINT TRIGGER journal_has_postings AFTER INSERT ON journal
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION journal_check_postings();

-- Append-only, for every role.
CREATE FUNCTION ledger_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% on % refused: the ledger is append-only', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END $$;
CREATE TRIGGER journal_append_only BEFORE UPDATE OR DELETE ON journal
    FOR EACH ROW EXECUTE FUNCTION ledger_refuse_change();
CREATE TRIGGER journal_no_truncate BEFORE TRUNCATE ON journal
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_refuse_change();
CREATE TRIGGER postings_append_only BEFORE UPDATE OR DELETE ON postings
    FOR EACH ROW EXECUTE FUNCTION ledger_refuse_change();
CREATE TRIGGER postings_no_truncate BEFORE TRUNCATE ON postings
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_refuse_change();
CREATE TRIGGER ledger_accounts_append_only BEFORE UPDATE OR DELETE ON ledger_accounts
    FOR EACH ROW EXECUTE FUNCTION ledger_refuse_change();
CREATE TRIGGER ledger_accounts_no_truncate BEFORE TRUNCATE ON ledger_accounts
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_refuse_change();
CREATE TRIGGER grants_append_only BEFORE UPDATE OR DELETE ON grants
    FOR EACH ROW EXECUTE FUNCTION ledger_refuse_change();
CREATE TRIGGER grants_no_truncate BEFORE TRUNCATE ON grants
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_refuse_change();
CREATE TRIGGER balances_no_truncate BEFORE TRUNCATE ON ledger_balances
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_refuse_change();

-- Stored balances that differ from the sum of their postings (empty when sound).
CREATE FUNCTION ledger_balance_mismatches()
RETURNS TABLE (ledger_account_id bigint, stored bigint, computed numeric)
LANGUAGE sql STABLE AS $$
    SELECT b.ledger_account_id, b.balance, coalesce(p.s, 0)
      FROM ledger_balances b
      LEFT JOIN (SELECT ledger_account_id, sum(amount) AS s FROM postings GROUP BY 1) p USING (ledger_account_id)
     WHERE b.balance <> coalesce(p.s, 0)
$$;

-- Admin changes that are not money movements (freeze, keys, prices, limits, promotions).
CREATE TABLE audit_log (
    audit_id    bigserial PRIMARY KEY,
    at          timestamptz NOT NULL DEFAULT now(),
    actor       text NOT NULL,
    action      text NOT NULL,
    target      text NOT NULL DEFAULT '',
    reason      text NOT NULL DEFAULT '',
    details     jsonb NOT NULL DEFAULT '{}'
);
CREATE TRIGGER audit_append_only BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION ledger_refuse_change();
CREATE TRIGGER audit_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_refuse_change();

REVOKE ALL ON ALL TABLES IN SCHEMA public FROM PUBLIC;
GRANT SELECT, INSERT ON customers, api_keys, ledger_accounts, grants, journal, postings, audit_log TO billing;
GRANT UPDATE (status, verified) ON customers TO billing;
GRANT UPDATE (revoked_at) ON api_keys TO billing;
GRANT SELECT ON ledger_balances TO billing;
GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO billing;
GRANT EXECUTE ON FUNCTION ledger_balance_mismatches() TO billing;
