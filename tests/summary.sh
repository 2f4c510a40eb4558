#!/bin/sh
# SPDX-License-Identifier: MIT
# summary.sh DIR... - the last words of make check: every test program of
# the folders given (their .trs result files, as automake's test driver
# wrote them), a line per folder, then one line that adds them up. The
# Criterion program's own count of tests is shown beside its folder.
# Exits 1 when a program failed (seen only under make -k: otherwise make
# stops at the first folder that fails).
set -u
passed=0 failed=0 skipped=0
lines=""
for dir in "$@"; do
    p=0 f=0 s=0
    for trs in "$dir"/*.trs; do
        [ -f "$trs" ] || continue
        result=$(sed -n 's/^:test-result: *//p' "$trs" | head -n 1)
        case $result in
        PASS|XFAIL) p=$((p + 1)) ;;
        SKIP) s=$((s + 1)) ;;
        *) f=$((f + 1)) ;;
        esac
    done
    [ $((p + f + s)) -eq 0 ] && continue
    detail=""
    if [ -f "$dir/unit.log" ]; then
        detail=$(sed -n 's/.*Synthesis: \(Tested: [0-9]* | Passing: [0-9]* | Failing: [0-9]*\).*/  (Criterion \1)/p' \
                     "$dir/unit.log" | tail -n 1)
    fi
    lines="$lines$(printf '  %-12s %3d passed, %d failed, %d skipped%s' \
                   "$dir" "$p" "$f" "$s" "$detail")
"
    passed=$((passed + p))
    failed=$((failed + f))
    skipped=$((skipped + s))
done
echo
echo "==== make check: every test program ===="
printf '%s' "$lines"
echo "Total: $passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]
