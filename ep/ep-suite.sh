#!/bin/sh
# SPDX-License-Identifier: MIT
# The ep suite: the same random cases and bad inputs on 1, 2, 3 and 4 ranks,
# then the bounded mode's queued path (test_ep_queued) on as many.
: "${srcdir:=.}"
status=0
for np in 1 2 3 4; do
    sh "$srcdir/mpi-launch.sh" "$np" ./test_ep "${EP_SUITE_CASES:-150}"
    rc=$?
    [ $rc = 77 ] && exit 77
    [ $rc != 0 ] && { echo "ep suite failed on $np ranks" >&2; status=1; }
    # The bounded mode's queued path (NCCL's), over MPI.
    sh "$srcdir/mpi-launch.sh" "$np" ./test_ep_queued \
        "${EP_SUITE_QUEUED_CASES:-60}"
    rc=$?
    [ $rc != 0 ] && { echo "ep queued suite failed on $np ranks" >&2; status=1; }
done
exit $status
