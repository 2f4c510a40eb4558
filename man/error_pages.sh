#!/bin/sh
# SPDX-License-Identifier: MIT
# Every status that a public function's comment in its header says it
# returns (the MOES_ERR_ names from the comment's last "Returns" on) is
# named in the RETURN VALUE or ERRORS section of the function's page, so
# that the header and the manual do not drift apart. MOES_HEADER lists
# the headers, separated by spaces.
: "${srcdir:=.}"
header=${MOES_HEADER:-$srcdir/../lib/moescatter.h $srcdir/../ep/moescatter_ep.h}
status=0
checked=0
for h in $header; do
    if [ ! -f "$h" ]; then
        echo "$h: not found" >&2
        exit 1
    fi
    # "function STATUS..." for each MOES_API function whose comment says
    # what it returns.
    pairs=$(awk '
        /\/\*/ { comment = ""; in_comment = 1 }
        in_comment { comment = comment " " $0 }
        /\*\// { in_comment = 0 }
        /^MOES_API/ {
            name = $0
            sub(/\(.*/, "", name)
            sub(/.*[ *]/, "", name)
            at = 0
            rest = comment
            while ((i = index(rest, "Returns")) > 0) {
                at += i
                rest = substr(rest, i + 1)
            }
            codes = ""
            if (at > 0) {
                tail = substr(comment, at)
                while (match(tail, /MOES_ERR_[A-Z_]+/)) {
                    codes = codes " " substr(tail, RSTART, RLENGTH)
                    tail = substr(tail, RSTART + RLENGTH)
                }
            }
            if (codes != "")
                print name codes
            comment = ""
        }' "$h")
    [ -n "$pairs" ] || { echo "$h: no function comment names a status" >&2; exit 1; }
    while read -r fn codes; do
        page=$srcdir/$fn.3
        [ -f "$page" ] || continue # cover_pages.sh reports a missing page
        checked=$((checked + 1))
        sections=$(awk '
            /^\.SH / { keep = ($0 ~ /^\.SH (RETURN VALUE|ERRORS)$/) ; next }
            keep' "$page")
        for c in $codes; do
            if ! printf '%s\n' "$sections" | grep -qw "$c"; then
                echo "$fn: $h says it returns $c; $fn.3 does not name it" \
                     "under RETURN VALUE or ERRORS" >&2
                status=1
            fi
        done
    done <<END
$pairs
END
done
[ $status -eq 0 ] &&
    echo "$checked functions: every status their comments name is on their page"
exit $status
