/* SPDX-License-Identifier: MIT */
/*
 * expert_scan.cu - the prefix sums: over the tiles of each expert (each
 * tile's first rank within the expert, and the expert's total), then over
 * the experts (each expert's first row, the rows needed, the capacity
 * check).
 *
 * Race-free by construction: in the tile scan each thread reads and
 * writes only its own run of tiles and the block's sums go through shared
 * memory with a barrier on each side; in the expert scan a single block
 * walks the experts in chunks in the same way, and the carry between
 * chunks stays in registers.
 */
#include "kernel_common.cuh"

/* Inclusive warp scan with a saturating sum (associative on values >= 0). */
__device__ __forceinline__ int64_t warp_scan_sat(int64_t x, unsigned lane)
{
    for (int off = 1; off < MOES_WARP; off *= 2) {
        int64_t y = __shfl_up_sync(0xFFFFFFFFu, x, off);
        if (lane >= (unsigned)off)
            x = moes_dev_add_sat(x, y);
    }
    return x;
}

enum { SCAN_THREADS = 1024 };

/* The whole block (a multiple of 32 threads, at most SCAN_THREADS):
 * start[e], the rows needed, the capacity check (contiguous, grouped) or
 * the dropped choices (masked). */
__device__ void moes_block_scan_experts(const gpu_scatter_args &a)
{
    __shared__ int64_t warp_sums[SCAN_THREADS / MOES_WARP];
    __shared__ int64_t dropped_sums[SCAN_THREADS / MOES_WARP];
    const unsigned lane = threadIdx.x % MOES_WARP;
    const unsigned warp = threadIdx.x / MOES_WARP;
    const unsigned n_warps = blockDim.x / MOES_WARP;
    const bool masked = a.layout == MOES_LAYOUT_MASKED;
    int64_t carry = 0, dropped = 0;

    for (int64_t base = 0; base < a.n_experts; base += blockDim.x) {
        const int64_t e = base + threadIdx.x;
        int64_t v = 0;
        if (e < a.n_experts) {
            const int64_t count = a.counts[e];
            if (masked)
                dropped += count > a.capacity ? count - a.capacity : 0;
            else
                v = moes_dev_round_up_sat(count, a.alignment);
        }
        const int64_t incl = warp_scan_sat(v, lane);
        int64_t excl = __shfl_up_sync(0xFFFFFFFFu, incl, 1);
        if (lane == 0)
            excl = 0;
        if (lane == MOES_WARP - 1)
            warp_sums[warp] = incl;
        __syncthreads();
        if (warp == 0) {
            int64_t s = lane < n_warps ? warp_sums[lane] : 0;
            s = warp_scan_sat(s, lane);
            if (lane < n_warps)
                warp_sums[lane] = s;
        }
        __syncthreads();
        const int64_t before = warp > 0 ? warp_sums[warp - 1] : 0;
        if (e < a.n_experts)
            a.start[e] = masked ? e * a.capacity
                                : moes_dev_add_sat(carry,
                                                   moes_dev_add_sat(before, excl));
        carry = moes_dev_add_sat(carry, warp_sums[n_warps - 1]);
        /* warp_sums is rewritten by the next chunk. */
        __syncthreads();
    }

    /* The dropped choices: a block sum. */
    for (int off = MOES_WARP / 2; off > 0; off /= 2)
        dropped += __shfl_down_sync(0xFFFFFFFFu, dropped, off);
    if (lane == 0)
        dropped_sums[warp] = dropped;
    __syncthreads();
    /* The warps' sums by warp 0, not one thread's loop over them. */
    if (warp == 0) {
        int64_t total = lane < n_warps ? dropped_sums[lane] : 0;
        for (int off = MOES_WARP / 2; off > 0; off /= 2)
            total += __shfl_down_sync(0xFFFFFFFFu, total, off);
        if (lane == 0) {
            a.state->dropped = total;
            a.state->rows_needed = masked ? a.out_rows : carry;
            if (!masked && carry > a.capacity)
                moes_dev_report(a.state, MOES_DATA_ERROR_RANK_CAPACITY, 0);
        }
    }
}

/* The finish arguments of a routing validation (map, ids, capacity). */
__device__ __forceinline__ gpu_finish_args moes_route_finish_args(
    const gpu_scatter_args &a)
{
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
    f.x_scales = a.x_scales;
    f.x_scales_stride = a.x_scales_stride;
    f.n_scales = a.n_scales;
    return f;
}

/* Exclusive sum over the block of one value per thread (any block size up
 * to SCAN_THREADS, a multiple of 32); *total gets the block's sum. */
__device__ int64_t block_exclusive_sum(int64_t v, int64_t *total)
{
    __shared__ int64_t warp_sums[SCAN_THREADS / MOES_WARP];
    const unsigned lane = threadIdx.x % MOES_WARP;
    const unsigned warp = threadIdx.x / MOES_WARP;
    const unsigned n_warps = blockDim.x / MOES_WARP;
    int64_t incl = v;
    for (int off = 1; off < MOES_WARP; off *= 2) {
        const int64_t y = __shfl_up_sync(0xFFFFFFFFu, incl, off);
        if (lane >= (unsigned)off)
            incl += y;
    }
    if (lane == MOES_WARP - 1)
        warp_sums[warp] = incl;
    __syncthreads();
    if (warp == 0) {
        int64_t w = lane < n_warps ? warp_sums[lane] : 0;
        for (int off = 1; off < MOES_WARP; off *= 2) {
            const int64_t y = __shfl_up_sync(0xFFFFFFFFu, w, off);
            if (lane >= (unsigned)off)
                w += y;
        }
        if (lane < n_warps)
            warp_sums[lane] = w;
    }
    __syncthreads();
    const int64_t before = warp > 0 ? warp_sums[warp - 1] : 0;
    *total = warp_sums[n_warps - 1];
    __syncthreads(); /* warp_sums may be used again */
    return before + incl - v;
}

/* col[i .. i+N-1] (0 past hi), N independent loads in flight. */
template <int N>
__device__ __forceinline__ void load_run(const int64_t *col, int64_t i,
                                         int64_t hi, int64_t *v)
{
#pragma unroll
    for (int j = 0; j < N; j++)
        v[j] = i + j < hi ? col[i + j] : 0;
}

/* One block per expert: tile_table[e][*] becomes each tile's first rank
 * within the expert, counts[e] the total. Thread i owns the i-th of
 * blockDim.x contiguous runs of the tiles: it sums its run (independent
 * loads, all in flight), one block scan gives each run its first rank,
 * and the thread rewrites its run. Then the last block to finish scans
 * the experts (start, the rows needed, the capacity check) and turns the
 * first error of the routing into the record: the whole of the routing's
 * prefix sums and its validation in one launch. */
extern "C" __global__ void __launch_bounds__(SCAN_THREADS)
moes_scan_routing(const gpu_scatter_args a)
{
    enum { UNROLL = 8 };
    const int64_t run_len = (a.tiles + blockDim.x - 1) / blockDim.x;
    const int64_t lo0 = (int64_t)threadIdx.x * run_len;
    const int64_t lo = lo0 < a.tiles ? lo0 : a.tiles;
    const int64_t hi = lo + run_len < a.tiles ? lo + run_len : a.tiles;
    moes_dev_enter();
    const bool failed = moes_dev_failed(a.state);
    for (int64_t e = blockIdx.x; !failed && e < a.n_experts; e += gridDim.x) {
        int64_t *col = a.tile_table + e * a.tiles;
        int64_t sum = 0, total;
        for (int64_t i = lo; i < hi; i += UNROLL) {
            int64_t v[UNROLL];
            load_run<UNROLL>(col, i, hi, v);
#pragma unroll
            for (int j = 0; j < UNROLL; j++)
                sum += v[j];
        }
        int64_t run = block_exclusive_sum(sum, &total);
        for (int64_t i = lo; i < hi; i += UNROLL) {
            int64_t v[UNROLL];
            load_run<UNROLL>(col, i, hi, v);
#pragma unroll
            for (int j = 0; j < UNROLL; j++)
                if (i + j < hi) {
                    col[i + j] = run;
                    run += v[j];
                }
        }
        if (threadIdx.x == 0)
            a.counts[e] = total;
    }
    /* Every block counts itself, failed or not, so that the last one is
     * known; the counts of all experts are visible to it. */
    if (!moes_dev_last_block(a.state))
        return;
    if (!failed && a.layout != 0) /* a count has no rows to place */
        moes_block_scan_experts(a);
    __syncthreads();
    if (threadIdx.x == 0)
        moes_dev_close_validation(a.state, moes_route_finish_args(a));
}
