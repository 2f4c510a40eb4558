/* SPDX-License-Identifier: MIT */
/*
 * place_and_label.cu - after the prefix sums of a large scatter, in one
 * launch: where each choice goes (out_index: from the tiles, or from the
 * choices sorted by expert, sort_route.cu), the label of every output
 * row (m_indices), and the per-expert outputs. The grid is cut in three:
 * place_blocks blocks place, the next label_blocks label (and write the
 * row_source pad of rows without a choice), the rest write
 * the per-expert outputs. The parts write disjoint outputs and read only
 * what the scan wrote, so they need nothing from one another.
 */
#include "kernel_common.cuh"

extern "C" __global__ void moes_place_and_label(const gpu_scatter_args a)
{
    moes_dev_enter();
    if (moes_dev_failed(a.state))
        return;
    const int64_t block = blockIdx.x;
    if (block < a.place_blocks) {
        if (a.sort_first)
            moes_stage_place_sorted(a, block * blockDim.x + threadIdx.x,
                                    a.place_blocks * blockDim.x);
        else
            moes_stage_place(a, block * blockDim.x + threadIdx.x,
                             a.place_blocks * blockDim.x);
    } else if (block < a.place_blocks + a.label_blocks) {
        if (a.m_indices || a.row_source)
            moes_stage_label_blocks(
                a, (block - a.place_blocks) * blockDim.x + threadIdx.x,
                a.label_blocks * blockDim.x);
    } else {
        const int64_t first = a.place_blocks + a.label_blocks;
        moes_stage_expert_outputs(
            a, (block - first) * blockDim.x + threadIdx.x,
            ((int64_t)gridDim.x - first) * blockDim.x);
    }
}
