-- scratch only (scripts/ledger_shapes.sh): customers 1..1000 with paid
-- accounts 101..1100, one price; written as the superuser.
INSERT INTO customers (account_id, external_id, referral_code) SELECT g, 'c' || g, 'r' || g FROM generate_series(1, 1000) g;
INSERT INTO ledger_accounts (ledger_account_id, type, account_id) SELECT 100 + g, 'customer_paid', g FROM generate_series(1, 1000) g;
INSERT INTO prices (model, input_nanos, cached_input_nanos, output_nanos, effective_from, actor) VALUES ('m', 1, 1, 1, now() - interval '1 day', 'x');
CREATE SEQUENCE sl_seq;
