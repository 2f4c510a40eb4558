#!/bin/sh
# SPDX-License-Identifier: MIT
# mpi-launch.sh NP PROGRAM [ARGS]: runs PROGRAM on NP ranks of this machine,
# more ranks than cores allowed, as root too (containers, CI). Open MPI's
# own allocations at exit are not the program's leaks: LeakSanitizer is
# told so when the program was built with it.
np=$1
shift
: "${MPIRUN:=mpirun}"
if ! command -v "$MPIRUN" >/dev/null 2>&1; then
    echo "$MPIRUN not found: the MPI tests cannot run"
    exit 77
fi
if [ -n "$LSAN_SUPPRESSIONS_FILE" ]; then
    LSAN_OPTIONS="suppressions=$LSAN_SUPPRESSIONS_FILE${LSAN_OPTIONS:+:$LSAN_OPTIONS}"
    export LSAN_OPTIONS
fi
root=
[ "$(id -u)" = 0 ] && root=--allow-run-as-root
# The sanitizers' and OpenMP's settings reach every rank.
pass=
for v in LSAN_OPTIONS ASAN_OPTIONS UBSAN_OPTIONS OMP_WAIT_POLICY; do
    eval "[ -n \"\${$v+set}\" ]" && pass="$pass -x $v"
done
# A run that deadlocks (ranks waiting on each other after one stopped)
# fails after EP_TIMEOUT seconds (default 900, 0 for none) instead of
# holding a CI job until its own limit.
limit=
if [ "${EP_TIMEOUT:-900}" != 0 ] && command -v timeout >/dev/null 2>&1; then
    limit="timeout ${EP_TIMEOUT:-900}"
fi
# A one-machine job: no remote launcher, shared memory between ranks.
exec $limit "$MPIRUN" $root --oversubscribe -np "$np" \
    --mca btl self,vader --mca plm_rsh_agent false $pass "$@"
