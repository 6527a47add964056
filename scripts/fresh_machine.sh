#!/usr/bin/env bash
# fresh_machine.sh: the README's set-up line and its two commands on a
# brand-new minimal Debian 12, as a new user would run them (`make
# fresh-machine`; not part of `make test`: it downloads a whole system).
#
#  1. debootstrap --variant=minbase bookworm into FRESH_DIR/root
#  2. a clean clone of this checkout's HEAD into /root/billing inside it
#     (uncommitted changes are not in it), this machine's CA certificates
#     into /usr/local/share/ca-certificates (a proxy that re-signs TLS)
#  3. proc, sys, dev (dev/pts) and a private tmpfs on dev/shm mounted
#  4. inside, via chroot, as root, in /root/billing, with a clean environment:
#     the set-up line (the first `apt-get` line of README "The two commands"),
#     then `make run` until /healthz answers (then Ctrl-C, i.e. SIGINT),
#     then `make test`
#  5. stops everything it started (by process group and by the processes
#     whose root is the new system), unmounts (also on failure or Ctrl-C),
#     and prints each step's duration and the packages installed.
#
# Needs root and debootstrap (apt-get install -y debootstrap).  Package
# scripts inside do not start services (usr/sbin/policy-rc.d exits 101, as
# in any chroot or container image): the new system shares this machine's
# network, and its own stacks use free ports.  When 127.0.0.1:8080 is taken
# here, `make run` gets BILLING_LISTEN=127.0.0.1:<free port>.
#
# Environment: FRESH_DIR (default /var/tmp/billing-fresh.XXXXXX), FRESH_MIRROR
# (http://deb.debian.org/debian), FRESH_KEEP=1 keeps the new system
# afterwards (removed otherwise), FRESH_RUN_TIMEOUT (s until /healthz, 1800),
# FRESH_TEST_TIMEOUT (s for make test, 7200).
set -Eeuo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
MIRROR=${FRESH_MIRROR:-http://deb.debian.org/debian}
RUN_TIMEOUT=${FRESH_RUN_TIMEOUT:-1800}
TEST_TIMEOUT=${FRESH_TEST_TIMEOUT:-7200}
prog=fresh_machine

die() { echo "$prog: $*" >&2; exit 1; }
log() { echo "$prog: $(date -u +%H:%M:%S) $*" >&2; }

[ "$(id -u)" -eq 0 ] || die "run as root (debootstrap, mount and chroot need it)"
command -v debootstrap >/dev/null || die "debootstrap is missing (apt-get install -y debootstrap)"
setup=$(awk '/^## /{s = ($0 == "## The two commands")} s && /^    apt-get /{sub(/^    /, ""); print; exit}' \
	"$REPO/README.md")
[ -n "$setup" ] || die "README.md, section \"The two commands\", has no indented apt-get set-up line"
sha=$(git -C "$REPO" rev-parse HEAD)
[ -z "$(git -C "$REPO" status --porcelain --untracked-files=no)" ] ||
	log "note: uncommitted changes in $REPO are not tested (the new system gets HEAD $sha)"

if [ -n "${FRESH_DIR:-}" ]; then
	mkdir -p "$FRESH_DIR"
	[ -z "$(ls -A "$FRESH_DIR")" ] || die "FRESH_DIR '$FRESH_DIR' is not empty"
	WORK=$(cd "$FRESH_DIR" && pwd)
else
	WORK=$(mktemp -d /var/tmp/billing-fresh.XXXXXX)
fi
R=$WORK/root
mkdir -p "$R"
R=$(realpath "$R")

# ---- what this script started, and its clean-up ----
inner_pids=() # session leaders of the commands run inside (each its own process group)
mounted=()    # mount points, in the order mounted
ok=0

inside_pids() { # processes whose root folder is the new system (find complains of ended ones)
	{ find /proc -mindepth 2 -maxdepth 2 -name root -lname "$R" 2>/dev/null || true; } | cut -d/ -f3
}

stop_inside() { # SIGTERM, then SIGKILL, to every process still running in the new system
	local sig pids end
	for sig in TERM KILL; do
		pids=$(inside_pids)
		[ -z "$pids" ] && return 0
		log "stopping what still runs inside (SIG$sig): $(echo $pids)"
		kill -s "$sig" $pids 2>/dev/null || true
		end=$(($(date +%s) + 10))
		while [ "$(date +%s)" -lt $end ]; do [ -z "$(inside_pids)" ] && return 0; sleep 0.2; done
	done
}

cleanup() {
	local rc=$? pid i
	trap - EXIT INT TERM ERR
	set +e # every step of the clean-up runs, whatever fails
	for pid in "${inner_pids[@]}"; do # Ctrl-C first: the suites stop their own stacks
		kill -0 "$pid" 2>/dev/null && kill -s INT -- "-$pid" 2>/dev/null
	done
	for _ in $(seq 1 60); do [ -z "$(inside_pids)" ] && break; sleep 0.5; done
	stop_inside
	for ((i = ${#mounted[@]} - 1; i >= 0; i--)); do
		umount -R "${mounted[i]}" 2>/dev/null || umount -R -l "${mounted[i]}" 2>/dev/null ||
			log "could not unmount ${mounted[i]}"
	done
	if grep -q " $R/" /proc/self/mountinfo; then
		log "something is still mounted under $R: not removing it"
	elif [ "${FRESH_KEEP:-0}" = 1 ] || [ $ok -ne 1 ]; then
		log "kept the new system in $R (logs in $WORK); remove it with: rm -rf $WORK"
	else
		rm -rf "$R"
		log "removed the new system; logs in $WORK"
	fi
	exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM
trap 'log "failed (exit $?) at line $LINENO: $BASH_COMMAND"' ERR

mount_in() { # mount_in TARGET MOUNT-ARGS...: mounts and records it for the clean-up
	local t=$1; shift
	mount "$@" "$t"
	mounted+=("$t")
}

# ---- steps, timed ----
declare -a step_names=() step_secs=() step_pkgs=()
pkgs_now() { chroot "$R" dpkg-query -W -f '${db:Status-Abbrev}\n' 2>/dev/null | grep -c '^ii' || true; }
last_pkgs=0
step_done() { # step_done NAME START
	local n; n=$(pkgs_now)
	step_names+=("$1"); step_secs+=($(($(date +%s) - $2))); step_pkgs+=($((n - last_pkgs)))
	last_pkgs=$n
	log "$1: ${step_secs[-1]} s, +${step_pkgs[-1]} packages ($n installed)"
}

# chroot with a clean environment, as root's login in /root/billing
inner_env=(env -i HOME=/root USER=root LOGNAME=root SHELL=/bin/bash TERM=dumb
	PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin)
start_inside() { # start_inside LOG COMMAND...: background, own session; sets $inner
	local out=$1; shift
	setsid chroot "$R" "${inner_env[@]}" "$@" >"$out" 2>&1 </dev/null &
	inner=$!
	inner_pids+=("$inner")
}

# 1. the new system
t=$(date +%s)
log "debootstrap --variant=minbase bookworm $R ($MIRROR)"
debootstrap --variant=minbase bookworm "$R" "$MIRROR" >"$WORK/debootstrap.log" 2>&1 ||
	{ tail -20 "$WORK/debootstrap.log" >&2; die "debootstrap failed (log: $WORK/debootstrap.log)"; }
step_done "debootstrap" "$t"

# 2. checkout, CA certificates, no service starts, name resolution
t=$(date +%s)
git clone -q --no-hardlinks "$REPO" "$R/root/billing"
git -C "$R/root/billing" checkout -q --detach "$sha"
chmod 700 "$R/root"
mkdir -p "$R/usr/local/share/ca-certificates"
cas=$(find /usr/local/share/ca-certificates -name '*.crt' 2>/dev/null | wc -l)
[ "$cas" -gt 0 ] && cp -r /usr/local/share/ca-certificates/. "$R/usr/local/share/ca-certificates/"
printf '#!/bin/sh\n# fresh_machine.sh: no service starts inside a chroot\nexit 101\n' >"$R/usr/sbin/policy-rc.d"
chmod 755 "$R/usr/sbin/policy-rc.d"
cp /etc/resolv.conf "$R/etc/resolv.conf"
log "checkout $sha in /root/billing (mode 0700 /root), $cas local CA certificate(s)"
step_done "checkout" "$t"

# 3. mounts (rslave: nothing mounted or unmounted in there reaches this machine)
mount_in "$R/proc" -t proc proc
mount_in "$R/sys" --rbind /sys
mount --make-rslave "$R/sys"
mount_in "$R/dev" --rbind /dev
mount --make-rslave "$R/dev"
mount_in "$R/dev/shm" -t tmpfs -o mode=1777,nosuid,nodev shm

# 4a. the README's set-up line
t=$(date +%s)
log "inside: $setup"
start_inside "$WORK/setup.log" bash -c "cd /root/billing && $setup"
wait "$inner" || { tail -30 "$WORK/setup.log" >&2; die "the set-up line failed (log: $WORK/setup.log)"; }
# its packages' scripts ran update-ca-certificates when ca-certificates came in; again, in case not
if [ "$cas" -gt 0 ] && chroot "$R" sh -c 'command -v update-ca-certificates' >/dev/null; then
	chroot "$R" update-ca-certificates >/dev/null 2>&1
fi
step_done "set-up line" "$t"

# 4b. make run, until /healthz answers, then Ctrl-C
port=8080
listen_env=()
if (exec 3<>/dev/tcp/127.0.0.1/8080) 2>/dev/null; then
	port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
	listen_env=(BILLING_LISTEN=127.0.0.1:$port)
	log "127.0.0.1:8080 is taken on this machine: make run gets ${listen_env[0]}"
fi
t=$(date +%s)
log "inside: make run (log: $WORK/run.log)"
start_inside "$WORK/run.log" bash -c "cd /root/billing && exec env ${listen_env[*]} make run"
run=$inner
healthy=0
while [ $(($(date +%s) - t)) -lt "$RUN_TIMEOUT" ] && kill -0 "$run" 2>/dev/null; do
	if [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "http://127.0.0.1:$port/healthz")" = 200 ]; then
		healthy=1
		break
	fi
	sleep 1
done
served=$(($(date +%s) - t))
if [ $healthy -ne 1 ]; then
	tail -40 "$WORK/run.log" >&2
	die "make run: /healthz did not answer within ${served} s (log: $WORK/run.log)"
fi
log "make run: /healthz answered 200 after $served s; Ctrl-C"
kill -s INT -- "-$run"
for _ in $(seq 1 600); do kill -0 "$run" 2>/dev/null || break; sleep 0.1; done
kill -0 "$run" 2>/dev/null && die "make run did not stop within 60 s of Ctrl-C"
wait "$run" || true
left=$(inside_pids)
[ -z "$left" ] || die "make run left processes running after Ctrl-C: $(echo $left)"
step_done "make run" "$t"

# 4c. make test
t=$(date +%s)
log "inside: make test (log: $WORK/test.log)"
start_inside "$WORK/test.log" bash -c "cd /root/billing && exec make test"
tst=$inner
tail -n +1 -f --pid="$tst" "$WORK/test.log" &
while kill -0 "$tst" 2>/dev/null; do
	[ $(($(date +%s) - t)) -lt "$TEST_TIMEOUT" ] || die "make test still running after $TEST_TIMEOUT s"
	sleep 2
done
rc=0
wait "$tst" || rc=$?
sleep 1
[ $rc -eq 0 ] || die "make test failed (exit $rc; log: $WORK/test.log)"
left=$(inside_pids)
[ -z "$left" ] || die "make test left processes running: $(echo $left)"
step_done "make test" "$t"

# ---- summary ----
echo
echo "fresh machine: Debian 12 minbase, checkout $sha in /root/billing"
printf '  %-12s %8s %10s\n' step seconds packages
for i in "${!step_names[@]}"; do
	printf '  %-12s %8d %10s\n' "${step_names[i]}" "${step_secs[i]}" "+${step_pkgs[i]}"
done
echo "  installed packages at the end: $last_pkgs; make run served /healthz $served s after it started"
echo "  set-up line: $setup"
ok=1
