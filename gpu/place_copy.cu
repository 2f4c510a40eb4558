/* SPDX-License-Identifier: MIT */
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
 * Copy: a block reads a chunk of a token's row (and its scale words)
 * once, in the widest vectors the alignment allows, and writes it to each
 * of the token's rows. After the one-block routing, extra blocks of the
 * same launch write the row labels.
 */
#include "kernel_common.cuh"

/* Rounds of 32 choices a placing warp loads together (ids, experts,
 * first rows). On an H200, 173 -> 165 us for the scatter of 4096 tokens
 * over 65536 experts (64 tiles of 16 rounds); no change at 256 experts
 * (bench/NOTES.md, v10). */
enum { PLACE_ROUNDS_IN_FLIGHT = 4 };

__device__ void moes_stage_place(const gpu_scatter_args &a, int64_t thread,
                                 int64_t threads)
{
    /* Rounds whose ids, experts and first rows are loaded together: only
     * the running rank, which the round before may have just moved, is
     * loaded round by round. */
    enum { R = PLACE_ROUNDS_IN_FLIGHT };
    const unsigned lane = threadIdx.x % MOES_WARP;
    const unsigned lower = (1u << lane) - 1u;
    const int64_t n_warps = threads / MOES_WARP;
    const bool masked = a.layout == MOES_LAYOUT_MASKED;
    for (int64_t tile = thread / MOES_WARP; tile < a.tiles; tile += n_warps) {
        const int64_t begin = tile * a.tile_size;
        const int64_t end = begin + a.tile_size < a.n_choices
                                ? begin + a.tile_size
                                : a.n_choices;
        int64_t *column = a.tile_table + tile;
        for (int64_t base = begin; base < end; base += R * MOES_WARP) {
            int64_t e[R], first[R];
#pragma unroll
            for (int j = 0; j < R; j++) {
                const int64_t c = base + j * MOES_WARP + lane;
                int64_t id;
                e[j] = c < end ? moes_dev_local_expert(a, c, &id) : -1;
            }
#pragma unroll
            for (int j = 0; j < R; j++)
                first[j] = e[j] >= 0 ? (masked ? e[j] * a.capacity
                                               : a.start[e[j]])
                                     : 0;
#pragma unroll
            for (int j = 0; j < R; j++) {
                if (base + j * MOES_WARP >= end)
                    break;
                const int64_t c = base + j * MOES_WARP + lane;
                int64_t rank_base = 0, row = -1;
                const unsigned peers =
                    __match_any_sync(0xFFFFFFFFu, (long long)e[j]);
                if (e[j] >= 0)
                    rank_base = column[e[j] * a.tiles];
                __syncwarp();
                if (e[j] >= 0) {
                    const int64_t r = rank_base + __popc(peers & lower);
                    if (masked)
                        row = r < a.capacity ? first[j] + r : -1;
                    else
                        row = first[j] + r;
                    if (lane == (unsigned)(__ffs(peers) - 1))
                        column[e[j] * a.tiles] = rank_base + __popc(peers);
                }
                if (c < end)
                    moes_dev_place_choice(a, c, row);
                __syncwarp();
            }
        }
    }
}

/* The copy: one warp per (token, chunk of the row) item. The lanes load
 * the token's out_index entries (written by the placement); a token placed
 * nowhere costs that and nothing more. Each lane then reads P vectors
 * of the chunk once, in the widest vectors that the addresses allow, and
 * writes them to every row of the token; the warp of a token's first
 * chunk also writes its scale words. */
template <typename V, int P>
__device__ void copy_items(const gpu_scatter_args &a)
{
    const int64_t n_vec = a.row_bytes / (int64_t)sizeof(V);
    const int64_t items = a.n_tokens * a.copy_chunks;
    const int64_t lane = threadIdx.x % MOES_WARP;
    const int64_t stride = a.copy_blocks * blockDim.x / MOES_WARP;
    int64_t item = moes_dev_thread() / MOES_WARP;
    moes_row_fetch next;
    if (item < items)
        next = moes_dev_fetch_rows(a.out_index, a.index_elem,
                                   item / a.copy_chunks * a.out_index_stride,
                                   0, a.top_k, NULL, 0);
    for (; item < items; item += stride) {
        const int64_t t = item / a.copy_chunks;
        const int64_t chunk = item - t * a.copy_chunks;
        const int64_t s0 = chunk * (MOES_WARP * P) + lane;
        const V *x = (const V *)(a.x + t * a.x_stride_bytes);
        const moes_row_fetch first = next;
        /* The next item's entries load while this one is copied. */
        if (item + stride < items)
            next = moes_dev_fetch_rows(
                a.out_index, a.index_elem,
                (item + stride) / a.copy_chunks * a.out_index_stride, 0,
                a.top_k, NULL, 0);
        for (int64_t k0 = 0; k0 < a.top_k; k0 += MOES_WARP) {
            const moes_row_fetch f =
                k0 == 0 ? first
                        : moes_dev_fetch_rows(a.out_index, a.index_elem,
                                              t * a.out_index_stride, k0,
                                              a.top_k, NULL, 0);
            unsigned valid = moes_dev_valid_rows(f, a.out_rows);
            if (!valid)
                continue;
            V v[P];
#pragma unroll
            for (int j = 0; j < P; j++) {
                const int64_t s = s0 + j * MOES_WARP;
                if (s < n_vec)
                    v[j] = x[s];
            }
            uint32_t word = 0;
            const bool scales = a.x_scales && chunk == 0;
            if (scales && lane < a.n_scale_cols) {
                const float *src = a.x_scales + t * a.x_scales_stride;
                word = a.out_scales_format == MOES_SCALES_FP32
                           ? moes_f32_to_bits(src[lane])
                           : moes_ue8m0_word(src, a.n_scales, lane);
            }
            while (valid) {
                float w;
                const int64_t row = moes_dev_next_row(&valid, f, &w);
                V *dst = (V *)(a.out + row * a.out_stride_bytes);
#pragma unroll
                for (int j = 0; j < P; j++) {
                    const int64_t s = s0 + j * MOES_WARP;
                    if (s < n_vec)
                        dst[s] = v[j];
                }
                if (!scales)
                    continue;
                if (lane < a.n_scale_cols)
                    *moes_dev_out_scale(a, row, lane) = word;
                /* Rows with more scale words than lanes: the rest. */
                const float *src = a.x_scales + t * a.x_scales_stride;
                for (int64_t j = lane + MOES_WARP; j < a.n_scale_cols;
                     j += MOES_WARP)
                    *moes_dev_out_scale(a, row, j) =
                        a.out_scales_format == MOES_SCALES_FP32
                            ? moes_f32_to_bits(src[j])
                            : moes_ue8m0_word(src, a.n_scales, j);
            }
        }
    }
}

/* The first copy_blocks blocks copy; the rest, after the one-block
 * routing, write the row labels, which need only the expert blocks that
 * the routing left in the workspace and so run beside the copy. */
extern "C" __global__ void __launch_bounds__(GPU_ROW_THREADS)
moes_copy_rows(const gpu_scatter_args a)
{
    moes_dev_release_next();
    /* out_index comes from the placement. */
    moes_dev_wait_prior();
    if (moes_dev_failed(a.state))
        return;
    if (blockIdx.x >= a.copy_blocks) {
        moes_stage_label_blocks(
            a, (blockIdx.x - a.copy_blocks) * (int64_t)blockDim.x + threadIdx.x,
            ((int64_t)gridDim.x - a.copy_blocks) * blockDim.x);
        return;
    }
    enum { P = GPU_ROW_PER_THREAD };
    switch (a.copy_width) {
    case 16: copy_items<uint4, P>(a); break;
    case 8: copy_items<uint2, P>(a); break;
    case 4: copy_items<uint32_t, P>(a); break;
    case 2: copy_items<uint16_t, P>(a); break;
    default: copy_items<unsigned char, P>(a); break;
    }
}

/* The grid path's copy of rows in 16-byte vectors: no label blocks (the
 * placement launch wrote the labels) and longer chunks. */
extern "C" __global__ void __launch_bounds__(GPU_ROW_THREADS)
moes_copy_rows_wide(const gpu_scatter_args a)
{
    moes_dev_release_next();
    moes_dev_wait_prior();
    if (moes_dev_failed(a.state))
        return;
    copy_items<uint4, GPU_ROW_WIDE_PER_THREAD>(a);
}
