-- 0004_finance: views for finance's ad-hoc questions, and campaigns managed
-- by `billing-admin promo set` with their history in audit_log.
--
-- Amounts are bigint nanos (10^-9 CNY); customer balances are positive.

-- Balances per account: paid (negative = arrears), promotional credit that
-- can still be spent, promotional credit that has expired but whose breakage
-- entry is not written yet (never spendable), and paid + spendable promo.
CREATE VIEW finance_account_balances AS
SELECT c.account_id, c.external_id, c.status,
       coalesce(paid.balance, 0)::bigint                 AS paid_nanos,
       coalesce(promo.unexpired, 0)::bigint              AS promo_nanos,
       coalesce(promo.expired, 0)::bigint                AS promo_expired_nanos,
       (coalesce(paid.balance, 0) + coalesce(promo.unexpired, 0))::bigint AS total_nanos
  FROM customers c
  LEFT JOIN (SELECT la.account_id, b.balance
               FROM ledger_accounts la JOIN ledger_balances b USING (ledger_account_id)
              WHERE la.type = 'customer_paid') paid USING (account_id)
  LEFT JOIN (SELECT g.account_id,
                    sum(b.balance) FILTER (WHERE g.expires_at IS NULL OR g.expires_at > now()) AS unexpired,
                    sum(b.balance) FILTER (WHERE g.expires_at <= now()) AS expired
               FROM grants g JOIN ledger_balances b USING (ledger_account_id)
              GROUP BY g.account_id) promo USING (account_id);

-- Usage per model per UTC day of started_at: records, accounts, tokens, cost
-- (and which part promotional credit and paid balance bore), refunds.
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
  LEFT JOIN journal r ON r.idempotency_key = 'refund:' || u.request_id
  LEFT JOIN LATERAL (SELECT sum(-p.amount) FILTER (WHERE la.type = 'customer_paid')  AS paid,
                            sum(-p.amount) FILTER (WHERE la.type = 'customer_promo') AS promo
                       FROM postings p JOIN ledger_accounts la USING (ledger_account_id)
                      WHERE p.txn_id = u.txn_id) x ON true
 GROUP BY 1, 2;

-- Outstanding promotional liability: every grant with credit left that can
-- still be spent (unexpired), one row each ...
CREATE VIEW finance_promo_liability AS
SELECT g.grant_id, g.account_id, g.kind, g.campaign, g.amount_nanos,
       b.balance AS remaining_nanos, g.expires_at, g.created_at
  FROM grants g JOIN ledger_balances b USING (ledger_account_id)
 WHERE b.balance > 0 AND (g.expires_at IS NULL OR g.expires_at > now());

-- ... and summed per campaign and grant kind.
CREATE VIEW finance_promo_liability_summary AS
SELECT coalesce(campaign, '') AS campaign, kind, count(*) AS grants,
       sum(remaining_nanos)::bigint AS remaining_nanos, min(expires_at) AS next_expiry
  FROM finance_promo_liability
 GROUP BY 1, 2;

GRANT SELECT ON finance_account_balances, finance_usage_daily, finance_promo_liability,
                finance_promo_liability_summary TO billing;

-- Campaigns: the service role may create them and change their settings
-- (granted_nanos moves only through the budget UPDATE of 0003; no DELETE).
-- Every such change is written to audit_log by the trigger below, with the
-- row before and after; the actor and reason come from the transaction's
-- settings billing.actor / billing.reason (SET LOCAL by the CLI), else the
-- session user.
GRANT INSERT ON campaigns TO billing;
GRANT UPDATE (signup_nanos, referral_nanos, expires_days, max_referrals, budget_nanos, active, starts_at, ends_at)
    ON campaigns TO billing;

CREATE FUNCTION campaigns_history() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
BEGIN
    INSERT INTO audit_log (actor, action, target, reason, details)
    VALUES (coalesce(nullif(current_setting('billing.actor', true), ''), session_user::text),
            CASE TG_OP WHEN 'INSERT' THEN 'campaign.create' ELSE 'campaign.change' END,
            NEW.name,
            coalesce(current_setting('billing.reason', true), ''),
            jsonb_build_object('before', CASE WHEN TG_OP = 'UPDATE' THEN to_jsonb(OLD) END,
                               'after', to_jsonb(NEW)));
    PERFORM pg_notify('billing_change', 'campaigns');
    RETURN NULL;
END $$;
CREATE TRIGGER campaigns_history_insert AFTER INSERT ON campaigns
    FOR EACH ROW EXECUTE FUNCTION campaigns_history();
CREATE TRIGGER campaigns_history_update
    AFTER UPDATE OF signup_nanos, referral_nanos, expires_days, max_referrals, budget_nanos, active, starts_at, ends_at
    ON campaigns FOR EACH ROW EXECUTE FUNCTION campaigns_history();
