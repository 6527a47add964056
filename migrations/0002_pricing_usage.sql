-- 0002_pricing_usage: versioned prices, usage records (the permanent
-- idempotency store of /v1/usage), limits.

-- Price versions: a new row per change; the row in effect for a model at
-- instant t is the one with the greatest effective_from <= t (ties: the
-- greatest price_version).
CREATE TABLE prices (
    price_version      bigserial PRIMARY KEY,
    model              text NOT NULL CHECK (length(model) BETWEEN 1 AND 200),
    input_nanos        bigint NOT NULL CHECK (input_nanos >= 0),        -- per 1M input tokens
    cached_input_nanos bigint NOT NULL CHECK (cached_input_nanos >= 0), -- per 1M cached input tokens
    output_nanos       bigint NOT NULL CHECK (output_nanos >= 0),       -- per 1M output tokens
    effective_from     timestamptz NOT NULL,
    paid_only          boolean NOT NULL DEFAULT false,
    windows            text NOT NULL DEFAULT '',   -- "HH:MM-HH:MM=BP,..." UTC, [start, end)
    actor              text NOT NULL,
    reason             text NOT NULL DEFAULT '',
    created_at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX prices_model ON prices (model, effective_from);
CREATE TRIGGER prices_append_only BEFORE UPDATE OR DELETE ON prices
    FOR EACH ROW EXECUTE FUNCTION ledger_refuse_change();
CREATE TRIGGER prices_no_truncate BEFORE TRUNCATE ON prices
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_refuse_change();

CREATE TABLE usage_records (
    request_id          text PRIMARY KEY,
    account_id          bigint NOT NULL REFERENCES customers,
    txn_id              bigint NOT NULL REFERENCES journal,
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
    created_at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX usage_records_account ON usage_records (account_id, started_at);
CREATE TRIGGER usage_append_only BEFORE UPDATE OR DELETE ON usage_records
    FOR EACH ROW EXECUTE FUNCTION ledger_refuse_change();
CREATE TRIGGER usage_no_truncate BEFORE TRUNCATE ON usage_records
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_refuse_change();

-- Limits: a new row per change; the newest row for a scope wins.
CREATE TABLE limits (
    limit_id    bigserial PRIMARY KEY,
    tier        text,
    account_id  bigint REFERENCES customers,
    model       text NOT NULL DEFAULT '',     -- '' = all models
    rpm         bigint, tpm bigint, rpd bigint, tpd bigint, concurrency bigint,
    actor       text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    CHECK ((tier IS NULL) <> (account_id IS NULL))
);
CREATE TRIGGER limits_append_only BEFORE UPDATE OR DELETE ON limits
    FOR EACH ROW EXECUTE FUNCTION ledger_refuse_change();

-- Changes billingd must see within a second are announced here too.
CREATE FUNCTION notify_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('billing_change', TG_TABLE_NAME);
    RETURN NULL;
END $$;
CREATE TRIGGER prices_notify AFTER INSERT ON prices FOR EACH STATEMENT EXECUTE FUNCTION notify_change();
CREATE TRIGGER limits_notify AFTER INSERT ON limits FOR EACH STATEMENT EXECUTE FUNCTION notify_change();

GRANT SELECT, INSERT ON prices, usage_records, limits TO billing;
GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO billing;
