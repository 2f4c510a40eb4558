#!/bin/sh
# SPDX-License-Identifier: MIT
# make check: the pytest suite of the Python package, reported in TAP, one
# line per test, so that a test pytest skipped shows as SKIP and never as
# PASS. Without python3, torch or pytest the whole suite is one SKIP that
# says what is missing.
: "${PYTHON:=python3}"
: "${MOES_PY_SRCDIR:=$(cd "$(dirname "$0")" && pwd)}"

skip_all() {
    echo "1..0 # SKIP $*"
    exit 0
}
if [ "$PYTHON" = ":" ] || ! "$PYTHON" -c 'import sys' >/dev/null 2>&1; then
    skip_all "no python3 interpreter (configure found none)"
fi
"$PYTHON" -c 'import torch' >/dev/null 2>&1 ||
    skip_all "$PYTHON cannot import torch (Debian: apt-get install python3-torch, or configure PYTHON=...)"
"$PYTHON" -c 'import pytest' >/dev/null 2>&1 ||
    skip_all "$PYTHON cannot import pytest (Debian: apt-get install python3-pytest)"

work=pytest.dir
rm -rf "$work" && mkdir -p "$work" || exit 1
# The sources may be read-only (make distcheck): no caches, no bytecode.
PYTHONDONTWRITEBYTECODE=1 PYTHONPATH="$MOES_PY_SRCDIR${PYTHONPATH:+:$PYTHONPATH}" \
    "$PYTHON" -m pytest -p no:cacheprovider -q -rs \
    --junitxml="$work/junit.xml" "$MOES_PY_SRCDIR/tests" >&2
status=$?
"$PYTHON" "$MOES_PY_SRCDIR/tap_from_junit.py" "$work/junit.xml" "$status"
