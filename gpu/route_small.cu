/* SPDX-License-Identifier: MIT */
/*
 * route_small.cu - the whole routing of a small call in one launch.
 *
 * Decode-size work (up to ROUTE_SMALL_CHOICES choices) is dominated by
 * latency, so one block of SCAN_THREADS threads does it all, separated by
 * block barriers: map check, counts, ranks, expert scan, the error
 * record, placement and the per-expert outputs, with the per-expert
 * totals and first rows in shared memory. The row labels, a store per
 * output row, are left to the grid launched next (label_blocks).
 *
 * Warp w owns the w-th of 32 equal spans of the choices in t*K + k order
 * and walks it 32 at a time (at most ROUTE_SMALL_ROUNDS rounds), each
 * lane keeping its choices' experts in registers. Lanes that picked the
 * same expert find each other with __match_any_sync; a lane's rank is the
 * number of such lanes below it plus the warp's running count for that
 * expert, kept in row w of a shared table that only warp w touches. An
 * exclusive scan down each expert's column of the table then turns the
 * per-warp counts into each warp's first rank, so every choice's rank is
 * its position among the expert's choices in t*K + k order: no atomic
 * decides where a row goes.
 */
#include "kernel_common.cuh"

enum {
    ROUTE_SMALL_WARPS = SCAN_THREADS / MOES_WARP,
    ROUTE_SMALL_ROUNDS = 8,
    ROUTE_SMALL_CHOICES = ROUTE_SMALL_WARPS * MOES_WARP * ROUTE_SMALL_ROUNDS,
    ROUTE_SMALL_EXPERTS = 512
};

/* Ranks fit 16 bits: a column sums to at most ROUTE_SMALL_CHOICES. */
typedef uint16_t route_rank;

/* Choice c = t*K + k split for the small sizes of this kernel:
 * c < ROUTE_SMALL_CHOICES, so a 32-bit division does (the 64-bit one is
 * three times the work, and a single block has nothing to hide it
 * behind). The choice's expert and placement are the shared ones of
 * kernel_common.cuh, given t and k. */
struct small_choice {
    int64_t t, k;
};

__device__ __forceinline__ small_choice small_split(const gpu_scatter_args &a,
                                                    int64_t c)
{
    const uint32_t t = (uint32_t)c / (uint32_t)a.top_k;
    small_choice s;
    s.t = t;
    s.k = (uint32_t)c - t * (uint32_t)a.top_k;
    return s;
}

extern "C" __global__ void __launch_bounds__(SCAN_THREADS)
moes_route_small(const gpu_scatter_args args)
{
    __shared__ route_rank table[ROUTE_SMALL_WARPS * ROUTE_SMALL_EXPERTS];
    /* The per-expert totals and first rows stay in shared memory: every
     * stage below reads them right after another wrote them, and a round
     * trip through global memory between two barriers is what a single
     * block waits on most. */
    __shared__ int64_t counts[ROUTE_SMALL_EXPERTS], start[ROUTE_SMALL_EXPERTS];
    gpu_scatter_args a = args;
    a.counts = counts;
    a.start = start;
    const int64_t thread = threadIdx.x, threads = blockDim.x;
    const unsigned lane = threadIdx.x % MOES_WARP;
    const unsigned warp = threadIdx.x / MOES_WARP;
    const unsigned lower = (1u << lane) - 1u;
    const bool scatter = a.layout != 0;
    const bool masked = a.layout == MOES_LAYOUT_MASKED;
    const int64_t n_experts = a.n_experts;
    const int64_t span = (a.n_choices + ROUTE_SMALL_WARPS - 1) /
                         ROUTE_SMALL_WARPS;
    const int64_t begin = (int64_t)warp * span;
    const int64_t end = begin + span < a.n_choices ? begin + span
                                                    : a.n_choices;
    route_rank *mine = table + warp * ROUTE_SMALL_EXPERTS;
    int32_t expert[ROUTE_SMALL_ROUNDS];
    route_rank rank[ROUTE_SMALL_ROUNDS];

    moes_dev_enter();
    if (moes_dev_failed(a.state))
        return;
    if (a.map)
        moes_stage_check_map(a, thread, threads);
    moes_stage_check_scales(a, thread, threads);
    /* The whole table, 16 bytes a store: fewer instructions than its used
     * columns one by one. */
    for (int i = threadIdx.x; i < (int)(sizeof table / sizeof(uint4));
         i += blockDim.x)
        ((uint4 *)table)[i] = make_uint4(0, 0, 0, 0);

    /* Every load of the routing first, all independent. */
#pragma unroll
    for (int r = 0; r < ROUTE_SMALL_ROUNDS; r++) {
        const int64_t c = begin + r * MOES_WARP + lane;
        int64_t id = 0;
        expert[r] = -1;
        rank[r] = 0;
        if (c < end) {
            const small_choice s = small_split(a, c);
            expert[r] = (int32_t)moes_dev_local_expert_at(a, s.t, s.k, &id);
            if (!MOES_INDEX_OK(id, a.n_global))
                moes_dev_report(a.state, MOES_DATA_ERROR_RANK_ID, c);
        }
    }
    __syncthreads(); /* the table is zero */

    /* Ranks within the warp's span, in order. */
#pragma unroll
    for (int r = 0; r < ROUTE_SMALL_ROUNDS; r++) {
        if (begin + r * MOES_WARP >= end) /* the same for the whole warp */
            break;
        const int32_t e = expert[r];
        const unsigned peers = __match_any_sync(0xFFFFFFFFu, e);
        route_rank before = 0;
        if (e >= 0)
            before = mine[e];
        __syncwarp();
        if (e >= 0) {
            rank[r] = (route_rank)(before + __popc(peers & lower));
            if (lane == (unsigned)(__ffs(peers) - 1))
                mine[e] = (route_rank)(before + __popc(peers));
        }
        __syncwarp();
    }
    __syncthreads();

    /* Down each expert's column: each warp's first rank, and the total.
     * The column's loads are all issued before the sums, not one round
     * trip to shared memory per warp. */
    for (int e = threadIdx.x; e < n_experts; e += blockDim.x) {
        route_rank v[ROUTE_SMALL_WARPS];
        int run = 0;
#pragma unroll
        for (int w = 0; w < ROUTE_SMALL_WARPS; w++)
            v[w] = table[w * ROUTE_SMALL_EXPERTS + e];
#pragma unroll
        for (int w = 0; w < ROUTE_SMALL_WARPS; w++) {
            table[w * ROUTE_SMALL_EXPERTS + e] = (route_rank)run;
            run += v[w];
        }
        a.counts[e] = run;
    }
    __syncthreads();
    if (scatter)
        moes_block_scan_experts(a);
    __syncthreads();
    if (thread == 0)
        moes_stage_finish_validation(moes_route_finish_args(a));
    __syncthreads();
    /* Read by every thread after the barrier: the same answer for all. */
    if (moes_dev_failed(a.state))
        return;
    if (scatter) {
#pragma unroll
        for (int r = 0; r < ROUTE_SMALL_ROUNDS; r++) {
            const int64_t c = begin + r * MOES_WARP + lane;
            if (c >= end)
                break;
            const int32_t e = expert[r];
            int64_t row = -1;
            if (e >= 0) {
                const int64_t at = (int64_t)mine[e] + rank[r];
                if (masked)
                    row = at < a.capacity ? e * a.capacity + at : -1;
                else
                    row = a.start[e] + at;
            }
            const small_choice s = small_split(a, c);
            moes_dev_place_choice_at(a, s.t, s.k, c, row);
        }
        /* No labels here: they are stores over every output row, tens of
         * thousands at decode sizes, and the grid launched after this
         * block writes them (label_blocks, zero when there are none). */
    }
    moes_stage_expert_outputs(a, thread, threads);
    /* The kernels that follow (labels, zero padding) find the blocks
     * from the workspace's copy. */
    if (a.label_blocks || (a.flags & MOES_SCATTER_ZERO_PADDING))
        for (int64_t e = thread; e < n_experts; e += threads) {
            args.counts[e] = counts[e];
            args.start[e] = start[e];
        }
}
