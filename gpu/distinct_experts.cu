/* SPDX-License-Identifier: MIT */
/*
 * distinct_experts.cu - moes_distinct_experts's rows: one thread per token
 * writes its choices' local experts into its row of out and orders them
 * in place (lib/distinct_row.h, the CPU's rule). It runs after the
 * routing kernels, whose checks of the map and the ids close the error
 * record (with an error there, no row is written), or, for a small call,
 * alone with those checks in every block (distinct_self_check).
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
    const bool report = blockIdx.x == 0;
    if (a.map)
        for (int64_t i = threadIdx.x; i < a.n_global; i += blockDim.x) {
            const int32_t v = a.map[i];
            if (!MOES_INDEX_OK(v, a.n_experts)) {
                bad = true;
                if (report)
                    moes_dev_report(a.state, MOES_DATA_ERROR_RANK_MAP, i);
            }
        }
    for (int64_t c = threadIdx.x; c < a.n_choices; c += blockDim.x) {
        const int64_t t = c / a.top_k, k = c - t * a.top_k;
        const int64_t id =
            moes_dev_index_load(a.ids, a.ids_elem, t * a.ids_stride + k);
        if (!MOES_INDEX_OK(id, a.n_global)) {
            bad = true;
            if (report)
                moes_dev_report(a.state, MOES_DATA_ERROR_RANK_ID, c);
        }
    }
    if (!__syncthreads_or(bad))
        return false;
    if (report && threadIdx.x == 0)
        moes_stage_finish_validation(moes_route_finish_args(a));
    return true;
}

extern "C" __global__ void __launch_bounds__(GPU_DISTINCT_THREADS)
moes_distinct_rows(const gpu_scatter_args a)
{
    moes_dev_enter();
    if (moes_dev_failed(a.state))
        return;
    if (a.distinct_self_check && distinct_self_check(a))
        return;
    const int64_t t = moes_dev_thread();
    if (t >= a.n_tokens)
        return;
    unsigned char *row =
        (unsigned char *)a.distinct_out + t * a.top_k * a.index_elem;
    for (int64_t k = 0; k < a.top_k; k++) {
        int64_t id;
        moes_dev_index_store(row, a.index_elem, k,
                             moes_dev_local_expert_at(a, t, k, &id));
    }
    moes_distinct_row(row, a.index_elem, a.top_k);
}
