# mk/bench.mk: `make bench` (scripts/bench.sh; what it measures: tools/bench/README).
#
# Builds the bench's own programs into $(BUILD)/bench/ with the same flags as
# the product (-O2), then runs scripts/bench.sh, which starts its own
# PostgreSQL (fsync on), Redis and billingd, runs every scenario against its
# baseline, prints one table and writes bench/results/<timestamp>.json.
# Knobs (environment): BENCH_SECONDS (measured seconds per scenario, 12),
# BENCH_WARMUP (2), BENCH_ACCOUNTS (1000), BENCH_ONLY (comma list of
# scenarios), BENCH_KEEP=1 (leave the stack running for profiling).

BENCH_BIN   := $(BUILD)/bench
BENCH_SRC   := $(sort $(wildcard tools/bench/*.c))
BENCH_OBJ   := $(patsubst %.c,$(BUILD)/obj/%.o,$(BENCH_SRC))
BENCH_TOOLS := $(BENCH_BIN)/loadgen $(BENCH_BIN)/bare_server $(BENCH_BIN)/copybench $(BENCH_BIN)/kernels \
	       $(BENCH_BIN)/scriptbench

$(BENCH_BIN)/loadgen: $(BUILD)/obj/tools/bench/loadgen.o
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $^

$(BENCH_BIN)/bare_server: $(BUILD)/obj/tools/bench/bare_server.o
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $^ -levent

$(BENCH_BIN)/copybench: $(BUILD)/obj/tools/bench/copybench.o
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $^ -lpq -lpthread

$(BENCH_BIN)/scriptbench: $(BUILD)/obj/tools/bench/scriptbench.o
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $^ -lhiredis

$(BENCH_BIN)/kernels: $(BUILD)/obj/tools/bench/kernels.o $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $^ $(LDLIBS)

.PHONY: bench-tools
bench-tools: $(BENCH_TOOLS)

# The product is built with the default OPT (-O2 -g) into bin/.  BILLING_BIN
# in the environment names other binaries to measure (another build's bin/:
# old against new); without it, this checkout's.
bench:
	@scripts/deps.sh bench
	@$(MAKE) --no-print-directory all data bench-tools
	@BENCH_TOOLS_DIR=$(abspath $(BENCH_BIN)) BILLING_BIN=$${BILLING_BIN:-$(abspath $(BINDIR))} scripts/bench.sh

-include $(BENCH_OBJ:.o=.d)
