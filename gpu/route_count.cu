/* SPDX-License-Identifier: MIT */
/*
 * route_count.cu - the first pass over the routing: check the expert map
 * and the ids, and count each expert's choices per tile.
 *
 * The N*K choices are cut into `tiles` tiles of `tile_size` consecutive
 * flat indices t*K + k. One warp owns one tile: it alone writes that
 * tile's column of the [E][tiles] table, so the counts need no atomics and
 * the later placement can rank the choices of a tile in order.
 */
#include "kernel_common.cuh"

/* Map entries outside [-1, E). The smallest index wins (atomicMin).
 * Stages take the calling thread's index among `threads` taking part, so
 * that a grid and a single block (route_small.cu) run the same code. */
__device__ void moes_stage_check_map(const gpu_scatter_args &a, int64_t thread,
                                     int64_t threads)
{
    for (int64_t i = thread; i < a.n_global; i += threads) {
        int32_t v = a.map[i];
        if (!MOES_INDEX_OK(v, a.n_experts))
            moes_dev_report(a.state, MOES_DATA_ERROR_RANK_MAP, i);
    }
}

__device__ void moes_stage_count_tiles(const gpu_scatter_args &a,
                                       int64_t thread, int64_t threads)
{
    const unsigned lane = threadIdx.x % MOES_WARP;
    const int64_t n_warps = threads / MOES_WARP;
    for (int64_t tile = thread / MOES_WARP; tile < a.tiles;
         tile += n_warps) {
        const int64_t begin = tile * a.tile_size;
        const int64_t end = begin + a.tile_size < a.n_choices
                                ? begin + a.tile_size
                                : a.n_choices;
        for (int64_t e = lane; e < a.n_experts; e += MOES_WARP)
            a.tile_table[e * a.tiles + tile] = 0;
        __syncwarp();
        for (int64_t base = begin; base < end; base += MOES_WARP) {
            const int64_t c = base + lane;
            int64_t e = -1, id = 0;
            bool bad = false;
            if (c < end) {
                e = moes_dev_local_expert(a, c, &id);
                bad = !MOES_INDEX_OK(id, a.n_global);
            }
            const unsigned bad_lanes = __ballot_sync(0xFFFFFFFFu, bad);
            if (bad_lanes) {
                /* The lowest lane holds the tile's first bad choice. The
                 * counts no longer matter: the call writes nothing. */
                if (lane == (unsigned)(__ffs(bad_lanes) - 1))
                    moes_dev_report(a.state, MOES_DATA_ERROR_RANK_ID, c);
                break;
            }
            const unsigned peers = __match_any_sync(0xFFFFFFFFu, (long long)e);
            if (e >= 0 && lane == (unsigned)(__ffs(peers) - 1))
                a.tile_table[e * a.tiles + tile] += __popc(peers);
            /* The next round's leader may be another lane. */
            __syncwarp();
        }
    }
}

/* Under UE8M0 every scale of every token must be a positive normal power
 * of two (numerics.h, moes_ue8m0_scale_ok), placed or not, as on the CPU:
 * the smallest t * S + s that is not wins. */
__device__ void moes_stage_check_scales(const gpu_scatter_args &a,
                                        int64_t thread, int64_t threads)
{
    if (!a.x_scales || a.out_scales_format != MOES_SCALES_UE8M0)
        return;
    const int64_t n = a.n_tokens * a.n_scales;
    for (int64_t i = thread; i < n; i += threads) {
        const int64_t t = i / a.n_scales, j = i - t * a.n_scales;
        if (!moes_ue8m0_scale_ok(
                moes_f32_to_bits(a.x_scales[t * a.x_scales_stride + j])))
            moes_dev_report(a.state, MOES_DATA_ERROR_RANK_SCALE, i);
    }
}

extern "C" __global__ void moes_check_map(const gpu_scatter_args a)
{
    moes_dev_enter();
    if (!moes_dev_failed(a.state))
        moes_stage_check_map(a, moes_dev_thread(), moes_dev_threads());
}

extern "C" __global__ void moes_count_tiles(const gpu_scatter_args a)
{
    moes_dev_enter();
    if (moes_dev_failed(a.state))
        return;
    moes_stage_count_tiles(a, moes_dev_thread(), moes_dev_threads());
    moes_stage_check_scales(a, moes_dev_thread(), moes_dev_threads());
}
