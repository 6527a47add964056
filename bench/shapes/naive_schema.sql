-- scratch only (scripts/ledger_shapes.sh): the tables of `make bench`'s
-- one-transaction-per-record baseline (as scripts/bench.sh makes them)
CREATE SCHEMA bench_gw;
CREATE TABLE bench_gw.balances (account_id bigint PRIMARY KEY, balance_nanos bigint NOT NULL);
INSERT INTO bench_gw.balances SELECT g, 1000000000000000 FROM generate_series(1, 1000) g;
CREATE TABLE bench_gw.usage_log (
    request_id text PRIMARY KEY, account_id bigint NOT NULL, model text NOT NULL,
    input_tokens bigint NOT NULL, cached_input_tokens bigint NOT NULL, output_tokens bigint NOT NULL,
    cost_nanos bigint NOT NULL, created_at timestamptz NOT NULL DEFAULT now());
ANALYZE;
