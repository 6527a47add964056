-- 0022_limits_positive: a stored limit is a positive number or NULL (no
-- limit); a 0 left from before `limits set` refused it becomes NULL.
--
-- Why: until 0ee4bc3 `billing-admin limits set --concurrency 0` (and
-- --rpm/--tpm/--rpd/--tpd 0) wrote a 0, and nothing in the schema refused
-- one.  Such a row still meant three things: billingd read it as no limit
-- (the authorize script's 0 = none), and an account's 0 even lifted its
-- tier's limit; `limits show` and GET /v1/accounts/{id} showed 0; and an
-- operator who typed 0 may have meant "none allowed".  Limits rows are
-- history (append-only, 0002), so each scope (tier or account, and model)
-- whose newest row holds a 0 gets a new row, by this migration, with those
-- values NULL and the others kept: NULL is what `limits set ... none`
-- writes and what billingd, `limits show` and the account view all read as
-- no limit of that scope; an account's NULL falls back to its tier's limit,
-- so the lifting of a tier limit by an account's 0 (the bug 0ee4bc3 named)
-- ends.  Each such row is in audit_log (action limits.set, as the CLI
-- writes, actor "migration 0022_limits_positive").  The CHECK refuses a 0
-- in every new row, for every role; NOT VALID because the rows it replaces
-- stay as they were (docs/cli.md, "limits set").
WITH cur AS (
    SELECT DISTINCT ON (tier, account_id, model) *
      FROM limits
     ORDER BY tier, account_id, model, limit_id DESC
), ins AS (
    INSERT INTO limits (tier, account_id, model, rpm, tpm, rpd, tpd, concurrency, actor)
    SELECT tier, account_id, model, nullif(rpm, 0), nullif(tpm, 0), nullif(rpd, 0), nullif(tpd, 0),
           nullif(concurrency, 0), 'migration 0022_limits_positive'
      FROM cur
     WHERE 0 IN (rpm, tpm, rpd, tpd, concurrency)
     ORDER BY limit_id
    RETURNING *
)
INSERT INTO audit_log (actor, action, target, reason, details)
SELECT actor, 'limits.set', coalesce(account_id::text, tier),
       'a limit of 0 (read by billingd as no limit) is stored as none (NULL)', to_jsonb(ins) - 'created_at'
  FROM ins
 ORDER BY limit_id;

ALTER TABLE limits ADD CONSTRAINT limits_positive
    CHECK (rpm > 0 AND tpm > 0 AND rpd > 0 AND tpd > 0 AND concurrency > 0) NOT VALID;
