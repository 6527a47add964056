-- the ledger rows of N usage records as the usage writer writes them today
-- (migrations up to 0009): per record one journal row (and its key row, by
-- trigger), two postings (customer paid, revenue), one usage record.  Hashes
-- and ids are stand-ins: the database does not check them on insert.
-- pgbench -D n=RECORDS_PER_COMMIT -D accounts=N; see scripts/ledger_shapes.sh
BEGIN;
SELECT pg_advisory_xact_lock(hashtextextended('chain:w' || :client_id, 0));
SELECT array_agg(nextval('journal_txn_id_seq')) AS ids, array_agg(1 + floor(random() * (:accounts / :clients))::int * :clients + :client_id % :clients) AS accts FROM generate_series(1, :n) \gset
INSERT INTO journal (txn_id, writer, seq, kind, idempotency_key, content_hash, account_id, actor, reason, details, created_at, prev_hash, hash) SELECT t, 'w:client_id', nextval('sl_seq'), 'usage', 'usage:r' || t, sha256(t::text::bytea), a, 'gateway', 'usage', '{"request_id":"bench-1-u' || t || '","model":"deepseek-chat","input_tokens":1200,"cached_input_tokens":200,"output_tokens":300,"started_at":"2026-12-06T16:00:00.123456Z","price_version":1,"cost_nanos":4500}', now(), sha256(t::text::bytea), sha256(t::text::bytea) FROM unnest('{:ids}'::bigint[], '{:accts}'::bigint[]) u(t, a);
INSERT INTO postings (txn_id, line, ledger_account_id, account_id, amount, created_at) SELECT t, 1, 100 + a, a, -4500, now() FROM unnest('{:ids}'::bigint[], '{:accts}'::bigint[]) u(t, a) UNION ALL SELECT t, 2, 1, NULL, 4500, now() FROM unnest('{:ids}'::bigint[]) u(t);
INSERT INTO usage_records (request_id, account_id, txn_id, body_hash, model, input_tokens, cached_input_tokens, output_tokens, started_at, cost_nanos, price_version, response, created_at) SELECT 'r' || t, a, t, sha256(t::text::bytea), 'deepseek-chat', 1200, 200, 300, now(), 4500, 1, '{"request_id":"bench-1-u' || t || '","account_id":' || a || ',"cost_nanos":4500,"price_version":1,"charged":[{"bucket":"paid","grant_id":null,"amount_nanos":4500}],"balance":{"paid_nanos":999999999,"promo_nanos":0,"held_nanos":0,"available_nanos":999999999},"duplicate":false}', now() FROM unnest('{:ids}'::bigint[], '{:accts}'::bigint[]) u(t, a);
COMMIT;
