/* SPDX-License-Identifier: MIT */
/*
 * distinct_experts.cu - moes_distinct_experts's rows: one thread per token
 * writes its choices' local experts into its row of out and orders them
 * in place (lib/distinct_row.h, the CPU's rule); rows of up to 16
 * choices are counted into place in registers instead, with the same
 * result. It runs after the routing kernels, whose checks of the map and
 * the ids close the error record (with an error there, no row is
 * written), or, for a small call, alone with those checks in every block
 * (distinct_self_check).
 */
#include "kernel_common.cuh"
#include "distinct_row.h"

/* A small call checks the map and the ids in every block instead of in
 * the routing kernels: each block reads them all (a few KiB, from L2
 * after the first), so every block reaches the same verdict and none
 * waits for another. Block 0 reports what is wrong, as the routing's
 * checks would (map entries before ids, the smallest index first), and
 * writes the record. Returns true when something is wrong: then no row
 * is written. */
__device__ __forceinline__ bool distinct_self_check(const gpu_scatter_args &a)
{
    bool bad = false;
    if (a.map)
        bad = moes_block_check_range(
            a.state, a.n_global, a.n_experts, MOES_DATA_ERROR_RANK_MAP,
            [&](int64_t i) { return (int64_t)a.map[i]; });
    bad |= moes_block_check_range(
        a.state, a.n_choices, a.n_global, MOES_DATA_ERROR_RANK_ID,
        [&](int64_t c) { return moes_dev_choice_id(a, c); });
    return moes_block_verdict(bad, [&] { return moes_route_finish_args(a); });
}

/* Token t's row when top_k <= K, in registers: the ids are loaded before
 * the self-check (they are inputs; an id is range-checked before it
 * indexes the map), and the row is not ordered in out but counted: a
 * choice's expert is kept where no choice before it has the same one,
 * and goes to the place given by the kept experts below it. That is
 * the row moes_distinct_row orders into (the distinct local experts
 * ascending, then -1), and it is a function of the experts alone. On an
 * H200 the ep layer's bounded dispatch of 128 tokens (a graph replay, one
 * rank) took 50.9-51.2 us with the row ordered in out, a round trip to
 * the L2 for each step of the heap, and 49.7-50.2 this way
 * (bench/NOTES.md, v27). */
template <int K>
__device__ __forceinline__ void
distinct_rows_counted(const gpu_scatter_args &a)
{
    const int64_t t = moes_dev_thread();
    const bool mine = t < a.n_tokens;
    int64_t e[K];
#pragma unroll
    for (int k = 0; k < K; k++)
        e[k] = mine && k < a.top_k
                   ? moes_dev_index_load(a.ids, a.ids_elem,
                                         t * a.ids_stride + k)
                   : -1;
    if (a.distinct_self_check && distinct_self_check(a))
        return;
    if (!mine)
        return;
#pragma unroll
    for (int k = 0; k < K; k++)
        e[k] = moes_dev_expert_of(a, e[k]);
    unsigned kept = 0; /* bit i: choice i's expert is kept */
#pragma unroll
    for (int i = 0; i < K; i++) {
        bool first = e[i] >= 0;
#pragma unroll
        for (int j = 0; j < i; j++)
            first = first && e[j] != e[i];
        kept |= (unsigned)first << i;
    }
    unsigned char *row =
        (unsigned char *)a.distinct_out +
        t * a.distinct_out_stride * a.index_elem;
#pragma unroll
    for (int i = 0; i < K; i++) {
        if (!(kept >> i & 1u))
            continue;
        int below = 0;
#pragma unroll
        for (int j = 0; j < K; j++)
            below += (kept >> j & 1u) && e[j] < e[i];
        moes_dev_index_store(row, a.index_elem, below, e[i]);
    }
    const int n = __popc(kept);
    for (int64_t k = n; k < a.top_k; k++)
        moes_dev_index_store(row, a.index_elem, k, -1);
}

extern "C" __global__ void __launch_bounds__(GPU_DISTINCT_THREADS)
moes_distinct_rows(const gpu_scatter_args a)
{
    moes_dev_enter();
    /* Self-checking blocks write the record themselves: each block takes
     * one answer (moes_block_failed). */
    if (a.distinct_self_check ? moes_block_failed(a.state)
                              : moes_dev_failed(a.state))
        return;
    if (a.top_k <= 8)
        return distinct_rows_counted<8>(a);
    if (a.top_k <= 16)
        return distinct_rows_counted<16>(a);
    if (a.distinct_self_check && distinct_self_check(a))
        return;
    const int64_t t = moes_dev_thread();
    if (t >= a.n_tokens)
        return;
    unsigned char *row =
        (unsigned char *)a.distinct_out +
        t * a.distinct_out_stride * a.index_elem;
    for (int64_t k = 0; k < a.top_k; k++) {
        int64_t id;
        moes_dev_index_store(row, a.index_elem, k,
                             moes_dev_local_expert_at(a, t, k, &id));
    }
    moes_distinct_row(row, a.index_elem, a.top_k);
}
