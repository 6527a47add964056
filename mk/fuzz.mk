# mk/fuzz.mk: libFuzzer targets of tests/fuzz/ (one per fuzz_NAME.c, seeds
# in tests/fuzz/corpus/NAME/).  Included by the top-level Makefile.
#
#   make fuzz [FUZZ_TIME=60]   each target for FUZZ_TIME seconds
#   make fuzz-short            each target for FUZZ_SHORT_TIME (4) seconds: CI, `make test`
#   make fuzz-build            only build them
#
# The product sources are compiled again by clang into build-fuzz/ with
# coverage (-fsanitize=fuzzer-no-link) and ASan + UBSan, by a recursive make
# with BUILD=build-fuzz, so the usual rules and flags apply (but -Werror:
# clang's warnings are not gcc's, and a warning must not stop a fuzz run).
# Needs clang and libclang-rt (scripts/deps.sh, or apt-get install clang
# libclang-rt-14-dev).

FUZZ_BUILD      := build-fuzz
FUZZ_CC         ?= clang
FUZZ_TIME       ?= 60
FUZZ_SHORT_TIME ?= 4
FUZZ_SAN        := -Wno-unknown-warning-option -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer \
                   -fsanitize=fuzzer-no-link
FUZZ_TARGETS    := $(sort $(patsubst tests/fuzz/fuzz_%.c,%,$(wildcard tests/fuzz/fuzz_*.c)))
FUZZ_BINS       := $(patsubst %,$(FUZZ_BUILD)/fuzz/fuzz_%,$(FUZZ_TARGETS))

.PHONY: fuzz fuzz-short fuzz-build

fuzz-build:
	@command -v $(FUZZ_CC) >/dev/null 2>&1 || { \
	  echo "fuzz: $(FUZZ_CC) is missing (apt-get install -y clang libclang-rt-14-dev)" >&2; exit 1; }
	@$(MAKE) --no-print-directory BUILD=$(FUZZ_BUILD) CC=$(FUZZ_CC) OPT="-O1 -g" WERROR= \
	  SAN="$(FUZZ_SAN)" $(FUZZ_BINS)

fuzz: fuzz-build data
	@tests/fuzz/run.sh $(FUZZ_TIME) $(FUZZ_TARGETS)

fuzz-short: fuzz-build data
	@tests/fuzz/run.sh $(FUZZ_SHORT_TIME) $(FUZZ_TARGETS)

# Only meaningful inside the recursive make above (BUILD=build-fuzz, CC=clang).
ifeq ($(BUILD),$(FUZZ_BUILD))
$(FUZZ_BUILD)/fuzz/fuzz_%: $(FUZZ_BUILD)/obj/tests/fuzz/fuzz_%.o $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -fsanitize=fuzzer -o $@ $^ $(LDLIBS)
-include $(patsubst %,$(FUZZ_BUILD)/obj/tests/fuzz/fuzz_%.d,$(FUZZ_TARGETS))
endif
