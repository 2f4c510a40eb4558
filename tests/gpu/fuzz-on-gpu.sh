#!/bin/sh
# SPDX-License-Identifier: MIT
# fuzz-on-gpu.sh - the GPU half of the fuzz suite, on a machine with an
# NVIDIA GPU, its driver and the CUDA toolkit:
#
#     tests/gpu/fuzz-on-gpu.sh [SECONDS]        (default 540)
#     tests/gpu/fuzz-on-gpu.sh --sanitize-only   (step 1 only)
#     tests/gpu/fuzz-on-gpu.sh --fuzz-only [SECONDS]   (step 2 only)
#
#   1. compute-sanitizer memcheck, racecheck, synccheck and initcheck over
#      fuzz_diff_replay: every file of the fuzz_diff seed corpus and of
#      tests/fuzz/regressions, each run on the oracle, the CPU backend and
#      the CUDA backend, compared bit for bit (MOES_FUZZ_REQUIRE_CUDA=1:
#      a run where CUDA does not open fails);
#   2. CUDA against the CPU and the oracle on fuzz-generated cases for
#      SECONDS: fuzz_diff built with clang's libFuzzer and the CUDA
#      backend linked in (run-fuzzers.sh with FUZZ_CUDA), or, where clang
#      cannot build libFuzzer targets, the same case generator through
#      `moescatter check --backend cuda --time SECONDS`.
# It prints a summary table last; logs go to $OUT (or ./gpu-results).
#
# Step 2 keeps its libFuzzer corpus in MOES_FUZZ_WORK (default
# /tmp/moes-gpu-fuzz), so that a second run on the same machine goes on
# from where the first stopped; only logs are written to $OUT.
#
# It builds in MOES_BUILD_DIR (default /tmp/moes-gpu-build, the folder
# run-on-gpu.sh uses, so a build left there by it is reused) for
# MOES_CUDA_ARCH (default 90).
set -u

src=$(cd "$(dirname "$0")/../.." && pwd)
out=${OUT:-$(pwd)/gpu-results}
build=${MOES_BUILD_DIR:-/tmp/moes-gpu-build}
arch=${MOES_CUDA_ARCH:-90}
jobs=${MAKE_JOBS:-$(nproc 2>/dev/null || echo 4)}
work=${MOES_FUZZ_WORK:-/tmp/moes-gpu-fuzz}
seconds=540
sanitize=yes
fuzz=yes
case "${1:-}" in
--sanitize-only) fuzz=no; shift ;;
--fuzz-only) sanitize=no; shift ;;
esac
case "${1:-}" in
'') ;;
*[!0-9]*)
    echo "usage: $0 [--sanitize-only | --fuzz-only] [SECONDS]" >&2
    exit 2
    ;;
*) seconds=$1 ;;
esac
mkdir -p "$out" "$build"
step_timeout=900
. "$src/tests/gpu/gpu_steps.sh"

# ---------------------------------------------------------------- build
ensure_configure "GPU fuzz summary"
arch_flag=$(cuda_arch_flag "$arch")
(
    cd "$build" &&
    { [ -f Makefile ] || "$src/configure" --with-cuda --enable-werror "$arch_flag"; } &&
    make -j"$jobs" &&
    make -j"$jobs" -C tests/fuzz fuzz_diff_replay
) >"$out/fuzz-build.log" 2>&1
if [ $? -ne 0 ] || [ ! -f "$build/gpu/moes_kernels_fatbin.c" ]; then
    add "build" "FAILED (see fuzz-build.log; a CUDA build is needed)"
    tail -30 "$out/fuzz-build.log"
    print_summary "GPU fuzz summary"
    exit 1
fi
add "build" "ok (sm: $(sed -n 's/^MOES_CUDA_ARCHS = //p' "$build/Makefile"))"
status=0
MOES_FUZZ_REQUIRE_CUDA=1
export MOES_FUZZ_REQUIRE_CUDA

# ------------------------------------------------- 1. sanitizers, corpus
replay="$build/tests/fuzz/fuzz_diff_replay"
timeout "$step_timeout" "$replay" >"$out/fuzz-replay.log" 2>&1
rc=$?
paths=$(grep -a '^fuzz_diff: paths:' "$out/fuzz-replay.log" | head -1 |
        sed 's/^fuzz_diff: paths: //')
[ -n "$paths" ] || paths=$(grep -a -m 1 '^FINDING' "$out/fuzz-replay.log")
add "corpus replay, no tool" "$(tail -1 "$out/fuzz-replay.log") (exit $rc)"
add "  paths" "${paths:-?}"
[ $rc -eq 0 ] || status=1
if [ "$sanitize" = yes ]; then
    run_sanitizers ", corpus" fuzz-sanitizers.log \
        's/.*: \([0-9]* files run\).*/\1/p' "$replay" || status=1
fi
# Without a CUDA path there is nothing for step 2 to compare (and every
# input would be "a finding" copied into regressions/).
case "$paths" in
*"cuda on"*) ;;
*)
    add "CUDA vs CPU fuzzing" "NOT RUN: the CUDA path does not open"
    print_summary "GPU fuzz summary" | tee "$out/fuzz-summary.txt"
    exit 1
    ;;
esac
if [ "$fuzz" = no ]; then
    print_summary "GPU fuzz summary" | tee "$out/fuzz-summary.txt"
    exit $status
fi

# ------------------------------------- 2. CUDA vs CPU on generated cases
if FUZZ_OUT="$work" FUZZ_TARGETS=fuzz_diff FUZZ_CUDA="$build" \
        "$src/tests/fuzz/run-fuzzers.sh" --build-only \
        >"$out/fuzz-libfuzzer-build.log" 2>&1; then
    corpus_before=$(ls "$work/corpus/fuzz_diff" 2>/dev/null | wc -l)
    FUZZ_OUT="$work" FUZZ_TARGETS=fuzz_diff FUZZ_CUDA="$build" \
        "$src/tests/fuzz/run-fuzzers.sh" "$seconds" >"$out/fuzz-run.log" 2>&1
    rc=$?
    paths=$(grep -a '^fuzz_diff: paths:' "$work/fuzz_diff.log" |
            head -1 | sed 's/^fuzz_diff: paths: //')
    line=$(grep -a '^fuzz_diff ' "$work/report.txt" | tail -1)
    add "fuzz_diff, $seconds s" "${line:-no report} (exit $rc)"
    add "  (executions exec/s cov ft findings)" ""
    add "  paths" "${paths:-?}"
    add "  corpus in $work" "$corpus_before files before this run"
    cp "$work/fuzz_diff.log" "$out/fuzz_diff.log" 2>/dev/null
else
    # No libFuzzer here: the same generator through the tool.
    timeout $((seconds + 120)) "$build/tools/moescatter" check \
        --backend cuda --time "$seconds" --cases 1000000000 \
        >"$out/fuzz-run.log" 2>&1
    rc=$?
    line=$(grep -a '^check:' "$out/fuzz-run.log" | tail -1)
    add "moescatter check, $seconds s" "${line:-no summary} (exit $rc)"
    add "  (libFuzzer build failed)" "see fuzz-libfuzzer-build.log"
fi
[ $rc -eq 0 ] || status=1

print_summary "GPU fuzz summary" | tee "$out/fuzz-summary.txt"
exit $status
