#!/bin/sh
# SPDX-License-Identifier: MIT
# bench-on-gpu.sh - the performance cases of the CUDA backend, on a GPU.
#
#     tests/gpu/bench-on-gpu.sh BUILD_DIR
#
# BUILD_DIR is a configured CUDA build (run-on-gpu.sh leaves one in
# /tmp/moes-gpu-build). Times with `moescatter bench` (each call between
# its own events, the copy bandwidth of the same run) the DeepSeek-V3
# layer: 4096-token prefill over 256 experts, 32768 received tokens of
# EP8 prefill, 128-token decode, 1024 received tokens of EP8 decode; then
# graph_bench for the two decode cases back to back and from a CUDA graph.
# Logs go to $OUT (or ./gpu-results); the last lines are a summary.
set -u
build=${1:-/tmp/moes-gpu-build}
out=${OUT:-$(pwd)/gpu-results}
mkdir -p "$out"
tool="$build/tools/moescatter"
make -C "$build/tests/gpu" graph_bench >"$out/bench-build.log" 2>&1 || {
    echo "graph_bench: build FAILED (see bench-build.log)"
    tail -20 "$out/bench-build.log"
    exit 1
}
status=0
run_case() {
    name=$1
    shift
    echo "######## $name: moescatter bench $*" >>"$out/bench.log"
    "$tool" bench --backend cuda "$@" >>"$out/bench.log" 2>&1 || status=1
}
run_case "prefill 4096" --preset deepseek-v3 --tokens 4096 --iters 100
run_case "EP8 prefill 32768" --preset deepseek-v3-ep8 --tokens 32768 --iters 50
run_case "decode 128" --preset deepseek-v3 --tokens 128 --iters 500
run_case "EP8 decode 1024" --preset deepseek-v3-ep8 --tokens 1024 --iters 500
"$build/tests/gpu/graph_bench" >"$out/graph_bench.log" 2>&1 || status=1
cat "$out/bench.log" "$out/graph_bench.log"
exit $status
