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

/* The calling thread's number within the current parallel region. */
static inline int cpu_thread_num(void)
{
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}

#endif /* MOES_CPU_OMP_H */
