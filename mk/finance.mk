# mk/finance.mk: the export size test, outside `make test`
# because it writes a million postings first (about two minutes).
#
#   make export-size-test   1,000,000+ postings exported with peak RSS < 64 MB,
#                           manifest totals == trial balance of the range,
#                           and the export verified (also < 64 MB)
#
# It starts its own PostgreSQL and Redis like the integration suite does.

.PHONY: export-size-test
export-size-test: $(PROGS) $(ITEST_BIN)
	@BILLING_EXPORT_SIZE_TEST=1 BILLING_BIN=$(abspath $(BINDIR)) BILLING_ITEST_BIN=$(abspath $(BUILD)/itest) \
	  PYTEST_ARGS="-q -s -p no:cacheprovider tests/integration/test_export_size.py" scripts/run_integration.sh
