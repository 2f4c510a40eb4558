#!/bin/sh
# SPDX-License-Identifier: MIT
# run-fuzzers.sh [SECONDS] - builds the libFuzzer targets with clang and
# runs each for SECONDS (default 60), then prints per target: executions,
# exec/s, coverage (cov and ft of libFuzzer's last status line) and
# findings. Exits 1 on any finding, after copying each crashing input into
# tests/fuzz/regressions/ as TARGET-KIND-HASH (replay it with the target's
# replay program, or with the target itself: fuzz-out/TARGET FILE).
#
#   run-fuzzers.sh --build-only     only build (what `make fuzzers` runs)
#
# Environment:
#   FUZZ_CC       the compiler (default clang); it must support
#                 -fsanitize=fuzzer,address,undefined, and -fopenmp for
#                 threaded runs (else the library is built without OpenMP)
#   FUZZ_OUT      where binaries, working corpora, logs and findings go
#                 (default ./fuzz-out)
#   FUZZ_TARGETS  the targets to build and run (default: fuzz_args fuzz_diff
#                 fuzz_memory)
#   FUZZ_FLAGS    more libFuzzer flags for every run (e.g. -jobs=2)
#   FUZZ_CUDA     a build tree configured and built with CUDA: link the
#                 CUDA backend (gpu/*.c and that tree's embedded kernels)
#                 instead of the stub, so that fuzz_diff compares the GPU
#                 too where a device is usable. With
#                 MOES_FUZZ_REQUIRE_CUDA=1 a run where CUDA does not open
#                 is a finding.
#
# Each run starts from the committed seed corpus and the regressions, and
# writes new inputs only to FUZZ_OUT/corpus/TARGET.
set -u

build_only=no
seconds=60
case "${1:-}" in
--build-only) build_only=yes ;;
'') ;;
*[!0-9]*) echo "usage: $0 [SECONDS | --build-only]" >&2; exit 2 ;;
*) seconds=$1 ;;
esac

here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
cc=${FUZZ_CC:-clang}
out=${FUZZ_OUT:-$PWD/fuzz-out}
targets=${FUZZ_TARGETS:-fuzz_args fuzz_diff fuzz_memory}
mkdir -p "$out/obj" || exit 2
out=$(cd "$out" && pwd)

# The project's flags (common.am), with the sanitizers. Contraction stays
# off: the oracle and the backend must round each fp32 operation alike.
cflags="-std=c11 -ffp-contract=off -g -O1 -fno-omit-frame-pointer \
 -Wall -Wextra -D_POSIX_C_SOURCE=200809L \
 -I$top/lib -I$top/tests/kit -I$here \
 -fsanitize=address,undefined -fno-sanitize-recover=undefined"

probe="$out/obj/probe.c"
printf '%s\n' '#include <stddef.h>' '#include <stdint.h>' \
    'int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n)' \
    '{ (void)d; (void)n; return 0; }' > "$probe"
if ! $cc -fsanitize=fuzzer,address,undefined "$probe" \
        -o "$out/obj/probe" 2>"$out/obj/probe.log"; then
    echo "$0: $cc cannot build libFuzzer targets" \
         "(-fsanitize=fuzzer,address,undefined):" >&2
    cat "$out/obj/probe.log" >&2
    exit 2
fi
# OpenMP (LLVM's libomp: Debian's libomp-dev) lets the CPU backend cut the
# tokens into parts as in production; without it the library still builds
# and runs, single-threaded.
openmp=-fopenmp
if ! $cc -fopenmp -fsanitize=fuzzer,address,undefined "$probe" \
        -o "$out/obj/probe" 2>"$out/obj/probe.log"; then
    echo "$0: warning: $cc -fopenmp does not link (libomp missing?);" \
         "building without OpenMP, single-threaded" >&2
    openmp=
fi
cflags="$cflags $openmp"

# The library as the fuzzers see it: lib/, the CPU backend, and the CUDA
# stub (the CUDA backend needs nvcc; the replay programs of `make check`
# cover it on a GPU machine).
lib_core_sources="$top/lib/*.c $top/gpu/gpu_stub.c"
lib_loop_sources="$top/cpu/*.c"
link_cuda=
if [ -n "${FUZZ_CUDA:-}" ]; then
    fatbin_c="$FUZZ_CUDA/gpu/moes_kernels_fatbin.c"
    if [ ! -f "$fatbin_c" ]; then
        echo "$0: FUZZ_CUDA=$FUZZ_CUDA: no $fatbin_c" \
             "(configure with CUDA and run make there first)" >&2
        exit 2
    fi
    fatbin_c=$(cd "$(dirname "$fatbin_c")" && pwd)/moes_kernels_fatbin.c
    # Every host file of gpu/ but the stub, which stands in for them (and
    # the generated kernels, which an in-tree build leaves there too).
    lib_core_sources="$top/lib/*.c $fatbin_c"
    for f in "$top"/gpu/*.c; do
        case "$f" in
        */gpu_stub.c | */moes_kernels_fatbin.c) ;;
        *) lib_core_sources="$lib_core_sources $f" ;;
        esac
    done
    link_cuda=-ldl
    # The CUDA driver maps memory where ASan keeps its shadow gap.
    ASAN_OPTIONS=${ASAN_OPTIONS:+$ASAN_OPTIONS:}protect_shadow_gap=0
    export ASAN_OPTIONS
fi
kit_sources="$top/tests/kit/*.c"
echo "building with $cc into $out"
rm -f "$out"/obj/*.o
# The kit (oracle, case generator) and the output guards get the
# sanitizers but no coverage instrumentation: they are the reference and
# the harness, not the code under test, and their loops would only slow
# the runs and blur the coverage numbers. The CPU backend's files keep
# edge coverage but not the tracing of comparisons, which its loops over
# every element of a buffer would run millions of times a second (most
# of a run's time went there); the argument checks of lib/ keep both, as
# the comparisons there are the ones the fuzzer must learn to pass.
(
    cd "$out/obj" &&
    # shellcheck disable=SC2086
    $cc $cflags -fsanitize=fuzzer-no-link -c $lib_core_sources &&
    # shellcheck disable=SC2086
    $cc $cflags -fsanitize=fuzzer-no-link -fno-sanitize-coverage=trace-cmp \
        -c $lib_loop_sources &&
    # shellcheck disable=SC2086
    $cc $cflags -c $kit_sources "$here/fuzz_guard.c"
) || exit 2
mkdir -p "$out/obj-targets" || exit 2
for t in $targets; do
    $cc $cflags -fsanitize=fuzzer -c "$here/$t.c" -o "$out/obj-targets/$t.o" &&
    $cc $openmp -fsanitize=fuzzer,address,undefined \
        "$out"/obj/*.o "$out/obj-targets/$t.o" $link_cuda -o "$out/$t" || exit 2
done
[ "$build_only" = yes ] && exit 0

# Threads sleep between parallel regions instead of spinning (the
# targets ask for it too; this covers OpenMP starting earlier).
OMP_WAIT_POLICY=passive
export OMP_WAIT_POLICY
# LLVM's OpenMP runtime (14) leaks the thread descriptors of a team that
# changed size (two threads, then seven: a program of two parallel loops
# shows it), and LeakSanitizer reports that at exit as a finding of
# whichever input ran last. It is the runtime's, not the library's:
# suppressed, for libomp only.
printf 'leak:libomp.so\n' > "$out/lsan.supp"
LSAN_OPTIONS=${LSAN_OPTIONS:+$LSAN_OPTIONS:}suppressions=$out/lsan.supp
export LSAN_OPTIONS

status=0
report="$out/report.txt"
printf '%-10s %12s %8s %6s %7s %9s\n' target executions exec/s cov ft \
    findings > "$report"
for t in $targets; do
    work="$out/corpus/$t"
    art="$out/findings/$t"
    log="$out/$t.log"
    mkdir -p "$work" "$art"
    rm -f "$art"/*
    echo "running $t for $seconds s (log: $log)"
    # shellcheck disable=SC2086
    "$out/$t" -max_total_time="$seconds" -print_final_stats=1 \
        -timeout=25 -max_len=1024 -artifact_prefix="$art/" ${FUZZ_FLAGS:-} \
        "$work" "$here/corpus/$t" "$here/regressions" > "$log" 2>&1
    rc=$?
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n 1)
    cov=$(grep -a -o 'cov: [0-9]*' "$log" | tail -n 1 | cut -d' ' -f2)
    ft=$(grep -a -o 'ft: [0-9]*' "$log" | tail -n 1 | cut -d' ' -f2)
    findings=0
    for f in "$art"/*; do
        [ -f "$f" ] || continue
        findings=$((findings + 1))
        name=$(basename "$f")
        kind=${name%%-*}
        hash=${name#*-}
        cp "$f" "$here/regressions/$t-$kind-$hash"
        echo "FINDING in $t: $here/regressions/$t-$kind-$hash"
    done
    if [ "$rc" -ne 0 ] && [ "$findings" -eq 0 ]; then
        # A crash of libFuzzer itself, or one that left no input.
        findings=1
        echo "FINDING in $t: exit status $rc with no saved input; see $log"
    fi
    if [ "$findings" -gt 0 ]; then
        # What the target and the sanitizers said, and the input itself,
        # so that a log is all a reader needs to replay a finding of a
        # machine that is gone.
        said='^FINDING:|ERROR:|runtime error:|^SUMMARY:|^Base64:'
        frame='^ +#[0-9]+ .* in [A-Za-z_]+ /'
        grep -a -E "$said|$frame" "$log" | head -n 30 | sed 's/^/    /'
    fi
    [ "$findings" -eq 0 ] || status=1
    printf '%-10s %12s %8s %6s %7s %9s\n' "$t" "${execs:-?}" "${rate:-?}" \
        "${cov:-?}" "${ft:-?}" "$findings" >> "$report"
done
cat "$report"
exit $status
