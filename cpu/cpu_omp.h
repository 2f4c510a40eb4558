/* SPDX-License-Identifier: MIT */
/*
 * cpu_omp.h - OpenMP pragmas that vanish without OpenMP (no
 * unknown-pragma warnings), and the thread count of a context.
 */
#ifndef MOES_CPU_OMP_H
#define MOES_CPU_OMP_H

#define MOES_PRAGMA_STR(...) #__VA_ARGS__
#ifdef _OPENMP
#include <omp.h>
#define MOES_OMP(...) _Pragma(MOES_PRAGMA_STR(omp __VA_ARGS__))
#else
#define MOES_OMP(...)
#endif

#include "internal.h"

/* The threads a call may use now: the context's count, or 1 in a child
 * process made by fork(). GNU OpenMP's worker threads do not survive a
 * fork, and a parallel region of more than one thread in the child waits
 * for them forever; a team of one never needs them. */
int cpu_threads(const moes_context *ctx);

/* Work, in units of about a nanosecond of one thread's time (an id
 * counted, an index stored one at a time, 16 bytes of a row or of a run
 * of indices moved), that each thread of a parallel region should get.
 * Waking a thread for a region and joining it again takes about 3 us on
 * a 2-core machine with the threads spinning and 20 us with them
 * sleeping: a 256-token index-only scatter on two threads took twice as
 * long as on one, and each region of a decode-sized call is cheaper on
 * one thread. The routing's parts (cpu_route.h) do not follow the team:
 * a team smaller than the parts walks several, with the same results. */
#define CPU_WORK_PER_THREAD ((int64_t)1 << 14)

/* count * units, saturating: the work of count items of units each. */
static inline int64_t cpu_work(int64_t count, int64_t units)
{
    int64_t w;
    return moes_mul_i64(count, units, &w) ? w : INT64_MAX;
}

/* a + b (both >= 0), saturating: two parts of a work or a size. */
static inline int64_t cpu_work_sum(int64_t a, int64_t b)
{
    int64_t w;
    return moes_add_i64(a, b, &w) ? w : INT64_MAX;
}

/* The work a thread of ctx's regions should get: CPU_WORK_PER_THREAD, or
 * MOES_CPU_WORK_PER_THREAD (1 gives every region all of the threads, as
 * the tests do to keep the threaded paths busy on small inputs). */
int64_t cpu_grain(const moes_context *ctx);

/* The threads worth giving `work` units, grain a thread: at most
 * threads, at least 1. */
static inline int cpu_team(int threads, int64_t grain, int64_t work)
{
    const int64_t by_work = work / grain;
    if (by_work >= threads)
        return threads;
    return by_work > 1 ? (int)by_work : 1;
}

/* stmt for each i in [0, n): on `team` threads, which share the loop as
 * the OpenMP clauses say, or with a team of one on the calling thread
 * alone, outside any parallel region. GNU OpenMP takes about 1.1 us to
 * enter and leave a region even of one thread (it builds a team, frees it
 * and wakes its barrier through a system call), and 3-4.6 us with two
 * (a 2-core machine, the threads spinning): a scatter of 16 tokens passed
 * through six regions of one thread each, a fifth of its time. stmt is one
 * statement, mostly a call; under a reduction clause it updates the
 * variable as a loop on one thread would. */
#define CPU_FOR_TEAM(team, clauses, i, n, stmt)                             \
    do {                                                                    \
        const int cpu_team_ = (team);                                       \
        const int64_t cpu_n_ = (n);                                         \
        if (cpu_team_ > 1) {                                                \
            MOES_OMP(parallel for num_threads(cpu_team_) clauses)           \
            for (int64_t i = 0; i < cpu_n_; i++)                            \
                stmt;                                                       \
        } else {                                                            \
            for (int64_t i = 0; i < cpu_n_; i++)                            \
                stmt;                                                       \
        }                                                                   \
    } while (0)

#endif /* MOES_CPU_OMP_H */
