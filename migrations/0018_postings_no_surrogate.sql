-- 0018_postings_no_surrogate: postings lose their surrogate key.
--
-- Why: `postings_pkey (posting_id, created_at)` had no reader.  No query of
-- the code, the triggers or the finance views reads `posting_id` (EXPLAIN
-- of verify, export, statements, trial balance, refunds, replays and the
-- views on a filled database: docs/benchmarks.md, "Indexes without a
-- reader (usage6)"), and no rule of the books rests on it: a posting is
-- named by its transaction and line, which `UNIQUE (txn_id, line,
-- created_at)` keeps unique (one journal row per (txn_id, created_at):
-- journal's primary key and the key table), and that index is what every
-- reader of postings uses.  Yet every posting paid for the key: one
-- `nextval` and one more index entry (two postings a usage record).
--
-- What changes: the primary key goes (its index on every partition), the
-- column stays (rows written before keep their numbers; dropping the column
-- would hide them, and partitions made later would need a tuple conversion
-- for every routed row), without its default and NOT NULL, so new postings
-- carry NULL there; the sequence that fed it goes.  Nothing else: the hash
-- chain, exports, statements and verify never named posting_id.
--
-- Catalog changes only, no rewrite; ACCESS EXCLUSIVE on postings and its
-- partitions for as long as that takes.
ALTER TABLE postings DROP CONSTRAINT postings_pkey;
ALTER TABLE postings ALTER COLUMN posting_id DROP DEFAULT;
ALTER TABLE postings ALTER COLUMN posting_id DROP NOT NULL;
DROP SEQUENCE postings_posting_id_seq;
