-- 0007_harden: the identity rule against promotion farming (CONTRACT.md §4).
--
-- One row per (kind, identity string) that ever earned promotional credit:
-- kind 'signup': the signup credit went to account_id, which had that
-- identity; kind 'referral': a referral reward was paid for invitee
-- account_id, which had that identity.  The primary key is the rule: a
-- second signup (or a second invitee) holding the same string cannot claim
-- it again, however many run at once (INSERT ... ON CONFLICT DO NOTHING
-- waits for a concurrent claimer and then skips).
CREATE TABLE promo_identity_claims (
    kind        text NOT NULL CHECK (kind IN ('signup', 'referral')),
    identity    text NOT NULL,
    account_id  bigint NOT NULL REFERENCES customers,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (kind, identity)
);
CREATE INDEX promo_identity_claims_account ON promo_identity_claims (account_id);

-- What was granted before this migration counts: the oldest account wins.
INSERT INTO promo_identity_claims (kind, identity, account_id)
SELECT DISTINCT ON (i) 'signup', i, c.account_id
  FROM customers c CROSS JOIN LATERAL unnest(c.identity) AS i
 WHERE EXISTS (SELECT 1 FROM grants g WHERE g.account_id = c.account_id AND g.kind = 'signup')
 ORDER BY i, c.account_id
ON CONFLICT DO NOTHING;
INSERT INTO promo_identity_claims (kind, identity, account_id)
SELECT DISTINCT ON (i) 'referral', i, c.account_id
  FROM referrals r JOIN customers c ON c.account_id = r.invitee_id CROSS JOIN LATERAL unnest(c.identity) AS i
 WHERE r.outcome = 'rewarded'
 ORDER BY i, c.account_id
ON CONFLICT DO NOTHING;

-- Append-only for the service: a claim whose credit does not come after all
-- (another identity string already claimed, the budget ran out) is undone
-- by rolling back to a savepoint inside the claiming transaction.
GRANT SELECT, INSERT ON promo_identity_claims TO billing;

-- Changes the service role can make in place get an audit row written by
-- the database itself, whoever makes them (the CLIs write their own
-- application rows too, with the operator's reason): an account's status
-- (freeze, unfreeze) and an API key's revocation.  Campaign settings,
-- budget included, already have theirs (campaigns_history, 0004).  The
-- actor and reason come from the transaction's settings billing.actor /
-- billing.reason when set (SET LOCAL by the CLIs), else the session user.
CREATE FUNCTION audit_row_change() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
DECLARE
    col text := TG_ARGV[0];
    before jsonb := to_jsonb(OLD) -> col;
    after jsonb := to_jsonb(NEW) -> col;
BEGIN
    IF before IS NOT DISTINCT FROM after THEN
        RETURN NULL;
    END IF;
    INSERT INTO audit_log (actor, action, target, reason, details)
    VALUES (coalesce(nullif(current_setting('billing.actor', true), ''), session_user::text),
            TG_ARGV[1],
            CASE TG_TABLE_NAME WHEN 'api_keys' THEN (to_jsonb(NEW) ->> 'key_id') ELSE (to_jsonb(NEW) ->> 'account_id') END,
            coalesce(current_setting('billing.reason', true), ''),
            jsonb_build_object('column', col, 'before', before, 'after', after,
                               'account_id', to_jsonb(NEW) -> 'account_id', 'db_user', session_user::text,
                               'trigger', TG_NAME));
    RETURN NULL;
END $$;
CREATE TRIGGER customers_status_audit AFTER UPDATE OF status ON customers
    FOR EACH ROW EXECUTE FUNCTION audit_row_change('status', 'db.customer.status');
CREATE TRIGGER api_keys_revoked_audit AFTER UPDATE OF revoked_at ON api_keys
    FOR EACH ROW EXECUTE FUNCTION audit_row_change('revoked_at', 'db.api_key.revoked_at');
REVOKE ALL ON FUNCTION audit_row_change() FROM PUBLIC;
