#!/bin/sh
# SPDX-License-Identifier: MIT
# Every function the public headers declare with MOES_API has its own
# section-3 page, and every name a section-3 page's NAME gives is such a
# function. MOES_HEADER lists the headers, separated by spaces.
: "${srcdir:=.}"
header=${MOES_HEADER:-$srcdir/../lib/moescatter.h $srcdir/../ep/moescatter_ep.h}
for h in $header; do
    if [ ! -f "$h" ]; then
        echo "$h: not found" >&2
        exit 1
    fi
done
functions=$(sed -n 's/^MOES_API[^(]*[ *]\([A-Za-z_][A-Za-z_0-9]*\)(.*/\1/p' \
                $header | sort -u)
if [ -z "$functions" ]; then
    echo "$header: no MOES_API function found" >&2
    exit 1
fi
is_function() {
    printf '%s\n' "$functions" | grep -qx "$1"
}
listed() {
    for p in $MAN_PAGES; do
        [ "$p" = "$1" ] && return 0
    done
    return 1
}

status=0
n_functions=0
for f in $functions; do
    n_functions=$((n_functions + 1))
    if ! listed "$f.3" || [ ! -f "$srcdir/$f.3" ]; then
        echo "$f: declared MOES_API in $header but has no page $f.3" >&2
        status=1
    fi
done

# Every page's title line names this version ("libmoescatter 0.2.0").
if [ -n "${PACKAGE_VERSION:-}" ]; then
    for page in $MAN_PAGES; do
        [ -f "$srcdir/$page" ] || continue
        if ! sed -n '/^\.TH /p' "$srcdir/$page" |
                grep -q "\"libmoescatter $PACKAGE_VERSION\""; then
            echo "$page: the .TH line does not say libmoescatter" \
                 "$PACKAGE_VERSION" >&2
            status=1
        fi
    done
fi

n_pages=0
for page in $MAN_PAGES; do
    case $page in
    *.3) ;;
    *) continue ;;
    esac
    n_pages=$((n_pages + 1))
    file=$srcdir/$page
    [ -f "$file" ] || continue
    # The NAME line: "name1, name2 \- description".
    names=$(sed -n '/^\.SH NAME/{n;p;q;}' "$file" | sed 's/ *\\-.*//' |
            tr ',' ' ')
    if [ -z "$names" ]; then
        echo "$page: no NAME line" >&2
        status=1
    fi
    for name in $names; do
        if ! is_function "$name"; then
            echo "$page: NAME gives '$name', which $header does not declare" \
                 "with MOES_API" >&2
            status=1
        fi
    done
    if ! is_function "${page%.3}"; then
        echo "$page: no MOES_API function has this name" >&2
        status=1
    fi
done
echo "$n_functions MOES_API functions, $n_pages section-3 pages:" \
     "$([ $status = 0 ] && echo every function has its page ||
        echo MISMATCH)"
exit $status
