/* SPDX-License-Identifier: MIT */
/*
 * expert_scan.cu - the prefix sums: over the tiles of each expert (each
 * tile's first rank within the expert, and the expert's total), then over
 * the experts (each expert's first row, the rows needed, the capacity
 * check).
 *
 * Race-free by construction: in the tile scan each lane reads and writes
 * only its own element and the running sum travels in registers through
 * warp shuffles; in the expert scan a single block walks the experts in
 * chunks, the per-warp sums go through shared memory with a barrier on
 * each side, and the carry between chunks stays in registers.
 */
#include "kernel_common.cuh"

/* One warp per expert: tile_table[e][*] becomes exclusive ranks, counts[e]
 * the total. */
__device__ void moes_stage_scan_tiles(const gpu_scatter_args &a,
                                      int64_t thread, int64_t threads)
{
    const unsigned lane = threadIdx.x % MOES_WARP;
    const int64_t n_warps = threads / MOES_WARP;
    for (int64_t e = thread / MOES_WARP; e < a.n_experts; e += n_warps) {
        int64_t *col = a.tile_table + e * a.tiles;
        int64_t run = 0;
        for (int64_t base = 0; base < a.tiles; base += MOES_WARP) {
            const int64_t i = base + lane;
            const int64_t v = i < a.tiles ? col[i] : 0;
            int64_t incl = v;
            for (int off = 1; off < MOES_WARP; off *= 2) {
                int64_t y = __shfl_up_sync(0xFFFFFFFFu, incl, off);
                if (lane >= (unsigned)off)
                    incl += y;
            }
            if (i < a.tiles)
                col[i] = run + incl - v;
            run += __shfl_sync(0xFFFFFFFFu, incl, MOES_WARP - 1);
        }
        if (lane == 0)
            a.counts[e] = run;
    }
}

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

extern "C" __global__ void moes_scan_tiles(const gpu_scatter_args a)
{
    moes_dev_enter();
    if (!moes_dev_failed(a.state))
        moes_stage_scan_tiles(a, moes_dev_thread(), moes_dev_threads());
}

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
    if (threadIdx.x == 0) {
        int64_t total = 0;
        for (unsigned w = 0; w < n_warps; w++)
            total += dropped_sums[w];
        a.state->dropped = total;
        a.state->rows_needed = masked ? a.out_rows : carry;
        if (!masked && carry > a.capacity)
            moes_dev_report(a.state, MOES_DATA_ERROR_RANK_CAPACITY, 0);
    }
}

extern "C" __global__ void __launch_bounds__(SCAN_THREADS)
moes_scan_experts(const gpu_scatter_args a)
{
    moes_dev_enter();
    if (!moes_dev_failed(a.state))
        moes_block_scan_experts(a);
}
