/* SPDX-License-Identifier: MIT */
/*
 * sort_grid.cu - the routing of a scatter placed by the sort, in one
 *   cooperative launch.
 *
 * With many experts the grid path runs six short launches before the
 * copy, each waiting for the one before: the table set (route_count.cu,
 * moes_prepare_route), the counts, the scan by expert ranges
 * (expert_scan.cu), a launch a sort pass (sort_route.cu), and the
 * placement with the labels and per-expert outputs (place_and_label.cu).
 * Here the same stages run in one launch whose blocks are all resident at
 * once, a grid-wide barrier (grid_barrier.cuh) where a launch ended, and
 * two pairs of stages side by side: the sort needs only the digit counts,
 * not the experts' first rows, so the scan runs beside the first pass,
 * and the labels and per-expert outputs beside the last.
 *
 *   1. the table, the digit counts and the first positions set, the map
 *      checked (moes_stage_prepare_route);
 *   2. the choices counted, the ids and UE8M0 scales checked; the
 *      verdict on them;
 *   3. the first pass on the blocks that hold a tile of it, the scan of
 *      expert ranges on every block once its tiles are done (ranges taken
 *      in the order blocks ask, as the scan's look-back needs); the
 *      verdict on the capacity;
 *   4. each next pass; beside the last, on the blocks without a tile, the
 *      labels, the per-expert outputs and the out_index -1 of the choices
 *      with no local expert;
 *   5. the sorted choices placed.
 *
 * A memory round trip costs the most at the start of a call, while the
 * L2 writes back what the work before left in it, so the launch takes
 * out what it can: where the first pass's tiles are one round each, a
 * block a tile, each block loads its tile's ids at entry and both counts
 * and moves them from registers; the table of one tile is the experts'
 * counts, which the scan reads in place (moes_scan_expert_range<false>:
 * no column to scan); and where the rows are the sorted positions
 * (alignment 1, not masked) the last pass places the choices, and step
 * 5 and its barrier go. On an H200, DeepSeek-V3 rows, 4096 tokens over
 * 65536 experts at alignment 1, the whole scatter (bench/NOTES.md, v25):
 * 126.6-129.5 us on the grid path, 126.2-126.9 with the stages alone in
 * one launch, 122.8-124.0 with the ids held and the counts read in
 * place, 120.6 with the last pass placing.
 *
 * A verdict is the same in every block: each reads the error key after
 * a barrier. Nothing reaches the caller's outputs before the last one,
 * so a call with a bad input writes nothing, as on the grid path. The
 * stages are those of the grid path's kernels, so the two place every
 * choice alike, bit for bit.
 */
#include "grid_barrier.cuh"

/* True alike in every block when the routing so far found a data error
 * (its key is set): then, once every block has read the key (a barrier,
 * counted in *barriers), block 0 turns it into the record (which clears
 * it), and the call stops. The barrier before the call made every report
 * visible. */
__device__ bool sort_grid_verdict(const gpu_scatter_args &a, int *barriers)
{
    __shared__ unsigned long long key;
    if (threadIdx.x == 0)
        key = *(volatile unsigned long long *)&a.state->key;
    __syncthreads();
    if (key == GPU_ERROR_KEY_NONE)
        return false;
    grid_barrier(a.state, (*barriers)++);
    if (blockIdx.x == 0 && threadIdx.x == 0)
        moes_dev_close_validation(a.state, moes_route_finish_args(a));
    return true;
}

/* The tiles of pass `pass` this block holds (blockIdx.x, then a grid
 * further on). */
__device__ void sort_grid_pass(const gpu_scatter_args &a, int64_t pass,
                               bool place_sorted)
{
    const int64_t share =
        (int64_t)(threadIdx.x / MOES_WARP) * (SORT_ROUNDS * MOES_WARP);
    for (int64_t tile = blockIdx.x; tile < a.sort_blocks; tile += gridDim.x) {
        int32_t key[SORT_ROUNDS], choice[SORT_ROUNDS];
        int64_t begin, end;
        sort_tile(a, pass, tile, &begin, &end);
        sort_load_round(a, pass, begin + share, end, key, choice);
        /* A template argument, not a flag tested in the tile's inner
         * loop: on an H200, 4096 DeepSeek-V3 tokens over 65536 experts
         * took 120.8 -> 118.5 us at alignment 1, 123.5 -> 120.5 at 128,
         * masked 123.0 -> 121.6 (bench/NOTES.md, v26). */
        if (place_sorted)
            moes_sort_move_tile<true>(a, pass, tile, begin, end, false, key,
                                      choice);
        else
            moes_sort_move_tile<false>(a, pass, tile, begin, end, false, key,
                                       choice);
    }
}

/* What needs the scan but not the sort: the labels, the per-expert
 * outputs, and out_index -1 for each choice with no local expert (the
 * sort leaves those out). */
__device__ void sort_grid_outputs(const gpu_scatter_args &a, int64_t thread,
                                  int64_t threads)
{
    if (a.m_indices || a.row_source)
        moes_stage_label_blocks(a, thread, threads);
    moes_stage_expert_outputs(a, thread, threads);
    for (int64_t c = thread; c < a.n_choices; c += threads)
        if (moes_dev_expert_of(a, moes_dev_choice_id(a, c)) < 0)
            moes_dev_place_choice(a, c, -1);
}

static_assert(SORT_ROUNDS == COUNT_ROUNDS_IN_FLIGHT,
              "a warp counts the rounds its first pass moves");

extern "C" __global__ void __launch_bounds__(GPU_SORT_THREADS,
                                             GPU_SORT_GRID_BLOCKS_PER_SM)
moes_sort_grid(const gpu_scatter_args a)
{
    const int64_t thread = moes_dev_thread(), threads = moes_dev_threads();
    const unsigned lane = threadIdx.x % MOES_WARP;
    int barriers = 0; /* used so far (grid_barrier's nth) */
    /* Where the first pass's tiles are one round each, a block at most,
     * block b's warps count the choices its tile moves (a grid-stride
     * count over warps of GPU_SORT_THREADS gives them the same ones), so
     * they load them once, here at entry, before the table is set: the
     * launch is an ordinary one, after everything before it, and ids and
     * map are inputs of the call. */
    const bool held = a.sort_tile == GPU_SORT_ROUND &&
                      a.sort_blocks <= (int64_t)gridDim.x;
    const int64_t base = (int64_t)blockIdx.x * GPU_SORT_ROUND +
                         (int64_t)(threadIdx.x / MOES_WARP) *
                             (SORT_ROUNDS * MOES_WARP);
    int64_t entry[SORT_ROUNDS];
    bool bad[SORT_ROUNDS];
    if (held)
        moes_count_load(a, base, a.n_choices, -1, entry, bad);
    moes_dev_enter();
    if (moes_dev_failed(a.state))
        return; /* every block alike: none reaches a barrier */

    /* 1. */
    moes_stage_prepare_route(a, thread, threads);
    moes_stage_reset_ranges(a, thread, threads);
    grid_barrier(a.state, barriers++);

    /* 2. */
    if (!held)
        moes_stage_count_tiles(a, thread, threads);
    else if (base < a.n_choices)
        moes_count_add(a, base, entry, bad);
    moes_stage_check_scales(a, thread, threads);
    grid_barrier(a.state, barriers++);
    if (sort_grid_verdict(a, &barriers))
        return;

    /* 3. */
    if (!held) {
        sort_grid_pass(a, 0, false);
    } else if (blockIdx.x < a.sort_blocks) {
        /* One tile: the table's entry is the local expert (-1: none). */
        int32_t key[SORT_ROUNDS], choice[SORT_ROUNDS];
        int64_t begin, end;
#pragma unroll
        for (int j = 0; j < SORT_ROUNDS; j++) {
            key[j] = (int32_t)entry[j];
            choice[j] = (int32_t)(base + j * MOES_WARP + lane);
        }
        sort_tile(a, 0, blockIdx.x, &begin, &end);
        moes_sort_move_tile<false>(a, 0, blockIdx.x, begin, end, false, key,
                                   choice);
    }
    for (int64_t r; (r = moes_take_scan_range(a)) < a.scan_ranges;)
        moes_scan_expert_range<false>(a, r);
    grid_barrier(a.state, barriers++);
    if (sort_grid_verdict(a, &barriers))
        return;

    /* 4. The outputs beside the last pass, on the blocks past the sort's
     * tiles where they leave at least half the grid, else on all. Where
     * the rows are the sorted positions, the last pass places the
     * choices, and step 5 is not needed. */
    const bool at_position =
        a.sort_passes > 1 && moes_sort_places_at_position(a);
    for (int64_t pass = 1; pass < a.sort_passes; pass++) {
        sort_grid_pass(a, pass, at_position && pass + 1 == a.sort_passes);
        if (pass + 1 < a.sort_passes)
            grid_barrier(a.state, barriers++);
    }
    const int64_t first =
        2 * a.sort_blocks <= (int64_t)gridDim.x ? a.sort_blocks : 0;
    if (blockIdx.x >= first)
        sort_grid_outputs(a, (blockIdx.x - first) * blockDim.x + threadIdx.x,
                          (gridDim.x - first) * blockDim.x);
    if (at_position)
        return;
    grid_barrier(a.state, barriers++);

    /* 5. */
    moes_stage_place_sorted(a, thread, threads);
}
