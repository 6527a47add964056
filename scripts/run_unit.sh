#!/usr/bin/env bash
# Runs each unit-test binary; prints its TAP output and one closing line.
set -u
pass=0 fail=0
for t in "$@"; do
	echo "# $t"
	out=$("$t" 2>&1); rc=$?
	echo "$out"
	p=$(grep -c '^ok ' <<<"$out"); f=$(grep -c '^not ok ' <<<"$out")
	pass=$((pass + p)); fail=$((fail + f))
	if [ $rc -ne 0 ] && [ "$f" -eq 0 ]; then fail=$((fail + 1)); echo "# $t exited $rc"; fi
done
echo "unit: $pass passed, $fail failed"
[ $fail -eq 0 ]
