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
 *
 * Placement inside the copy (moes_place_copy_rows, at the end): for most
 * grid-path calls of 16-byte rows the copying warps place their own
 * token's choices, and no placement launch runs between the scan and the
 * copy.
 */
#include "row_copy.cuh"

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

/* The copy grid's walk over its items (moes_item_walk), the stride as
 * the host split it (copy_walk_tokens, copy_walk_chunks). */
__device__ __forceinline__ void copy_walk_step(const gpu_scatter_args &a,
                                               moes_item_walk &w)
{
    moes_walk_step(w, a.copy_walk_tokens, a.copy_walk_chunks, a.copy_chunks);
}

__device__ __forceinline__ int64_t
copy_walk_next_token(const gpu_scatter_args &a, const moes_item_walk &w)
{
    return moes_walk_next_token(w, a.copy_walk_tokens, a.copy_walk_chunks,
                                a.copy_chunks);
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
    const int64_t lane = threadIdx.x % MOES_WARP;
    moes_item_walk w =
        moes_walk_start(moes_dev_thread() / MOES_WARP, a.copy_chunks);
    moes_row_fetch next;
    if (w.t < a.n_tokens)
        next = token_rows(a, w.t, 0);
    for (; w.t < a.n_tokens; copy_walk_step(a, w)) {
        const int64_t t = w.t;
        const int64_t chunk = w.c;
        const int64_t s0 = chunk * (MOES_WARP * P) + lane;
        const moes_row_fetch first = next;
        /* The next item's entries load while this one is copied. */
        const int64_t next_t = copy_walk_next_token(a, w);
        if (next_t < a.n_tokens)
            next = token_rows(a, next_t, 0);
        for (int64_t k0 = 0; k0 < a.top_k; k0 += MOES_WARP) {
            const moes_row_fetch f =
                k0 == 0 ? first : token_rows(a, t, k0);
            unsigned valid = moes_dev_valid_rows(f, a.out_rows);
            if (!valid)
                continue;
            V v[P];
            load_chunk<V, P>(moes_x_row<V>(a, t), s0, n_vec, v);
            const uint32_t word = chunk_scale_word(a, t, chunk);
            const bool scales = a.x_scales && chunk == 0;
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
                    moes_dev_store_scale(a, row, lane, word);
                /* Rows with more scale words than lanes: the rest. */
                const float *src = a.x_scales + t * a.x_scales_stride;
                for (int64_t j = lane + MOES_WARP; j < a.n_scale_cols;
                     j += MOES_WARP)
                    moes_dev_store_scale(a, row, j,
                                         moes_dev_scale_word(a, src, j));
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
            a,
            (blockIdx.x - a.copy_blocks) * (int64_t)blockDim.x + threadIdx.x,
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
 * placement launch wrote the labels) and longer chunks. Three blocks a
 * multiprocessor, as its 72 registers gave before the item walk: with
 * the thread count alone as a bound, ptxas then held it to 64 registers
 * and spilled 40 bytes. */
extern "C" __global__ void __launch_bounds__(GPU_ROW_THREADS, 3)
moes_copy_rows_wide(const gpu_scatter_args a)
{
    moes_dev_release_next();
    moes_dev_wait_prior();
    if (moes_dev_failed(a.state))
        return;
    copy_items<uint4, GPU_ROW_WIDE_PER_THREAD>(a);
}

/* The placement inside the copy (grid path, 16-byte rows, K <= 32, tiles
 * of at most GPU_PLACE_IN_COPY_MAX_TILE choices; gpu_ops.c checks).
 *
 * A choice's row is its expert's first row plus its rank among the
 * expert's choices before it in t*K + k order: the tile's first rank for
 * the expert (from the tile scan) plus the same expert's choices between
 * the tile's start and it. That second part needs only the ids and the
 * map, which are inputs of the call, so each warp finds it for its own
 * token's choices before it waits for the scan, together with the loads
 * of its chunk of the row; after the wait it needs one load from the
 * table and one of the expert's first row before it stores. This takes
 * the placement kernel and its grid-wide wait out of the scatter, and
 * puts the rows' loads of the copy's first blocks beside the scan.
 * Reading the ids, the map and x before the wait is safe because the
 * call's first kernel (launch_route, gpu_ops.c) is an ordinary launch:
 * it starts only when everything queued before the call has finished,
 * and this kernel starts after it. Nothing is written before the wait.
 *
 * Lane k < K holds choice c = t*K + k. Its rank within its tile: the
 * choices of the same (expert, tile) on lanes below it (one match), and
 * those of the same expert in [its tile's start, t*K), the window,
 * counted a round of 32 at a time with a ballot per choice of the token.
 * Every id of an item (its own and the window's, one round per 32) is
 * loaded in one batch and then every map entry, so that an item waits
 * for two loads before its ballots, not one pair per round. */
enum { PLACE_WINDOW_ROUNDS = GPU_PLACE_IN_COPY_MAX_TILE / MOES_WARP };
static_assert(GPU_PLACE_IN_COPY_MAX_TILE % MOES_WARP == 0,
              "the window is whole rounds");

/* An item's choices and window: lane k's own expert and tile, and the
 * experts of window positions begin + 32 j + lane (-1 past the window). */
struct placing_item {
    int64_t e, tile;
    int32_t window[PLACE_WINDOW_ROUNDS];
};

__device__ __forceinline__ placing_item load_placing_item(
    const gpu_scatter_args &a, int64_t t)
{
    enum { R = PLACE_WINDOW_ROUNDS };
    const unsigned lane = threadIdx.x % MOES_WARP;
    const int64_t c0 = t * a.top_k;
    /* The window before the token: from the start of the tile of its
     * first choice, which no choice of the token precedes; at most a
     * tile, so R rounds. */
    const int64_t begin = c0 / a.tile_size * a.tile_size;
    int64_t own = -1, window[R];
    if (lane < a.top_k)
        own = moes_dev_index_load(a.ids, a.ids_elem,
                                  t * a.ids_stride + lane);
#pragma unroll
    for (int j = 0; j < R; j++) {
        const int64_t p = begin + j * MOES_WARP + lane;
        window[j] = p < c0 ? moes_dev_choice_id(a, p) : -1;
    }
    placing_item it;
    it.e = lane < a.top_k ? moes_dev_expert_of(a, own) : -1;
    it.tile = lane < a.top_k ? (c0 + lane) / a.tile_size : -1;
#pragma unroll
    for (int j = 0; j < R; j++)
        it.window[j] = (int32_t)moes_dev_expert_of(a, window[j]);
    return it;
}

/* Lane k's rank within its tile (experts fit 32 bits: gpu_ops.c). */
__device__ __forceinline__ int64_t rank_in_tile(const gpu_scatter_args &a,
                                                int64_t t,
                                                const placing_item &it)
{
    const unsigned lane = threadIdx.x % MOES_WARP;
    const unsigned lower = (1u << lane) - 1u;
    const int64_t c0 = t * a.top_k;
    const unsigned peers = __match_any_sync(
        0xFFFFFFFFu, it.e >= 0 ? (long long)(it.e * a.tiles + it.tile) : -1ll);
    int64_t rank = __popc(peers & lower);
    const int64_t begin = c0 / a.tile_size * a.tile_size;
    const int64_t tile_start = it.tile * a.tile_size;
#pragma unroll
    for (int j = 0; j < PLACE_WINDOW_ROUNDS; j++) {
        if (begin + j * MOES_WARP >= c0)
            break;
        const int64_t p = begin + j * MOES_WARP + lane;
        for (int64_t q = 0; q < a.top_k; q++) {
            const int32_t eq = __shfl_sync(0xFFFFFFFFu, (int32_t)it.e, q);
            const long long sq =
                __shfl_sync(0xFFFFFFFFu, (long long)tile_start, q);
            const unsigned m = __ballot_sync(
                0xFFFFFFFFu,
                it.window[j] >= 0 && it.window[j] == eq && p >= sq);
            if (lane == q)
                rank += __popc(m);
        }
    }
    return rank;
}

template <int P>
__device__ void place_copy_items(const gpu_scatter_args &a)
{
    typedef uint4 V;
    const int64_t n_vec = a.row_bytes / (int64_t)sizeof(V);
    const unsigned lane = threadIdx.x % MOES_WARP;
    const bool masked = a.layout == MOES_LAYOUT_MASKED;
    bool waited = false;
    for (moes_item_walk w =
             moes_walk_start(moes_dev_thread() / MOES_WARP, a.copy_chunks);
         w.t < a.n_tokens; copy_walk_step(a, w)) {
        const int64_t t = w.t;
        const int64_t chunk = w.c;
        const int64_t s0 = chunk * (MOES_WARP * P) + lane;
        /* Inputs only until the wait. */
        const placing_item it = load_placing_item(a, t);
        const bool any = __ballot_sync(0xFFFFFFFFu, it.e >= 0) != 0;
        V v[P];
        chunk_scales words = {0, 0};
        if (any) {
            load_chunk<V, P>(moes_x_row<V>(a, t), s0, n_vec, v);
            words = chunk_scale_words(a, t, chunk);
        }
        const int64_t rank = rank_in_tile(a, t, it);
        if (!waited) {
            /* The tile table and the first rows come from the scan. */
            moes_dev_wait_prior();
            waited = true;
            if (moes_dev_failed(a.state))
                return;
        }
        moes_row_fetch f;
        f.row = -1;
        f.weight = 1.0f;
        if (it.e >= 0) {
            const int64_t r = a.tile_table[it.e * a.tiles + it.tile] + rank;
            if (masked)
                f.row = r < a.capacity ? it.e * a.capacity + r : -1;
            else
                f.row = a.start[it.e] + r;
        }
        if (chunk == 0 && lane < a.top_k)
            moes_dev_place_choice_at(a, t, lane, t * a.top_k + lane, f.row);
        const unsigned valid = __ballot_sync(0xFFFFFFFFu, f.row >= 0);
        if (valid)
            store_chunk<V, P>(a, t, chunk, s0, n_vec, v, words, valid, f);
    }
    if (!waited)
        moes_dev_wait_prior();
}

/* The grid path's placement and copy in one launch (above); the blocks
 * after copy_blocks write the labels (label_blocks of them) and then the
 * per-expert outputs, as moes_place_and_label's do. */
extern "C" __global__ void __launch_bounds__(GPU_ROW_THREADS)
moes_place_copy_rows(const gpu_scatter_args a)
{
    moes_dev_release_next();
    const int64_t block = blockIdx.x;
    if (block < a.copy_blocks) {
        place_copy_items<GPU_ROW_WIDE_PER_THREAD>(a);
        return;
    }
    moes_dev_wait_prior();
    if (moes_dev_failed(a.state))
        return;
    const int64_t first = a.copy_blocks + a.label_blocks;
    if (block < first)
        moes_stage_label_blocks(
            a, (block - a.copy_blocks) * blockDim.x + threadIdx.x,
            a.label_blocks * blockDim.x);
    else
        moes_stage_expert_outputs(
            a, (block - first) * blockDim.x + threadIdx.x,
            ((int64_t)gridDim.x - first) * blockDim.x);
}
