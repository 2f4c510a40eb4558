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
 * Copy: each thread reads one vector of a token's row (or one scale
 * word) once, in the widest vectors the alignment allows, and writes it
 * to each of the token's K rows.
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
    moes_dev_enter();
    if (!moes_dev_failed(a.state))
        moes_stage_place(a, moes_dev_thread(), moes_dev_threads());
}

/* The copy: one work item per (token, slot), one item per thread. Slots
 * 0 .. n_vec-1 are the vectors of the row (the widest of 16, 8, 4, 2, 1
 * bytes that the addresses allow), the next n_scale_cols are the scale
 * words. A thread reads its vector once and writes it to each of the
 * token's rows, so a warp reads and writes whole 512-byte runs of a row
 * with 16-byte accesses. The first item's read is issued before waiting
 * for the placement (it reads only the caller's input), so that it
 * overlaps the routing. */
enum { COPY_THREADS = 256 };

template <typename V>
__device__ __forceinline__ void store_to_rows(const gpu_scatter_args &a,
                                              int64_t t, int64_t slot,
                                              const V v)
{
#pragma unroll 8
    for (int64_t k = 0; k < a.top_k; k++) {
        const int64_t row = moes_dev_index_load(a.out_index, a.index_elem,
                                                t * a.out_index_stride + k);
        if (row >= 0)
            ((V *)(a.out + row * a.out_stride_bytes))[slot] = v;
    }
}

__device__ __forceinline__ void store_scale(const gpu_scatter_args &a,
                                            int64_t t, int64_t j,
                                            uint32_t word)
{
#pragma unroll 8
    for (int64_t k = 0; k < a.top_k; k++) {
        const int64_t row = moes_dev_index_load(a.out_index, a.index_elem,
                                                t * a.out_index_stride + k);
        if (row >= 0)
            ((uint32_t *)a.out_scales)[row * a.out_scales_row_stride +
                                       j * a.out_scales_col_stride] = word;
    }
}

template <typename V>
__device__ void copy_items(const gpu_scatter_args &a)
{
    const int64_t n_vec = a.row_bytes / (int64_t)sizeof(V);
    const int64_t slots = n_vec + (a.x_scales ? a.n_scale_cols : 0);
    const int64_t items = a.n_tokens * slots;
    bool waited = false;
    for (int64_t item = moes_dev_thread(); item < items;
         item += moes_dev_threads()) {
        const int64_t t = item / slots, slot = item - t * slots;
        V v;
        uint32_t word = 0;
        if (slot < n_vec) {
            v = ((const V *)(a.x + t * a.x_stride_bytes))[slot];
        } else {
            const float *src = a.x_scales + t * a.x_scales_stride;
            const int64_t j = slot - n_vec;
            word = a.out_scales_format == MOES_SCALES_FP32
                       ? moes_f32_to_bits(src[j])
                       : moes_ue8m0_word(src, a.n_scales, j);
        }
        if (!waited) {
            moes_dev_wait_prior();
            if (moes_dev_failed(a.state))
                return;
            waited = true;
        }
        if (slot < n_vec)
            store_to_rows<V>(a, t, slot, v);
        else
            store_scale(a, t, slot - n_vec, word);
    }
}

extern "C" __global__ void __launch_bounds__(COPY_THREADS)
moes_copy_rows(const gpu_scatter_args a)
{
    moes_dev_release_next();
    switch (a.copy_width) {
    case 16: copy_items<uint4>(a); break;
    case 8: copy_items<uint2>(a); break;
    case 4: copy_items<uint32_t>(a); break;
    case 2: copy_items<uint16_t>(a); break;
    default: copy_items<unsigned char>(a); break;
    }
}
