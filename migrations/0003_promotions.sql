-- 0003_promotions: campaigns (signup and referral credit with a budget) and referrals.

CREATE TABLE campaigns (
    name            text PRIMARY KEY CHECK (length(name) BETWEEN 1 AND 100),
    signup_nanos    bigint NOT NULL DEFAULT 14000000000 CHECK (signup_nanos >= 0),
    referral_nanos  bigint NOT NULL DEFAULT 14000000000 CHECK (referral_nanos >= 0),
    expires_days    integer NOT NULL DEFAULT 90 CHECK (expires_days > 0),
    max_referrals   integer NOT NULL DEFAULT 50 CHECK (max_referrals >= 0),
    budget_nanos    bigint CHECK (budget_nanos >= 0),   -- NULL: no budget
    granted_nanos   bigint NOT NULL DEFAULT 0,         -- promotional credit granted so far
    active          boolean NOT NULL DEFAULT false,
    starts_at       timestamptz,
    ends_at         timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    CHECK (budget_nanos IS NULL OR granted_nanos <= budget_nanos)
);
CREATE UNIQUE INDEX campaigns_one_active ON campaigns (active) WHERE active;
INSERT INTO campaigns (name, active) VALUES ('default', true);

-- One row per invitee, ever: the reward is granted once.
CREATE TABLE referrals (
    invitee_id   bigint PRIMARY KEY REFERENCES customers,
    inviter_id   bigint NOT NULL REFERENCES customers,
    campaign     text NOT NULL,
    outcome      text NOT NULL,        -- rewarded, or why not
    grant_id     bigint,
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX referrals_inviter ON referrals (inviter_id) WHERE outcome = 'rewarded';

GRANT SELECT ON campaigns TO billing;
GRANT UPDATE (granted_nanos) ON campaigns TO billing;
GRANT SELECT, INSERT ON referrals TO billing;
