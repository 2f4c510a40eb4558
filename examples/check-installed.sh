#!/bin/sh
# SPDX-License-Identifier: MIT
# check-installed.sh - make installcheck: the installed library as a user
# meets it.
#   1. The link line of the README and the manual, exactly:
#          cc app.c $(pkg-config --cflags --libs --static moescatter)
#      with app.c a copy of minimal_moe.c; the program must not need
#      libmoescatter.so, and runs with an empty LD_LIBRARY_PATH.
#      psum_grouped.c is linked and run the same way.
#   2. examples/cmake, a project outside the tree, with find_package and
#      the imported target moescatter::moescatter; run the same way.
#      Skipped, and said so, without cmake (MOES_REQUIRE_CMAKE=1 fails
#      instead, as CI sets).
#   3. The tool, the header and the pages are in place.
# Environment (from examples/Makefile): srcdir prefix libdir bindir
# includedir mandir PKG_CONFIG CMAKE.
set -u
: "${srcdir:=.}" "${PKG_CONFIG:=pkg-config}" "${CMAKE:=}"
dir=installcheck.dir
rm -rf "$dir" && mkdir "$dir" || exit 99
failures=0
fail() {
    echo "FAIL: $*" >&2
    failures=$((failures + 1))
}
pass() {
    echo "ok: $*"
}

# A fresh prefix is not on pkg-config's path: say where it is, as a user
# of that prefix does.
PKG_CONFIG_PATH="$libdir/pkgconfig${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}"
export PKG_CONFIG_PATH
shared_too=no
[ -e "$libdir/libmoescatter.so" ] && shared_too=yes

# ---- 1. the documented link line
cp "$srcdir/minimal_moe.c" "$dir/app.c" || exit 99
if (cd "$dir" && cc app.c $($PKG_CONFIG --cflags --libs --static moescatter)); then
    echo "linked: cc app.c $($PKG_CONFIG --cflags --libs --static moescatter)"
    if [ "$shared_too" = yes ]; then
        # The linker prefers the shared library when both are installed
        # (--enable-shared); the default build installs the static one
        # only.
        echo "note: $libdir/libmoescatter.so is installed too, so the link" \
             "above uses it; run with LD_LIBRARY_PATH=$libdir"
        if LD_LIBRARY_PATH="$libdir" "$dir/a.out" >"$dir/run.log" 2>&1; then
            pass "the documented link line (shared library)"
        else
            fail "the program linked with the shared library failed:"
            cat "$dir/run.log" >&2
        fi
    else
        if readelf -d "$dir/a.out" 2>/dev/null | grep -q 'libmoescatter'; then
            fail "the program needs libmoescatter.so:"
            readelf -d "$dir/a.out" | grep NEEDED >&2
        elif LD_LIBRARY_PATH= "$dir/a.out" >"$dir/run.log" 2>&1; then
            pass "the documented link line gives a static link that runs" \
                 "with an empty LD_LIBRARY_PATH"
        else
            fail "the program failed with an empty LD_LIBRARY_PATH:"
            cat "$dir/run.log" >&2
        fi
    fi
else
    fail "cc app.c \$(pkg-config --cflags --libs --static moescatter)" \
         "did not link"
fi

# The second example on the same link line, run the same way.
cp "$srcdir/psum_grouped.c" "$dir/psum_grouped.c" || exit 99
run_path=
[ "$shared_too" = yes ] && run_path=$libdir
if ! (cd "$dir" && cc -o psum_grouped psum_grouped.c \
        $($PKG_CONFIG --cflags --libs --static moescatter)); then
    fail "psum_grouped.c did not link with the documented link line"
elif LD_LIBRARY_PATH="$run_path" "$dir/psum_grouped" >"$dir/psum.log" 2>&1
then
    pass "psum_grouped, linked with the documented link line"
else
    fail "psum_grouped failed:"
    cat "$dir/psum.log" >&2
fi

# ---- 2. CMake
if [ -z "$CMAKE" ]; then
    if [ "${MOES_REQUIRE_CMAKE:-0}" = 1 ]; then
        fail "cmake was not found by configure, and MOES_REQUIRE_CMAKE=1"
    else
        echo "skipped: cmake was not found by configure: find_package" \
             "(moescatter) is not tested"
    fi
elif ! "$CMAKE" -S "$srcdir/cmake" -B "$dir/cmake-build" \
        -DCMAKE_PREFIX_PATH="$prefix" -DCMAKE_C_COMPILER=cc \
        >"$dir/cmake.log" 2>&1 ||
     ! "$CMAKE" --build "$dir/cmake-build" >>"$dir/cmake.log" 2>&1; then
    fail "the CMake project (examples/cmake) did not build:"
    cat "$dir/cmake.log" >&2
elif [ "$shared_too" = no ] &&
     ! LD_LIBRARY_PATH= "$dir/cmake-build/minimal_moe" >"$dir/run.log" 2>&1; then
    fail "the program built with CMake failed:"
    cat "$dir/run.log" >&2
elif [ "$shared_too" = yes ] &&
     ! LD_LIBRARY_PATH="$libdir" "$dir/cmake-build/minimal_moe" \
        >"$dir/run.log" 2>&1; then
    fail "the program built with CMake failed:"
    cat "$dir/run.log" >&2
else
    pass "find_package(moescatter) and moescatter::moescatter"
fi
# The version file must refuse what this version is not.
if [ -n "$CMAKE" ]; then
    want=$(($(sed -n 's/^#define MOES_VERSION_MAJOR  *//p' \
              "$includedir/moescatter.h") + 1)).0
    if "$CMAKE" -S "$srcdir/cmake" -B "$dir/cmake-too-new" \
            -DCMAKE_PREFIX_PATH="$prefix" -DMOES_WANT_VERSION="$want" \
            >"$dir/cmake-too-new.log" 2>&1; then
        fail "find_package(moescatter $want) accepted this version"
    elif ! grep -q "moescatterConfigVersion.cmake\|not.*compatible\|version" \
            "$dir/cmake-too-new.log"; then
        fail "find_package(moescatter $want) failed for another reason:"
        cat "$dir/cmake-too-new.log" >&2
    else
        pass "find_package(moescatter $want) is refused"
    fi
fi

# ---- 3. what else is installed
if "$bindir/moescatter" info >"$dir/info.log" 2>&1; then
    pass "moescatter info"
else
    fail "moescatter info:"
    cat "$dir/info.log" >&2
fi
for f in "$includedir/moescatter.h" "$mandir/man1/moescatter.1" \
         "$mandir/man3/moes_scatter.3" "$mandir/man3/moes_set_workspace.3" \
         "$mandir/man7/libmoescatter.7" \
         "$libdir/cmake/moescatter/moescatterConfig.cmake" \
         "$libdir/cmake/moescatter/moescatterConfigVersion.cmake"; do
    [ -f "$f" ] || fail "$f is not installed"
done

if [ "$failures" -ne 0 ]; then
    echo "installcheck: $failures failure(s); logs in $dir" >&2
    exit 1
fi
rm -rf "$dir"
echo "installcheck: every check passed"
