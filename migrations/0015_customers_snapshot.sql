-- 0015_customers_snapshot: a customer the books name cannot go, whatever
-- the isolation level of the transaction that deletes or renumbers it.
--
-- Why: customers_keep_referenced (0011) looks for a journal row or usage
-- record naming the customer with the deleting transaction's snapshot.
-- Under READ COMMITTED that is right: the trigger runs after the DELETE has
-- locked the row, so it waited for every writer that had locked it FOR KEY
-- SHARE (the statement triggers of journal and usage_records do) and its
-- query's fresh snapshot sees what they committed; a writer coming later
-- waits for the DELETE and then finds no customer.  Under REPEATABLE READ
-- or SERIALIZABLE the snapshot is the transaction's first: a journal row
-- committed after it is not seen, the lock it left is no conflict, and the
-- customer went while the books named it (the foreign key of 0006 checked
-- against the newest snapshot and refused; test_guard_bypass.py).  There
-- is no newer snapshot to read from PL/pgSQL, so such a DELETE or
-- renumbering is refused outside READ COMMITTED (SQLSTATE 55000, object not
-- in prerequisite state): deleting a customer is a rare hand-made change,
-- and it works as before under READ COMMITTED.
CREATE OR REPLACE FUNCTION customers_keep_referenced() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND NEW.account_id = OLD.account_id THEN
        RETURN NEW;
    END IF;
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION '% of customer % refused under %: run it in READ COMMITTED', TG_OP, OLD.account_id,
                        upper(current_setting('transaction_isolation'))
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    IF EXISTS (SELECT 1 FROM journal j WHERE j.account_id = OLD.account_id)
       OR EXISTS (SELECT 1 FROM usage_records u WHERE u.account_id = OLD.account_id) THEN
        RAISE EXCEPTION '% of customer % refused: journal or usage_records name it', TG_OP, OLD.account_id
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    RETURN CASE TG_OP WHEN 'DELETE' THEN OLD ELSE NEW END;
END $$;
