/* SPDX-License-Identifier: MIT */
/*
 * mpi_threads.h - the few MPI calls test_ep.c makes, for its NCCL build,
 * which needs no MPI: each rank is a thread of one process (one GPU each,
 * on one NCCL communicator), and these calls work across those threads.
 * main() starts the threads (mpi_threads_run); MPI_Comm_rank gives the
 * calling thread's rank.
 */
#ifndef MOES_EP_MPI_THREADS_H
#define MOES_EP_MPI_THREADS_H

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

typedef int MPI_Comm;
#define MPI_COMM_WORLD 0
#define MPI_IN_PLACE NULL
#define MPI_LONG 0
#define MPI_SUM 0
#define MPI_THREADS_MAX 8

typedef struct mpi_threads {
    int size;
    pthread_barrier_t barrier;
    long sums[MPI_THREADS_MAX][2];
} mpi_threads;

static mpi_threads mpi_world = {.size = 1};
static _Thread_local int mpi_rank;

static inline int MPI_Init(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    return 0;
}
static inline int MPI_Comm_rank(MPI_Comm c, int *r)
{
    (void)c;
    *r = mpi_rank;
    return 0;
}
static inline int MPI_Comm_size(MPI_Comm c, int *n)
{
    (void)c;
    *n = mpi_world.size;
    return 0;
}
/* In-place sums of up to two longs (all test_ep.c asks for). */
static inline int MPI_Allreduce(const void *s, void *r, int n, int t, int op,
                                MPI_Comm c)
{
    (void)s, (void)t, (void)op, (void)c;
    long *v = r;
    if (mpi_world.size == 1)
        return 0;
    for (int i = 0; i < n && i < 2; i++)
        mpi_world.sums[mpi_rank][i] = v[i];
    pthread_barrier_wait(&mpi_world.barrier);
    for (int i = 0; i < n && i < 2; i++) {
        long total = 0;
        for (int j = 0; j < mpi_world.size; j++)
            total += mpi_world.sums[j][i];
        v[i] = total;
    }
    pthread_barrier_wait(&mpi_world.barrier);
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

typedef struct mpi_thread_start {
    int rank;
    int (*body)(void *);
    void *arg;
    int status;
} mpi_thread_start;

static void *mpi_thread_main(void *p)
{
    mpi_thread_start *s = p;
    mpi_rank = s->rank;
    s->status = s->body(s->arg);
    return NULL;
}

/* Runs body(arg) on size threads, ranks 0 .. size-1; returns the worst
 * (largest) status. */
static inline int mpi_threads_run(int size, int (*body)(void *), void *arg)
{
    pthread_t threads[MPI_THREADS_MAX];
    mpi_thread_start starts[MPI_THREADS_MAX];
    int worst = 0;
    if (size < 1 || size > MPI_THREADS_MAX)
        return 2;
    mpi_world.size = size;
    pthread_barrier_init(&mpi_world.barrier, NULL, (unsigned)size);
    for (int r = 0; r < size; r++) {
        starts[r] = (mpi_thread_start){r, body, arg, 0};
        if (pthread_create(&threads[r], NULL, mpi_thread_main, &starts[r]))
            exit(2);
    }
    for (int r = 0; r < size; r++) {
        pthread_join(threads[r], NULL);
        if (starts[r].status > worst)
            worst = starts[r].status;
    }
    pthread_barrier_destroy(&mpi_world.barrier);
    return worst;
}

#endif /* MOES_EP_MPI_THREADS_H */
