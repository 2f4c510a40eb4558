/* SPDX-License-Identifier: MIT */
/*
 * kernel_common.cuh - what every kernel file shares: index loads and
 * stores of either width, the error record checks, grid-stride helpers.
 */
#ifndef MOES_KERNEL_COMMON_CUH
#define MOES_KERNEL_COMMON_CUH

#include <stdint.h>

#include "gpu_kernel_args.h"
#include "moescatter.h"
#include "numerics.h"

#define MOES_WARP 32

__device__ __forceinline__ int64_t moes_dev_index_load(const void *base,
                                                       int64_t elem,
                                                       int64_t i)
{
    return elem == 4 ? (int64_t)((const int32_t *)base)[i]
                     : ((const int64_t *)base)[i];
}

__device__ __forceinline__ void moes_dev_index_store(void *base, int64_t elem,
                                                     int64_t i, int64_t v)
{
    if (elem == 4)
        ((int32_t *)base)[i] = (int32_t)v;
    else
        ((int64_t *)base)[i] = v;
}

/* Programmatic dependent launch (sm_90 and later). Within one call every
 * kernel after the first is launched so that it may start while the one
 * before it still runs: it must call moes_dev_wait_prior() before it reads
 * anything an earlier kernel writes or writes anything at all, which
 * waits for the earlier kernel to finish and its writes to be visible.
 * moes_dev_release_next() lets the next kernel start early. On older
 * GPUs, and in a kernel launched the ordinary way, both do nothing. */
__device__ __forceinline__ void moes_dev_wait_prior(void)
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

__device__ __forceinline__ void moes_dev_release_next(void)
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

/* Both, for a kernel with nothing to do before the wait. */
__device__ __forceinline__ void moes_dev_enter(void)
{
    moes_dev_wait_prior();
    moes_dev_release_next();
}

/* True when an earlier call, or this one's validation, found a data error:
 * then the kernel must write nothing. The record is written by a previous
 * kernel on the same stream, so a plain (volatile) load sees it. */
__device__ __forceinline__ bool moes_dev_failed(const gpu_device_state *s)
{
    return *(volatile const int32_t *)&s->record.status != MOES_OK;
}

__device__ __forceinline__ void moes_dev_report(gpu_device_state *s,
                                                int rank, int64_t index)
{
    atomicMin(&s->key, GPU_ERROR_KEY(rank, index));
}

/* Global thread index and stride of a 1-D grid, in 64 bits. */
__device__ __forceinline__ int64_t moes_dev_thread(void)
{
    return (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
}

__device__ __forceinline__ int64_t moes_dev_threads(void)
{
    return (int64_t)gridDim.x * blockDim.x;
}

/* Saturating sum of two non-negative values (CPU: place_experts). */
__device__ __forceinline__ int64_t moes_dev_add_sat(int64_t a, int64_t b)
{
    return a > INT64_MAX - b ? INT64_MAX : a + b;
}

/* roundup(v, a) saturating at INT64_MAX (CPU: round_up_sat). */
__device__ __forceinline__ int64_t moes_dev_round_up_sat(int64_t v, int64_t a)
{
    if (v > INT64_MAX - (a - 1))
        return INT64_MAX;
    return (v + a - 1) / a * a;
}

/* The local expert of choice c = t*K + k, or -1 (id -1, mapped to -1, or
 * invalid: invalid ones are reported by the counting kernel). */
__device__ __forceinline__ int64_t moes_dev_local_expert(
    const gpu_scatter_args &a, int64_t c, int64_t *id_out)
{
    int64_t t = c / a.top_k, k = c - t * a.top_k;
    int64_t id = moes_dev_index_load(a.ids, a.ids_elem, t * a.ids_stride + k);
    *id_out = id;
    if (id < 0 || id >= a.n_global)
        return -1;
    int64_t e = a.map ? (int64_t)a.map[id] : id;
    return (e >= 0 && e < a.n_experts) ? e : -1;
}

#endif /* MOES_KERNEL_COMMON_CUH */
