#!/bin/sh
# SPDX-License-Identifier: MIT
# run-on-gpu.sh - everything about the CUDA backend that needs a GPU.
#
# Run from anywhere on a machine with an NVIDIA GPU, its driver, the CUDA
# toolkit (nvcc, compute-sanitizer) and Criterion:
#
#     tests/gpu/run-on-gpu.sh
#
# It configures and builds the library with CUDA in its own build folder,
# then runs:
#   1. the whole Criterion suite (tests/unit) with MOES_BACKEND=cuda;
#   2. diff_cuda: CPU vs CUDA, bit for bit, on random cases of the test kit;
#   3. graph_replay: count + scatter + gather captured in a CUDA graph and
#      replayed with new inputs, compared with the CPU; caller_memory:
#      buffers of every memory kind, the cost of their check, a capture on
#      the caller's workspace; late_blocks: failing calls whose blocks
#      start while another stream holds multiprocessors; error_chain: a
#      deferred data error stops the calls queued after it;
#   4. sanitize_cases alone, then its scenario past 2^31 elements
#      (64-bit offsets), then compute-sanitizer memcheck, racecheck,
#      synccheck and initcheck over sanitize_cases (E = 256 with poisoned
#      workspace and outputs, E = 65536, data-error cases);
# and prints a summary table last. Logs go to $OUT (or ./gpu-results).
#
# Knobs (environment):
#   MOES_CUDA_ARCH    architectures to build (default 90; "auto" = all)
#   MOES_DIFF_CASES   differential cases (default 10000)
#   MOES_BUILD_DIR    build folder (default /tmp/moes-gpu-build)
#   MOES_STEP_TIMEOUT seconds each step may take (default 600)
#   MAKE_JOBS         parallel make jobs (default: the number of CPUs)
set -u

src=$(cd "$(dirname "$0")/../.." && pwd)
out=${OUT:-$(pwd)/gpu-results}
build=${MOES_BUILD_DIR:-/tmp/moes-gpu-build}
arch=${MOES_CUDA_ARCH:-90}
cases=${MOES_DIFF_CASES:-10000}
step_timeout=${MOES_STEP_TIMEOUT:-600}
jobs=${MAKE_JOBS:-$(nproc 2>/dev/null || echo 4)}
mkdir -p "$out" "$build"
. "$src/tests/gpu/gpu_steps.sh"

# A step's command under a time limit, its output in a log.
step() {
    log=$1
    shift
    timeout "$step_timeout" "$@" >"$out/$log" 2>&1
}

# result_step LOG LABEL PROGRAM [ARGS]: a step whose program prints
# "NAME: <result>" last (NAME its file's name); that result (or "did not
# finish") and the exit status go into the summary as LABEL, and a
# failure makes the script's status 1.
result_step() {
    log=$1
    label=$2
    shift 2
    step "$log" "$@"
    rc=$?
    name=$(basename "$1")
    line=$(grep -a "^$name:" "$out/$log" | tail -1 | sed "s/^$name: //")
    add "$label" "${line:-did not finish} (exit $rc)"
    [ $rc -eq 0 ] || status=1
}

# ---------------------------------------------------------------- build
ensure_configure || {
    add "build" "FAILED (autogen.sh, see autogen.log)"
    print_summary "GPU summary"
    exit 1
}
arch_flag="--with-cuda-arch=$arch"
[ "$arch" = auto ] && arch_flag="--with-cuda-arch=all"
(
    cd "$build" &&
    "$src/configure" --with-cuda --enable-werror $arch_flag &&
    make -j"$jobs" &&
    make -j"$jobs" -C tests unit &&
    make -j"$jobs" -C tests/gpu diff_cuda graph_replay sanitize_cases \
        caller_memory late_blocks error_chain
) >"$out/build.log" 2>&1
if [ $? -ne 0 ]; then
    add "build" "FAILED (see build.log)"
    tail -30 "$out/build.log"
    print_summary "GPU summary"
    exit 1
fi
add "build" "ok (sm: $(sed -n 's/^MOES_CUDA_ARCHS = //p' "$build/Makefile"))"
status=0

# ---------------------------------------------------------------- device
if command -v nvidia-smi >/dev/null 2>&1; then
    add "device" "$(nvidia-smi --query-gpu=name,driver_version,memory.total \
                     --format=csv,noheader 2>&1 | head -1)"
fi

# ---------------------------------------------------------------- 1. unit
step unit.log env MOES_BACKEND=cuda "$build/tests/unit"
rc=$?
synthesis=$(grep -a 'Synthesis' "$out/unit.log" | tail -1 | sed 's/.*Synthesis: //')
add "Criterion (MOES_BACKEND=cuda)" "${synthesis:-no synthesis line} (exit $rc)"
[ $rc -eq 0 ] || status=1

# ---------------------------------------------------------------- 2. diff
step diff_cuda.log "$build/tests/gpu/diff_cuda" "$cases"
rc=$?
line=$(grep -a '^diff_cuda:' "$out/diff_cuda.log" | tail -1 | sed 's/^diff_cuda: //')
[ -n "$line" ] || line=$(grep -a '^progress:' "$out/diff_cuda.log" | tail -1 |
                         sed 's/^progress: /stopped after /')
add "CPU vs CUDA differential" "${line:-did not finish} (exit $rc)"
[ $rc -eq 0 ] || status=1

# ---------------------------------------------------------------- 3. graph
result_step graph_replay.log "CUDA graph capture + replay" "$build/tests/gpu/graph_replay"

# ---------------------------------------------------------------- 3b. caller's memory
result_step caller_memory.log "pointer kinds, caller's workspace" "$build/tests/gpu/caller_memory"

# ---------------------------------------------------------------- 3c. late blocks
result_step late_blocks.log "failing calls beside a busy stream" "$build/tests/gpu/late_blocks"
result_step error_chain.log "calls after a deferred error write nothing" "$build/tests/gpu/error_chain"

# ---------------------------------------------------------------- 4. sanitizers
result_step sanitize_plain.log "sanitize_cases (no tool)" "$build/tests/gpu/sanitize_cases"
result_step sanitize_large.log "64-bit offsets (> 2^31 elements)" "$build/tests/gpu/sanitize_cases" large
run_sanitizers "" sanitizers.log "" "$build/tests/gpu/sanitize_cases" ||
    status=1

print_summary "GPU summary" | tee "$out/summary.txt"
exit $status
