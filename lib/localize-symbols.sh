#!/bin/sh
# SPDX-License-Identifier: MIT
# localize-symbols.sh ARCHIVE - rewrites the static archive libtool built
# into an archive of one relocatable object in which only the public API
# stays global.
#
# Every file of the library is compiled with -fvisibility=hidden and the
# public functions are marked MOES_API (default visibility). `ld -r` links
# all members into one object, which resolves the references between the
# library's own files; objcopy then makes every hidden symbol local, and
# every other defined one that is not moes_*: the compiler's own, such as
# the lock clang's OpenMP gives reductions (a common symbol, which -d
# turns into a definition so that it can be made local; the library's
# reductions then share a lock of their own). An application may so
# define its own gpu_malloc or moes_log, and no internal function can be
# called from outside.
# The shared library needs none of this: hidden symbols never reach its
# dynamic symbol table.
set -eu
archive=$1
: "${LD:=ld}" "${OBJCOPY:=objcopy}" "${AR:=ar}" "${RANLIB:=ranlib}"
dir=$archive.localize.d
rm -rf "$dir"
mkdir "$dir"
trap 'rm -rf "$dir"' EXIT
# $LD may carry options (libtool's "ld -m elf_x86_64"): no quotes.
$LD -r -d -o "$dir/moescatter.o" --whole-archive "$archive"
$OBJCOPY --localize-hidden --wildcard --keep-global-symbol='moes_*' \
    "$dir/moescatter.o"
$AR cr "$dir/new.a" "$dir/moescatter.o"
$RANLIB "$dir/new.a"
mv -f "$dir/new.a" "$archive"
