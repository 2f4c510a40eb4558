/* SPDX-License-Identifier: MIT */
/*
 * route_count.cu - the first pass over the routing: check the expert map
 * and the ids, and count each expert's choices per tile.
 *
 * The N*K choices are cut into `tiles` tiles of `tile_size` consecutive
 * flat indices t*K + k, and the [E][tiles] table gets each (expert, tile)
 * count. With few experts one warp owns one tile and zeroes its column
 * first; with many the table is zeroed before (moes_prepare_route, which
 * then checks the map too) and any warp adds to any entry. The counts
 * are sums, the same whatever the order of the adds; the placement then
 * ranks each tile's choices in order.
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

/* Rounds of 32 choices a warp loads before it counts them: their id and
 * map loads are all in flight at once instead of one round's at a time.
 * (gpu_ops.c sizes the counting grid of a zeroed table with it.) */
enum { COUNT_ROUNDS_IN_FLIGHT = GPU_COUNT_ROUNDS };

/* The loads of count_rounds: for the choices [base, base + 32 * R)
 * below end, a round of 32 each, the lane's entry of the tile table (-1:
 * no local expert, or past end) and whether its id is bad. `tile` is the
 * tile of them all, or -1 for each choice's own. Their id and map loads
 * are all in flight at once. */
__device__ __forceinline__ void moes_count_load(
    const gpu_scatter_args &a, int64_t base, int64_t end, int64_t tile,
    int64_t (&entry)[COUNT_ROUNDS_IN_FLIGHT],
    bool (&bad)[COUNT_ROUNDS_IN_FLIGHT])
{
    const unsigned lane = threadIdx.x % MOES_WARP;
#pragma unroll
    for (int j = 0; j < COUNT_ROUNDS_IN_FLIGHT; j++) {
        const int64_t c = base + j * MOES_WARP + lane;
        int64_t id = 0, e = -1;
        bad[j] = false;
        if (c < end) {
            e = moes_dev_local_expert(a, c, &id);
            bad[j] = !MOES_INDEX_OK(id, a.n_global);
        }
        entry[j] = e < 0 ? -1
                         : e * a.tiles + (tile >= 0 ? tile : c / a.tile_size);
    }
}

/* The adds of count_rounds, a round at a time: the lanes with the same
 * entry (expert and tile) found with __match_any_sync and their number
 * added by the lowest one, an add the warp does not wait for (a sum of
 * counts is the same in any order). False at a bad id: the lowest lane
 * of the first round with one reports it, and the counts no longer
 * matter (the call writes nothing). */
__device__ __forceinline__ bool moes_count_add(
    const gpu_scatter_args &a, int64_t base,
    const int64_t (&entry)[COUNT_ROUNDS_IN_FLIGHT],
    const bool (&bad)[COUNT_ROUNDS_IN_FLIGHT])
{
    const unsigned lane = threadIdx.x % MOES_WARP;
#pragma unroll
    for (int j = 0; j < COUNT_ROUNDS_IN_FLIGHT; j++) {
        const unsigned bad_lanes = __ballot_sync(0xFFFFFFFFu, bad[j]);
        if (bad_lanes) {
            if (lane == (unsigned)(__ffs(bad_lanes) - 1))
                moes_dev_report(a.state, MOES_DATA_ERROR_RANK_ID,
                                base + j * MOES_WARP + lane);
            return false;
        }
        const unsigned peers =
            __match_any_sync(0xFFFFFFFFu, (long long)entry[j]);
        if (entry[j] >= 0 && lane == (unsigned)(__ffs(peers) - 1))
            atomicAdd((unsigned long long *)&a.tile_table[entry[j]],
                      (unsigned long long)__popc(peers));
        /* A scatter placed by the sort (one tile: the entry is the
         * expert) counts the sort's first digits too (fewer than 2^24
         * choices). */
        if (a.sort_first && entry[j] >= 0)
            atomicAdd(moes_dev_sort_count(
                          a, 0, (uint32_t)(base + j * MOES_WARP + lane),
                          (int32_t)entry[j]),
                      1);
    }
    return true;
}

/* Adds the choices [base, base + 32 * R) below end to their entries of
 * the tile table: the loads, then the adds. */
__device__ bool count_rounds(const gpu_scatter_args &a, int64_t base,
                             int64_t end, int64_t tile)
{
    int64_t entry[COUNT_ROUNDS_IN_FLIGHT];
    bool bad[COUNT_ROUNDS_IN_FLIGHT];
    moes_count_load(a, base, end, tile, entry, bad);
    return moes_count_add(a, base, entry, bad);
}

/* A warp a tile, which it zeroes first; or, with the table zeroed before
 * (a.zero_table, many experts), a count is a sum that any warp may add
 * to: the warps then take the choices 32 * R at a time whatever the
 * tiles, so that a routing with few long tiles still counts on many
 * warps. Either way a warp meets its choices in ascending order and stops
 * at its first bad one, so the smallest bad index is reported. */
__device__ void moes_stage_count_tiles(const gpu_scatter_args &a,
                                       int64_t thread, int64_t threads)
{
    enum { R = COUNT_ROUNDS_IN_FLIGHT };
    const unsigned lane = threadIdx.x % MOES_WARP;
    const int64_t n_warps = threads / MOES_WARP;
    if (a.zero_table) {
        for (int64_t base = thread / MOES_WARP * (R * MOES_WARP);
             base < a.n_choices; base += n_warps * (R * MOES_WARP))
            if (!count_rounds(a, base, a.n_choices, -1))
                return;
        return;
    }
    for (int64_t tile = thread / MOES_WARP; tile < a.tiles;
         tile += n_warps) {
        const int64_t begin = tile * a.tile_size;
        const int64_t end = begin + a.tile_size < a.n_choices
                                ? begin + a.tile_size
                                : a.n_choices;
        for (int64_t e = lane; e < a.n_experts; e += MOES_WARP)
            a.tile_table[e * a.tiles + tile] = 0;
        /* Visible to the lanes that add below. */
        __syncwarp();
        for (int64_t base = begin; base < end; base += R * MOES_WARP)
            if (!count_rounds(a, base, end, tile))
                break;
    }
}

/* Under UE8M0 every scale of every token must be a positive normal power
 * of two (numerics.h, moes_ue8m0_scale_ok), placed or not, as on the CPU:
 * the smallest t * S + s that is not wins. A thread's scales ascend, so
 * its first bad one is the only one it need report. */
__device__ void moes_stage_check_scales(const gpu_scatter_args &a,
                                        int64_t thread, int64_t threads)
{
    if (!a.x_scales || a.out_scales_format != MOES_SCALES_UE8M0)
        return;
    const unsigned long long key = moes_dev_check_scales<int64_t, 4>(
        a, thread, a.n_tokens * a.n_scales, threads, GPU_ERROR_KEY_NONE);
    if (key != GPU_ERROR_KEY_NONE)
        atomicMin(&a.state->key, key);
}

/* Before the counts of a routing with many experts: the tile table
 * zeroed and the map checked, both in coalesced passes over the whole
 * grid; for a scatter placed by the sort, its digit counts zeroed and its
 * first positions set past every position (atomicMin lowers them). */
__device__ void moes_stage_prepare_route(const gpu_scatter_args &a,
                                         int64_t thread, int64_t threads)
{
    if (a.map && a.n_global > 0)
        moes_stage_check_map(a, thread, threads);
    if (a.zero_table) {
        /* 16 bytes a store: the workspace is 16-byte aligned. */
        const int64_t n = a.tiles * a.n_experts;
        ulonglong2 *pairs = (ulonglong2 *)a.tile_table;
        for (int64_t i = thread; i < n / 2; i += threads)
            pairs[i] = make_ulonglong2(0, 0);
        if (n % 2 && thread == 0)
            a.tile_table[n - 1] = 0;
    }
    if (a.sort_first) {
        const int64_t n = a.sort_passes * a.sort_blocks *
                          (1 << GPU_SORT_DIGIT_BITS);
        for (int64_t i = thread; i < n; i += threads)
            a.sort_hist[i] = 0;
        for (int64_t e = thread; e < a.n_experts; e += threads)
            a.sort_first[e] = INT32_MAX;
    }
}

extern "C" __global__ void moes_prepare_route(const gpu_scatter_args a)
{
    moes_dev_enter();
    if (!moes_dev_failed(a.state))
        moes_stage_prepare_route(a, moes_dev_thread(), moes_dev_threads());
}

/* The scan by expert ranges (expert_scan.cu) finds its status words at
 * 0, its first range to hand out at 0, and the dropped choices at 0: the
 * scan adds to them. */
__device__ void moes_stage_reset_ranges(const gpu_scatter_args &a,
                                        int64_t thread, int64_t threads)
{
    if (!a.scan_ranges)
        return;
    for (int64_t i = thread; i < a.scan_ranges * GPU_SCAN_STATUS_WORDS;
         i += threads)
        a.range_status[i] = 0;
    if (thread == 0) {
        a.state->scan_ticket = 0;
        a.state->dropped = 0;
    }
}

/* The map is checked here unless moes_prepare_route ran (to zero the
 * table) and checked it: the counts only ever use a map entry inside
 * [0, E), and the verdict waits for the scan's end, so the check need not
 * come first. */
extern "C" __global__ void moes_count_tiles(const gpu_scatter_args a)
{
    moes_dev_enter();
    if (moes_dev_failed(a.state))
        return;
    moes_stage_reset_ranges(a, moes_dev_thread(), moes_dev_threads());
    if (a.map && a.n_global > 0 && !a.zero_table)
        moes_stage_check_map(a, moes_dev_thread(), moes_dev_threads());
    moes_stage_count_tiles(a, moes_dev_thread(), moes_dev_threads());
    moes_stage_check_scales(a, moes_dev_thread(), moes_dev_threads());
}
