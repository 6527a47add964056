#!/usr/bin/env bash
# deps.sh [run|bench|test]: installs the Debian packages that are missing,
# quietly, without recommends.
#   run   (make run): the compiler, the libraries' headers,
#         PostgreSQL 15, Redis, python3 (free ports in scripts/stack.sh),
#         curl and ca-certificates (the tokenizer download)
#   bench (make bench): run's packages plus wrk (the second load generator)
#   test  (make test, the default): run's packages plus clang (fuzzing),
#         valgrind, faketime (the calendar suite), cppcheck and clang-format (make lint), pg_auto_failover (the
#         failover scenario), promtool (prometheus:
#         checks /metrics), node and npm (OpenAI's Node SDK as a client, the
#         OpenAPI linter) and every Python module a test imports
# make run needs no node or npm: scripts/fetch_tokenizer.sh uses npm when it
# is on PATH and curl otherwise (make tokenizer-fixtures needs npm).
set -eu
what=${1:-test}
run_pkgs="make gcc libc6-dev libpq-dev libevent-dev libjansson-dev libhiredis-dev libsodium-dev
libpcre2-dev postgresql-15 postgresql-client-15 redis-server python3 curl ca-certificates"
test_pkgs="clang clang-format libclang-rt-14-dev valgrind faketime cppcheck prometheus postgresql-15-auto-failover
python3-pytest python3-psycopg2 python3-requests python3-cryptography python3-jsonschema python3-yaml"
case "$what" in
run) pkgs=$run_pkgs ;;
bench) pkgs="$run_pkgs wrk" ;;
test) pkgs="$run_pkgs $test_pkgs" ;;
*) echo "deps.sh: unknown set '$what' (run, bench or test)" >&2; exit 2 ;;
esac
missing=""
for p in $pkgs; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing="$missing $p"
done
# node and npm (test set) may come from another source than Debian (a
# nodesource nodejs carries its own npm and conflicts with Debian's npm):
# only install them when the commands are absent
if [ "$what" = test ]; then
	command -v node >/dev/null || missing="$missing nodejs"
	command -v npm >/dev/null || missing="$missing npm"
fi
[ -z "$missing" ] && exit 0
echo "deps: installing$missing" >&2
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq >/dev/null
log=$(mktemp)
if ! $SUDO apt-get install -y -qq --no-install-recommends $missing >"$log" 2>&1; then
	tail -20 "$log" >&2
	rm -f "$log"
	echo "deps: apt-get install failed (above); check the network and /etc/apt/sources.list*" >&2
	exit 1
fi
echo "deps: installed $(grep -c '^Setting up ' "$log") packages" >&2
rm -f "$log"
