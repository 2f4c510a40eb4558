/* SPDX-License-Identifier: MIT */
/*
 * block_route.cuh - the steps of the kernels in which a block routes on
 * its own (scatter_small.cu, scatter_grid.cu): an id in 32 bits, the map
 * checked into shared memory, a choice's local expert, and the verdict
 * that every block reaches alike.
 */
#ifndef MOES_BLOCK_ROUTE_CUH
#define MOES_BLOCK_ROUTE_CUH

#include "kernel_common.cuh"

/* Choice c's id in 32 bits: every bound an id is tested against fits
 * (the kernels' map limits), and an id outside int32 becomes INT32_MIN,
 * which fails the same test. */
__device__ __forceinline__ int32_t moes_block_id(const gpu_scatter_args &a,
                                                 unsigned c)
{
    const unsigned top_k = (unsigned)a.top_k, t = c / top_k;
    const int64_t v = moes_dev_index_load(
        a.ids, a.ids_elem, (int64_t)t * a.ids_stride + (c - t * top_k));
    return v < INT32_MIN || v > INT32_MAX ? INT32_MIN : (int32_t)v;
}

/* The map into shared memory, a local expert or -1 (for -1 and for a bad
 * entry) an id, and its smallest bad index into *key when *key holds
 * none; T is the block's size (a constant of the kernel). With
 * PRELOADED, `first` is map[threadIdx.x], loaded earlier by the caller so
 * that its latency hid behind other loads (unused past n_global); else
 * `first` is not read. */
template <int T, bool PRELOADED>
__device__ __forceinline__ void moes_block_load_map(const gpu_scatter_args &a,
                                                    int16_t *map,
                                                    int32_t first,
                                                    unsigned long long *key)
{
    const int tid = threadIdx.x, n_experts = (int)a.n_experts;
    for (int i = tid; i < (int)a.n_global; i += T) {
        const int32_t m = PRELOADED && i == tid ? first : a.map[i];
        const bool ok = MOES_INDEX_OK(m, n_experts);
        if (!ok && *key == GPU_ERROR_KEY_NONE)
            *key = GPU_ERROR_KEY(MOES_DATA_ERROR_RANK_MAP, i);
        map[i] = (int16_t)(ok ? m : -1);
    }
}

/* The local expert of choice c's id v, or -1: through the map in shared
 * memory (the caller's array itself, so that the loads stay shared-memory
 * loads), or v itself without one (then n_global is n_experts). An id
 * outside [-1, n_global) lowers *first_bad to c. No branch, so that a
 * caller's rounds keep their map loads in flight together. */
__device__ __forceinline__ int moes_block_expert(int32_t v, int c,
                                                 unsigned n_global,
                                                 bool with_map,
                                                 const int16_t *map,
                                                 int *first_bad)
{
    /* -1 <= v < n_global, in unsigned arithmetic. */
    if ((uint32_t)v + 1u > n_global)
        *first_bad = min(*first_bad, c);
    const bool known = (uint32_t)v < n_global;
    const uint32_t at = known ? (uint32_t)v : 0u;
    return !known ? -1 : with_map ? (int)map[at] : (int)at;
}

/* The smallest error key of the call, known alike to every block (each
 * checked everything, or took every block's key): on an error block 0
 * turns it into the record (with rows_needed, a capacity error's value)
 * and no block may write anything. True on an error. */
__device__ __forceinline__ bool moes_block_verdict(const gpu_scatter_args &a,
                                                   unsigned long long key,
                                                   int64_t rows_needed)
{
    if (key == GPU_ERROR_KEY_NONE)
        return false;
    if (blockIdx.x == 0 && threadIdx.x == 0) {
        a.state->rows_needed = rows_needed;
        atomicMin(&a.state->key, key);
        moes_stage_finish_validation(moes_route_finish_args(a));
    }
    return true;
}

/* The labels (m_indices, row_source pads) and the per-expert outputs;
 * a.counts and a.start are the block's own tables, T the block's size.
 * The labels take a warp an expert, then every thread a share of the
 * tail. With SPREAD the warps are numbered across the blocks first (warp
 * w of block b is w * blocks + b), so that few experts land on as many
 * multiprocessors; numbered block by block, EP8 prefill's 32 experts go
 * to the first two blocks. On an H200 (bench/NOTES.md, v17), spread:
 * the cooperative scatter's index-only EP8 prefill 13.0 us a graph
 * replay instead of 13.6, but the one-launch scatter's index-only EP8
 * decode 4.98 instead of 4.81; each kernel takes the faster. The
 * per-expert outputs start from the last block. */
template <int T, bool SPREAD>
__device__ __forceinline__ void moes_block_labels_and_outputs(
    const gpu_scatter_args &a, int64_t rows_needed, int64_t dropped)
{
    const int tid = threadIdx.x;
    const int64_t threads = (int64_t)gridDim.x * T;
    const int64_t label_thread =
        SPREAD ? ((int64_t)(tid / MOES_WARP) * gridDim.x + blockIdx.x) *
                         MOES_WARP +
                     tid % MOES_WARP
               : (int64_t)blockIdx.x * T + tid;
    if (a.m_indices || a.row_source)
        moes_label_blocks_of(a, rows_needed, label_thread, threads);
    moes_expert_outputs_of(a, rows_needed, dropped,
                           (int64_t)(gridDim.x - 1 - blockIdx.x) * T + tid,
                           threads);
}

#endif
