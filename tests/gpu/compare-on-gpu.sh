#!/bin/sh
# SPDX-License-Identifier: MIT
# compare-on-gpu.sh - two or more builds of the CUDA backend timed
# against each other on one GPU, in alternating rounds.
#
#     tests/gpu/compare-on-gpu.sh [-r ROUNDS] BUILD_DIR BUILD_DIR...
#
# Each BUILD_DIR holds tools/moescatter (and, for the decode rows,
# tests/gpu/graph_bench), as for bench-on-gpu.sh; both link the library
# statically, so builds of different trees can sit side by side. One
# build's figures mean little beside another's from a different run (a
# warm card, a neighbour's load, another card): each round runs every
# build once, case by case, and the rounds reverse the builds' order, so
# that drift over the run shows as a spread within a build rather than
# as a difference between builds. The cases are the prefill-sized ones of
# bench-on-gpu.sh behind its fill (DeepSeek-V3 4096 tokens, with UE8M0
# scales too, EP8 prefill 32768, Qwen3-30B-A3B and Mixtral 4096), then
# graph_bench's decode rows once a build. Printed: a line a build and
# case with its scatter and gather medians (us) of every round, and the
# fraction of the run's 1 GiB copy of the first round.
set -u
rounds=2
if [ "${1:-}" = "-r" ]; then
    rounds=${2:?"-r needs a number"}
    shift 2
fi
[ $# -ge 2 ] || { echo "usage: compare-on-gpu.sh [-r ROUNDS] BUILD_DIR BUILD_DIR..."; exit 2; }
for b in "$@"; do
    [ -x "$b/tools/moescatter" ] || { echo "compare-on-gpu.sh: no $b/tools/moescatter"; exit 2; }
done
work=$(mktemp -d) || exit 2
trap 'rm -rf "$work"' EXIT
status=0

# The builds in order, or reversed for odd rounds.
order() {
    if [ $(($1 % 2)) -eq 0 ]; then
        shift
        printf '%s\n' "$@"
    else
        shift
        printf '%s\n' "$@" | sed -n '1!G;h;$p'
    fi
}

cases="ds:--preset deepseek-v3 --tokens 4096 --iters 100
ue8m0:--preset deepseek-v3 --tokens 4096 --ue8m0 --iters 100
ep8:--preset deepseek-v3-ep8 --tokens 32768 --iters 50
qwen3:--preset qwen3-30b-a3b --tokens 4096 --iters 100
mixtral:--preset mixtral --tokens 4096 --iters 100"

r=0
while [ $r -lt "$rounds" ]; do
    order $r "$@" > "$work/order"
    while read -r b; do
        echo "$cases" | while IFS=: read -r id args; do
            # shellcheck disable=SC2086
            "$b/tools/moescatter" bench --backend cuda $args \
                > "$work/out" 2>&1 || echo "FAILED" >> "$work/failed"
            awk -v b="$b" -v id="$id" -v r="$r" '
                $1 == "scatter" || $1 == "gather" {
                    printf "%s\t%s\t%s\t%s\t%.1f\t%s\n", b, id, $1, r, $2 * 1000, $7
                }' "$work/out" >> "$work/times"
        done
    done < "$work/order"
    r=$((r + 1))
done
[ -f "$work/failed" ] && status=1

# One line a build and case: every round's medians, the first round's
# fraction of the copy.
printf '%-24s %-8s %-34s %s\n' "build" "case" "scatter us (of copy)" "gather us (of copy)"
for b in "$@"; do
    for id in ds ue8m0 ep8 qwen3 mixtral; do
        line=$(awk -F'\t' -v b="$b" -v id="$id" '
            $1 == b && $2 == id {
                t[$3] = t[$3] (t[$3] == "" ? "" : " ") $5
                if ($4 == 0) f[$3] = $6
            }
            END {
                printf "%-34s %s", t["scatter"] " (" f["scatter"] ")",
                    t["gather"] " (" f["gather"] ")"
            }' "$work/times")
        printf '%-24s %-8s %s\n' "$b" "$id" "$line"
    done
done
for b in "$@"; do
    [ -x "$b/tests/gpu/graph_bench" ] || continue
    "$b/tests/gpu/graph_bench" 2>&1 |
        grep -a '^graph_bench: \(decode\|EP8 decode\)' | grep -v copies |
        sed "s|^graph_bench:|$b:|" || status=1
done
exit $status
