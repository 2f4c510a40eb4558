#!/bin/sh
# SPDX-License-Identifier: MIT
# run-on-gpu.sh - the Python package on a machine with an NVIDIA GPU and a
# python3 that has torch (with CUDA):
#
#     python/run-on-gpu.sh
#
# It configures and builds the library with CUDA in its own build folder,
# then runs with that build's shared library:
#   1. the pytest suite (every test on CPU and CUDA tensors, CPU vs CUDA
#      bit for bit, torch's current stream, deferred errors, CUDA graph
#      capture and replay, torch.library opcheck and torch.compile);
#   2. the example MoE layer on CUDA, checked against its dense reference;
#   3. bench_overhead.py: what the Python layer adds to a call of the
#      compat functions at decode sizes (target: under 10 us), and the
#      device time of each;
# and prints a summary table last. Logs go to $OUT (or ./gpu-python-results).
#
# Knobs (environment):
#   PYTHON            the interpreter (default: python3)
#   MOES_CUDA_ARCH    architectures to build (default 90; "auto" = all)
#   MOES_BUILD_DIR    build folder (default /tmp/moes-gpu-python-build)
#   MOES_STEP_TIMEOUT seconds each step may take (default 600)
#   MAKE_JOBS         parallel make jobs (default: the number of CPUs)
set -u

src=$(cd "$(dirname "$0")/.." && pwd)
out=${OUT:-$(pwd)/gpu-python-results}
build=${MOES_BUILD_DIR:-/tmp/moes-gpu-python-build}
arch=${MOES_CUDA_ARCH:-90}
step_timeout=${MOES_STEP_TIMEOUT:-600}
jobs=${MAKE_JOBS:-$(nproc 2>/dev/null || echo 4)}
python=${PYTHON:-python3}
mkdir -p "$out" "$build"
. "$src/tests/gpu/gpu_steps.sh"

step() {
    log=$1
    shift
    timeout "$step_timeout" "$@" >"$out/$log" 2>&1
}

ensure_configure "Python GPU summary"
arch_flag=$(cuda_arch_flag "$arch")
(
    cd "$build" &&
    "$src/configure" --with-cuda --enable-shared "$arch_flag" \
        PYTHON="$(command -v "$python")" &&
    make -j"$jobs"
) >"$out/build.log" 2>&1
if [ $? -ne 0 ]; then
    add "build" "FAILED (see build.log)"
    tail -30 "$out/build.log"
    print_summary "Python GPU summary"
    exit 1
fi
dlname=$(sed -n "s/^dlname='\(.*\)'$/\1/p" "$build/lib/libmoescatter.la")
MOESCATTER_LIBRARY="$build/lib/.libs/$dlname"
PYTHONPATH="$src/python${PYTHONPATH:+:$PYTHONPATH}"
PYTHONDONTWRITEBYTECODE=1
export MOESCATTER_LIBRARY PYTHONPATH PYTHONDONTWRITEBYTECODE
add "build" "ok ($MOESCATTER_LIBRARY)"
add "python, torch" "$("$python" -c 'import sys, torch; print(sys.version.split()[0], torch.__version__, "cuda", torch.version.cuda, torch.cuda.get_device_name(0) if torch.cuda.is_available() else "(no GPU seen)")' 2>&1 | tail -1)"
status=0

# ---------------------------------------------------------------- 1. pytest
step pytest.log "$python" -m pytest -p no:cacheprovider -q -rs \
    --junitxml="$out/junit.xml" "$src/python/tests"
rc=$?
line=$(grep -a -E '(passed|failed|error)' "$out/pytest.log" | tail -1)
add "pytest (CPU and CUDA tensors)" "${line:-did not finish} (exit $rc)"
skipped=$(grep -a -c '^SKIPPED' "$out/pytest.log")
add "  skip reasons (lines)" "$skipped, see pytest.log"
[ $rc -eq 0 ] || status=1

# ---------------------------------------------------------------- 2. example
step example.log "$python" "$src/python/examples/moe_layer.py" --device cuda
rc=$?
add "examples/moe_layer.py on CUDA" "$(tail -1 "$out/example.log") (exit $rc)"
[ $rc -eq 0 ] || status=1

# ---------------------------------------------------------------- 3. overhead
step overhead.log "$python" "$src/python/bench_overhead.py" --device cuda \
    --json "$out/overhead.json"
rc=$?
add "bench_overhead.py (exit $rc)" "see overhead.log:"
while IFS= read -r l; do
    add "" "$l"
done <<LINES
$(cat "$out/overhead.log")
LINES
[ $rc -eq 0 ] || status=1

print_summary "Python GPU summary" | tee "$out/summary.txt"
exit $status
