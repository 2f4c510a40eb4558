#!/bin/sh
# SPDX-License-Identifier: MIT
# bench-on-gpu.sh - the performance cases of the CUDA backend, on a GPU,
# with the targets beside the figures.
#
#     tests/gpu/bench-on-gpu.sh BUILD_DIR
#
# BUILD_DIR is a configured CUDA build (run-on-gpu.sh leaves one in
# /tmp/moes-gpu-build), or any folder holding tools/moescatter and
# tests/gpu/graph_bench already built (both link the library statically,
# so they can be built elsewhere and carried). In a configured build both
# are brought up to date first: graph_bench is built only on demand, so
# a plain make leaves an old one linked against an old library.
#
# Times with `moescatter bench` (each call between its own events, the
# 1 GiB copy of the same run as the yardstick; the prefill-sized cases
# behind a fill that clears the L2, so that the figure is the call's time
# on the device, and again on an idle device, the host's launch included;
# the single-call decode cases on an idle device only) the DeepSeek-V3 layer:
# 4096-token prefill over 256 experts, 32768 received tokens of EP8
# prefill, 128-token decode, 1024 received tokens of EP8 decode; then
# graph_bench for the two decode cases back to back, replayed from a CUDA
# graph and as single calls, each beside a device copy of the bytes the
# call moves, timed the same ways (the decode targets' yardstick: a call
# that moves those bytes cannot beat it by much); then the other presets
# and layouts at 4096 tokens, and 65536 experts against 256 at the same
# bytes. Beside each case behind the fill, a device copy of as many
# bytes as each call moves, timed the same way (copy-sc, copy-ga): the
# fraction of the 1 GiB copy that a call of that size can reach. Logs go
# to $OUT (or ./gpu-results); the
# last lines are the table of figures and targets.
set -u
build=${1:-/tmp/moes-gpu-build}
out=${OUT:-$(pwd)/gpu-results}
mkdir -p "$out"
tool="$build/tools/moescatter"
graph="$build/tests/gpu/graph_bench"
if [ -f "$build/Makefile" ]; then
    { make -C "$build" && make -C "$build/tests/gpu" graph_bench; } \
        >"$out/bench-build.log" 2>&1 || {
        echo "moescatter, graph_bench: build FAILED (see bench-build.log)"
        tail -20 "$out/bench-build.log"
        exit 1
    }
fi
for p in "$tool" "$graph"; do
    [ -x "$p" ] || { echo "bench-on-gpu.sh: no $p"; exit 1; }
done
status=0
log="$out/bench.log"
: >"$log"

# run_case NAME ARGS...: one bench run; its table goes to bench.log under
# a "######## NAME" line.
run_case() {
    name=$1
    shift
    echo "######## $name: moescatter bench $*" >>"$log"
    "$tool" bench --backend cuda "$@" >>"$log" 2>&1 || status=1
}
run_case prefill --preset deepseek-v3 --tokens 4096 --iters 100
run_case ep8-prefill --preset deepseek-v3-ep8 --tokens 32768 --iters 50
run_case prefill-idle --preset deepseek-v3 --tokens 4096 --iters 100 --idle
run_case ep8-prefill-idle --preset deepseek-v3-ep8 --tokens 32768 --iters 50 --idle
# The single-call targets count the launch: these run on an idle device.
run_case decode --preset deepseek-v3 --tokens 128 --iters 500 --idle
run_case ep8-decode --preset deepseek-v3-ep8 --tokens 1024 --iters 500 --idle
run_case qwen3 --preset qwen3-30b-a3b --tokens 4096 --iters 100
run_case mixtral --preset mixtral --tokens 4096 --iters 100
run_case ue8m0 --preset deepseek-v3 --tokens 4096 --ue8m0 --iters 100
run_case grouped --preset deepseek-v3 --tokens 4096 --layout grouped --iters 100
run_case masked --preset deepseek-v3 --tokens 4096 --layout masked --iters 100
# The expert count at the same bytes: 256 and 65536 experts, alignment 1
# (at 128 the rows of 65536 experts' padding would not fit).
for e in 256 65536; do
    run_case "experts-$e" --preset deepseek-v3 --tokens 4096 --experts $e \
        --alignment 1 --iters 100
done
for c in "idx-decode:deepseek-v3:128" "idx-ep8-decode:deepseek-v3-ep8:1024" \
         "idx-prefill:deepseek-v3:4096" "idx-ep8-prefill:deepseek-v3-ep8:32768"; do
    id=${c%%:*}; rest=${c#*:}
    run_case "$id" --preset "${rest%%:*}" --tokens "${rest#*:}" --index-only \
        --alignment 64 --iters 300 --idle
done
"$graph" >"$out/graph_bench.log" 2>&1 || status=1
# The same with one input set: every call finds its inputs in L2, as when
# the kernel that wrote them ran just before it (the rows below the
# targets' table).
"$graph" 1 >"$out/graph_bench_l2.log" 2>&1 || status=1
cat "$log" "$out/graph_bench.log" "$out/graph_bench_l2.log"

# field CASE CALL COLUMN: a column of a call's row in a case's table
# (2 median ms, 3 min ms, 4 max ms, 7 fraction of the copy).
field() {
    awk -v c="######## $1:" -v call="$2" -v col="$3" '
        index($0, c) == 1 { on = 1; next }
        /^########/ { on = 0 }
        on && $1 == call { print $col; exit }' "$log"
}
us() { awk -v ms="$1" 'BEGIN { if (ms == "") print "-"; else printf "%.1f us", ms * 1000 }'; }
pct() { awk -v f="$1" 'BEGIN { if (f == "") print "-"; else printf "%.0f%%", f * 100 }'; }
# expert_ratio CALL: CALL's median at 65536 experts over its median at 256.
expert_ratio() {
    awk -v a="$(field experts-65536 "$1" 2)" -v b="$(field experts-256 "$1" 2)" \
        'BEGIN { if (a == "" || b == "") print "-"; else printf "%.2fx (%.1f / %.1f us)", a / b, a * 1000, b * 1000 }'
}
# graph CASE CALL [LOG]: the graph replay time from graph_bench's line for
# CASE (LOG: graph_bench.log, or graph_bench_l2.log).
graph() {
    sed -n "s/^graph_bench: $1 .*$2 [0-9.]* us back to back, \([0-9.]*\) us from a graph.*/\1 us/p" \
        "$out/${3:-graph_bench.log}" | head -1
}
# graph_index CASE: graph_bench's replay time of the index-only CASE.
graph_index() {
    sed -n "s/^graph_bench: index-only $1 .* \([0-9.]*\) us from a graph.*/\1 us/p" \
        "$out/graph_bench.log" | head -1
}
# graph_copy CASE CALL [single]: the replay time of the device copy that
# moves the bytes of CALL (the decode targets' yardstick), or with
# `single` its time as a single call (the single-call targets'
# yardstick: its launch and the host's part of it included).
graph_copy() {
    sed -n "s/^graph_bench: $1 .*copies of the same bytes: .*$2's ([0-9.]* MB) [0-9.]* us back to back, \([0-9.]*\) us from a graph, \([0-9.]*\) us a single call.*/\1 \2/p" \
        "$out/graph_bench.log" | head -1 |
        awk -v single="${3:-}" '{ print (single == "" ? $1 : $2) " us" }'
}
# graph_floor CASE: graph_bench's floor for CASE's scatter (its routing
# alone, plus a memset of its placed rows, less an empty call's memset).
graph_floor() {
    sed -n "s/^graph_bench: $1 .*so a floor of \([0-9.]*\) us from a graph.*/\1 us/p" \
        "$out/graph_bench.log" | head -1
}
copy=$(sed -n 's/^copy .* \([0-9.]*\) GB\/s (bytes read + written).*/\1/p' "$log" | head -1)

row() {
    printf '%-34s %-22s %-22s %-22s %-22s\n' "$@"
}
{
    echo
    echo "==================== CUDA figures and targets ===================="
    echo "device: $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null | head -1); copy yardstick ${copy:-?} GB/s (1 GiB, first case)"
    row "case" "scatter" "target" "gather" "target"
    for c in "prefill:prefill 4096:<= 75 us (>= 85%):<= 131 us (>= 95%)" \
             "ep8-prefill:EP8 prefill 32768:<= 120 us (>= 80%):<= 245 us (>= 90%)"; do
        id=${c%%:*}; rest=${c#*:}; name=${rest%%:*}; rest=${rest#*:}
        ts=${rest%%:*}; tg=${rest#*:}
        row "$name" "$(us "$(field "$id" scatter 2)") ($(pct "$(field "$id" scatter 7)"))" "$ts" \
            "$(us "$(field "$id" gather 2)") ($(pct "$(field "$id" gather 7)"))" "$tg"
        row "  idle device, launch included" "$(us "$(field "$id-idle" scatter 2)") ($(pct "$(field "$id-idle" scatter 7)"))" "-" \
            "$(us "$(field "$id-idle" gather 2)") ($(pct "$(field "$id-idle" gather 7)"))" "-"
        row "  copy of the same bytes" "$(us "$(field "$id" copy-sc 2)") ($(pct "$(field "$id" copy-sc 7)"))" "-" \
            "$(us "$(field "$id" copy-ga 2)") ($(pct "$(field "$id" copy-ga 7)"))" "-"
    done
    row "decode 128, graph replay" "$(graph decode scatter)" "<= 6 us" "$(graph decode gather)" "<= 5 us"
    row "EP8 decode 1024, graph replay" "$(graph "EP8 decode" scatter)" "<= 7 us" "$(graph "EP8 decode" gather)" "<= 7 us"
    row "decode 128, copy of same bytes" "$(graph_copy decode scatter)" "-" "$(graph_copy decode gather)" "-"
    row "EP8 decode 1024, copy, same bytes" "$(graph_copy "EP8 decode" scatter)" "-" "$(graph_copy "EP8 decode" gather)" "-"
    row "decode 128, floor (route + store)" "$(graph_floor decode)" "-" "-" "-"
    row "EP8 decode 1024, floor, the same" "$(graph_floor "EP8 decode")" "-" "-" "-"
    row "decode 128, graph, inputs in L2" "$(graph decode scatter graph_bench_l2.log)" "-" "$(graph decode gather graph_bench_l2.log)" "-"
    row "EP8 decode 1024, graph, in L2" "$(graph "EP8 decode" scatter graph_bench_l2.log)" "-" "$(graph "EP8 decode" gather graph_bench_l2.log)" "-"
    row "decode 128, single call" "$(us "$(field decode scatter 2)")" "<= 12 us" "$(us "$(field decode gather 2)")" "<= 10 us"
    row "EP8 decode 1024, single call" "$(us "$(field ep8-decode scatter 2)")" "<= 12 us" "$(us "$(field ep8-decode gather 2)")" "<= 10 us"
    row "decode 128, copy, single call" "$(graph_copy decode scatter single)" "-" "$(graph_copy decode gather single)" "-"
    row "EP8 decode 1024, copy, single call" "$(graph_copy "EP8 decode" scatter single)" "-" "$(graph_copy "EP8 decode" gather single)" "-"
    for c in qwen3 mixtral ue8m0 grouped masked; do
        row "$c 4096 (of copy)" "$(pct "$(field $c scatter 7)")" ">= 80%" "$(pct "$(field $c gather 7)")" ">= 80%"
        row "  copy of the same bytes" "$(pct "$(field $c copy-sc 7)") ($(us "$(field $c copy-sc 2)"))" "-" \
            "$(pct "$(field $c copy-ga 7)") ($(us "$(field $c copy-ga 2)"))" "-"
    done
    row "E 65536 / E 256, 4096 (A 1)" "$(expert_ratio scatter)" "<= 1.5x" "$(expert_ratio gather)" "<= 1.5x"
    echo
    row "index-only scatter (A 64)" "single call" "graph replay" "target (graph)"
    for c in "idx-decode:decode 128:< 5 us" "idx-ep8-decode:EP8 decode 1024:< 5 us" \
             "idx-prefill:prefill 4096:< 15 us" "idx-ep8-prefill:EP8 prefill 32768:< 15 us"; do
        id=${c%%:*}; rest=${c#*:}; name=${rest%%:*}; target=${rest#*:}
        row "$name" "$(us "$(field "$id" scatter 2)")" "$(graph_index "$name")" "$target"
    done
} | tee "$out/bench-summary.txt"
exit $status
