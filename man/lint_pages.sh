#!/bin/sh
# SPDX-License-Identifier: MIT
# Every manual page must pass `mandoc -T lint` without a single message.
# Skipped (77) when configure found no mandoc.
: "${srcdir:=.}"
if [ -z "$MANDOC" ]; then
    echo "mandoc was not found by configure: the pages are not linted"
    exit 77
fi
if [ -z "$MAN_PAGES" ]; then
    echo "MAN_PAGES is empty: no page to lint" >&2
    exit 1
fi
status=0
count=0
for page in $MAN_PAGES; do
    count=$((count + 1))
    if [ ! -f "$srcdir/$page" ]; then
        echo "$page: listed but missing" >&2
        status=1
        continue
    fi
    out=$($MANDOC -T lint "$srcdir/$page" 2>&1)
    if [ -n "$out" ]; then
        printf '%s\n' "$out" >&2
        status=1
    fi
done
echo "mandoc -T lint: $count pages, $([ $status = 0 ] && echo clean || echo NOT clean)"
exit $status
