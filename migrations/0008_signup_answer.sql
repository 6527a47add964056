-- 0008_signup_answer: a signup records its outcome in audit_log (action
-- 'account.signup', target 'account:ID', details the promotion outcome
-- and the balance right after); a replay of the signup answers from it.
CREATE INDEX audit_log_target_action ON audit_log (target, action);
