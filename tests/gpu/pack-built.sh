#!/bin/sh
# SPDX-License-Identifier: MIT
# pack-built.sh - the GPU test programs of a CUDA build in one archive,
# for a GPU machine that has no compiler or no Criterion.
#
#     tests/gpu/pack-built.sh BUILD_DIR NAME.tar.xz
#
# BUILD_DIR is a build configured with --with-cuda in which the GPU
# programs are made:
#
#     make && make -C tests unit host_process &&
#     make -C tests/gpu diff_cuda graph_replay sanitize_cases \
#         caller_memory late_blocks error_chain graph_bench
#
# (gpu_steps.sh's gpu_test_programs, and graph_bench).
#
# The archive holds one folder, NAME, with the programs where the build
# has them (tools/, tests/, tests/gpu/) and, in runtime-libs/, the shared
# libraries the unit suite links beyond the C library (Criterion and
# what it needs). The library itself is linked statically into each
# program. On the GPU machine:
#
#     tar xJf NAME.tar.xz -C /tmp
#     tests/gpu/run-on-gpu.sh /tmp/NAME      the correctness steps
#     tests/gpu/bench-on-gpu.sh /tmp/NAME    the performance table
set -eu
if [ $# -ne 2 ]; then
    echo "usage: pack-built.sh BUILD_DIR NAME.tar.xz" >&2
    exit 2
fi
build=$1
archive=$2
src=$(cd "$(dirname "$0")/../.." && pwd)
. "$src/tests/gpu/gpu_steps.sh"
name=$(basename "$archive" .tar.xz)
for p in tools/moescatter tests/unit tests/gpu/diff_cuda; do
    [ -x "$build/$p" ] || {
        echo "pack-built.sh: $build/$p is not built" >&2
        exit 1
    }
done
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
folder=$stage/$name
mkdir -p "$folder/tools" "$folder/tests/gpu" "$folder/runtime-libs"
cp "$build/tools/moescatter" "$folder/tools/"
for p in unit host_process; do
    [ -x "$build/tests/$p" ] && cp "$build/tests/$p" "$folder/tests/"
done
for p in $gpu_test_programs graph_bench; do
    [ -x "$build/tests/gpu/$p" ] && cp "$build/tests/gpu/$p" "$folder/tests/gpu/"
done
# The C library's own parts stay the GPU machine's.
ldd "$build/tests/unit" |
    awk '$2 == "=>" && $3 ~ /^\// { print $3 }' |
    grep -v -E '/(libc|libm|libdl|libpthread|librt|libresolv|ld-linux[^/]*)\.so' |
    while read -r lib; do
        cp -L "$lib" "$folder/runtime-libs/"
    done
# Debug sections are most of the size; symbols stay for backtraces.
find "$folder" -type f -exec strip --strip-debug {} \; 2>/dev/null || true
case $archive in
/*) ;;
*) archive=$(pwd)/$archive ;;
esac
(cd "$stage" && tar cJf "$archive" "$name")
echo "pack-built.sh: $archive ($(du -k "$archive" | cut -f1) KiB)"
