#!/bin/sh
# SPDX-License-Identifier: MIT
# valgrind-oracle.sh [BUILD_DIR] - the oracle comparisons under Valgrind's
# memcheck: the kit's random cases (oracle_cases, 150 cases, each on the
# CPU with 1 and 3 threads) and the replay of every fuzz target over its
# seed corpus and the regressions. BUILD_DIR is the configured build tree
# (default: the current directory); the programs are built first with
# `make -C BUILD_DIR/tests/fuzz fuzz_args_replay fuzz_diff_replay
# fuzz_memory_replay oracle_cases`. Prints each run's ERROR SUMMARY; exits 1 when any run
# reports an error or fails.
set -u
build=$(cd "${1:-.}" && pwd) || exit 2
dir="$build/tests/fuzz"
here=$(cd "$(dirname "$0")" && pwd)
make -s -C "$dir" fuzz_args_replay fuzz_diff_replay fuzz_memory_replay \
    oracle_cases || exit 2
command -v valgrind > /dev/null || { echo "$0: valgrind not found" >&2; exit 2; }

# Passive waiting keeps Valgrind's serialized threads from spinning.
OMP_WAIT_POLICY=passive
export OMP_WAIT_POLICY

status=0
run() {
    name=$1
    shift
    log="$dir/valgrind-$name.log"
    valgrind --tool=memcheck --error-exitcode=1 --leak-check=full \
        --errors-for-leak-kinds=definite --track-origins=yes \
        --log-file="$log" "$@" > "$dir/valgrind-$name.out" 2>&1
    rc=$?
    summary=$(grep 'ERROR SUMMARY' "$log" | tail -n 1 | sed 's/^==[0-9]*== //')
    echo "$name: ${summary:-no summary} (exit $rc); $(tail -n 1 "$dir/valgrind-$name.out")"
    [ "$rc" -eq 0 ] || status=1
}
run oracle_cases "$dir/oracle_cases" 150
run fuzz_args_replay "$dir/fuzz_args_replay" "$here/corpus/fuzz_args" \
    "$here/regressions"
run fuzz_diff_replay "$dir/fuzz_diff_replay" "$here/corpus/fuzz_diff" \
    "$here/regressions"
run fuzz_memory_replay "$dir/fuzz_memory_replay" "$here/corpus/fuzz_memory" \
    "$here/regressions"
exit $status
