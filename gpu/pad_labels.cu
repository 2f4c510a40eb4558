/* SPDX-License-Identifier: MIT */
/*
 * pad_labels.cu - everything of a scatter that is not a token row: the
 * label of every output row (m_indices), zeroed padding rows, and the
 * per-expert outputs (counts, start, end, masked_m, n_dropped). Also the
 * counts of moes_count.
 */
#include "kernel_common.cuh"

/* The expert whose block holds row r (contiguous, grouped): the last e with
 * start[e] <= r. Empty experts share their start with the next one, so
 * the last one is the one whose block is not empty. */
__device__ __forceinline__ int64_t owner_of_row(const gpu_scatter_args &a,
                                                int64_t r)
{
    int64_t lo = 0, hi = a.n_experts - 1;
    while (lo < hi) {
        const int64_t mid = lo + (hi - lo + 1) / 2;
        if (a.start[mid] <= r)
            lo = mid;
        else
            hi = mid - 1;
    }
    return lo;
}

/* Row r's label: its expert on a real row, and on padding inside the
 * expert's block when the caller asks for labelled padding; else -1 (the
 * tail is always -1). *padding says whether r holds no token. */
__device__ __forceinline__ int64_t row_label(const gpu_scatter_args &a,
                                             int64_t r, bool *padding)
{
    int64_t e, first, real;
    if (a.layout == MOES_LAYOUT_MASKED) {
        e = r / a.capacity;
        first = e * a.capacity;
        real = a.counts[e] < a.capacity ? a.counts[e] : a.capacity;
    } else {
        if (r >= a.state->rows_needed) {
            *padding = true;
            return -1;
        }
        e = owner_of_row(a, r);
        first = a.start[e];
        real = a.counts[e];
    }
    *padding = r - first >= real;
    return !*padding || (a.flags & MOES_SCATTER_LABEL_PADDING) ? e : -1;
}

/* Expert e's block of rows x, by the whole warp: its labels, and the
 * row_source pad of its rows without a choice. */
template <typename T, typename R>
__device__ __forceinline__ void label_block(int64_t e,
                                            const moes_expert_rows &x, R lane,
                                            T *labels, T *sources, T pad,
                                            bool label_padding)
{
    const R real = (R)x.real, block = (R)x.block;
    if (labels) {
        T *row = labels + x.first;
        const T pad_label = label_padding ? (T)e : (T)-1;
        for (R r = lane; r < block; r += MOES_WARP)
            row[r] = r < real ? (T)e : pad_label;
    }
    if (sources) {
        T *row = sources + x.first;
        for (R r = real + lane; r < block; r += MOES_WARP)
            row[r] = pad;
    }
}

/* The labels (m_indices) of every row and the row_source pad of rows
 * without a choice (the placement writes the others), one warp per
 * expert block and the tail after: only stores, no search per row
 * (which would be a chain of dependent loads). BATCHED (the grid path,
 * whose label grid fits at once, so that with many experts a warp has
 * several): the lanes load the rows of 32 of the warp's experts
 * together, then the warp stores each block in turn, one round trip for
 * the loads instead of one an expert. The one-launch kernels (at most
 * 512 experts) keep the plain loop. Written for one
 * index type at a time: the width test and the 64-bit address of a
 * store per element were most of the instructions of this stage. An
 * int32 index means fewer than 2^31 rows (validation), so offsets fit 32
 * bits, unsigned: a lane's last step past a block of nearly 2^31 rows
 * (r + 32 from just under it) must not wrap, as a signed int32 would, to
 * a negative offset below the block that the loop goes on storing at. */
template <typename T, typename R, bool BATCHED>
__device__ __forceinline__ void label_blocks(const gpu_scatter_args &a,
                                             int64_t rows_needed,
                                             int64_t thread, int64_t threads)
{
    const R lane = (R)(threadIdx.x % MOES_WARP);
    const bool masked = a.layout == MOES_LAYOUT_MASKED;
    const bool label_padding = (a.flags & MOES_SCATTER_LABEL_PADDING) != 0;
    T *const labels = (T *)a.m_indices;
    T *const sources = (T *)a.row_source;
    const T pad = (T)a.row_source_pad;
    const int64_t n_warps = threads / MOES_WARP;
    if (!BATCHED) {
        for (int64_t e = thread / MOES_WARP; e < a.n_experts; e += n_warps)
            label_block<T, R>(e, moes_dev_expert_rows(a, e, rows_needed),
                              lane, labels, sources, pad, label_padding);
    } else {
        for (int64_t e0 = thread / MOES_WARP; e0 < a.n_experts;
             e0 += MOES_WARP * n_warps) {
            /* Lane l's expert e0 + l * n_warps: the warp's experts in
             * the order of a plain warp-stride loop. */
            const int64_t mine = e0 + (int64_t)lane * n_warps;
            moes_expert_rows rows = {0, 0, 0};
            if (mine < a.n_experts)
                rows = moes_dev_expert_rows(a, mine, rows_needed);
            for (int l = 0; l < MOES_WARP; l++) {
                const int64_t e = e0 + l * n_warps;
                if (e >= a.n_experts)
                    break;
                moes_expert_rows x;
                x.first = __shfl_sync(0xFFFFFFFFu, (long long)rows.first, l);
                x.real = __shfl_sync(0xFFFFFFFFu, (long long)rows.real, l);
                x.block = __shfl_sync(0xFFFFFFFFu, (long long)rows.block, l);
                label_block<T, R>(e, x, lane, labels, sources, pad,
                                  label_padding);
            }
        }
    }
    if (!masked)
        for (int64_t r = rows_needed + thread; r < a.out_rows; r += threads) {
            if (labels)
                labels[r] = (T)-1;
            if (sources)
                sources[r] = pad;
        }
}

/* The labels given the routing's rows needed (from the workspace, or from
 * the shared memory of a kernel that routed on its own). */
template <bool BATCHED>
__device__ __forceinline__ void label_blocks_of(const gpu_scatter_args &a,
                                                int64_t rows_needed,
                                                int64_t thread,
                                                int64_t threads)
{
    if (a.index_elem == 4)
        label_blocks<int32_t, uint32_t, BATCHED>(a, rows_needed, thread,
                                                 threads);
    else
        label_blocks<int64_t, int64_t, BATCHED>(a, rows_needed, thread,
                                                threads);
}

__device__ void moes_label_blocks_of(const gpu_scatter_args &a,
                                     int64_t rows_needed, int64_t thread,
                                     int64_t threads)
{
    label_blocks_of<false>(a, rows_needed, thread, threads);
}

__device__ void moes_stage_label_blocks(const gpu_scatter_args &a,
                                        int64_t thread, int64_t threads)
{
    label_blocks_of<true>(a, a.state->rows_needed, thread, threads);
}

/* One block per row; rows that hold a token are left alone. */
extern "C" __global__ void moes_zero_padding(const gpu_scatter_args a)
{
    moes_dev_enter();
    if (moes_dev_failed(a.state))
        return;
    for (int64_t r = blockIdx.x; r < a.out_rows; r += gridDim.x) {
        bool padding;
        row_label(a, r, &padding);
        if (!padding)
            continue;
        unsigned char *dst = a.out + r * a.out_stride_bytes;
        if (a.copy_width == 16) {
            for (int64_t i = threadIdx.x; i < a.row_bytes / 16;
                 i += blockDim.x)
                ((uint4 *)dst)[i] = make_uint4(0, 0, 0, 0);
        } else {
            for (int64_t i = threadIdx.x; i < a.row_bytes; i += blockDim.x)
                dst[i] = 0;
        }
        /* fp32 0.0 and a zero UE8M0 word are both four zero bytes. */
        if (a.x_scales)
            for (int64_t j = threadIdx.x; j < a.n_scale_cols; j += blockDim.x)
                moes_dev_store_scale(a, r, j, 0);
    }
}

/* The per-expert outputs given the routing's rows needed and dropped
 * choices (as moes_label_blocks_of). */
__device__ void moes_expert_outputs_of(const gpu_scatter_args &a,
                                       int64_t rows_needed, int64_t dropped,
                                       int64_t thread, int64_t threads)
{
    for (int64_t e = thread; e < a.n_experts; e += threads) {
        if (a.counts_out)
            moes_dev_index_store(a.counts_out, a.index_elem, e, a.counts[e]);
        if (a.layout == 0)
            continue;
        const moes_expert_rows x = moes_dev_expert_rows(a, e, rows_needed);
        if (a.start_out)
            moes_dev_index_store(a.start_out, a.index_elem, e, x.first);
        if (a.end_out)
            moes_dev_index_store(
                a.end_out, a.index_elem, e,
                x.first + ((a.flags & MOES_SCATTER_UNPADDED_END) ? x.real
                                                                : x.block));
        if (a.masked_m)
            moes_dev_index_store(a.masked_m, a.index_elem, e, x.real);
    }
    if (a.n_dropped && thread == 0)
        *a.n_dropped = dropped;
}

__device__ void moes_stage_expert_outputs(const gpu_scatter_args &a,
                                          int64_t thread, int64_t threads)
{
    /* A count (layout 0) has counts and nothing else. */
    moes_expert_outputs_of(a, a.layout != 0 ? a.state->rows_needed : 0,
                           a.state->dropped, thread, threads);
}

extern "C" __global__ void moes_expert_outputs(const gpu_scatter_args a)
{
    moes_dev_enter();
    if (!moes_dev_failed(a.state))
        moes_stage_expert_outputs(a, moes_dev_thread(), moes_dev_threads());
}
