/* SPDX-License-Identifier: MIT */
/*
 * scatter_grid.cu - the routing of a scatter past the one-launch sizes,
 *   in one cooperative launch.
 *
 * The grid path's three routing kernels (counts per tile, their prefix
 * sums, placement and labels) are each a launch and a wait on the one
 * before: about 20 us on an H200 for 32768 tokens, nearly all of it
 * latency. With no rows to copy that is the whole call; with rows, the
 * copy (moes_copy_rows_wide) waits for it. Here one block a
 * multiprocessor, every block resident at once (a cooperative launch),
 * and one grid-wide barrier:
 *
 *   1. block b takes the choices [c0, c1) of its tokens, each warp a run
 *      of them in order; it checks the map (all of it, kept in shared
 *      memory), its own ids and, under UE8M0, its own tokens' scales;
 *      each warp finds each of its choices' local expert and rank among
 *      its run's choices of that expert before it (a match a round of
 *      32, a count per expert and warp);
 *   2. the block's count per expert, and the smallest error key it
 *      found, go to its row of a table in the workspace; the barrier;
 *   3. every block sums the table's columns: each expert's count over
 *      all blocks and over the blocks before its own, and the smallest
 *      key of all. So every block reaches the same verdict and the same
 *      first rows (scan_expert_range, as the routing's last block does);
 *   4. on an error block 0 turns the key into the record and no block
 *      writes anything; else each block places its choices (first row,
 *      plus the count before its block, before its warp, before it in
 *      the warp: the placement of every other routing kernel, bit for
 *      bit), and writes its share of the labels and per-expert outputs.
 *
 * With stage_tokens above 0, each block then copies its own tokens' rows
 * (and scales) to the rows it placed them at, so no copy kernel follows.
 * The first stage_tokens rows of its tokens it loads into shared memory
 * as the barrier opens (moes_stage_rows: the loads are in flight while
 * the block finishes its routing, and hold no register); the copy then
 * reads them from there and the rest from x. With an expert map the
 * staged rows are those of the block's first tokens that a local expert
 * takes (a token none takes is not copied at all): step 1 marks them,
 * one warp lists them before the barrier. A fan-out that reads its
 * rows while it writes them moves its bytes more slowly than one that
 * only writes: on an H200, the 235 MB of DeepSeek-V3's prefill rows took
 * 73 us with the 29 MB of x read meanwhile, and 59-61 us stored from the
 * chip (bench/NOTES.md, v23). Issued at entry instead, the loads held
 * the barrier's round trips back: it opened 8 us after the last block
 * had arrived, against 1.2 us with the loads issued after it
 * (DeepSeek-V3 4096, v24).
 *
 * The host picks this kernel (gpu_ops.c) within the GPU_GRID_SCATTER_*
 * limits, when the driver can launch cooperatively; otherwise the grid
 * path runs.
 */
#include "block_route.cuh"
#include "grid_barrier.cuh"
#include "row_copy.cuh"

enum {
    GRID_SCATTER_WARPS = GPU_GRID_SCATTER_THREADS / MOES_WARP,
    /* Rounds of 32 choices a warp of a full block takes. */
    GRID_SCATTER_ROUNDS = GPU_GRID_SCATTER_OWN / GPU_GRID_SCATTER_THREADS,
    /* Rows of the table a thread has in flight in the column sums: the
     * table of an H200's 132 blocks over 256 experts in one round (16
     * rows a load of the block). Against five (two rounds) on an H200:
     * DeepSeek-V3 2048 tokens 47.0 -> 46.2 us, 4096 unchanged, where the
     * staged rows' loads hold the sums back (bench/NOTES.md, v26). */
    GRID_SUM_BATCH = 9,
    /* Vectors a lane copies of an item (grid_copy_rows): a whole row of
     * DeepSeek-V3 (448 vectors) a warp. On an H200 against 8 (the copy
     * kernel's): DeepSeek-V3 4096 tokens 87.5 -> 85.6 us, 6144 129 ->
     * 123; Qwen3 unchanged (bench/NOTES.md, v23). */
    GRID_COPY_VECTORS = 14
};
static_assert(GPU_GRID_SCATTER_OWN % GPU_GRID_SCATTER_THREADS == 0,
              "whole rounds");
static_assert(GPU_GRID_SCATTER_EXPERTS <= GPU_GRID_SCATTER_THREADS,
              "a thread or more an expert in the sums");
static_assert(GPU_GRID_SCATTER_OWN < 65536,
              "warp counts and the table's block counts fit 16 bits");

struct grid_scatter_shared {
    int16_t map[GPU_GRID_SCATTER_MAP];          /* local expert or -1     */
    /* Choices a warp has met per expert; after step 1, those of the
     * warps before it in the block. */
    uint16_t warp_count[GRID_SCATTER_WARPS][GPU_GRID_SCATTER_EXPERTS];
    int64_t counts[GPU_GRID_SCATTER_EXPERTS];   /* a.counts, a.start      */
    int64_t start[GPU_GRID_SCATTER_EXPERTS];
    int32_t before[GPU_GRID_SCATTER_EXPERTS];   /* in blocks before       */
    int32_t all[GPU_GRID_SCATTER_EXPERTS];      /* in all blocks          */
    unsigned long long key;
    int64_t dropped;
};

/* The blocks' table (GPU_GRID_TABLE_BYTES): their keys, then their
 * counts. The host sizes it (grid_scatter_blocks). */
__device__ __forceinline__ unsigned long long *grid_keys(
    const gpu_scatter_args &a)
{
    return (unsigned long long *)a.tile_table;
}

__device__ __forceinline__ uint16_t *grid_counts(const gpu_scatter_args &a)
{
    return (uint16_t *)(grid_keys(a) + GPU_GRID_TABLE_KEYS(gridDim.x));
}

template <int W> struct grid_count_load {
    typedef uint16_t type;
};
template <> struct grid_count_load<8> {
    typedef uint4 type;
};

/* Step 3's column sums: each expert's count over all blocks and over the
 * blocks before this one, added into all[] and before[] (0 before). A
 * warp reads whole rows of the table, W counts a lane (a uint4 of eight,
 * or one), the rows split among the block's threads, GRID_SUM_BATCH of
 * them in flight a thread; the threads' sums meet by shared atomics.
 * Every block reads the whole table right after the barrier, from the
 * L2: as 32-bit counts, each row's 32 experts a warp load and eight loads
 * in flight a thread, this step took 5.7 us of DeepSeek-V3 4096's kernel
 * on an H200 (bench/NOTES.md, v24). */
template <int W>
__device__ __forceinline__ void grid_column_sums(const gpu_scatter_args &a,
                                                 int n_experts, int32_t *all,
                                                 int32_t *before)
{
    typedef typename grid_count_load<W>::type load_t;
    const int groups = n_experts / W, tid = threadIdx.x;
    const int rows_at_once = GPU_GRID_SCATTER_THREADS / groups;
    const int g = tid % groups;
    const int blocks = (int)gridDim.x, own = (int)blockIdx.x;
    const load_t *table = (const load_t *)grid_counts(a);
    int32_t sum_all[W], sum_before[W];
#pragma unroll
    for (int i = 0; i < W; i++)
        sum_all[i] = sum_before[i] = 0;
    for (int b0 = tid / groups; tid < rows_at_once * groups && b0 < blocks;
         b0 += GRID_SUM_BATCH * rows_at_once) {
        load_t x[GRID_SUM_BATCH];
#pragma unroll
        for (int j = 0; j < GRID_SUM_BATCH; j++) {
            const int b = b0 + j * rows_at_once;
            if (b < blocks)
                x[j] = __ldcg(&table[(int64_t)b * groups + g]);
            else
                x[j] = load_t();
        }
#pragma unroll
        for (int j = 0; j < GRID_SUM_BATCH; j++) {
            const bool earlier = b0 + j * rows_at_once < own;
            uint32_t w[W == 8 ? 4 : 1];
            if constexpr (W == 8) {
                w[0] = x[j].x;
                w[1] = x[j].y;
                w[2] = x[j].z;
                w[3] = x[j].w;
            } else {
                w[0] = x[j];
            }
#pragma unroll
            for (int i = 0; i < W; i++) {
                const int32_t c =
                    W == 8 ? (int32_t)((w[i / 2] >> (16 * (i % 2))) & 0xFFFFu)
                           : (int32_t)w[0];
                sum_all[i] += c;
                sum_before[i] += earlier ? c : 0;
            }
        }
    }
#pragma unroll
    for (int i = 0; i < W; i++) {
        if (sum_all[i])
            atomicAdd(&all[g * W + i], sum_all[i]);
        if (sum_before[i])
            atomicAdd(&before[g * W + i], sum_before[i]);
    }
}

/* The smallest error key among the UE8M0 scales of the block's tokens
 * [t0, t1) that this thread checks, or key: under UE8M0 every scale of
 * every token must be a power of two that UE8M0 holds, placed or not
 * (moes_stage_check_scales), and the keys meet in the table with the
 * routing's. Eight loads in flight a thread: a block's batches are
 * round trips in a row before the barrier, and with four EP8 prefill's
 * 249 tokens a block (13,944 scales) took seven. On an H100 with UE8M0
 * scales (bench/NOTES.md, v44): EP8 prefill 168.7-169.2 -> 167.5-167.7
 * us, DeepSeek-V3 8192 tokens 218.3-218.5 -> 217.1-217.4, 16384
 * 421.5-422.0 -> 420.6-420.9; 4096 (one batch either way) unchanged. */
__device__ __forceinline__ unsigned long long grid_check_scales(
    const gpu_scatter_args &a, int64_t t0, int64_t t1, unsigned long long key)
{
    if (!a.x_scales || a.out_scales_format != MOES_SCALES_UE8M0)
        return key;
    return moes_dev_check_scales<int64_t, 8>(
        a, t0 * a.n_scales + threadIdx.x, t1 * a.n_scales,
        GPU_GRID_SCATTER_THREADS, key);
}

/* The rows of the block's tokens [t0, t1) to the rows out_index gives
 * them (written by this block's placement), a warp a (token, chunk)
 * item: the `staged` tokens' rows from shared memory, the others' from
 * x. The staged tokens are the block's first `staged`, or, LISTED, the
 * tokens t0 + list[s] (slot s), whose bits are set in `mask`. The
 * others go first, so that their reads from memory are in flight while
 * the other warps store staged rows, not left for the end, and so that
 * the copy starts before the staged rows have all landed: a warp waits
 * for them (`landed`) at its first staged item. A warp loads its next
 * item's out_index entries while it copies. */
template <bool LISTED>
__device__ __forceinline__ void grid_copy_rows(const gpu_scatter_args &a,
                                               int64_t t0, int64_t t1,
                                               int64_t staged,
                                               const uint16_t *list,
                                               const uint32_t *mask,
                                               const uint4 *rows,
                                               unsigned long long *landed)
{
    enum { P = GRID_COPY_VECTORS };
    const int64_t n_vec = a.row_bytes / (int64_t)sizeof(uint4);
    const int64_t chunks = (n_vec + MOES_WARP * P - 1) / (MOES_WARP * P);
    const int64_t lane = threadIdx.x % MOES_WARP;
    const int64_t n = t1 - t0;
    /* LISTED, every token is walked from x (the staged ones skipped),
     * then the staged ones by slot. A form of its own, so that the calls
     * without a map copy as before: with the list's tests in their walk
     * they were 0.3-0.6 us slower (bench/NOTES.md, v43). */
    const int64_t items = LISTED ? (n + staged) * chunks : n * chunks;
    /* Item j's token, counted from t0. */
    auto token_of = [&](int64_t j) {
        const int64_t q = j / chunks;
        if (LISTED)
            return q < n ? q : (int64_t)list[q - n];
        return q < n - staged ? staged + q : q - (n - staged);
    };
    int64_t item = threadIdx.x / MOES_WARP;
    bool landed_seen = false;
    moes_row_fetch next;
    if (item < items)
        next = token_rows(a, t0 + token_of(item), 0);
    for (; item < items; item += GRID_SCATTER_WARPS) {
        const int64_t i = token_of(item), chunk = item % chunks;
        const int64_t t = t0 + i, s0 = chunk * (MOES_WARP * P) + lane;
        /* Whether its row is staged, and its slot in shared memory. */
        int64_t slot = i;
        bool in_shared = i < staged;
        if (LISTED) {
            /* item / chunks again, as token_of has it: computed once for
             * both, the listed kernel spilled and lost 4-7 us at EP8
             * prefill (bench/NOTES.md, v45). */
            slot = item / chunks - n;
            in_shared = slot >= 0;
            if (!in_shared && (mask[i / 32] >> (i % 32) & 1u)) {
                /* Staged: its slot's item comes later. */
                if (item + GRID_SCATTER_WARPS < items)
                    next = token_rows(
                        a, t0 + token_of(item + GRID_SCATTER_WARPS), 0);
                continue;
            }
        }
        if (in_shared && !landed_seen) {
            moes_wait_staged(staged, landed);
            landed_seen = true;
        }
        const uint4 *row = in_shared ? rows + slot * n_vec
                                     : moes_x_row<uint4>(a, t);
        const moes_row_fetch first = next;
        if (item + GRID_SCATTER_WARPS < items)
            next = token_rows(a, t0 + token_of(item + GRID_SCATTER_WARPS), 0);
        for (int64_t k0 = 0; k0 < a.top_k; k0 += MOES_WARP) {
            const moes_row_fetch f =
                k0 == 0 ? first : token_rows(a, t, k0);
            const unsigned valid = moes_dev_valid_rows(f, a.out_rows);
            if (!valid)
                continue;
            uint4 v[P];
            load_chunk<uint4, P>(row, s0, n_vec, v);
            store_chunk<uint4, P>(a, t, chunk, s0, n_vec, v,
                                  chunk_scale_words(a, t, chunk), valid, f);
        }
    }
}

/* With a map, the block's n tokens that a local expert takes: on entry
 * `mask` has a bit set for each of them; on return only the bits of the
 * first `stage_tokens` of them, whose offsets from t0 are in `list` in
 * order (16 bits hold them: a block has at most GPU_GRID_SCATTER_OWN
 * choices). Returns how many are listed. One warp calls it. */
__device__ __forceinline__ int grid_list_staged(int64_t n,
                                                int64_t stage_tokens,
                                                uint32_t *mask,
                                                uint16_t *list)
{
    const unsigned lane = threadIdx.x % MOES_WARP;
    const int words = (int)gpu_grid_stage_mask_words(n);
    int found = 0;
    for (int w0 = 0; w0 < words; w0 += MOES_WARP) {
        const int w = w0 + (int)lane;
        uint32_t bits = w < words ? mask[w] : 0u;
        const int count = __popc(bits);
        const int incl = moes_warp_inclusive_sum(count, lane);
        const int total = __shfl_sync(0xFFFFFFFFu, incl, MOES_WARP - 1);
        const int before = incl - count;
        uint32_t kept = 0;
        for (int rank = found + before; bits && rank < stage_tokens; rank++) {
            const int b = __ffs(bits) - 1;
            bits &= bits - 1;
            kept |= 1u << b;
            list[rank] = (uint16_t)(w * 32 + b);
        }
        if (w < words)
            mask[w] = kept;
        found += total;
    }
    return found < stage_tokens ? found : (int)stage_tokens;
}

/* LISTED: the form for a call with a map that stages rows (the host
 * picks it, gpu_ops.c); a kernel of its own, since with the listed
 * copy beside the other in one kernel ptxas spilled. */
template <bool LISTED>
__device__ __forceinline__ void scatter_grid(const gpu_scatter_args &args)
{
    __shared__ grid_scatter_shared sh;
    /* stage_tokens rows of row_bytes, and with a map the staged tokens'
     * mask and list: the launch's dynamic size (gpu_grid_stage_bytes). */
    extern __shared__ uint4 staged_rows[];
    __shared__ unsigned long long staged_landed; /* an mbarrier */
    __shared__ int listed_staged;
    enum { T = GPU_GRID_SCATTER_THREADS, R = GRID_SCATTER_ROUNDS };
    gpu_scatter_args a = args;
    a.counts = sh.counts;
    a.start = sh.start;
    const int tid = threadIdx.x;
    const unsigned lane = threadIdx.x % MOES_WARP;
    const unsigned warp = threadIdx.x / MOES_WARP;
    const unsigned lower = (1u << lane) - 1u;
    const bool masked = a.layout == MOES_LAYOUT_MASKED;
    const int n_experts = (int)a.n_experts;
    const unsigned n_global = (unsigned)a.n_global;
    const unsigned top_k = (unsigned)a.top_k;
    /* The block's tokens, their choices [c0, c1), and the warp's run of
     * them, [w0, w1): whole rounds of 32 but the last. */
    const int64_t t0 = (int64_t)blockIdx.x * a.n_tokens / gridDim.x;
    const int64_t t1 = ((int64_t)blockIdx.x + 1) * a.n_tokens / gridDim.x;
    const int c0 = (int)(t0 * a.top_k), c1 = (int)(t1 * a.top_k);
    const int per_warp =
        (c1 - c0 + GRID_SCATTER_WARPS * MOES_WARP - 1) /
        (GRID_SCATTER_WARPS * MOES_WARP) * MOES_WARP;
    const int w0 = c0 + (int)warp * per_warp;
    const int w1 = min(w0 + per_warp, c1);
    unsigned long long key = GPU_ERROR_KEY_NONE;

    moes_dev_enter();
    /* 1. The run's ids, every round's load in flight at once. */
    int32_t id[R];
#pragma unroll
    for (int r = 0; r < R; r++) {
        const int c = w0 + r * MOES_WARP + (int)lane;
        id[r] = c < w1 ? moes_block_id(a, (unsigned)c) : -1;
    }
    if (moes_dev_failed(a.state))
        return; /* every block alike: none reaches the barrier */
    /* Without a map, the block's first tokens are staged; with one, those
     * that a local expert takes, listed (gpu_grid_stage_bytes). */
    const int64_t staged_first =
        a.stage_tokens < t1 - t0 ? a.stage_tokens : t1 - t0;
    const bool listed = LISTED && a.stage_tokens > 0;
    uint32_t *stage_mask =
        (uint32_t *)(staged_rows + a.stage_tokens * (a.row_bytes / 16));
    uint16_t *stage_list =
        (uint16_t *)(stage_mask +
                     gpu_grid_stage_mask_words(
                         gpu_tokens_per_block(a.n_tokens, gridDim.x)));
    if (listed)
        for (int i = tid; i < (int)gpu_grid_stage_mask_words(t1 - t0);
             i += T)
            stage_mask[i] = 0;
    if (a.map)
        moes_block_load_map<T, false>(a, sh.map, -1, &key);
    for (int i = tid; i < GRID_SCATTER_WARPS * n_experts; i += T)
        sh.warp_count[i / n_experts][i % n_experts] = 0;
    for (int i = tid; i < n_experts; i += T)
        sh.all[i] = sh.before[i] = 0;
    if (tid == 0)
        sh.key = GPU_ERROR_KEY_NONE;
    __syncthreads();

    /* Each choice's expert (choices past the run hold id -1, which
     * counts nowhere) and its rank among the run's before it. */
    int16_t expert[R];
    uint16_t rank[R];
    int first_bad = INT32_MAX;
#pragma unroll
    for (int r = 0; r < R; r++) {
        expert[r] = (int16_t)moes_block_expert(
            id[r], w0 + r * MOES_WARP + (int)lane, n_global, a.map,
            sh.map, &first_bad);
    }
#pragma unroll
    for (int r = 0; r < R; r++) {
        if (w0 + r * MOES_WARP >= w1) /* the whole warp */
            break;
        const int e = expert[r];
        const unsigned peers = __match_any_sync(0xFFFFFFFFu, e);
        const unsigned had = e >= 0 ? sh.warp_count[warp][e] : 0u;
        rank[r] = (uint16_t)(had + __popc(peers & lower));
        __syncwarp();
        if (e >= 0 && lane == (unsigned)(__ffs(peers) - 1))
            sh.warp_count[warp][e] = (uint16_t)(had + __popc(peers));
        __syncwarp();
    }
    if (listed) {
#pragma unroll
        for (int r = 0; r < R; r++) {
            const int c = w0 + r * MOES_WARP + (int)lane;
            if (c < w1 && expert[r] >= 0) {
                const int i = c / (int)top_k - (int)t0;
                atomicOr(&stage_mask[i / 32], 1u << (i % 32));
            }
        }
    }
    if (first_bad != INT32_MAX &&
        GPU_ERROR_KEY(MOES_DATA_ERROR_RANK_ID, first_bad) < key)
        key = GPU_ERROR_KEY(MOES_DATA_ERROR_RANK_ID, first_bad);
    key = grid_check_scales(a, t0, t1, key);
    if (key != GPU_ERROR_KEY_NONE)
        atomicMin(&sh.key, key);
    __syncthreads();

    /* 2. The warps' counts become the counts before each warp; the
     * block's go to its row of the table, its key beside them. */
    if (tid < n_experts) {
        int32_t running = 0;
        for (int w = 0; w < GRID_SCATTER_WARPS; w++) {
            const int32_t x = sh.warp_count[w][tid];
            sh.warp_count[w][tid] = (uint16_t)running;
            running += x;
        }
        grid_counts(a)[(int64_t)blockIdx.x * n_experts + tid] =
            (uint16_t)running;
    }
    if (tid == 0)
        grid_keys(a)[blockIdx.x] = sh.key;
    if (listed && warp == GRID_SCATTER_WARPS - 1) {
        const int found =
            grid_list_staged(t1 - t0, a.stage_tokens, stage_mask, stage_list);
        if (lane == 0)
            listed_staged = found;
    }
    grid_barrier(a.state, 0);
    const int64_t staged = listed ? (int64_t)listed_staged : staged_first;
    moes_stage_rows(a, t0, staged, listed ? stage_list : NULL, staged_rows,
                    &staged_landed);

    /* 3. Expert e's count over all blocks and over those before this
     * one, and the smallest key of all. The keys are loaded before the
     * sums, so that both are in flight together. */
    unsigned long long block_key = GPU_ERROR_KEY_NONE;
    if (tid < (int)gridDim.x)
        block_key = __ldcg(&grid_keys(a)[tid]);
    if (n_experts > 0 && n_experts % 8 == 0)
        grid_column_sums<8>(a, n_experts, sh.all, sh.before);
    else if (n_experts > 0)
        grid_column_sums<1>(a, n_experts, sh.all, sh.before);
    for (int b = tid + T; b < (int)gridDim.x; b += T) {
        const unsigned long long k = __ldcg(&grid_keys(a)[b]);
        if (k < block_key)
            block_key = k;
    }
    if (block_key != GPU_ERROR_KEY_NONE)
        atomicMin(&sh.key, block_key);
    __syncthreads();
    if (tid < n_experts)
        sh.counts[tid] = sh.all[tid];
    __syncthreads();
    /* Every thread of the block calls these (block scans inside). */
    int64_t rows = 0, dropped = 0;
    scan_expert_range<1>(a, 0, n_experts, &rows, &dropped);
    dropped = block_sum(dropped);
    const int64_t rows_needed = masked ? a.out_rows : rows;
    if (tid == 0) {
        sh.dropped = dropped;
        if (!masked && rows > a.capacity)
            atomicMin(&sh.key,
                      GPU_ERROR_KEY(MOES_DATA_ERROR_RANK_CAPACITY, 0));
    }
    __syncthreads();

    /* 4. */
    if (moes_block_verdict(a, sh.key, rows_needed)) {
        /* The block's shared memory must outlive the copies into it. */
        moes_wait_staged(staged, &staged_landed);
        return;
    }
#pragma unroll
    for (int r = 0; r < R; r++) {
        const unsigned c = (unsigned)(w0 + r * MOES_WARP) + lane;
        if ((int)c >= w1)
            break;
        const int e = expert[r];
        int64_t row = -1;
        if (e >= 0) {
            const int64_t in_expert = (int64_t)sh.before[e] +
                                      sh.warp_count[warp][e] + rank[r];
            if (masked)
                row = in_expert < a.capacity ? e * a.capacity + in_expert : -1;
            else
                row = sh.start[e] + in_expert;
        }
        const unsigned t = c / top_k;
        moes_dev_place_choice_at(a, t, c - t * top_k, c, row);
    }
    if (a.stage_tokens > 0) {
        /* The block's out_index entries, written just above. */
        __syncthreads();
        grid_copy_rows<LISTED>(a, t0, t1, staged, stage_list, stage_mask,
                               staged_rows, &staged_landed);
    }
    /* The label warps spread over the grid (block_route.cuh). */
    moes_block_labels_and_outputs<T, true>(a, rows_needed, sh.dropped);
}

extern "C" __global__ void __launch_bounds__(GPU_GRID_SCATTER_THREADS, 1)
moes_scatter_grid(const gpu_scatter_args args)
{
    scatter_grid<false>(args);
}

extern "C" __global__ void __launch_bounds__(GPU_GRID_SCATTER_THREADS, 1)
moes_scatter_grid_listed(const gpu_scatter_args args)
{
    scatter_grid<true>(args);
}
