/* SPDX-License-Identifier: MIT */
/*
 * distinct_experts.cu - moes_distinct_experts's rows: one thread per token
 * writes its choices' local experts into its row of out and orders them
 * in place (lib/distinct_row.h, the CPU's rule). It runs after the
 * routing kernels, whose checks of the map and the ids close the error
 * record: with an error there, no row is written.
 */
#include "kernel_common.cuh"
#include "distinct_row.h"

extern "C" __global__ void __launch_bounds__(GPU_DISTINCT_THREADS)
moes_distinct_rows(const gpu_scatter_args a)
{
    moes_dev_enter();
    if (moes_dev_failed(a.state))
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
