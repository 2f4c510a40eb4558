/*
 * place_copy.cu - where each choice goes, then the rows themselves.
 *
 * Placement: one warp per tile walks its choices in t*K + k order, 32 at a
 * time. Lanes that picked the same expert find each other with
 * __match_any_sync; a lane's rank among them is the number of such lanes
 * below it, added to the tile's running rank for that expert (from the
 * tile scan). Only this warp touches this tile's ranks, the leader writes
 * the new running rank after every peer has read the old one
 * (__syncwarp), so no atomic decides where a row goes.
 *
 * Copy: one block per token reads the token's row once, in the widest
 * vectors the alignment allows, and writes it to each of its K rows.
 */
#include "kernel_common.cuh"

__device__ void moes_stage_place(const gpu_scatter_args &a, int64_t thread,
                                 int64_t threads)
{
    const unsigned lane = threadIdx.x % MOES_WARP;
    const unsigned lower = (1u << lane) - 1u;
    const int64_t n_warps = threads / MOES_WARP;
    const bool masked = a.layout == MOES_LAYOUT_MASKED;
    for (int64_t tile = thread / MOES_WARP; tile < a.tiles; tile += n_warps) {
        const int64_t begin = tile * a.tile_size;
        const int64_t end = begin + a.tile_size < a.n_choices
                                ? begin + a.tile_size
                                : a.n_choices;
        for (int64_t base = begin; base < end; base += MOES_WARP) {
            const int64_t c = base + lane;
            int64_t e = -1, id, rank_base = 0, row = -1;
            if (c < end)
                e = moes_dev_local_expert(a, c, &id);
            const unsigned peers = __match_any_sync(0xFFFFFFFFu, (long long)e);
            if (e >= 0)
                rank_base = a.tile_table[e * a.tiles + tile];
            __syncwarp();
            if (e >= 0) {
                const int64_t r = rank_base + __popc(peers & lower);
                if (masked)
                    row = r < a.capacity ? e * a.capacity + r : -1;
                else
                    row = a.start[e] + r;
                if (lane == (unsigned)(__ffs(peers) - 1))
                    a.tile_table[e * a.tiles + tile] = rank_base + __popc(peers);
            }
            if (c < end) {
                const int64_t t = c / a.top_k, k = c - t * a.top_k;
                moes_dev_index_store(a.out_index, a.index_elem,
                                     t * a.out_index_stride + k, row);
            }
            __syncwarp();
        }
    }
}

extern "C" __global__ void moes_place(const gpu_scatter_args a)
{
    if (!moes_dev_failed(a.state))
        moes_stage_place(a, moes_dev_thread(), moes_dev_threads());
}

enum { COPY_ROWS_CACHED = 32 };

template <typename V>
__device__ __forceinline__ void copy_row(const gpu_scatter_args &a, int64_t t,
                                         const int64_t *rows)
{
    const V *src = (const V *)(a.x + t * a.x_stride_bytes);
    const int64_t n = a.row_bytes / (int64_t)sizeof(V);
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
        const V v = src[i];
        for (int64_t k = 0; k < a.top_k; k++) {
            const int64_t row = k < COPY_ROWS_CACHED
                ? rows[k]
                : moes_dev_index_load(a.out_index, a.index_elem,
                                      t * a.out_index_stride + k);
            if (row >= 0)
                ((V *)(a.out + row * a.out_stride_bytes))[i] = v;
        }
    }
}

__device__ __forceinline__ void copy_scales(const gpu_scatter_args &a,
                                            int64_t t, const int64_t *rows)
{
    const float *src = a.x_scales + t * a.x_scales_stride;
    for (int64_t j = threadIdx.x; j < a.n_scale_cols; j += blockDim.x) {
        const uint32_t word =
            a.out_scales_format == MOES_SCALES_FP32
                ? moes_f32_to_bits(src[j])
                : moes_ue8m0_word(src, a.n_scales, j);
        for (int64_t k = 0; k < a.top_k; k++) {
            const int64_t row = k < COPY_ROWS_CACHED
                ? rows[k]
                : moes_dev_index_load(a.out_index, a.index_elem,
                                      t * a.out_index_stride + k);
            if (row >= 0)
                ((uint32_t *)a.out_scales)[row * a.out_scales_row_stride +
                                           j * a.out_scales_col_stride] = word;
        }
    }
}

extern "C" __global__ void moes_copy_rows(const gpu_scatter_args a)
{
    __shared__ int64_t rows[COPY_ROWS_CACHED];
    if (moes_dev_failed(a.state))
        return;
    for (int64_t t = blockIdx.x; t < a.n_tokens; t += gridDim.x) {
        __syncthreads(); /* the last token's rows are no longer read */
        for (int64_t k = threadIdx.x; k < a.top_k && k < COPY_ROWS_CACHED;
             k += blockDim.x)
            rows[k] = moes_dev_index_load(a.out_index, a.index_elem,
                                          t * a.out_index_stride + k);
        __syncthreads();
        switch (a.copy_width) {
        case 16: copy_row<uint4>(a, t, rows); break;
        case 8: copy_row<uint2>(a, t, rows); break;
        case 4: copy_row<uint32_t>(a, t, rows); break;
        case 2: copy_row<uint16_t>(a, t, rows); break;
        default: copy_row<unsigned char>(a, t, rows); break;
        }
        if (a.x_scales)
            copy_scales(a, t, rows);
    }
}
