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
