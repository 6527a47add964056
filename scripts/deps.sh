#!/usr/bin/env bash
# Installs the Debian packages the build, the local stack and the tests need,
# only those that are missing, quietly.
set -eu
pkgs="build-essential pkg-config libpq-dev libevent-dev libjansson-dev libhiredis-dev
libsodium-dev libpcre2-dev postgresql-15 postgresql-client-15 postgresql-15-auto-failover redis-server
python3-pytest python3-psycopg2 python3-requests faketime ca-certificates clang libclang-rt-14-dev valgrind"
missing=""
for p in $pkgs; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing="$missing $p"
done
# node and npm (the tokenizer data package and its reference ids) may come from
# another source than Debian: only install them when the commands are absent.
command -v node >/dev/null || missing="$missing nodejs"
command -v npm >/dev/null || missing="$missing npm"
[ -z "$missing" ] && exit 0
echo "deps: installing$missing" >&2
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq >/dev/null
$SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
