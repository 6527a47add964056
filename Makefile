# billing core: see README.md.  `make` builds, `make run` serves, `make test` tests.
CC      ?= cc
BUILD   ?= build
OPT     ?= -O2 -g
SAN     ?=
WARN    := -std=c11 -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes \
           -Wpointer-arith -Wwrite-strings -Wformat=2 -Wvla
WERROR  ?= -Werror
# no fast-math and no fp contraction: model kernels give the same bits at every -O level
# error messages are truncated on purpose: -Wno-format-truncation
CFLAGS  := $(OPT) $(WARN) -Wno-format-truncation $(WERROR) $(SAN) -ffp-contract=off -fno-fast-math -pthread -MMD -MP
CPPFLAGS := -D_GNU_SOURCE -I. -I$(shell pg_config --includedir 2>/dev/null || echo /usr/include/postgresql)
LDLIBS  := -lpq -levent -levent_pthreads -ljansson -lhiredis -lsodium -lpcre2-8 -lpthread -lm

ifeq ($(BUILD),build)
BINDIR  := bin
else
BINDIR  := $(BUILD)/bin
endif

COMMON_SRC  := $(sort $(wildcard common/*.c))
LEDGER_SRC  := $(sort $(wildcard ledger/*.c))
BILLING_SRC := $(sort $(filter-out billing/main.c $(EXCLUDE),$(wildcard billing/*.c billing/*/*.c)))
LIB_OBJ     := $(patsubst %.c,$(BUILD)/obj/%.o,$(COMMON_SRC) $(LEDGER_SRC) $(BILLING_SRC))
LIB         := $(BUILD)/libbilling.a

PROGS       := $(BINDIR)/billingd $(BINDIR)/billing-admin $(BINDIR)/ledger
UNIT_SRC    := $(sort $(wildcard tests/unit/test_*.c))
UNIT_BIN    := $(patsubst tests/unit/%.c,$(BUILD)/tests/%,$(UNIT_SRC))

.PHONY: all deps run test unit lint format integration integration-cluster asan clean bench faults fuzz data test-data
# keep the objects of test programs (intermediate files otherwise)
.SECONDARY:
all: $(PROGS)

# V=1 shows the full command lines
V ?= 0
ifeq ($(V),0)
Q := @
else
Q :=
endif

$(BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  CC      $<")
	$(Q)$(CC) $(CPPFLAGS) $(CFLAGS) -c -o $@ $<

$(LIB): $(LIB_OBJ)
	@rm -f $@
	$(Q)ar rcs $@ $^

$(BINDIR)/billingd: $(BUILD)/obj/billing/main.o $(LIB)
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(CFLAGS) -o $@ $^ $(LDLIBS)

$(BINDIR)/billing-admin: $(BUILD)/obj/tools/billing_admin.o $(BUILD)/obj/tools/admin_common.o $(LIB)
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(CFLAGS) -o $@ $^ $(LDLIBS)

$(BINDIR)/ledger: $(BUILD)/obj/tools/ledger_cli.o $(BUILD)/obj/tools/admin_common.o $(LIB)
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(CFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/tests/%: $(BUILD)/obj/tests/unit/%.o $(LIB)
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(CFLAGS) -o $@ $^ $(LDLIBS)

# Helper programs of the integration suite (not unit tests).
ITEST_BIN := $(patsubst tests/integration/%.c,$(BUILD)/itest/%,$(wildcard tests/integration/*.c))
$(BUILD)/itest/%: $(BUILD)/obj/tests/integration/%.o $(LIB)
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(CFLAGS) -o $@ $^ $(LDLIBS)

# Installs only the Debian packages that are missing (scripts/deps.sh: `run`
# for make run, `test` adds clang, valgrind and the tests' Python modules).
deps:
	@scripts/deps.sh test

unit: $(UNIT_BIN) data
	@scripts/run_unit.sh $(UNIT_BIN)

# The dependency rules (tools/lint/check_layers.py): no two modules use each
# other, by include or by a symbol the object files show, directly or around
# a loop; tools -> billing -> ledger -> common, nothing includes upward.
# Then cppcheck (Debian 12's 2.10) with the warning and portability checks
# over every C file: zero findings, or the finding fails the build.  Then
# clang-format --dry-run -Werror against the committed .clang-format.  The
# generated Unicode tables are what their script makes of the pinned package,
# and docs/configuration.md's key table is what billingd --help prints.
lint: $(PROGS)
	@/usr/bin/python3 tools/lint/check_layers.py $(BUILD)/obj
	@/usr/bin/python3 tools/gen/unicode_tables.py --check
	@/usr/bin/python3 tools/gen/config_doc.py $(BINDIR)/billingd --check
	@cppcheck --enable=warning,portability --std=c11 -q -I. -D_GNU_SOURCE --include=/usr/include/jansson.h \
	  --suppress=missingIncludeSystem --inline-suppr --error-exitcode=1 -j2 \
	  common ledger billing tools tests/unit tests/integration tests/fuzz
	@echo "lint: cppcheck found nothing"
	@clang-format --dry-run -Werror $(FORMAT_SRC)
	@echo "lint: clang-format (.clang-format) would change nothing"

# Every hand-written C file (the generated Unicode tables are what their
# script writes); `make format` rewrites them in the house style.
FORMAT_SRC = $(shell find common ledger billing tools tests -name '*.[ch]' ! -name unicode_tables.h ! -path 'tests/fuzz/corpus/*' | sort)
format:
	clang-format -i $(FORMAT_SRC)

integration: $(PROGS) $(ITEST_BIN) data test-data
	@BILLING_BIN=$(abspath $(BINDIR)) BILLING_ITEST_BIN=$(abspath $(BUILD)/itest) scripts/run_integration.sh
	@$(MAKE) --no-print-directory integration-cluster

# The quota and ingestion suites again, against a three-master Redis Cluster.
integration-cluster: $(PROGS) $(ITEST_BIN) data test-data
	@BILLING_BIN=$(abspath $(BINDIR)) BILLING_ITEST_BIN=$(abspath $(BUILD)/itest) BILLING_IT_REDIS=cluster \
	  scripts/run_integration.sh

test:
	@scripts/deps.sh test
	@$(MAKE) --no-print-directory all
	@$(MAKE) --no-print-directory unit
	@$(MAKE) --no-print-directory lint
	@$(MAKE) --no-print-directory openapi-lint
	@$(MAKE) --no-print-directory integration
	@$(MAKE) --no-print-directory asan
	@$(MAKE) --no-print-directory fuzz-short
	@$(MAKE) --no-print-directory valgrind-short
	@$(MAKE) --no-print-directory faults-short

# AddressSanitizer + UBSan build in its own folder, unit and integration suites.
asan:
	@$(MAKE) --no-print-directory BUILD=build-asan OPT="-O1 -g" \
	  SAN="-fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer" \
	  unit integration

run:
	@scripts/deps.sh run
	@$(MAKE) --no-print-directory all data
	@scripts/run_local.sh

clean:
	rm -rf build build-* bin

# mk/*.mk add prerequisites to `data` (tokenizer, model weights: what billingd
# needs) and to `test-data` (outside clients of the test suites: OpenAI's Node
# SDK, the OpenAPI linter; they need node and npm, which `make run` does not).
data:
test-data:

-include mk/*.mk
# every object's header dependencies (programs and tests too, not only the library)
-include $(shell find $(BUILD)/obj -name '*.d' 2>/dev/null)
