/* SPDX-License-Identifier: MIT */
/*
 * sort_route.cu - where each choice goes when there are many experts: the
 * valid choices sorted by local expert, stably, so that a choice's rank
 * within its expert is its distance from the expert's first.
 *
 * The tile table of the grid routing ([E][tiles], route_count.cu) grows
 * with E: past a few thousand experts its zeroing and its scan cost more
 * than the choices' own work, and capping it leaves a few long tiles whose
 * placement waits round after round. Calls with more than
 * GPU_SORT_MIN_EXPERTS experts count with one tile instead (the counts,
 * first rows and checks as before, on a table of E entries) and take the
 * ranks from a least-significant-digit radix sort of the choices by local
 * expert, GPU_SORT_DIGIT_BITS bits a pass: its work follows the choices,
 * whatever E.
 *
 * A pass (moes_sort_move_tile) goes over tiles of sort_tile elements, a
 * block a tile, as a kernel of its own (moes_sort_move) or a step of the
 * one-launch routing (sort_grid.cu), with each tile's digit counts in the
 * pass's [blocks][digits] table: the first pass's counted by the routing's
 * count (route_count.cu), which reads every choice anyway, each next
 * pass's by the pass before as it moves the elements. Each block sums the
 * table into where its elements of each digit start (the elements of the
 * smaller digits, and those of its digit in the blocks before), then takes
 * its tile in rounds of GPU_SORT_ROUND: each warp counts its share of the
 * round into its own row of shared counts, the rows become each warp's
 * starts, and each element moves to its warp's start for its digit plus
 * its rank among the warp's earlier elements of that digit
 * (__match_any_sync). Within a digit the elements keep their order, so the
 * passes compose into a stable sort, and no atomic decides a position (the
 * counts of the next pass are sums: any order of the adds gives them). The
 * first pass reads the choices themselves and gives those with no local
 * expert out_index -1; the last records each expert's first position
 * (atomicMin: the least is the same in any order), and
 * moes_stage_place_sorted (moes_place_and_label, or the one-launch
 * routing's last step) then places them. Where the rows are the sorted
 * positions themselves (no padding, not masked), the one-launch routing's
 * last pass places each choice as it moves it.
 *
 * Race-free by construction: in a pass a block writes positions no other
 * element takes, and adds only to the next pass's table, which no block
 * of the pass reads; shared counts go through barriers.
 */
#include "kernel_common.cuh"

enum { SORT_WARPS = GPU_SORT_THREADS / MOES_WARP,
       SORT_DIGITS = 1 << GPU_SORT_DIGIT_BITS,
       /* Rounds of 32 elements a warp takes in a round of the block. */
       SORT_ROUNDS = GPU_SORT_ROUND / GPU_SORT_THREADS };

static_assert(SORT_DIGITS == GPU_SORT_THREADS,
              "a thread per digit turns counts into starts");
static_assert(GPU_SORT_ROUND % GPU_SORT_THREADS == 0,
              "a block's round is whole rounds of every warp");

/* Elements of pass `pass`: every choice first, then the valid ones that
 * pass kept. */
__device__ __forceinline__ int64_t sort_elements(const gpu_scatter_args &a,
                                                 int64_t pass)
{
    return pass == 0 ? a.n_choices : (int64_t)*a.sort_valid;
}

/* Element i of pass `pass`: its key, the local expert (-1 for a choice
 * without one), and in *choice its flat index t * K + k. */
__device__ __forceinline__ int32_t sort_load(const gpu_scatter_args &a,
                                             int64_t pass, int64_t i,
                                             int32_t *choice)
{
    if (pass == 0) {
        *choice = (int32_t)i;
        return (int32_t)moes_dev_expert_of(a, moes_dev_choice_id(a, i));
    }
    *choice = a.sort_choices[(pass - 1) & 1][i];
    return a.sort_keys[(pass - 1) & 1][i];
}

/* Tile `tile` of pass `pass`, [*begin, *end). */
__device__ __forceinline__ void sort_tile(const gpu_scatter_args &a,
                                          int64_t pass, int64_t tile,
                                          int64_t *begin, int64_t *end)
{
    const int64_t n = sort_elements(a, pass);
    *begin = tile * a.sort_tile;
    *end = *begin + a.sort_tile < n ? *begin + a.sort_tile : n;
}

/* Where the tile's elements of digit d (the calling thread's) start in
 * the pass's output: the elements of every smaller digit, and those of
 * digit d in the tiles before. Each block sums the table itself (its
 * rows are a few KiB, in L2), so that no kernel runs between the counts
 * and the moves; the first pass's tile 0 also records how many
 * elements the next passes sort. */
__device__ __forceinline__ int64_t sort_block_start(const gpu_scatter_args &a,
                                                    int64_t pass, int64_t tile)
{
    /* Loads in flight at once: the whole table in one round trip up to
     * 32 tiles. */
    enum { U = 32 };
    const int d = threadIdx.x;
    const int64_t blocks = a.sort_blocks;
    const int32_t *counts = a.sort_hist + pass * blocks * SORT_DIGITS;
    int64_t before = 0, total = 0;
    for (int64_t b0 = 0; b0 < blocks; b0 += U) {
        int32_t c[U];
#pragma unroll
        for (int u = 0; u < U; u++)
            c[u] = b0 + u < blocks ? counts[(b0 + u) * SORT_DIGITS + d] : 0;
#pragma unroll
        for (int u = 0; u < U; u++) {
            total += c[u];
            if (b0 + u < tile)
                before += c[u];
        }
    }
    int64_t all;
    /* expert_scan.cu's block scan (the kernels are one module). */
    const int64_t smaller = block_exclusive_sum<false>(total, &all);
    if (pass == 0 && tile == 0 && d == 0)
        *a.sort_valid = (int32_t)all;
    return smaller + before;
}

/* The warp's share of a round: its keys and choices (key -1: none). */
__device__ __forceinline__ void sort_load_round(const gpu_scatter_args &a,
                                                int64_t pass, int64_t first,
                                                int64_t end,
                                                int32_t (&key)[SORT_ROUNDS],
                                                int32_t (&choice)[SORT_ROUNDS])
{
    const unsigned lane = threadIdx.x % MOES_WARP;
#pragma unroll
    for (int j = 0; j < SORT_ROUNDS; j++) {
        const int64_t i = first + j * MOES_WARP + lane;
        key[j] = -1;
        choice[j] = 0;
        if (i < end)
            key[j] = sort_load(a, pass, i, &choice[j]);
    }
}

/* moes_sort_move_tile's tables, outside it so that its two forms share
 * them: at[w][d], where warp w's next element of digit d goes; next[d],
 * where the round's first element of digit d goes. */
__shared__ int32_t sort_move_at[SORT_WARPS][SORT_DIGITS];
__shared__ int32_t sort_move_next[SORT_DIGITS];

/* Moves tile `tile` of pass `pass`, its elements [begin, end) (sort_tile,
 * which the caller has already called), by the whole block. key and choice
 * hold the warp's share of the tile's first round (sort_load_round).
 * With `place_unsorted`, the first pass gives each choice with no local
 * expert out_index -1; without, the caller does (moes_sort_grid, which
 * writes no output before its verdict). With PLACE_SORTED the last
 * pass places each choice at its position (moes_sort_places_at_position)
 * instead of recording the experts' first positions. */
template <bool PLACE_SORTED>
__device__ void moes_sort_move_tile(const gpu_scatter_args &a, int64_t pass,
                                    int64_t tile, int64_t begin, int64_t end,
                                    bool place_unsorted,
                                    int32_t (&key)[SORT_ROUNDS],
                                    int32_t (&choice)[SORT_ROUNDS])
{
    int32_t(&at)[SORT_WARPS][SORT_DIGITS] = sort_move_at;
    int32_t(&next)[SORT_DIGITS] = sort_move_next;
    const unsigned lane = threadIdx.x % MOES_WARP;
    const unsigned warp = threadIdx.x / MOES_WARP;
    const unsigned lower = (1u << lane) - 1u;
    const int64_t share = (int64_t)warp * (SORT_ROUNDS * MOES_WARP);
    unsigned peers[SORT_ROUNDS];
    const int to = (int)(pass & 1);
    const bool last = pass == a.sort_passes - 1;
    next[threadIdx.x] = (int32_t)sort_block_start(a, pass, tile);
    /* Rounds of GPU_SORT_ROUND elements, a warp SORT_ROUNDS * 32
     * consecutive ones of each; next[d] is where the round's first
     * element of digit d goes. */
    for (int64_t r0 = begin; r0 < end; r0 += GPU_SORT_ROUND) {
        if (r0 != begin)
            sort_load_round(a, pass, r0 + share, end, key, choice);
        for (int w = 0; w < SORT_WARPS; w++)
            at[w][threadIdx.x] = 0;
        if (pass == 0 && place_unsorted)
#pragma unroll
            for (int j = 0; j < SORT_ROUNDS; j++)
                if (key[j] < 0 && r0 + share + j * MOES_WARP + lane < end)
                    moes_dev_place_choice(a, r0 + share + j * MOES_WARP + lane,
                                          -1);
        __syncthreads();
#pragma unroll
        for (int j = 0; j < SORT_ROUNDS; j++) {
            const int d = key[j] >= 0 ? moes_dev_sort_digit(pass, key[j]) : -1;
            peers[j] = __match_any_sync(0xFFFFFFFFu, d);
            if (d >= 0 && lane == (unsigned)(__ffs(peers[j]) - 1))
                at[warp][d] += __popc(peers[j]);
            __syncwarp();
        }
        __syncthreads();
        {
            const int d = threadIdx.x;
            int32_t start = next[d];
            for (int w = 0; w < SORT_WARPS; w++) {
                const int32_t c = at[w][d];
                at[w][d] = start;
                start += c;
            }
            next[d] = start;
        }
        __syncthreads();
#pragma unroll
        for (int j = 0; j < SORT_ROUNDS; j++) {
            const int d = key[j] >= 0 ? moes_dev_sort_digit(pass, key[j]) : -1;
            int32_t pos = 0;
            if (d >= 0)
                pos = at[warp][d] + __popc(peers[j] & lower);
            /* The last pass: the lanes of the same expert, whose lowest
             * holds their least position. */
            const unsigned same = last && !PLACE_SORTED
                                      ? __match_any_sync(0xFFFFFFFFu, key[j])
                                      : 0u;
            /* Every peer has read the warp's start before its leader
             * moves it. */
            __syncwarp();
            if (d >= 0) {
                if (lane == (unsigned)(__ffs(peers[j]) - 1))
                    at[warp][d] = pos + __popc(peers[j]);
                a.sort_keys[to][pos] = key[j];
                a.sort_choices[to][pos] = choice[j];
                if (last && PLACE_SORTED)
                    moes_dev_place_choice(a, choice[j], pos);
                else if (last && lane == (unsigned)(__ffs(same) - 1))
                    atomicMin(&a.sort_first[key[j]], pos);
                if (!last)
                    atomicAdd(moes_dev_sort_count(a, pass + 1, (uint32_t)pos,
                                                  key[j]),
                              1);
            }
            __syncwarp();
        }
        /* at[][] is zeroed for the next round, and next[] set for the
         * next tile, only once every warp is done with them. */
        __syncthreads();
    }
}

/* A tile of the current pass a block. The first pass reads only the
 * call's ids and map, which no kernel of the call writes, and is never a
 * call's first kernel (gpu_ops.c): it loads its first round before it
 * waits for the kernel ahead, and writes only after. */
extern "C" __global__ void __launch_bounds__(GPU_SORT_THREADS)
moes_sort_move(const gpu_scatter_args a)
{
    const int64_t share =
        (int64_t)(threadIdx.x / MOES_WARP) * (SORT_ROUNDS * MOES_WARP);
    int32_t key[SORT_ROUNDS], choice[SORT_ROUNDS];
    int64_t begin, end;
    if (a.sort_pass == 0) {
        sort_tile(a, 0, blockIdx.x, &begin, &end);
        sort_load_round(a, 0, begin + share, end, key, choice);
    }
    moes_dev_enter();
    if (moes_dev_failed(a.state))
        return;
    if (a.sort_pass != 0) {
        sort_tile(a, a.sort_pass, blockIdx.x, &begin, &end);
        sort_load_round(a, a.sort_pass, begin + share, end, key, choice);
    }
    moes_sort_move_tile<false>(a, a.sort_pass, blockIdx.x, begin, end, true,
                               key, choice);
}

/* True where a sorted choice's row is its position in the sorted order:
 * rows one after another, expert after expert, none padded (alignment
 * 1), as the sort lays the valid choices out. */
__device__ __forceinline__ bool moes_sort_places_at_position(
    const gpu_scatter_args &a)
{
    return a.layout != MOES_LAYOUT_MASKED && a.alignment == 1;
}

/* Each sorted choice's row: its expert's first row plus its rank, the
 * distance from the expert's first position (in the masked layout,
 * dropped past the capacity). */
__device__ void moes_stage_place_sorted(const gpu_scatter_args &a,
                                        int64_t thread, int64_t threads)
{
    const int from = (int)((a.sort_passes - 1) & 1);
    const int64_t n = *a.sort_valid;
    const bool masked = a.layout == MOES_LAYOUT_MASKED;
    for (int64_t p = thread; p < n; p += threads) {
        const int32_t e = a.sort_keys[from][p];
        const int64_t rank = p - a.sort_first[e];
        int64_t row;
        if (masked)
            row = rank < a.capacity ? (int64_t)e * a.capacity + rank : -1;
        else
            row = a.start[e] + rank;
        moes_dev_place_choice(a, a.sort_choices[from][p], row);
    }
}
