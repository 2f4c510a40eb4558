/* SPDX-License-Identifier: MIT */
/*
 * cuda_check.h - the GPU-only test programs' check of a CUDA runtime call
 * (CUDA_OK) and of a library call (MOES_OK_OR_DIE, with ctx's message),
 * and their device and host allocations (dev_alloc, host_alloc): a
 * failure prints where and why, and ends the program with status 2.
 */
#ifndef MOES_TESTS_CUDA_CHECK_H
#define MOES_TESTS_CUDA_CHECK_H

#include <stdio.h>
#include <stdlib.h>

#include <cuda_runtime_api.h>

#include "moescatter.h"

/* Where and why a check failed; the program ends with status 2. */
static inline void check_failed(const char *file, int line, const char *expr,
                                const char *why)
{
    fprintf(stderr, "%s:%d: %s: %s\n", file, line, expr, why);
    exit(2);
}

#define CUDA_OK(expr)                                                       \
    do {                                                                    \
        cudaError_t e_ = (expr);                                            \
        if (e_ != cudaSuccess)                                              \
            check_failed(__FILE__, __LINE__, #expr, cudaGetErrorString(e_));\
    } while (0)

#define MOES_OK_OR_DIE(ctx, expr)                                           \
    do {                                                                    \
        if ((expr) != MOES_OK)                                              \
            check_failed(__FILE__, __LINE__, #expr, moes_last_error(ctx));  \
    } while (0)

static inline void *dev_alloc(size_t bytes)
{
    void *p = NULL;
    CUDA_OK(cudaMalloc(&p, bytes));
    return p;
}

static inline void *host_alloc(size_t bytes)
{
    void *h = malloc(bytes);
    if (!h) {
        fprintf(stderr, "out of host memory (%zu bytes)\n", bytes);
        exit(2);
    }
    return h;
}

#endif /* MOES_TESTS_CUDA_CHECK_H */
