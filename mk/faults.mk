# mk/faults.mk: fault injection and valgrind runs (tests/faults/).  Included
# by the top-level Makefile.
#
#   make faults          kill -9 x25, Redis FLUSHALL/restart, PostgreSQL down 10 s,
#                        50 identical calls at once; ~2 minutes; prints
#                        `faults: injected=N requests=N acknowledged=N lost=0 duplicated=0`
#   make faults-short    the same with 10 kills and shorter phases (under 2 minutes): `make test`
#   make faults-failover the failover scenario on its own stack (scripts/ha_stack.sh:
#                        pg_auto_failover monitor, primary, two synchronous standbys):
#                        the primary's machine dies twice under load; prints
#                        `failover: rounds=2 first_write_after_kill_s=A,B ... lost=0 duplicated=0`;
#                        `make faults` runs it after the other scenarios
#   make valgrind-short  billingd under valgrind for a few requests of each kind, then SIGTERM
#
# Each starts its own PostgreSQL and Redis on free loopback ports
# (scripts/stack.sh) and stops everything it started.  FAULTS_SEED=N repeats
# a run's random choices; FAULTS_ARGS passes more options (--keep, --only).

FAULTS_PY := /usr/bin/python3

.PHONY: faults faults-short faults-failover valgrind-short

faults: $(PROGS) data
	@BILLING_BIN=$(abspath $(BINDIR)) $(FAULTS_PY) tests/faults/faults.py $(FAULTS_ARGS)
	@BILLING_BIN=$(abspath $(BINDIR)) $(FAULTS_PY) tests/faults/faults.py --only failover $(FAULTS_ARGS)

faults-failover: $(PROGS) data
	@BILLING_BIN=$(abspath $(BINDIR)) $(FAULTS_PY) tests/faults/faults.py --only failover $(FAULTS_ARGS)

faults-short: $(PROGS) data
	@BILLING_BIN=$(abspath $(BINDIR)) $(FAULTS_PY) tests/faults/faults.py --short $(FAULTS_ARGS)

valgrind-short: $(PROGS) data
	@command -v valgrind >/dev/null 2>&1 || { echo "valgrind-short: valgrind is missing (apt-get install -y valgrind)" >&2; exit 1; }
	@BILLING_BIN=$(abspath $(BINDIR)) $(FAULTS_PY) tests/faults/valgrind.py $(FAULTS_ARGS)
