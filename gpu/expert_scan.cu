/* SPDX-License-Identifier: MIT */
/*
 * expert_scan.cu - the prefix sums: over the tiles of each expert (each
 * tile's first rank within the expert, and the expert's total), then over
 * the experts (each expert's first row, the rows needed, the capacity
 * check).
 *
 * Two kernels (gpu_kernel_args.h, GPU_SCAN_*). With few experts (or long
 * columns), moes_scan_routing: a block scans each expert's column of
 * tiles and the last block to finish scans the experts. With many,
 * moes_scan_ranges: each block takes a range of experts, scans its
 * columns and its experts, and adds the rows of the ranges before it,
 * which those blocks publish as soon as they know them (a look-back over
 * their status words), so that no block's work grows with the number of
 * experts beyond its share.
 *
 * Race-free by construction: each warp, thread or block reads and writes
 * only its own tiles and experts; a block's sums go through shared memory
 * with a barrier on each side; a range's status word is written once per
 * state (0, then its rows, then with those before) after the value it
 * announces, behind a fence, and read only after it.
 */
#include "kernel_common.cuh"

enum { SCAN_THREADS = 1024 };

/* Exclusive sum over the block of one value (>= 0) per thread (any block
 * size up to SCAN_THREADS, a multiple of 32), saturating at INT64_MAX when
 * SAT (rows; ranks within an expert never reach it); *total gets the
 * block's sum. */
template <bool SAT>
__device__ int64_t block_exclusive_sum(int64_t v, int64_t *total)
{
    __shared__ int64_t warp_sums[SCAN_THREADS / MOES_WARP];
    const unsigned lane = threadIdx.x % MOES_WARP;
    const unsigned warp = threadIdx.x / MOES_WARP;
    const unsigned n_warps = blockDim.x / MOES_WARP;
    const int64_t incl = moes_warp_inclusive_sum<SAT>(v, lane);
    int64_t excl = __shfl_up_sync(0xFFFFFFFFu, incl, 1);
    if (lane == 0)
        excl = 0;
    if (lane == MOES_WARP - 1)
        warp_sums[warp] = incl;
    __syncthreads();
    if (warp == 0) {
        int64_t w = lane < n_warps ? warp_sums[lane] : 0;
        w = moes_warp_inclusive_sum<SAT>(w, lane);
        if (lane < n_warps)
            warp_sums[lane] = w;
    }
    __syncthreads();
    const int64_t before = warp > 0 ? warp_sums[warp - 1] : 0;
    *total = warp_sums[n_warps - 1];
    __syncthreads(); /* warp_sums may be used again */
    return SAT ? moes_dev_add_sat(before, excl) : before + excl;
}

/* The block's sum of one value per thread (plain: the dropped choices
 * cannot overflow), in thread 0. */
__device__ int64_t block_sum(int64_t v)
{
    __shared__ int64_t warp_sums[SCAN_THREADS / MOES_WARP];
    const unsigned lane = threadIdx.x % MOES_WARP;
    const unsigned warp = threadIdx.x / MOES_WARP;
    const unsigned n_warps = blockDim.x / MOES_WARP;
    for (int off = MOES_WARP / 2; off > 0; off /= 2)
        v += __shfl_down_sync(0xFFFFFFFFu, v, off);
    if (lane == 0)
        warp_sums[warp] = v;
    __syncthreads();
    int64_t total = 0;
    /* The warps' sums by warp 0, not one thread's loop over them. */
    if (warp == 0) {
        total = lane < n_warps ? warp_sums[lane] : 0;
        for (int off = MOES_WARP / 2; off > 0; off /= 2)
            total += __shfl_down_sync(0xFFFFFFFFu, total, off);
    }
    __syncthreads(); /* warp_sums may be used again */
    return total;
}

/* The whole block (a multiple of 32 threads, at most SCAN_THREADS):
 * start[e] = the rows of the experts of [e0, e1) before e
 * (contiguous, grouped) or e * C (masked); *total gets the rows of the
 * range, *dropped the calling thread's share of the dropped choices
 * (masked). Each round a warp takes 32 * run consecutive experts, lane l
 * the experts l, l + 32, ... of them (run up to RUN; one, while the
 * experts fit one a thread): its loads and stores are whole lines, all in
 * flight together, and the warp's prefix comes from run warp scans in
 * order; one block scan then places the warps. RUN is 1 where one block
 * scans all the experts, as before ranges existed: the one-block routing
 * (whose registers are spoken for) and moes_scan_routing's last block. */
template <int RUN>
__device__ void scan_expert_range(const gpu_scatter_args &a, int64_t e0,
                                  int64_t e1, int64_t *total, int64_t *dropped)
{
    const unsigned lane = threadIdx.x % MOES_WARP;
    const unsigned warp = threadIdx.x / MOES_WARP;
    const bool masked = a.layout == MOES_LAYOUT_MASKED;
    const int64_t n = e1 - e0;
    const int64_t wanted = (n + blockDim.x - 1) / blockDim.x;
    const int64_t run = wanted < RUN ? (wanted > 0 ? wanted : 1) : RUN;
    int64_t carry = 0;

    for (int64_t base = e0; base < e1; base += run * blockDim.x) {
        const int64_t first = base + (int64_t)warp * run * MOES_WARP + lane;
        int64_t v[RUN], in_warp = 0, round;
#pragma unroll
        for (int j = 0; j < RUN; j++) {
            const int64_t e = first + (int64_t)j * MOES_WARP;
            v[j] = 0;
            if (j < run && e < e1) {
                const int64_t count = a.counts[e];
                if (masked)
                    *dropped += count > a.capacity ? count - a.capacity : 0;
                else
                    v[j] = moes_dev_round_up_sat(count, a.alignment);
            }
        }
        /* v[j] becomes the rows of the warp's experts before e. */
#pragma unroll
        for (int j = 0; j < RUN; j++) {
            if (j >= run)
                break;
            const int64_t incl = moes_warp_inclusive_sum<true>(v[j], lane);
            int64_t excl = __shfl_up_sync(0xFFFFFFFFu, incl, 1);
            if (lane == 0)
                excl = 0;
            v[j] = moes_dev_add_sat(in_warp, excl);
            in_warp = moes_dev_add_sat(
                in_warp, __shfl_sync(0xFFFFFFFFu, incl, MOES_WARP - 1));
        }
        /* Lane 0 alone brings its warp's sum: its exclusive sum is the
         * rows of the warps before. */
        const int64_t before = __shfl_sync(
            0xFFFFFFFFu,
            block_exclusive_sum<true>(lane == 0 ? in_warp : 0, &round), 0);
        const int64_t row0 = moes_dev_add_sat(carry, before);
#pragma unroll
        for (int j = 0; j < RUN; j++) {
            const int64_t e = first + (int64_t)j * MOES_WARP;
            if (j < run && e < e1)
                a.start[e] = masked ? e * a.capacity
                                    : moes_dev_add_sat(row0, v[j]);
        }
        carry = moes_dev_add_sat(carry, round);
    }
    *total = carry;
}

/* All the experts in one block: start[e], the rows needed, the dropped
 * choices and the capacity check. */
__device__ void moes_block_scan_experts(const gpu_scatter_args &a)
{
    const bool masked = a.layout == MOES_LAYOUT_MASKED;
    int64_t rows, dropped = 0;
    scan_expert_range<1>(a, 0, a.n_experts, &rows, &dropped);
    dropped = block_sum(dropped);
    if (threadIdx.x == 0) {
        a.state->dropped = dropped;
        a.state->rows_needed = masked ? a.out_rows : rows;
        if (!masked && rows > a.capacity)
            moes_dev_report(a.state, MOES_DATA_ERROR_RANK_CAPACITY, 0);
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

/* col[i .. i+N-1] (0 past hi), N independent loads in flight. */
template <int N>
__device__ __forceinline__ void load_run(const int64_t *col, int64_t i,
                                         int64_t hi, int64_t *v)
{
#pragma unroll
    for (int j = 0; j < N; j++)
        v[j] = i + j < hi ? col[i + j] : 0;
}

/* tile_table[e][*] becomes each tile's first rank within expert e,
 * counts[e] the total. Only the entries of tiles that hold a choice of e
 * are rewritten: the placement reads no others. */

/* Longer columns: one block per expert. Thread i owns the i-th of
 * blockDim.x contiguous runs of the tiles: it sums its run (independent
 * loads, all in flight), one block scan gives each run its first rank,
 * and the thread rewrites its run. */
__device__ void scan_columns_by_block(const gpu_scatter_args &a)
{
    enum { UNROLL = 8 };
    const int64_t run_len = (a.tiles + blockDim.x - 1) / blockDim.x;
    const int64_t lo0 = (int64_t)threadIdx.x * run_len;
    const int64_t lo = lo0 < a.tiles ? lo0 : a.tiles;
    const int64_t hi = lo + run_len < a.tiles ? lo + run_len : a.tiles;
    for (int64_t e = blockIdx.x; e < a.n_experts; e += gridDim.x) {
        int64_t *col = a.tile_table + e * a.tiles;
        int64_t sum = 0, total;
        for (int64_t i = lo; i < hi; i += UNROLL) {
            int64_t v[UNROLL];
            load_run<UNROLL>(col, i, hi, v);
#pragma unroll
            for (int j = 0; j < UNROLL; j++)
                sum += v[j];
        }
        int64_t run = block_exclusive_sum<false>(sum, &total);
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
}

/* The columns of experts [e0, e1) of a range, each warp a run of whole
 * columns, which lie one after another in the table: the warp reads them
 * as one flat array, 32 entries a row and several rows in flight, and a
 * segmented warp scan (a column starts a segment) gives each entry its
 * rank. The host keeps the range's entries below 2^31. */
__device__ void scan_range_columns(const gpu_scatter_args &a, int64_t e0,
                                   int64_t e1)
{
    enum { ROWS = 8 };
    const unsigned lane = threadIdx.x % MOES_WARP;
    const unsigned warp = threadIdx.x / MOES_WARP;
    const unsigned n_warps = blockDim.x / MOES_WARP;
    const int64_t per_warp = (e1 - e0 + n_warps - 1) / n_warps;
    const int64_t w0 = e0 + warp * per_warp < e1 ? e0 + warp * per_warp : e1;
    const int64_t w1 = w0 + per_warp < e1 ? w0 + per_warp : e1;
    const uint32_t tiles = (uint32_t)a.tiles;
    const uint32_t n = (uint32_t)((w1 - w0) * a.tiles);
    int64_t *flat = a.tile_table + w0 * a.tiles;
    int64_t *counts = a.counts + w0;
    int64_t carry = 0; /* the segment's sum up to the row before */
    /* The lane's tile and column, moved on by 32 entries a row (no
     * division a row). */
    uint32_t tile = lane % tiles, column = lane / tiles;
    for (uint32_t row0 = 0; row0 < n; row0 += ROWS * MOES_WARP) {
        int64_t v[ROWS];
#pragma unroll
        for (int j = 0; j < ROWS; j++) {
            const uint32_t q = row0 + j * MOES_WARP + lane;
            v[j] = q < n ? flat[q] : 0;
        }
#pragma unroll
        for (int j = 0; j < ROWS; j++) {
            if (row0 + j * MOES_WARP >= n)
                break;
            const uint32_t q = row0 + j * MOES_WARP + lane;
            const bool in = q < n;
            /* The column starts at or before this lane in the row: the
             * rank counts from the lane of that start on, else it goes
             * on from the rows before. */
            const unsigned starts =
                __ballot_sync(0xFFFFFFFFu, in && tile == 0) &
                (0xFFFFFFFFu >> (MOES_WARP - 1 - lane));
            const int64_t incl = moes_warp_inclusive_sum(v[j], lane);
            const int head = starts ? MOES_WARP - 1 - __clz(starts) : 0;
            const int64_t at = __shfl_sync(0xFFFFFFFFu, incl,
                                           head > 0 ? head - 1 : 0);
            const int64_t before = starts ? (head > 0 ? at : 0) : -carry;
            const int64_t rank = incl - v[j] - before;
            if (in && v[j])
                flat[q] = rank;
            if (in && tile == tiles - 1)
                counts[column] = rank + v[j];
            carry = __shfl_sync(0xFFFFFFFFu, rank + v[j], MOES_WARP - 1);
            for (tile += MOES_WARP; tile >= tiles; tile -= tiles)
                column++;
        }
    }
}

/* A range's status: a flag, then the value of each state the flag names
 * (its index in the status). A value is written before the flag that
 * announces it, and never changes after. */
enum { RANGE_NOTHING = 0, RANGE_ROWS = 1, RANGE_THROUGH = 2 };

__device__ __forceinline__ void publish_range(int64_t *status, int64_t which,
                                              int64_t value)
{
    status[which] = value;
    __threadfence();
    *(volatile int64_t *)status = which;
}

/* Warp 0 of range r's block: the rows of ranges 0 .. r-1. Each lane waits
 * for one earlier range to publish (those got their ranges before this
 * block, so they run, and they publish their own rows without waiting on
 * anyone), 32 at a time walking back, until one has published its
 * inclusive sum. */
__device__ int64_t rows_before_range(const gpu_scatter_args &a, int64_t r)
{
    const unsigned lane = threadIdx.x % MOES_WARP;
    int64_t prefix = 0;
    for (int64_t last = r - 1; last >= 0; last -= MOES_WARP) {
        const int64_t i = last - lane;
        int64_t flag = RANGE_THROUGH, value = 0;
        if (i >= 0) {
            const volatile int64_t *status = a.range_status +
                                             i * GPU_SCAN_STATUS_WORDS;
            while ((flag = status[0]) == RANGE_NOTHING)
                ;
            __threadfence();
            value = status[flag];
        }
        const unsigned inclusive =
            __ballot_sync(0xFFFFFFFFu, flag == RANGE_THROUGH);
        const unsigned stop = inclusive ? __ffs(inclusive) - 1 : MOES_WARP - 1;
        const int64_t sum = __shfl_sync(
            0xFFFFFFFFu,
            moes_warp_inclusive_sum<true>(lane <= stop ? value : 0, lane),
            MOES_WARP - 1);
        prefix = moes_dev_add_sat(prefix, sum);
        if (inclusive)
            break;
    }
    return prefix;
}

/* The next range of experts to scan, for the whole block: ranges are
 * handed out in the order blocks ask, so that every range before a
 * block's is held by a block that runs (the look-back waits on them). */
__device__ int64_t moes_take_scan_range(const gpu_scatter_args &a)
{
    __shared__ int64_t range;
    __syncthreads(); /* every thread has read the range before */
    if (threadIdx.x == 0)
        range = atomicAdd(&a.state->scan_ticket, 1u);
    __syncthreads();
    return range;
}

/* Range r of the experts, by the whole block: the range's columns, its
 * experts' totals and first rows within the range, the rows before the
 * range from the look-back, then the first rows. The last range's block
 * sets the rows needed and checks the capacity; every block adds its
 * dropped choices (exact integers: any order gives the same sum).
 * Without COLUMNS the table has one tile and a.counts is the table
 * itself (the sort's one-launch routing, sort_grid.cu): no column to
 * scan, and no rank within one wanted. */
template <bool COLUMNS>
__device__ void moes_scan_expert_range(const gpu_scatter_args &a, int64_t r)
{
    __shared__ int64_t rows_before;
    const int64_t per = (a.n_experts + a.scan_ranges - 1) / a.scan_ranges;
    const int64_t e0 = r * per < a.n_experts ? r * per : a.n_experts;
    const int64_t e1 = e0 + per < a.n_experts ? e0 + per : a.n_experts;
    const bool masked = a.layout == MOES_LAYOUT_MASKED;
    if (COLUMNS)
        scan_range_columns(a, e0, e1);
    if (a.layout == 0) /* a count has no rows to place */
        return;
    /* The range's counts, written by its warps, for the whole block. */
    __syncthreads();
    int64_t rows, dropped = 0;
    scan_expert_range<GPU_SCAN_EXPERT_RUN>(a, e0, e1, &rows, &dropped);
    dropped = block_sum(dropped);
    if (threadIdx.x == 0 && dropped)
        atomicAdd((unsigned long long *)&a.state->dropped,
                  (unsigned long long)dropped);
    if (masked) {
        if (threadIdx.x == 0 && r == a.scan_ranges - 1)
            a.state->rows_needed = a.out_rows;
        return;
    }
    int64_t *status = a.range_status + r * GPU_SCAN_STATUS_WORDS;
    if (threadIdx.x < MOES_WARP) {
        if (threadIdx.x == 0)
            publish_range(status, RANGE_ROWS, rows);
        const int64_t before = rows_before_range(a, r);
        if (threadIdx.x == 0) {
            const int64_t through = moes_dev_add_sat(before, rows);
            publish_range(status, RANGE_THROUGH, through);
            rows_before = before;
            if (r == a.scan_ranges - 1) {
                a.state->rows_needed = through;
                if (through > a.capacity)
                    moes_dev_report(a.state, MOES_DATA_ERROR_RANK_CAPACITY, 0);
            }
        }
    }
    /* Also orders the range's first rows, written above by other threads,
     * before their update here. */
    __syncthreads();
    if (rows_before)
        for (int64_t e = e0 + threadIdx.x; e < e1; e += blockDim.x)
            a.start[e] = moes_dev_add_sat(rows_before, a.start[e]);
}

/* Few experts, or long columns: a block per expert's column, then, in
 * the last block to finish, the experts one a thread, and the first error
 * of the routing turned into the record: the routing's prefix sums and
 * its validation in one launch. */
extern "C" __global__ void __launch_bounds__(SCAN_THREADS)
moes_scan_routing(const gpu_scatter_args a)
{
    moes_dev_enter();
    const bool failed = moes_dev_failed(a.state);
    if (!failed)
        scan_columns_by_block(a);
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

/* Many experts: a block per range of experts (a.scan_ranges of them),
 * then the record, as above. */
extern "C" __global__ void __launch_bounds__(GPU_SCAN_RANGE_BLOCK,
                                             GPU_SCAN_RANGE_BLOCKS_PER_SM)
moes_scan_ranges(const gpu_scatter_args a)
{
    moes_dev_enter();
    const bool failed = moes_dev_failed(a.state);
    if (!failed)
        moes_scan_expert_range<true>(a, moes_take_scan_range(a));
    if (!moes_dev_last_block(a.state))
        return;
    if (threadIdx.x == 0)
        moes_dev_close_validation(a.state, moes_route_finish_args(a));
}
