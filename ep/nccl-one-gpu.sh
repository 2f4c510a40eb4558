#!/bin/sh
# SPDX-License-Identifier: MIT
# nccl-one-gpu.sh BUILDDIR [CASES]: the ep suite through the NCCL
# transport (one GPU and a one-rank communicator unless MOES_EP_GPUS=N asks
# for N ranks on GPUs 0 .. N-1, a thread each), dispatch and combine timed
# at decode and prefill sizes (time_nccl), then the suite under
# compute-sanitizer memcheck when it is installed. BUILDDIR is a tree
# configured with CUDA and built (make builds the two programs); no MPI
# is needed. NCCL is found as libnccl.so.2, or at $MOES_NCCL_LIBRARY.
set -e
build=$(cd "${1:?usage: nccl-one-gpu.sh BUILDDIR [CASES]}" && pwd)
cases=${2:-150}
out=$build/ep/test_ep_nccl
make -C "$build/ep" test_ep_nccl time_nccl
"$out" "$cases"
# Dispatch and combine timed: the bounded mode's graph replays at decode
# sizes, the exact mode's calls at prefill sizes.
"$build/ep/time_nccl" bounded 128
"$build/ep/time_nccl" exact 4096
if command -v compute-sanitizer >/dev/null 2>&1; then
    # NCCL probes its kernels at init and some calls fail by design there:
    # API errors are not memory errors.
    compute-sanitizer --tool memcheck --report-api-errors no \
        --error-exitcode 1 "$out" 20
fi
