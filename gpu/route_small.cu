/*
 * route_small.cu - the whole routing of a small call in one launch.
 *
 * Decode-size work (a few hundred choices) is dominated by launch
 * latency, so one block runs, in order and separated by block barriers,
 * the stages that otherwise are separate kernels: map check, tile counts,
 * tile scan, expert scan, the error record, placement, labels and the
 * per-expert outputs. The code of each stage is the same as in the
 * multi-kernel path (labels are written per expert block rather than
 * searched per row); only the set of threads differs. The row copy and
 * the zeroing of padding rows stay separate launches: they need the whole
 * GPU's bandwidth.
 */
#include "kernel_common.cuh"

extern "C" __global__ void __launch_bounds__(SCAN_THREADS)
moes_route_small(const gpu_scatter_args a)
{
    const int64_t thread = threadIdx.x, threads = blockDim.x;
    const bool scatter = a.layout != 0;
    if (moes_dev_failed(a.state))
        return;
    if (a.map)
        moes_stage_check_map(a, thread, threads);
    moes_stage_count_tiles(a, thread, threads);
    __syncthreads();
    moes_stage_scan_tiles(a, thread, threads);
    __syncthreads();
    if (scatter)
        moes_block_scan_experts(a);
    __syncthreads();
    if (thread == 0) {
        gpu_finish_args f;
        f.state = a.state;
        f.op = GPU_OP_ROUTE;
        f.ids = a.ids;
        f.ids_stride = a.ids_stride;
        f.ids_elem = a.ids_elem;
        f.row_len = a.top_k;
        f.map = a.map;
        f.n_global = a.n_global;
        f.n_experts = a.n_experts;
        f.y_rows = 0;
        f.capacity = a.capacity;
        moes_stage_finish_validation(f);
    }
    __syncthreads();
    /* Read by every thread after the barrier: the same answer for all. */
    if (moes_dev_failed(a.state))
        return;
    if (scatter) {
        moes_stage_place(a, thread, threads);
        if (a.m_indices)
            moes_stage_label_blocks(a, thread, threads);
    }
    moes_stage_expert_outputs(a, thread, threads);
}
