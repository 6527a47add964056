# mk/model.mk: the weights of the embedded model `internal-tiny`.
#
# tools/mkweights writes data/internal-tiny.bin from a fixed seed and the
# vocabulary in data/tokenizer.json (made by mk/tokenizer.mk); the same bytes
# on every machine and at every -O level (format: docs/model.md, "The `internal-tiny` weight file").
# The generator binary is an order-only prerequisite: a sanitizer build
# (BUILD=build-asan) reuses the file instead of rewriting identical bytes.

MKWEIGHTS   := $(BUILD)/tools/mkweights
MODEL_FILE  := data/internal-tiny.bin

$(MKWEIGHTS): $(BUILD)/obj/tools/mkweights.o
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $^ -ljansson -lsodium -lm

$(MODEL_FILE): tools/mkweights.c billing/infer/model.h data/tokenizer.json | $(MKWEIGHTS)
	@mkdir -p $(dir $@)
	$(MKWEIGHTS) data/tokenizer.json $@

data: $(MODEL_FILE)

-include $(BUILD)/obj/tools/mkweights.d
