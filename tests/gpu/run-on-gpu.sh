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
#      start while another stream holds multiprocessors;
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
        caller_memory late_blocks
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
step graph_replay.log "$build/tests/gpu/graph_replay"
rc=$?
line=$(grep -a '^graph_replay:' "$out/graph_replay.log" | tail -1 | sed 's/^graph_replay: //')
add "CUDA graph capture + replay" "${line:-did not finish} (exit $rc)"
[ $rc -eq 0 ] || status=1

# ---------------------------------------------------------------- 3b. caller's memory
step caller_memory.log "$build/tests/gpu/caller_memory"
rc=$?
line=$(grep -a '^caller_memory:' "$out/caller_memory.log" | tail -1 | sed 's/^caller_memory: //')
add "pointer kinds, caller's workspace" "${line:-did not finish} (exit $rc)"
[ $rc -eq 0 ] || status=1

# ---------------------------------------------------------------- 3c. late blocks
step late_blocks.log "$build/tests/gpu/late_blocks"
rc=$?
line=$(grep -a '^late_blocks:' "$out/late_blocks.log" | tail -1 | sed 's/^late_blocks: //')
add "failing calls beside a busy stream" "${line:-did not finish} (exit $rc)"
[ $rc -eq 0 ] || status=1

# ---------------------------------------------------------------- 4. sanitizers
step sanitize_plain.log "$build/tests/gpu/sanitize_cases"
rc=$?
line=$(grep -a '^sanitize_cases:' "$out/sanitize_plain.log" | tail -1 | sed 's/^sanitize_cases: //')
add "sanitize_cases (no tool)" "${line:-did not finish} (exit $rc)"
[ $rc -eq 0 ] || status=1
step sanitize_large.log "$build/tests/gpu/sanitize_cases" large
rc=$?
line=$(grep -a '^sanitize_cases:' "$out/sanitize_large.log" | tail -1 | sed 's/^sanitize_cases: //')
add "64-bit offsets (> 2^31 elements)" "${line:-did not finish} (exit $rc)"
[ $rc -eq 0 ] || status=1
run_sanitizers "" sanitizers.log "" "$build/tests/gpu/sanitize_cases" ||
    status=1

print_summary "GPU summary" | tee "$out/summary.txt"
exit $status
