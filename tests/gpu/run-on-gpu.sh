#!/bin/sh
# SPDX-License-Identifier: MIT
# run-on-gpu.sh - everything about the CUDA backend that needs a GPU.
#
# Run from anywhere on a machine with an NVIDIA GPU, its driver and
# compute-sanitizer:
#
#     tests/gpu/run-on-gpu.sh            configure, build, then run
#     tests/gpu/run-on-gpu.sh BUILT      run what BUILT already holds
#
# Without an argument it needs the CUDA toolkit and Criterion too: it
# configures and builds the library with CUDA in its own build folder.
# BUILT is a CUDA build made earlier (this script's, or any configured
# with --with-cuda whose test programs are made), or a folder unpacked
# from tests/gpu/pack-built.sh, so that a machine without nvcc or
# Criterion runs programs built on another one. Then it runs:
#   1. the whole Criterion suite (tests/unit) with MOES_BACKEND=cuda,
#      and the host-process checks (tests/host_process.test: fork, a
#      small thread stack, quiet output, thread counts) on the GPU;
#   2. diff_cuda: CPU vs CUDA, bit for bit, on random cases of the test
#      kit, in MOES_DIFF_JOBS processes started beside step 1;
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
# The performance table is tests/gpu/bench-on-gpu.sh's, on the same
# folder.
#
# Knobs (environment):
#   MOES_CUDA_ARCH    architectures to build (default 90; "auto" = all)
#   MOES_DIFF_CASES   differential cases (default 10000)
#   MOES_DIFF_SEED    the first case's seed (default 1)
#   MOES_DIFF_JOBS    processes sharing the differential cases (default 1)
#   MOES_BUILD_DIR    build folder (default /tmp/moes-gpu-build)
#   MOES_STEP_TIMEOUT seconds each step may take (default 600)
#   MAKE_JOBS         parallel make jobs (default: the number of CPUs)
set -u

src=$(cd "$(dirname "$0")/../.." && pwd)
out=${OUT:-$(pwd)/gpu-results}
build=${MOES_BUILD_DIR:-/tmp/moes-gpu-build}
arch=${MOES_CUDA_ARCH:-90}
cases=${MOES_DIFF_CASES:-10000}
first_seed=${MOES_DIFF_SEED:-1}
diff_jobs=${MOES_DIFF_JOBS:-1}
step_timeout=${MOES_STEP_TIMEOUT:-600}
jobs=${MAKE_JOBS:-$(nproc 2>/dev/null || echo 4)}
built=""
if [ $# -gt 0 ]; then
    built=$(cd "$1" 2>/dev/null && pwd) || {
        echo "run-on-gpu.sh: no folder $1" >&2
        exit 2
    }
    build=$built
fi
mkdir -p "$out" "$build"
out=$(cd "$out" && pwd)
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
if [ -n "$built" ]; then
    add "build" "made earlier: $built"
    # A packed folder carries the unit suite's shared libraries (Criterion
    # and what it links) for a machine that has none.
    if [ -d "$built/runtime-libs" ]; then
        LD_LIBRARY_PATH="$built/runtime-libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
        export LD_LIBRARY_PATH
    fi
else
    ensure_configure "GPU summary"
    arch_flag=$(cuda_arch_flag "$arch")
    (
        cd "$build" &&
        "$src/configure" --with-cuda --enable-werror "$arch_flag" &&
        make -j"$jobs" &&
        make -j"$jobs" -C tests unit host_process &&
        make -j"$jobs" -C tests/gpu $gpu_test_programs
    ) >"$out/build.log" 2>&1
    if [ $? -ne 0 ]; then
        add "build" "FAILED (see build.log)"
        tail -30 "$out/build.log"
        print_summary "GPU summary"
        exit 1
    fi
    add "build" "ok (sm: $(sed -n 's/^MOES_CUDA_ARCHS = //p' "$build/Makefile"))"
fi
status=0

# ---------------------------------------------------------------- device
if command -v nvidia-smi >/dev/null 2>&1; then
    add "device" "$(nvidia-smi --query-gpu=name,driver_version,memory.total \
                     --format=csv,noheader 2>&1 | head -1)"
fi

# ---------------------------------------------------------------- 2. diff, started
# Job j takes its share of the cases from its own first seed, so the
# jobs together check seeds first_seed .. first_seed + cases - 1, each
# once, however many jobs there are.
[ "$diff_jobs" -ge 1 ] 2>/dev/null || diff_jobs=1
per_job=$((cases / diff_jobs))
j=0
while [ $j -lt "$diff_jobs" ]; do
    share=$per_job
    [ $j -eq $((diff_jobs - 1)) ] && share=$((cases - per_job * j))
    timeout "$step_timeout" "$build/tests/gpu/diff_cuda" "$share" \
        $((first_seed + per_job * j)) >"$out/diff_cuda.$j.log" 2>&1 &
    eval "diff_pid_$j=\$!"
    j=$((j + 1))
done

# ---------------------------------------------------------------- 1. unit
step unit.log env MOES_BACKEND=cuda "$build/tests/unit"
rc=$?
synthesis=$(grep -a 'Synthesis' "$out/unit.log" | tail -1 | sed 's/.*Synthesis: //')
add "Criterion (MOES_BACKEND=cuda)" "${synthesis:-no synthesis line} (exit $rc)"
[ $rc -eq 0 ] || status=1

# host_process.test runs ./host_process; with no MOES_BACKEND the
# library picks the GPU.
(cd "$build/tests" && step host_process.log sh "$src/tests/host_process.test")
rc=$?
failed=$(grep -a -c '^FAIL' "$out/host_process.log")
add "host process (fork, stack, threads)" \
    "$(grep -a -c '^ok:' "$out/host_process.log") ok, $failed failed (exit $rc)"
[ $rc -eq 0 ] || status=1

# ---------------------------------------------------------------- 2. diff, collected
# Each job's log ends with "diff_cuda: N cases, D different, E errors",
# or, when the job stopped, with its last "progress:" line of the same
# form; the figures are summed either way, so a stopped job's
# differences still show.
: >"$out/diff_cuda.log"
last_lines=""
j=0
diff_rc=0
while [ $j -lt "$diff_jobs" ]; do
    eval "wait \$diff_pid_$j" || diff_rc=$?
    last_lines="$last_lines$(grep -a -E '^(diff_cuda|progress): [0-9]+ cases' \
                                 "$out/diff_cuda.$j.log" | tail -1)
"
    cat "$out/diff_cuda.$j.log" >>"$out/diff_cuda.log"
    rm -f "$out/diff_cuda.$j.log"
    j=$((j + 1))
done
line=$(printf '%s' "$last_lines" | awk -v jobs="$diff_jobs" '
    NF == 0 { next }
    { n += $2; d += $4; e += $6 }
    /^diff_cuda:/ { done++ }
    END {
        printf "%d cases, %d different, %d errors", n, d, e
        if (done < jobs)
            printf "; STOPPED: %d of %d jobs finished", done, jobs
        else if (jobs > 1)
            printf " (%d jobs)", jobs
    }')
add "CPU vs CUDA differential" "$line (exit $diff_rc)"
[ $diff_rc -eq 0 ] || status=1

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
