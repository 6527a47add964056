-- scratch only (scripts/ledger_shapes.sh): the subledger shape for measurement,
-- NOT a migration.
CREATE SEQUENCE sl_rec;
CREATE TABLE usage_keys (request_id text PRIMARY KEY, txn_id bigint NOT NULL, created_at timestamptz NOT NULL);
ALTER TABLE usage_records ADD COLUMN charged_accounts bigint[], ADD COLUMN charged_nanos bigint[],
    ADD COLUMN writer text, ADD COLUMN seq bigint, ADD COLUMN rec_hash bytea;
CREATE OR REPLACE FUNCTION usage_records_after_insert() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
DECLARE
    bad bigint;
BEGIN
    SELECT t.txn_id INTO bad
      FROM (SELECT txn_id, created_at FROM new_rows GROUP BY 1, 2) t
      LEFT JOIN LATERAL (SELECT k.created_at FROM ledger_idempotency k WHERE k.txn_id = t.txn_id LIMIT 1) k ON true
     WHERE k.created_at IS DISTINCT FROM t.created_at
     LIMIT 1;
    IF bad IS NOT NULL THEN
        RAISE EXCEPTION 'usage records of % do not match a journal row', bad USING ERRCODE = 'foreign_key_violation';
    END IF;
    INSERT INTO usage_keys (request_id, txn_id, created_at) SELECT request_id, txn_id, created_at FROM new_rows;
    RETURN NULL;
END $$;
ALTER TABLE usage_keys OWNER TO billing_owner;
