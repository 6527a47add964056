-- 0021_promo_require_identity: a campaign may require at least one
-- identity string for its signup credit and its referral rewards.
--
-- Why: the identity rule (CONTRACT.md §4: signup credit at most once per
-- identity string, referral rewards at most once per invitee identity
-- string) limits nothing when a signup sends no identity string, and
-- identity is optional in POST /v1/accounts: a gateway that leaves it out
-- lets throw-away accounts farm the signup credit without limit.  With
-- require_identity on (`billing-admin promo set --require-identity on`),
-- such a signup still creates the account, without credit, and its answer
-- says why; a referral whose invitee or inviter has no identity string is
-- settled without reward, saying why.  Off by default: the contract's
-- behaviour.  A campaign created by `promo set --campaign` starts from the
-- previous one's setting, as for the other settings.
ALTER TABLE campaigns ADD COLUMN require_identity boolean NOT NULL DEFAULT false;
GRANT UPDATE (require_identity) ON campaigns TO billing;

-- audited like every other setting (0004): who, when, why, before and after
DROP TRIGGER campaigns_history_update ON campaigns;
CREATE TRIGGER campaigns_history_update
    AFTER UPDATE OF signup_nanos, referral_nanos, expires_days, max_referrals, budget_nanos, active, starts_at, ends_at,
                    require_identity
    ON campaigns FOR EACH ROW EXECUTE FUNCTION campaigns_history();
ALTER TABLE campaigns ENABLE ALWAYS TRIGGER campaigns_history_update;  -- as every trigger (0014)
