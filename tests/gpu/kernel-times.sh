#!/bin/sh
# SPDX-License-Identifier: MIT
# kernel-times.sh - where a call's time goes: each CUDA kernel of the
# DeepSeek-V3 scatter and gather, timed alone by Nsight Compute.
#
#     tests/gpu/kernel-times.sh BUILD_DIR
#
# BUILD_DIR holds tools/moescatter built with CUDA (as for
# bench-on-gpu.sh). For prefill (4096 tokens), EP8 prefill (32768), decode
# (128) and EP8 decode (1024), and the Qwen3 and Mixtral layers at 4096
# tokens, runs `moescatter bench --idle` (no fill between the calls to
# profile too) under ncu and prints
# each kernel's launches and mean duration. ncu runs the kernels one at a
# time with the caches flushed between them, so the durations add up to
# more than a call takes when its launches overlap; they say which kernel
# to work on, not what a call costs. The clocks are left to the GPU
# (--clock-control none), as in production.
set -u
build=${1:-/tmp/moes-gpu-build}
tool="$build/tools/moescatter"
ncu=$(command -v ncu || echo /usr/local/cuda/bin/ncu)
[ -x "$tool" ] || { echo "kernel-times.sh: no $tool"; exit 2; }
[ -x "$ncu" ] || { echo "kernel-times.sh: ncu not found"; exit 2; }
csv=$(mktemp) || exit 2
status=0
for case in "deepseek-v3 4096" "deepseek-v3-ep8 32768" "deepseek-v3 128" \
            "deepseek-v3-ep8 1024" "qwen3-30b-a3b 4096" "mixtral 4096"; do
    set -- $case
    echo "== $1, $2 tokens"
    "$ncu" --clock-control none --metrics gpu__time_duration.sum \
        --print-units base --csv \
        "$tool" bench --backend cuda --idle --preset "$1" --tokens "$2" \
        --iters 2 2>/dev/null >"$csv" || status=1
    grep '^"[0-9]' "$csv" |
        awk -F'","' '{ n = $5; v = $NF; gsub(/[",]/, "", v);
                       c[n]++; s[n] += v }
                     END { for (k in c)
                               printf "  %-28s %4d launches %10.2f us mean\n",
                                      k, c[k], s[k] / c[k] / 1000 }'
done
rm -f "$csv"
exit $status
