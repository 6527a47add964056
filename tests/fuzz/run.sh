#!/usr/bin/env bash
# run.sh SECONDS TARGET...: runs each libFuzzer target of build-fuzz/fuzz/
# for SECONDS, one after the other, on a scratch corpus
# (build-fuzz/corpus/TARGET, grown by the run) plus the committed seeds
# (tests/fuzz/corpus/TARGET, read only).  A crash, leak, sanitizer report,
# timeout or violated property stops that target; its input is saved as
# build-fuzz/crashes/TARGET-crash-* and printed as a reproduce command.
# Exits 1 if any target failed.  Called by `make fuzz` / `make fuzz-short`.
set -u
cd "$(dirname "$0")/../.."
secs=${1:?usage: run.sh SECONDS TARGET...}
shift
out=build-fuzz
mkdir -p "$out/crashes" "$out/logs"
failed=()
for t in "$@"; do
	bin="$out/fuzz/fuzz_$t"
	seeds="tests/fuzz/corpus/$t"
	scratch="$out/corpus/$t"
	log="$out/logs/$t.log"
	mkdir -p "$scratch" "$seeds"
	dict=()
	case $t in
	usage | authorize | signup | fastbody | fastusage) dict=(-dict=tests/fuzz/dict/json.dict) ;;
	*) [ -f "tests/fuzz/dict/$t.dict" ] && dict=(-dict="tests/fuzz/dict/$t.dict") ;;
	esac
	start=$(date +%s)
	"$bin" -max_total_time="$secs" -timeout=20 -rss_limit_mb=2560 -max_len=4096 -print_final_stats=1 \
		-artifact_prefix="$out/crashes/$t-" "${dict[@]}" "$scratch" "$seeds" >"$log" 2>&1
	rc=$?
	took=$(($(date +%s) - start))
	execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
	cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1)
	if [ $rc -ne 0 ]; then
		failed+=("$t")
		echo "fuzz $t: FAILED after ${took}s (exit $rc); log $log"
		grep -E 'ERROR|property violated|SUMMARY|Test unit written|runtime error' "$log" | head -20 | sed 's/^/  /'
		art=$(grep -o "$out/crashes/$t-[a-z]*-[0-9a-f]*" "$log" | tail -1)
		[ -n "$art" ] && echo "  reproduce: $bin $art"
	else
		echo "fuzz $t: ok ${took}s, ${execs:-?} runs, ${cov:-cov: ?}, corpus $(ls "$scratch" | wc -l) + $(ls "$seeds" | wc -l) seeds"
	fi
done
if [ ${#failed[@]} -gt 0 ]; then
	echo "fuzz: ${#failed[@]} target(s) failed: ${failed[*]}" >&2
	exit 1
fi
echo "fuzz: all $# targets ran ${secs}s each without a finding"
