-- the same N usage records as a subledger (prototype, measurement only):
-- one journal row per commit batch, postings summed per ledger account,
-- each record one usage_records row (its charges and its chain link in
-- new columns) and one usage_keys row (request_id unique across
-- partitions).  Schema: subledger_schema.sql; see scripts/ledger_shapes.sh
BEGIN;
SELECT pg_advisory_xact_lock(hashtextextended('chain:w' || :client_id, 0));
SELECT nextval('journal_txn_id_seq') AS txn, array_agg(nextval('sl_rec')) AS ids, array_agg(1 + floor(random() * (:accounts / :clients))::int * :clients + :client_id % :clients) AS accts FROM generate_series(1, :n) \gset
INSERT INTO journal (txn_id, writer, seq, kind, idempotency_key, content_hash, account_id, actor, reason, details, created_at, prev_hash, hash) VALUES (:txn, 'w:client_id', nextval('sl_seq'), 'usage_batch', 'usage_batch:' || :txn, sha256('x'), NULL, 'gateway', 'usage', '{"records":' || :n || ',"first_record":1,"records_hash":"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef","cost_nanos":144000}', now(), sha256('x'), sha256('y'));
INSERT INTO postings (txn_id, line, ledger_account_id, account_id, amount, created_at) SELECT :txn, row_number() OVER (), 100 + a, a, -4500 * count(*), now() FROM unnest('{:accts}'::bigint[]) u(a) GROUP BY a UNION ALL SELECT :txn, 0, 1, NULL, 4500 * :n, now();
INSERT INTO usage_records (request_id, account_id, txn_id, body_hash, model, input_tokens, cached_input_tokens, output_tokens, started_at, cost_nanos, price_version, response, created_at, charged_accounts, charged_nanos, writer, seq, rec_hash) SELECT 'r' || t, a, :txn, sha256(t::text::bytea), 'deepseek-chat', 1200, 200, 300, now(), 4500, 1, '{"request_id":"bench-1-u' || t || '","account_id":' || a || ',"cost_nanos":4500,"price_version":1,"charged":[{"bucket":"paid","grant_id":null,"amount_nanos":4500}],"balance":{"paid_nanos":999999999,"promo_nanos":0,"held_nanos":0,"available_nanos":999999999},"duplicate":false}', now(), ARRAY[100 + a], ARRAY[4500::bigint], 'w:client_id', t, sha256(t::text::bytea) FROM unnest('{:ids}'::bigint[], '{:accts}'::bigint[]) u(t, a);
COMMIT;
