-- 0005_limits_truncate: limits rows are history too; TRUNCATE is refused like elsewhere.
CREATE TRIGGER limits_no_truncate BEFORE TRUNCATE ON limits
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_refuse_change();
