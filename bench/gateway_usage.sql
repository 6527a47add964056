-- pgbench script: the "one transaction per usage record" baseline of
-- `make bench` (scripts/bench.sh), as common LLM gateways meter calls: per
-- call, decrement the account's balance row and append a log row, in one
-- transaction committed with synchronous_commit = on.  Accounts :lo..:hi
-- (pgbench -D), the same accounts and token counts as the billingd scenario.
\set aid random(:lo, :hi)
\set rid random(1, 9000000000000000000)
BEGIN;
UPDATE bench_gw.balances SET balance_nanos = balance_nanos - 4500000 WHERE account_id = :aid;
INSERT INTO bench_gw.usage_log (request_id, account_id, model, input_tokens, cached_input_tokens, output_tokens, cost_nanos)
     VALUES ('pgb-' || :client_id || '-' || :rid, :aid, 'deepseek-chat', 1200, 200, 300, 4500000);
END;
