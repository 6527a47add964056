# Outside clients the integration suite drives billingd with:
# OpenAI's own Node SDK, pinned and sha256-checked like the tokenizer data.
# Included by the top-level Makefile.
OPENAI_SDK_VERSION := 5.23.2
OPENAI_SDK_SHA256  := a2aa74ff8be1a80a215af201a3d2228e999464d166c1eaec2c9ca313395fbef1
OPENAI_SDK_DIR     := var/cache/node_modules/openai

test-data: $(OPENAI_SDK_DIR)/package.json

$(OPENAI_SDK_DIR)/package.json: scripts/fetch_npm.sh mk/clients.mk
	@scripts/fetch_npm.sh openai $(OPENAI_SDK_VERSION) $(OPENAI_SDK_SHA256) $(OPENAI_SDK_DIR)
	@touch $@
