-- 0010_totals: balances and totals that accumulate are exact numbers
-- (contract section 4a), converted in place.
--
-- A single posting stays a bigint (int64 nanos).  A balance adds postings up
-- over the life of the books: every top-up debits the one cash_clearing
-- account and every charge credits revenue, so a bigint balance reached its
-- limit at about 9.2 billion CNY and from then on every top-up failed with
-- `bigint out of range` (and the append-only ledger could not recover).
-- Balances (the rows of customer accounts, the per-connection parts of the
-- system accounts of 0009), a campaign's granted total and every total of
-- the finance views are now
-- numeric(40,0): exact to 10^40 nanos, integral, never wrapped, never cast
-- back to bigint.  The posting trigger of 0009 is unchanged: it already adds
-- sum(amount) (numeric) to the stored balance.
--
-- The views that read those columns are dropped and created again with the
-- same columns and meaning (their types become numeric).

DROP VIEW finance_promo_liability_summary;
DROP VIEW finance_promo_liability;
DROP VIEW finance_account_balances;
DROP VIEW finance_usage_daily;
DROP VIEW ledger_balances;
DROP FUNCTION ledger_balance_mismatches();

ALTER TABLE ledger_balance_rows ALTER COLUMN balance TYPE numeric(40,0);
ALTER TABLE ledger_balance_parts ALTER COLUMN balance TYPE numeric(40,0);
-- a campaign without a budget adds up every credit it ever granted
ALTER TABLE campaigns ALTER COLUMN granted_nanos TYPE numeric(40,0);

CREATE VIEW ledger_balances AS
SELECT b.ledger_account_id,
       CASE WHEN b.account_id IS NULL
            THEN b.balance + coalesce((SELECT sum(p.balance) FROM ledger_balance_parts p
                                        WHERE p.ledger_account_id = b.ledger_account_id), 0)
            ELSE b.balance END AS balance,
       b.account_id
  FROM ledger_balance_rows b;

-- Stored balances that differ from the sum of their postings (empty when sound).
CREATE FUNCTION ledger_balance_mismatches()
RETURNS TABLE (ledger_account_id bigint, stored numeric, computed numeric)
LANGUAGE sql STABLE AS $$
    SELECT b.ledger_account_id, b.balance, coalesce(p.s, 0)
      FROM ledger_balances b
      LEFT JOIN (SELECT ledger_account_id, sum(amount) AS s FROM postings GROUP BY 1) p USING (ledger_account_id)
     WHERE b.balance <> coalesce(p.s, 0)
$$;

-- the views of 0004 (0006 for finance_usage_daily), totals numeric
CREATE VIEW finance_account_balances AS
SELECT c.account_id, c.external_id, c.status,
       coalesce(paid.balance, 0)                            AS paid_nanos,
       coalesce(promo.unexpired, 0)                         AS promo_nanos,
       coalesce(promo.expired, 0)                           AS promo_expired_nanos,
       coalesce(paid.balance, 0) + coalesce(promo.unexpired, 0) AS total_nanos
  FROM customers c
  LEFT JOIN (SELECT la.account_id, b.balance
               FROM ledger_accounts la JOIN ledger_balance_rows b USING (ledger_account_id)
              WHERE la.type = 'customer_paid') paid USING (account_id)
  LEFT JOIN (SELECT g.account_id,
                    sum(b.balance) FILTER (WHERE g.expires_at IS NULL OR g.expires_at > now()) AS unexpired,
                    sum(b.balance) FILTER (WHERE g.expires_at <= now()) AS expired
               FROM grants g JOIN ledger_balance_rows b USING (ledger_account_id)
              GROUP BY g.account_id) promo USING (account_id);

CREATE VIEW finance_usage_daily AS
SELECT (u.started_at AT TIME ZONE 'UTC')::date                   AS day,
       u.model,
       count(*)                                                   AS records,
       count(DISTINCT u.account_id)                               AS accounts,
       sum(u.input_tokens)                                        AS input_tokens,
       sum(u.cached_input_tokens)                                 AS cached_input_tokens,
       sum(u.output_tokens)                                       AS output_tokens,
       sum(u.cost_nanos)                                          AS cost_nanos,
       coalesce(sum(x.paid), 0)                                   AS paid_nanos,
       coalesce(sum(x.promo), 0)                                  AS promo_nanos,
       count(r.txn_id)                                            AS refunded_records,
       coalesce(sum(u.cost_nanos) FILTER (WHERE r.txn_id IS NOT NULL), 0) AS refunded_nanos,
       sum(u.cost_nanos) - coalesce(sum(u.cost_nanos) FILTER (WHERE r.txn_id IS NOT NULL), 0)
                                                                  AS net_cost_nanos
  FROM usage_records u
  LEFT JOIN ledger_idempotency r ON r.idempotency_key = 'refund:' || u.request_id
  LEFT JOIN LATERAL (SELECT sum(-p.amount) FILTER (WHERE la.type = 'customer_paid')  AS paid,
                            sum(-p.amount) FILTER (WHERE la.type = 'customer_promo') AS promo
                       FROM postings p JOIN ledger_accounts la USING (ledger_account_id)
                      WHERE p.txn_id = u.txn_id AND p.created_at = u.created_at) x ON true
 GROUP BY 1, 2;

CREATE VIEW finance_promo_liability AS
SELECT g.grant_id, g.account_id, g.kind, g.campaign, g.amount_nanos,
       b.balance AS remaining_nanos, g.expires_at, g.created_at
  FROM grants g JOIN ledger_balance_rows b USING (ledger_account_id)
 WHERE b.balance > 0 AND (g.expires_at IS NULL OR g.expires_at > now());

CREATE VIEW finance_promo_liability_summary AS
SELECT coalesce(campaign, '') AS campaign, kind, count(*) AS grants,
       sum(remaining_nanos) AS remaining_nanos, min(expires_at) AS next_expiry
  FROM finance_promo_liability
 GROUP BY 1, 2;

REVOKE ALL ON ledger_balances, finance_account_balances, finance_usage_daily, finance_promo_liability,
              finance_promo_liability_summary FROM PUBLIC;
GRANT SELECT ON ledger_balances, finance_account_balances, finance_usage_daily, finance_promo_liability,
                finance_promo_liability_summary TO billing;
GRANT EXECUTE ON FUNCTION ledger_balance_mismatches() TO billing;
