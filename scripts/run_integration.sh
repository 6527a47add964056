#!/usr/bin/env bash
# Runs the integration suite (pytest) against real PostgreSQL and Redis that
# the suite starts itself on free loopback ports (tests/integration/conftest.py)
# and stops at the end.  BILLING_BIN names the folder of the binaries.
# --durations: the slowest tests are listed at the end, to keep make test in its budget.
# BILLING_IT_REDIS=cluster: the quota (and grouped quota), usage (and grouped settle), stream, mirror-race and shared-mirror suites and
# test_cluster.py against a three-master Redis Cluster instead.
set -u
cd "$(dirname "$0")/.."
export BILLING_BIN=${BILLING_BIN:-$PWD/bin}
export PYTHONDONTWRITEBYTECODE=1
args=(-q -p no:cacheprovider -o "junit_family=xunit2" --durations=15 tests/integration)
if [ "${BILLING_IT_REDIS:-}" = cluster ]; then
	args=(-q -p no:cacheprovider -o "junit_family=xunit2" --durations=10 tests/integration/test_quota.py tests/integration/test_quota_group.py
	      tests/integration/test_usage.py tests/integration/test_usage_settle_group.py tests/integration/test_stream.py tests/integration/test_mirror_race.py
	      tests/integration/test_cluster.py tests/integration/test_shared_mirror.py)
fi
[ -n "${PYTEST_ARGS:-}" ] && args=($PYTEST_ARGS)
/usr/bin/python3 -m pytest "${args[@]}"
rc=$?
# 5 = no tests collected: that is a failure of the suite, not a pass
[ $rc -eq 5 ] && echo "integration: no tests ran" >&2
exit $rc
