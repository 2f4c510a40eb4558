/* SPDX-License-Identifier: MIT */
/*
 * mpi_single.h - the few MPI calls test_ep.c makes, for one process with
 * no MPI: the suite's NCCL build runs on one GPU, on a one-rank NCCL
 * communicator, where no MPI need be installed.
 */
#ifndef MOES_EP_MPI_SINGLE_H
#define MOES_EP_MPI_SINGLE_H

#include <stdlib.h>

typedef int MPI_Comm;
#define MPI_COMM_WORLD 0
#define MPI_IN_PLACE NULL
#define MPI_LONG 0
#define MPI_SUM 0

static inline int MPI_Init(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    return 0;
}
static inline int MPI_Comm_rank(MPI_Comm c, int *r)
{
    (void)c;
    *r = 0;
    return 0;
}
static inline int MPI_Comm_size(MPI_Comm c, int *n)
{
    (void)c;
    *n = 1;
    return 0;
}
/* One rank: the sum is the value itself, already in place. */
static inline int MPI_Allreduce(const void *s, void *r, int n, int t, int op,
                                MPI_Comm c)
{
    (void)s, (void)r, (void)n, (void)t, (void)op, (void)c;
    return 0;
}
static inline int MPI_Abort(MPI_Comm c, int code)
{
    (void)c;
    exit(code);
}
static inline int MPI_Finalize(void)
{
    return 0;
}

#endif /* MOES_EP_MPI_SINGLE_H */
