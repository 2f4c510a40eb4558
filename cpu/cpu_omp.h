/* SPDX-License-Identifier: MIT */
/*
 * cpu_omp.h - OpenMP pragmas that vanish without OpenMP (no
 * unknown-pragma warnings), and the thread count of a context.
 */
#ifndef MOES_CPU_OMP_H
#define MOES_CPU_OMP_H

#define MOES_PRAGMA_STR(...) #__VA_ARGS__
#ifdef _OPENMP
#define MOES_OMP(...) _Pragma(MOES_PRAGMA_STR(omp __VA_ARGS__))
#else
#define MOES_OMP(...)
#endif

#endif /* MOES_CPU_OMP_H */
