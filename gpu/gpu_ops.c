/* SPDX-License-Identifier: MIT */
/*
 * gpu_ops.c - count, scatter and gather on the GPU: the workspace they
 * need, the kernel arguments, and the order of the launches.
 *
 * A call only queues kernels on the context's stream: no host wait and,
 * once the workspace is reserved, no allocation, so a call can be captured
 * in a CUDA graph. Data errors are found by the kernels, recorded on the
 * device, and turn every later kernel into a no-op until the host reads
 * them (gpu_synchronize): the call itself returns MOES_OK.
 */
#include <string.h>

#include "gpu_state.h"

/* Choices per tile at least, the most tiles, and the most (tile, expert)
 * entries. One warp walks a tile, 32 choices a round, each round waiting
 * on the last, so short tiles keep the counting and placing kernels
 * short; but the scan walks each expert's column of tiles with one block,
 * so past a few thousand tiles it is the scan that grows. Measured on an
 * H200 (bench/NOTES.md, v7): tiles of 64 choices took 4 us off the
 * DeepSeek-V3 prefill scatter at 4096 tokens (512 tiles instead of 256)
 * and cost 8-10 us at EP8's 32768 tokens over 32 experts (4096 tiles
 * instead of 2048), hence the cap. The tile count is the two kernels'
 * parallelism, and the table is their workspace. */
#define GPU_TILE_MIN 64
#define GPU_TILES_MAX 2048
#define GPU_TABLE_MAX ((int64_t)1 << 22)

static int64_t ceil_div(int64_t a, int64_t b)
{
    return a / b + (a % b != 0);
}

/* The tiles a call of C choices wants before the table's limit. */
static int64_t tiles_wanted(int64_t n_choices)
{
    const int64_t t = ceil_div(n_choices, GPU_TILE_MIN);
    return t < GPU_TILES_MAX ? t : GPU_TILES_MAX;
}

/* True when the choices of a call are placed by sorting them by expert
 * (sort_route.cu) rather than by tiles: many experts, whose table of
 * tiles would cost more than the choices (gpu_kernel_args.h has the
 * figures), and few enough choices for 32-bit positions and a workspace
 * of 17 bytes a choice. */
static int sort_places(int64_t n_choices, int64_t n_experts)
{
    return n_experts > GPU_SORT_MIN_EXPERTS && n_experts <= INT32_MAX &&
           n_choices <= GPU_SORT_MAX_CHOICES;
}

/* The sort's tiles (gpu_kernel_args.h): elements a block, whole rounds,
 * and blocks. */
static int64_t sort_tile_for(int64_t n_choices)
{
    const int64_t rounds =
        n_choices > 0
            ? ceil_div(n_choices,
                       (int64_t)GPU_SORT_ROUND * GPU_SORT_MAX_BLOCKS)
            : 1;
    return rounds * GPU_SORT_ROUND;
}

static int64_t sort_blocks_for(int64_t n_choices)
{
    return n_choices > 0 ? ceil_div(n_choices, sort_tile_for(n_choices)) : 1;
}

/* The sort's passes: the digits of the largest expert, E - 1. */
static int64_t sort_passes_for(int64_t n_experts)
{
    int64_t passes = 0;
    for (int64_t top = n_experts - 1; top > 0; top >>= GPU_SORT_DIGIT_BITS)
        passes++;
    return passes > 0 ? passes : 1;
}

/* The sort's arrays (gpu_kernel_args.h, sort_*), in bytes: a table of
 * digit counts a pass, two rounds of keys and choices, the first
 * positions and the count of valid choices. The tables are sized for
 * ceil(C / GPU_SORT_ROUND) blocks up to GPU_SORT_MAX_BLOCKS, at least the
 * blocks a call of C choices takes and never less for a larger C (the
 * blocks themselves drop when the tiles grow), so that a reservation
 * covers every smaller call. */
static int64_t sort_bytes(int64_t n_choices, int64_t n_experts)
{
    int64_t blocks = ceil_div(n_choices, GPU_SORT_ROUND);
    if (blocks > GPU_SORT_MAX_BLOCKS)
        blocks = GPU_SORT_MAX_BLOCKS;
    if (blocks < 1)
        blocks = 1;
    return 4 * (sort_passes_for(n_experts) *
                    (int64_t)(1 << GPU_SORT_DIGIT_BITS) * blocks +
                4 * n_choices + n_experts + 1);
}

void gpu_tiles_for(int64_t n_choices, int64_t n_experts, int64_t *tiles,
                   int64_t *tile_size)
{
    int64_t wanted = tiles_wanted(n_choices);
    if (sort_places(n_choices, n_experts)) {
        /* One tile: the counts per expert, and no table to rank by. */
        *tiles = 1;
        *tile_size = n_choices > 0 ? n_choices : 1;
        return;
    }
    int64_t fit = GPU_TABLE_MAX / n_experts;
    int64_t t = wanted < fit ? wanted : fit;
    if (t < 1)
        t = 1;
    *tiles = t;
    *tile_size = n_choices > 0 ? ceil_div(n_choices, t) : 1;
}

/* Table entries plus counts, start and the scan's range status words, in
 * bytes. */
static int bytes_for_entries(int64_t entries, int64_t n_experts,
                             int64_t *bytes)
{
    int64_t n;
    return moes_mul_i64(n_experts, 2, &n) && moes_add_i64(n, entries, &n) &&
           moes_add_i64(n, GPU_SCAN_MAX_RANGES * GPU_SCAN_STATUS_WORDS, &n) &&
           moes_mul_i64(n, 8, bytes);
}

int gpu_route_workspace_bytes(int64_t n_choices, int64_t n_experts,
                              int64_t *bytes)
{
    int64_t tiles, tile_size, entries;
    gpu_tiles_for(n_choices, n_experts, &tiles, &tile_size);
    if (!moes_mul_i64(tiles, n_experts, &entries) ||
        !bytes_for_entries(entries, n_experts, bytes))
        return 0;
    /* Within GPU_SORT_MAX_CHOICES and INT32_MAX experts: no overflow. */
    return !sort_places(n_choices, n_experts) ||
           moes_add_i64(*bytes, sort_bytes(n_choices, n_experts), bytes);
}

/* max(E, min(tiles_wanted(C) * E, GPU_TABLE_MAX)) entries: at least
 * tiles * E for these sizes (see gpu_tiles_for), and never less for
 * larger ones (tiles_wanted grows with C), so a reservation covers every
 * smaller call; with many experts, the sort's arrays for up to C choices
 * besides (they grow with C too). */
int gpu_reserved_workspace_bytes(int64_t n_choices, int64_t n_experts,
                                 int64_t *bytes)
{
    int64_t wanted = tiles_wanted(n_choices);
    int64_t entries = wanted > GPU_TABLE_MAX / n_experts
                          ? GPU_TABLE_MAX
                          : wanted * n_experts;
    if (entries < n_experts)
        entries = n_experts;
    if (!bytes_for_entries(entries, n_experts, bytes))
        return 0;
    if (n_choices > GPU_SORT_MAX_CHOICES)
        n_choices = GPU_SORT_MAX_CHOICES;
    /* Past INT32_MAX experts nothing sorts, but a smaller call with up to
     * INT32_MAX does: its arrays (which grow with E) are covered too. */
    if (n_experts > INT32_MAX)
        n_experts = INT32_MAX;
    return !sort_places(n_choices, n_experts) ||
           moes_add_i64(*bytes, sort_bytes(n_choices, n_experts), bytes);
}

/* Whether a call that needs `bytes` of workspace can have it (what
 * gpu_ensure_workspace checks before it grows one), growing nothing. */
static int workspace_can_hold(moes_context *ctx, int64_t bytes)
{
    gpu_state *s = gpu_state_of(ctx);
    if (bytes <= s->workspace_bytes)
        return MOES_OK;
    MOES_TRY(moes_workspace_can_have(ctx, bytes, s->workspace_bytes));
    /* Growing waits for the stream and allocates, which a stream capture
     * does not allow: the driver fails the call, and a wait on a
     * capturing stream invalidates the capture too. Say what to do
     * instead. (Where the driver cannot say, the workspace grows.) */
    if (gpu_capture_status(ctx) == 1)
        return moes_set_error(ctx, MOES_ERR_WORKSPACE,
            "this call needs %lld bytes of workspace, more than the %lld "
            "the context has, and its stream is being captured into a "
            "CUDA graph, where the workspace cannot grow: reserve it "
            "before capturing (moes_reserve_workspace)",
            (long long)bytes, (long long)s->workspace_bytes);
    return MOES_OK;
}

int gpu_ensure_workspace(moes_context *ctx, int64_t bytes)
{
    gpu_state *s = gpu_state_of(ctx);
    CUdeviceptr p = 0;
    CUresult r;
    if (bytes <= s->workspace_bytes)
        return MOES_OK;
    MOES_TRY(workspace_can_hold(ctx, bytes));
    if (s->workspace) {
        /* Queued kernels may still use the old one. */
        r = s->drv.cuStreamSynchronize(gpu_stream_of(ctx));
        if (!r)
            r = s->drv.cuMemFree(s->workspace);
        if (r)
            return gpu_fail(ctx, r, "releasing the old workspace");
        s->workspace = 0;
        s->workspace_bytes = 0;
    }
    r = s->drv.cuMemAlloc(&p, (size_t)bytes);
    if (r == GPU_CUDA_ERROR_OUT_OF_MEMORY)
        return moes_set_error(ctx, MOES_ERR_OUT_OF_MEMORY,
            "cannot allocate %lld bytes of workspace", (long long)bytes);
    if (r)
        return gpu_fail(ctx, r, "allocating the workspace");
    s->workspace = p;
    s->workspace_bytes = bytes;
    return MOES_OK;
}

int gpu_reserve(moes_context *ctx, int64_t n_tokens, int64_t top_k,
                int64_t n_experts)
{
    int64_t bytes;
    int st = gpu_enter(ctx);
    if (st != MOES_OK)
        return st;
    if (!gpu_reserved_workspace_bytes(n_tokens * top_k, n_experts, &bytes))
        return moes_set_error(ctx, MOES_ERR_OVERFLOW,
            "the workspace for %lld experts overflows", (long long)n_experts);
    return gpu_ensure_workspace(ctx, bytes);
}

enum { WARPS_PER_BLOCK = 4, WARP_THREADS = 32, SMALL_BLOCK = 1024,
       LABEL_ROWS_PER_BLOCK = 2048, PREPARE_THREADS = 256,
       THREADS_PER_SM = 2048,
       /* Experts of a range at least: 4096 experts in ranges of 32 (one
        * block a multiprocessor) took 24 us to scan on an H200; in
        * ranges of 8 (two blocks on each) the whole scatter of 4096
        * tokens went from 135 to 130 us (bench/NOTES.md, v10). */
       SCAN_RANGE_MIN_EXPERTS = 8 };

/* Beyond this many experts the tile table is zeroed by moes_prepare_route
 * in one coalesced pass, not by each counting warp down its own column
 * (a store to every tiles-th word), and any warp may count any choices.
 * On an H200 the counting kernel took 7 us at 256 experts and 35 us at
 * 4096 the old way; at 1024 the old way was still 7 us faster in all
 * (bench/NOTES.md, v10). */
#define GPU_ZERO_TABLE_EXPERTS 1024

/* Up to these sizes the whole routing runs in one block, one launch
 * (route_small.cu, whose ROUTE_SMALL_CHOICES and ROUTE_SMALL_EXPERTS
 * these are): beyond them one block is slower than a grid. A scatter
 * within the tighter GPU_SMALL_SCATTER_* limits (gpu_kernel_args.h) takes
 * one launch in all (scatter_small.cu); counts, the distinct experts and
 * the scatters outside them route here. */
#define GPU_SMALL_CHOICES 8192
#define GPU_SMALL_EXPERTS 512
#define GPU_SMALL_MAP 65536
#define GPU_SMALL_ROWS (1 << 18)

static int route_is_small(const gpu_scatter_args *a)
{
    return a->n_choices <= GPU_SMALL_CHOICES &&
           a->n_experts <= GPU_SMALL_EXPERTS &&
           (!a->map || a->n_global <= GPU_SMALL_MAP) &&
           a->out_rows <= GPU_SMALL_ROWS;
}

/* The routing's workspace in *bytes, or the error that it overflows. */
static int route_bytes(moes_context *ctx, const moes_route_plan *rp,
                       int64_t *bytes)
{
    if (!gpu_route_workspace_bytes(rp->n_choices, rp->r.n_experts, bytes))
        return moes_set_error(ctx, MOES_ERR_OVERFLOW,
            "the workspace for %lld experts overflows",
            (long long)rp->r.n_experts);
    return MOES_OK;
}

/* The routing half of the arguments, and the workspace behind it; for a
 * scatter (`places`) whose choices the sort places, the sort's arrays. */
static int prepare_route(moes_context *ctx, const moes_route_plan *rp,
                         int places, gpu_scatter_args *a)
{
    gpu_state *s = gpu_state_of(ctx);
    const int64_t n_experts = rp->r.n_experts;
    int64_t bytes;
    char *ws;
    memset(a, 0, sizeof *a);
    MOES_TRY(route_bytes(ctx, rp, &bytes));
    MOES_TRY(gpu_ensure_workspace(ctx, bytes));
    a->state = (gpu_device_state *)(uintptr_t)s->dev_state;
    a->ids = rp->r.ids;
    a->ids_stride = rp->r.ids_stride;
    a->ids_elem = (int64_t)rp->ids_elem;
    a->map = rp->r.expert_map;
    a->n_global = rp->r.n_experts_global;
    a->n_experts = n_experts;
    a->n_tokens = rp->r.n_tokens;
    a->top_k = rp->r.top_k;
    a->n_choices = rp->n_choices;
    gpu_tiles_for(rp->n_choices, n_experts, &a->tiles, &a->tile_size);
    ws = (char *)(uintptr_t)s->workspace;
    a->tile_table = (int64_t *)ws;
    a->counts = a->tile_table + a->tiles * n_experts;
    a->start = a->counts + n_experts;
    a->range_status = a->start + n_experts;
    a->zero_table = n_experts > GPU_ZERO_TABLE_EXPERTS;
    if (places && sort_places(rp->n_choices, n_experts)) {
        int32_t *w = (int32_t *)(a->range_status +
                                 GPU_SCAN_MAX_RANGES * GPU_SCAN_STATUS_WORDS);
        const int64_t c = rp->n_choices;
        a->sort_tile = sort_tile_for(c);
        a->sort_blocks = sort_blocks_for(c);
        a->sort_passes = sort_passes_for(n_experts);
        a->sort_hist = w;
        w += a->sort_passes * ((int64_t)1 << GPU_SORT_DIGIT_BITS) *
             a->sort_blocks;
        for (int i = 0; i < 2; i++) {
            a->sort_keys[i] = w;
            a->sort_choices[i] = w + c;
            w += 2 * c;
        }
        a->sort_first = w;
        a->sort_valid = w + n_experts;
        /* One tile, counted by any warp. */
        a->zero_table = 1;
    }
    return MOES_OK;
}

/* Blocks for n items, per_block a block, but at most per_sm blocks a
 * multiprocessor: kernels that loop over their items need no more blocks
 * than fit at once (or a few times that). */
static int64_t resident_grid(const gpu_state *st, int64_t n,
                             int64_t per_block, int64_t per_sm)
{
    const int64_t fit = (int64_t)st->multiprocessors * per_sm;
    const int64_t blocks = gpu_grid_for(n, per_block);
    return fit > 0 && blocks > fit ? fit : blocks;
}

/* The scan's ranges, at most GPU_SCAN_MAX_RANGES: the workspace holds
 * the status words of that many (gpu_route_workspace_bytes). */
static int64_t scan_ranges_within(int64_t ranges)
{
    return ranges < GPU_SCAN_MAX_RANGES ? ranges : GPU_SCAN_MAX_RANGES;
}

/* The table's zeroing with the map check (many experts), counts per
 * tile (and the map check, with few), then ranks per tile, totals and
 * (for a scatter) first rows per expert, the capacity check and the error
 * record, in moes_scan_routing or moes_scan_ranges. The map check rides
 * on the counting kernel where it can: as a launch of its own it cost the
 * EP8 prefill scatter on an H200 142 -> 138.5 us, and its index-only form
 * 20.2 -> 19.4 us a graph replay (bench/NOTES.md). */
static int launch_route(moes_context *ctx, gpu_scatter_args *a)
{
    const unsigned warp_block = WARPS_PER_BLOCK * WARP_THREADS;
    const int with_map = a->map && a->n_global > 0;
    if (a->zero_table) {
        const int64_t entries = a->tiles * a->n_experts;
        const int64_t n = with_map && a->n_global > entries ? a->n_global
                                                            : entries;
        MOES_TRY(gpu_launch(ctx, GPU_K_PREPARE_ROUTE,
                            resident_grid(gpu_state_of(ctx), n,
                                          PREPARE_THREADS,
                                          THREADS_PER_SM / PREPARE_THREADS),
                            PREPARE_THREADS, a));
    }
    /* Many experts with short columns: the scan by expert ranges, a
     * block each (expert_scan.cu), its flat offsets in 32 bits. */
    a->scan_ranges = 0;
    if (a->tiles <= GPU_SCAN_RANGE_MAX_TILES &&
        a->n_experts > GPU_SCAN_RANGE_EXPERTS &&
        a->tiles * a->n_experts <= INT32_MAX) {
        /* Columns of one tile (the sort's routing): longer ranges, as
         * a block scans a range of that many experts about as fast as
         * one of 8 columns of many tiles, and the look-back over the
         * ranges before is shorter. */
        a->scan_ranges = scan_ranges_within(resident_grid(
            gpu_state_of(ctx), a->n_experts,
            a->sort_first ? GPU_SORT_SCAN_RANGE_EXPERTS
                          : SCAN_RANGE_MIN_EXPERTS,
            GPU_SCAN_RANGE_BLOCKS_PER_SM));
    }
    /* A warp a tile, or, on a table zeroed before, a warp every
     * GPU_COUNT_ROUNDS rounds of 32 choices (route_count.cu). The call's
     * first kernel is an ordinary launch: moes_place_copy_rows reads the
     * call's inputs before its wait, which is safe only because of that. */
    MOES_TRY((a->zero_table ? gpu_launch_next : gpu_launch)(
        ctx, GPU_K_COUNT_TILES,
        a->zero_table
            ? resident_grid(gpu_state_of(ctx),
                            ceil_div(a->n_choices,
                                     GPU_COUNT_ROUNDS * WARP_THREADS),
                            WARPS_PER_BLOCK, THREADS_PER_SM / warp_block)
            : gpu_grid_for(a->tiles, WARPS_PER_BLOCK),
        warp_block, a));
    if (a->scan_ranges)
        return gpu_launch_next(ctx, GPU_K_SCAN_RANGES, a->scan_ranges,
                               GPU_SCAN_RANGE_BLOCK, a);
    return gpu_launch_next(ctx, GPU_K_SCAN_ROUTING,
                           gpu_grid_for(a->n_experts, 1), GPU_SCAN_BLOCK, a);
}

/* The sort's passes (sort_route.cu), after the routing's scan. */
static int launch_sort(moes_context *ctx, gpu_scatter_args *a)
{
    for (a->sort_pass = 0; a->sort_pass < a->sort_passes; a->sort_pass++)
        MOES_TRY(gpu_launch_next(ctx, GPU_K_SORT_MOVE, a->sort_blocks,
                                 GPU_SORT_THREADS, a));
    return MOES_OK;
}

/* The routing of a call placed by the sort, in one cooperative launch
 * (sort_grid.cu) where the device allows it: *launched says whether it
 * ran (else the grid path's launches do the same). The scan takes ranges
 * of GPU_SORT_SCAN_RANGE_EXPERTS experts, as on the grid path. */
static int launch_sort_grid(moes_context *ctx, gpu_scatter_args *a,
                            int *launched)
{
    const gpu_state *st = gpu_state_of(ctx);
    *launched = 0;
    if (!st->cooperative_launches || a->tiles * a->n_experts > INT32_MAX)
        return MOES_OK;
    int64_t *const counts = a->counts;
    a->scan_ranges = scan_ranges_within(
        ceil_div(a->n_experts, GPU_SORT_SCAN_RANGE_EXPERTS));
    /* The table of one tile holds the experts' counts: the scan and the
     * outputs read them there, and no kernel scans its columns. */
    a->counts = a->tile_table;
    MOES_TRY(gpu_launch_cooperative(
        ctx, GPU_K_SORT_GRID,
        (int64_t)st->multiprocessors * GPU_SORT_GRID_BLOCKS_PER_SM,
        GPU_SORT_THREADS, 0, a, launched));
    if (!*launched)
        a->counts = counts;
    return MOES_OK;
}

int gpu_count(moes_context *ctx, const moes_count_plan *plan,
              moes_data_error *err)
{
    gpu_scatter_args a;
    (void)err;
    MOES_TRY(gpu_enter(ctx));
    MOES_TRY(gpu_check_count_pointers(ctx, plan));
    MOES_TRY(prepare_route(ctx, &plan->route, 0, &a));
    a.index_elem = (int64_t)moes_index_dtype_size(plan->counts_dtype);
    a.counts_out = plan->counts;
    if (route_is_small(&a))
        return gpu_launch(ctx, GPU_K_ROUTE_SMALL, 1, SMALL_BLOCK, &a);
    MOES_TRY(launch_route(ctx, &a));
    return gpu_launch_next(ctx, GPU_K_EXPERT_OUTPUTS,
                           gpu_grid_for(a.n_experts, 256), 256, &a);
}

/* The routing's checks of the map and the ids (its counts go to the
 * workspace only), then one thread per token builds its row; a small call
 * in one launch that checks in every block. */
int gpu_distinct(moes_context *ctx, const moes_distinct_plan *plan,
                 moes_data_error *err)
{
    gpu_scatter_args a;
    (void)err;
    MOES_TRY(gpu_enter(ctx));
    MOES_TRY(gpu_check_distinct_pointers(ctx, plan));
    MOES_TRY(prepare_route(ctx, &plan->route, 0, &a));
    a.index_elem = (int64_t)moes_index_dtype_size(plan->out_dtype);
    a.distinct_out = plan->out;
    a.distinct_out_stride = plan->out_stride;
    if (a.n_choices <= GPU_DISTINCT_SELF_CHECK_MAX &&
        (!a.map || a.n_global <= GPU_DISTINCT_SELF_CHECK_MAX)) {
        /* One launch that checks as it goes (distinct_experts.cu); one
         * block at least, for the map of a call with no tokens. */
        a.distinct_self_check = 1;
        return gpu_launch(ctx, GPU_K_DISTINCT_ROWS,
                          a.n_tokens > 0
                              ? gpu_grid_for(a.n_tokens, GPU_DISTINCT_THREADS)
                              : 1,
                          GPU_DISTINCT_THREADS, &a);
    }
    if (route_is_small(&a))
        MOES_TRY(gpu_launch(ctx, GPU_K_ROUTE_SMALL, 1, SMALL_BLOCK, &a));
    else
        MOES_TRY(launch_route(ctx, &a));
    if (a.n_tokens == 0)
        return MOES_OK;
    return gpu_launch_next(ctx, GPU_K_DISTINCT_ROWS,
                           gpu_grid_for(a.n_tokens, GPU_DISTINCT_THREADS),
                           GPU_DISTINCT_THREADS, &a);
}

/* Blocks of `threads` threads for the row labels (pad_labels.cu): a
 * warp per expert, and enough blocks for the tail after the last block,
 * but no more than fit at once: the warps loop over the rest. 65536
 * experts in 16,384 blocks of four warps took 26 us in the placing
 * launch on an H200 (bench/NOTES.md, v19), each block a load and a store
 * or two. */
static int64_t label_grid(const gpu_state *st, const gpu_scatter_args *a,
                          unsigned threads)
{
    const int64_t experts = gpu_grid_for(a->n_experts, threads / WARP_THREADS);
    const int64_t tail = gpu_grid_for(a->out_rows, LABEL_ROWS_PER_BLOCK);
    return resident_grid(st, experts > tail ? experts : tail, 1,
                         THREADS_PER_SM / threads);
}

/* Chunks of a row of `vectors` vectors, one warp each (gather.cu,
 * place_copy.cu), and the blocks of GPU_ROW_THREADS threads for them. */
static int64_t row_chunks(int64_t vectors, int64_t per_thread)
{
    return ceil_div(vectors > 0 ? vectors : 1, WARP_THREADS * per_thread);
}

static int64_t row_blocks(const gpu_state *st, int64_t n_tokens,
                          int64_t chunks)
{
    /* A few blocks per multiprocessor more than fit at once: each warp then
     * walks several items and fetches the next one's out_index entries
     * while it works on the current one. */
    return resident_grid(st, n_tokens * chunks, GPU_ROW_THREADS / WARP_THREADS,
                         GPU_ROW_BLOCKS_PER_SM);
}

/* A grid of `blocks` blocks of GPU_ROW_THREADS as the stride of its
 * warps' walks over (token, chunk) items (moes_item_walk): whole tokens,
 * and the chunks left over. */
static void walk_stride(int64_t blocks, int64_t chunks, int64_t *tokens,
                        int64_t *rest)
{
    const int64_t warps = blocks * (GPU_ROW_THREADS / WARP_THREADS);
    *tokens = warps / chunks;
    *rest = warps % chunks;
}

/* The widest of 16, 8, 4, 2, 1 bytes that divides every address and
 * length of the row copy. */
static int64_t copy_width(const moes_scatter_plan *plan)
{
    const uint64_t bits = (uint64_t)(uintptr_t)plan->a.x |
                          (uint64_t)(uintptr_t)plan->a.out |
                          (uint64_t)plan->a.x_stride * plan->x_elem |
                          (uint64_t)plan->a.out_stride * plan->x_elem |
                          (uint64_t)plan->row_bytes;
    int64_t w = 16;
    while (w > 1 && (bits & (uint64_t)(w - 1)))
        w /= 2;
    return w;
}

/* Blocks per multiprocessor of the one-launch scatter: each block routes
 * everything again, so more blocks buy shorter copies with more of the
 * same routing. */
#define GPU_SMALL_SCATTER_BLOCKS_PER_SM 1
/* Output rows a block labels before the labels alone want more blocks
 * than the tokens do (index-only calls with a large capacity). */
#define GPU_SMALL_SCATTER_LABEL_ROWS 1024

/* Whether the call packs UE8M0 scales, which every scale of every token
 * must allow (checked on the device). */
static int packs_ue8m0(const gpu_scatter_args *a)
{
    return a->x_scales && a->out_scales_format == MOES_SCALES_UE8M0;
}

/* The grid of the one-launch scatter (scatter_small.cu), or 0 when the
 * call is outside its limits: too many choices, experts or map entries
 * for the shared tables, more rows (or a larger alignment) than its
 * 32-bit sums take, more UE8M0 scales than each block checks, more
 * choices for one block than its list holds, or a block's row vectors or
 * scale words past 32-bit counts. */
static int64_t small_scatter_grid(const gpu_state *st,
                                  const gpu_scatter_args *a)
{
    int64_t blocks = st->multiprocessors * GPU_SMALL_SCATTER_BLOCKS_PER_SM;
    const int64_t label_blocks =
        ceil_div(a->out_rows, GPU_SMALL_SCATTER_LABEL_ROWS);
    if (a->n_choices > GPU_SMALL_SCATTER_CHOICES ||
        a->n_experts > GPU_SMALL_SCATTER_EXPERTS ||
        (a->map && a->n_global > GPU_SMALL_SCATTER_MAP) ||
        a->out_rows > GPU_SMALL_ROWS ||
        (a->layout == MOES_LAYOUT_MASKED ? a->capacity : a->alignment) >
            GPU_SMALL_ROWS ||
        (packs_ue8m0(a) &&
         a->n_tokens * a->n_scales > GPU_SMALL_SCATTER_SCALES) ||
        a->row_bytes / a->copy_width > INT32_MAX / GPU_SMALL_SCATTER_OWN ||
        (a->x_scales && a->n_scale_cols > INT32_MAX / GPU_SMALL_SCATTER_OWN))
        return 0;
    /* A block per token at most, unless the labels want more. */
    if (blocks > a->n_tokens && blocks > label_blocks)
        blocks = a->n_tokens > label_blocks ? a->n_tokens : label_blocks;
    if (blocks < 1)
        blocks = 1;
    if (gpu_tokens_per_block(a->n_tokens, blocks) * a->top_k >
        GPU_SMALL_SCATTER_OWN)
        return 0;
    return blocks;
}

/* Tokens a block of the one-launch scatter may stage in shared memory
 * (scatter_small.cu): all of a block's, where their rows fit the shared
 * memory the device allows past the kernel's tables and the rows copy 16
 * bytes at a time; else 0, and the call takes the form that does not
 * stage. So it does where the largest block holds its rows in registers
 * (and so every block does), as at decode 128. With the rows read from
 * shared memory instead of the L2 after the routing, EP8 decode (eight
 * tokens a block) went from 9.69-9.70 to 9.16-9.18 us a graph replay on
 * an H200 (bench/NOTES.md, v39). */
static int64_t small_stage_tokens(const gpu_state *st,
                                  const gpu_scatter_args *a, int64_t blocks)
{
    const int64_t per_block = gpu_tokens_per_block(a->n_tokens, blocks);
    if (!a->x || a->copy_width != 16 || a->row_bytes < 16 ||
        per_block * a->row_bytes > st->small_stage_bytes ||
        gpu_small_scatter_preloads((uint32_t)per_block,
                                   (uint32_t)(a->row_bytes / 16),
                                   (uint32_t)(a->x_scales ? a->n_scale_cols
                                                          : 0)))
        return 0;
    return per_block;
}

/* Choices a block of the cooperative scatter takes at least
 * (in whole tokens) while there are multiprocessors to spare; past that
 * every multiprocessor gets a block and the blocks grow, up to the
 * kernel's GPU_GRID_SCATTER_OWN. With its column sums a round trip to
 * L2 each, blocks of 2,000 choices had made the one launch no faster
 * than the grid path; with them batched, single calls on an H200 went
 * from 24.2 to 17.2-18.2 us at EP8 prefill (32768 tokens over 132
 * blocks) and from 30.9 to 21.1 at 65536 tokens (bench/NOTES.md, v16). */
#define GPU_GRID_SCATTER_BLOCK_CHOICES 1024
_Static_assert(GPU_GRID_SCATTER_BLOCK_CHOICES <= GPU_GRID_SCATTER_OWN,
               "a block's choices fit the kernel's");

/* The grid of the cooperative scatter (scatter_grid.cu), or 0 when the
 * call is outside its limits: too many experts or map entries for its
 * shared tables, zeroed padding, more choices than a block a
 * multiprocessor can take, or a table (a key and a count per expert for
 * each block) larger than the workspace's tile table, which it takes.
 * The blocks share the tokens evenly; with `spread`, a block a
 * multiprocessor (a token a block at most), for a kernel that copies
 * the rows itself. */
static int64_t grid_scatter_blocks(const gpu_state *st,
                                   const gpu_scatter_args *a, int spread)
{
    /* The routing's tile table, which holds the blocks' table. */
    const int64_t table_bytes = a->tiles * a->n_experts * 8;
    const int64_t block_tokens = GPU_GRID_SCATTER_BLOCK_CHOICES / a->top_k;
    int64_t blocks;
    if (!st->cooperative_launches || block_tokens < 1 ||
        a->n_experts > GPU_GRID_SCATTER_EXPERTS ||
        (a->map && a->n_global > GPU_GRID_SCATTER_MAP) ||
        (a->flags & MOES_SCATTER_ZERO_PADDING))
        return 0;
    blocks = spread ? a->n_tokens : ceil_div(a->n_tokens, block_tokens);
    if (blocks > st->multiprocessors) {
        blocks = st->multiprocessors;
        if (gpu_tokens_per_block(a->n_tokens, blocks) * a->top_k >
            GPU_GRID_SCATTER_OWN)
            return 0;
    }
    if (blocks < 1 ||
        GPU_GRID_TABLE_BYTES(blocks, a->n_experts) > table_bytes)
        return 0;
    return blocks;
}

/* Rows of its own tokens each block of the cooperative scatter loads into
 * shared memory while it finishes its routing, to copy them itself once
 * placed (scatter_grid.cu), for a call of 16-byte rows on `blocks`
 * blocks; 0 when less than an eighth of a block's tokens' rows would
 * fit (half, for a call that packs UE8M0 scales), where the copy kernel
 * after the routing is left to read them. On an H200, where 25 rows of
 * DeepSeek-V3's 7 KiB fit a block (26 since v24's smaller tables;
 * bench/NOTES.md, v23): 4096 tokens (25 of each block's 31 or 32 rows
 * staged) 89.9 -> 85.7 us, 8192 172.0 -> 161.5, 12288 255.0 -> 241.2,
 * 16384 336.3 -> 324.0; Qwen3 (45 rows of 4 KiB fit) 8192 97.1 -> 89.4,
 * 16384 182.3 -> 173.7, 32768 354.9 -> 351.2; DeepSeek-V3 2048
 * unchanged. With UE8M0 scales staging lost where less than half fit:
 * 8192 tokens 172.8 -> 174.0, 16384 334.3 -> 342.4 (4096: 94.2 -> 92.0).
 * With a map the rows staged are those of the block's first tokens that
 * a local expert takes (the kernel's listed form); the same share
 * decides, over all the block's tokens. On an H100 (v43), EP8 prefill
 * 4096 tokens 34.5-34.7 -> 31.2 us, 8192 52.3 -> 49.6-49.9, 16384
 * 88.4-88.6 -> 87.0-87.3; at 32768 (249 tokens a block, 26 rows fit)
 * staging regardless gained nothing and at 65536 lost 1.3 us, and the
 * share leaves both to the copy kernel. UE8M0 scales with a map take the
 * listed form under their own share (H100, v44): 4096 tokens 37.9-38.0
 * -> 32.6 us, 8192 and 16384 unchanged (55.7, 91.8-92.0: not taken). */
static int64_t grid_stage_tokens(const gpu_state *st,
                                 const gpu_scatter_args *a, int64_t blocks)
{
    const int64_t share = packs_ue8m0(a) ? 2 : 8;
    const int map = a->map != NULL;
    int64_t per_block, fixed, per_row, fit;
    if (blocks < 1 || a->copy_width != 16 || a->row_bytes < 16)
        return 0;
    per_block = gpu_tokens_per_block(a->n_tokens, blocks);
    /* The launch's dynamic size is fixed + per_row a staged row. */
    fixed = gpu_grid_stage_bytes(0, a->row_bytes, map, per_block);
    per_row = gpu_grid_stage_bytes(1, a->row_bytes, map, per_block) - fixed;
    fit = (st->grid_stage_bytes - fixed) / per_row;
    if (fit > per_block)
        fit = per_block;
    /* With a map the staged tokens are those a local expert takes,
     * listed; how many a block has is known on the device only, so the
     * share counts all of its tokens. */
    return fit > 0 && share * fit >= per_block ? fit : 0;
}

/* With MOES_SCATTER_ZERO_PADDING, the launch that zeroes the rows that
 * hold no token, once the routing has left counts, first rows and the
 * rows needed in the workspace (pad_labels.cu). */
static int launch_zero_padding(moes_context *ctx, gpu_scatter_args *a)
{
    if (!(a->flags & MOES_SCATTER_ZERO_PADDING) || a->out_rows <= 0)
        return MOES_OK;
    return gpu_launch_next(ctx, GPU_K_ZERO_PADDING,
                           gpu_grid_for(a->out_rows, 1), 128, a);
}

/* The grid path after the routing's counts and scan: the sort's passes
 * where it places the choices, then the placement, labels and per-expert
 * outputs in one launch, its grid cut in three (place_and_label.cu). */
static int launch_route_and_place(moes_context *ctx, gpu_scatter_args *a)
{
    const unsigned warp_block = WARPS_PER_BLOCK * WARP_THREADS;
    MOES_TRY(launch_route(ctx, a));
    if (a->sort_first && a->n_choices > 0) {
        MOES_TRY(launch_sort(ctx, a));
        a->place_blocks = resident_grid(gpu_state_of(ctx), a->n_choices,
                                        warp_block,
                                        THREADS_PER_SM / warp_block);
    } else {
        a->place_blocks = a->n_choices > 0
                              ? gpu_grid_for(a->tiles, WARPS_PER_BLOCK)
                              : 0;
    }
    a->label_blocks = 0;
    if ((a->m_indices || a->row_source) && a->out_rows > 0)
        a->label_blocks = label_grid(gpu_state_of(ctx), a, warp_block);
    return gpu_launch_next(ctx, GPU_K_PLACE_AND_LABEL,
                           a->place_blocks + a->label_blocks +
                               gpu_grid_for(a->n_experts, warp_block),
                           warp_block, a);
}

/* What a scatter checks before it queues anything: its buffers, and
 * that its workspace is there or may grow (MOES_SCATTER_CHECK_ONLY). */
int gpu_check_scatter(moes_context *ctx, const moes_scatter_plan *plan)
{
    int64_t bytes;
    MOES_TRY(gpu_enter(ctx));
    MOES_TRY(gpu_check_scatter_pointers(ctx, plan));
    MOES_TRY(route_bytes(ctx, &plan->route, &bytes));
    return workspace_can_hold(ctx, bytes);
}

int gpu_scatter(moes_context *ctx, const moes_scatter_plan *plan,
                moes_data_error *err)
{
    const moes_scatter_args *s = &plan->a;
    const unsigned warp_block = WARPS_PER_BLOCK * WARP_THREADS;
    gpu_scatter_args a;
    (void)err;
    MOES_TRY(gpu_enter(ctx));
    MOES_TRY(gpu_check_scatter_pointers(ctx, plan));
    MOES_TRY(prepare_route(ctx, &plan->route, 1, &a));
    a.layout = s->layout;
    a.alignment = s->alignment;
    a.capacity = s->capacity;
    a.flags = s->flags;
    a.out_rows = plan->out_rows;
    a.x = s->x;
    /* In unsigned arithmetic: a buffer of no rows has a stride that
     * validation never multiplied out (its bytes are 0 whatever it is),
     * and the kernels read this only where there are rows. */
    a.x_stride_bytes = (int64_t)((uint64_t)s->x_stride * plan->x_elem);
    a.row_bytes = plan->row_bytes;
    a.out = s->out;
    a.out_stride_bytes = (int64_t)((uint64_t)s->out_stride * plan->x_elem);
    a.copy_width = copy_width(plan);
    a.x_scales = s->x_scales;
    a.x_scales_stride = s->x_scales_stride;
    a.n_scales = plan->n_scales;
    a.out_scales = s->out_scales;
    a.out_scales_format = s->out_scales_format;
    a.out_scales_row_stride = s->out_scales_row_stride;
    a.out_scales_col_stride = s->out_scales_col_stride;
    a.n_scale_cols = plan->n_scale_cols;
    a.index_elem = (int64_t)plan->index_elem;
    a.out_index = s->out_index;
    a.out_index_stride = s->out_index_stride;
    a.counts_out = s->counts;
    a.start_out = s->expert_start;
    a.end_out = s->expert_end;
    a.m_indices = s->m_indices;
    a.masked_m = s->masked_m;
    a.n_dropped = s->n_dropped;
    a.row_source = s->row_source;
    a.row_source_pad = s->row_source_pad;

    /* The one-launch scatter may start before the kernel ahead of it on
     * the stream ends: its blocks wait for that kernel before they touch
     * memory, and its grid is at most a block a multiprocessor. The
     * routing of larger calls is not started early: its first kernel's
     * many small blocks, started as the kernel ahead frees
     * multiprocessors, crowd onto the first ones freed (a 4096-token
     * index-only call went from 15.0 to 15.7 us a graph replay on an
     * H200). Decode 128 on the same card: 7.9 -> 6.9 us (bench/NOTES.md). */
    const int64_t one_launch = small_scatter_grid(gpu_state_of(ctx), &a);
    if (one_launch > 0) {
        a.stage_tokens =
            small_stage_tokens(gpu_state_of(ctx), &a, one_launch);
        const int ue8m0 = packs_ue8m0(&a);
        const enum gpu_kernel k =
            a.stage_tokens > 0
                ? (ue8m0 ? GPU_K_SCATTER_SMALL_UE8M0_STAGED
                         : GPU_K_SCATTER_SMALL_STAGED)
                : (ue8m0 ? GPU_K_SCATTER_SMALL_UE8M0 : GPU_K_SCATTER_SMALL);
        MOES_TRY(gpu_launch_next_shared(ctx, k, one_launch,
                                        GPU_SMALL_SCATTER_THREADS,
                                        a.stage_tokens * a.row_bytes, &a));
        return launch_zero_padding(ctx, &a);
    }
    const int small = route_is_small(&a);
    const int copies = a.n_choices > 0 && !plan->index_only;
    const int wide = !small && copies && a.copy_width == 16;
    if (copies) {
        a.copy_chunks = row_chunks(a.row_bytes / a.copy_width,
                                   wide ? GPU_ROW_WIDE_PER_THREAD
                                        : GPU_ROW_PER_THREAD);
        a.copy_blocks =
            row_blocks(gpu_state_of(ctx), a.n_tokens, a.copy_chunks);
        walk_stride(a.copy_blocks, a.copy_chunks, &a.copy_walk_tokens,
                    &a.copy_walk_chunks);
    }
    /* The copy places the choices (place_copy.cu; the limits in
     * gpu_kernel_args.h). */
    const int place_in_copy =
        wide && !a.sort_first && a.top_k <= WARP_THREADS && !a.map &&
        a.tile_size <= GPU_PLACE_IN_COPY_MAX_TILE &&
        a.n_experts <= INT32_MAX &&
        a.n_tokens * a.copy_chunks <= GPU_PLACE_IN_COPY_MAX_ITEMS *
                                          a.copy_blocks *
                                          (GPU_ROW_THREADS / WARP_THREADS);
    /* The cooperative routing, then the copy of 16-byte rows
     * (moes_copy_rows_wide, which needs only out_index): with rows to
     * copy, where it beats the grid path's launches in front of the
     * copy. Those are three (counts, scan, placement) for calls whose
     * copy cannot place its own choices (a map, the sort, long tiles),
     * and carry the check of every UE8M0 scale in the counting kernel;
     * for the others the scan alone runs in front of a copy that places
     * and loads its rows meanwhile, which the cooperative routing beats
     * only on most of the device. On an H200 (bench/NOTES.md, v22): EP8
     * prefill 136.6 -> 127.7 us, with UE8M0 149.4 -> 132.2; DeepSeek-V3
     * 16384 tokens (128 blocks) 338 -> 331, 12288 (96) 261 -> 258, but
     * 8192 (64) 176.5 -> 178.5 and 4096 (32) 89.7 -> 93.0; UE8M0 4096
     * 94.9 -> 93.9. */
    int64_t cooperative =
        !copies || wide ? grid_scatter_blocks(gpu_state_of(ctx), &a, 0) : 0;
    if (copies && place_in_copy && !packs_ue8m0(&a) &&
        cooperative * 4 < 3 * (int64_t)gpu_state_of(ctx)->multiprocessors)
        cooperative = 0;
    if (wide) {
        /* Or the cooperative kernel copies too, its rows staged. */
        const int64_t spread = grid_scatter_blocks(gpu_state_of(ctx), &a, 1);
        a.stage_tokens = grid_stage_tokens(gpu_state_of(ctx), &a, spread);
        if (a.stage_tokens > 0)
            cooperative = spread;
    }
    if (cooperative > 0) {
        /* With a map, the rows staged are listed; a launch that stages
         * none needs no room for the list either. */
        const int listed = a.map && a.stage_tokens > 0;
        int launched;
        MOES_TRY(gpu_launch_cooperative(
            ctx, listed ? GPU_K_SCATTER_GRID_LISTED : GPU_K_SCATTER_GRID,
            cooperative, GPU_GRID_SCATTER_THREADS,
            gpu_grid_stage_bytes(a.stage_tokens, a.row_bytes, listed,
                                 gpu_tokens_per_block(a.n_tokens,
                                                      cooperative)),
            &a, &launched));
        if (launched)
            return copies && a.stage_tokens == 0
                       ? gpu_launch_next(ctx, GPU_K_COPY_ROWS_WIDE,
                                         a.copy_blocks, GPU_ROW_THREADS, &a)
                       : MOES_OK;
        a.stage_tokens = 0;
    }
    if (small) {
        /* Routing and per-expert outputs in one block; the labels, a
         * store per output row, by the grid after it: the copy's last
         * blocks, or a launch of their own when no row is copied. */
        if ((a.m_indices || a.row_source) && a.out_rows > 0)
            a.label_blocks =
                label_grid(gpu_state_of(ctx), &a,
                           copies ? GPU_ROW_THREADS : warp_block);
        MOES_TRY(gpu_launch(ctx, GPU_K_ROUTE_SMALL, 1, SMALL_BLOCK, &a));
        if (a.label_blocks && !copies) {
            a.place_blocks = 0;
            /* Every block labels: none is left for the per-expert
             * outputs, which the routing wrote. */
            MOES_TRY(gpu_launch_next(ctx, GPU_K_PLACE_AND_LABEL,
                                     a.label_blocks, warp_block, &a));
        }
    } else if (place_in_copy) {
        MOES_TRY(launch_route(ctx, &a));
        /* Labels and per-expert outputs by the copy's last blocks. */
        if ((a.m_indices || a.row_source) && a.out_rows > 0)
            a.label_blocks =
                label_grid(gpu_state_of(ctx), &a, GPU_ROW_THREADS);
    } else {
        int routed = 0;
        if (a.sort_first && a.n_choices > 0)
            MOES_TRY(launch_sort_grid(ctx, &a, &routed));
        if (!routed)
            MOES_TRY(launch_route_and_place(ctx, &a));
    }
    if (copies) {
        if (place_in_copy)
            MOES_TRY(gpu_launch_next(ctx, GPU_K_PLACE_COPY_ROWS,
                                     a.copy_blocks + a.label_blocks +
                                         gpu_grid_for(a.n_experts,
                                                      GPU_ROW_THREADS),
                                     GPU_ROW_THREADS, &a));
        else
            MOES_TRY(gpu_launch_next(ctx, wide ? GPU_K_COPY_ROWS_WIDE
                                           : GPU_K_COPY_ROWS,
                                 a.copy_blocks + (small ? a.label_blocks : 0),
                                 GPU_ROW_THREADS, &a));
    }
    return launch_zero_padding(ctx, &a);
}

/* Groups of 8 elements with 16-byte loads and stores: every row start and
 * every group must be 16-byte aligned in y and in out. */
static int64_t gather_vector(const moes_gather_plan *plan)
{
    const moes_gather_args *g = &plan->a;
    const uint64_t bits = (uint64_t)(uintptr_t)g->y |
                          (uint64_t)(uintptr_t)g->out |
                          (uint64_t)g->y_stride * plan->y_elem |
                          (uint64_t)g->out_stride * plan->out_elem |
                          (uint64_t)(GPU_GATHER_VEC * plan->y_elem) |
                          (uint64_t)(GPU_GATHER_VEC * plan->out_elem);
    return g->hidden % GPU_GATHER_VEC == 0 && (bits & 15u) == 0;
}

/* fp32, bf16, fp16 (the gather's dtypes) as 0, 1, 2. */
static int gather_dtype_slot(int64_t dtype)
{
    return dtype == MOES_DTYPE_FP32 ? 0 : dtype == MOES_DTYPE_BF16 ? 1 : 2;
}

/* The gather kernels' three shapes, each nine kernels in gpu_state.h. */
enum gather_shape {
    GATHER_USUAL,   /* moes_gather_Y_to_OUT, after moes_check_out_index  */
    GATHER_SMALL,   /* moes_gather_small_Y_to_OUT: half-size items      */
    GATHER_CHECKED  /* moes_gather_checked_Y_to_OUT: small, checks itself */
};

/* The gather kernel of a (y, out) dtype pair (gpu_state.h's order) and a
 * shape. */
static enum gpu_kernel gpu_gather_kernel(int64_t y_dtype, int64_t out_dtype,
                                         enum gather_shape shape)
{
    static const enum gpu_kernel first[] = {
        [GATHER_USUAL] = GPU_K_GATHER_FP32_TO_FP32,
        [GATHER_SMALL] = GPU_K_GATHER_SMALL_FP32_TO_FP32,
        [GATHER_CHECKED] = GPU_K_GATHER_CHECKED_FP32_TO_FP32,
    };
    return (enum gpu_kernel)(first[shape] + 3 * gather_dtype_slot(y_dtype) +
                             gather_dtype_slot(out_dtype));
}

/* Blocks of the gather kernels that fit on the GPU at once: their launch
 * bounds promise GPU_GATHER_MIN_BLOCKS a multiprocessor, and their
 * registers allow no more. */
static int64_t gather_resident_blocks(const gpu_state *st)
{
    return (int64_t)st->multiprocessors * GPU_GATHER_MIN_BLOCKS;
}

/* The gather's grid: no more blocks than fit at once, so that each warp
 * walks several items with the next one's out_index entries already on
 * the way, instead of blocks coming in waves that each start with that
 * fetch. EP8 decode on an H200: 16.8 -> 15.2 us a graph replay
 * (bench/NOTES.md). */
static int64_t gather_blocks(const gpu_state *st, int64_t n_tokens,
                             int64_t chunks)
{
    return resident_grid(st, n_tokens * chunks, GPU_ROW_THREADS / WARP_THREADS,
                         GPU_GATHER_MIN_BLOCKS);
}

/* What a gather checks before it queues anything. */
int gpu_check_gather(moes_context *ctx, const moes_gather_plan *plan)
{
    MOES_TRY(gpu_enter(ctx));
    return gpu_check_gather_pointers(ctx, plan);
}

int gpu_gather(moes_context *ctx, const moes_gather_plan *plan,
               moes_data_error *err)
{
    gpu_state *st = gpu_state_of(ctx);
    const moes_gather_args *g = &plan->a;
    gpu_gather_args a;
    enum gather_shape shape;
    (void)err;
    MOES_TRY(gpu_check_gather(ctx, plan));
    if (g->n_tokens == 0)
        return MOES_OK;
    memset(&a, 0, sizeof a);
    a.state = (gpu_device_state *)(uintptr_t)st->dev_state;
    a.flags = g->flags;
    a.n_tokens = g->n_tokens;
    a.top_k = g->top_k;
    a.hidden = g->hidden;
    a.y = g->y;
    a.y_dtype = g->y_dtype;
    a.y_rows = g->y_rows;
    a.y_stride = g->y_stride;
    a.out_index = g->out_index;
    a.index_elem = (int64_t)plan->index_elem;
    a.out_index_stride = g->out_index_stride;
    a.weights = g->weights;
    a.weights_stride = g->weights_stride;
    a.out = g->out;
    a.out_dtype = g->out_dtype;
    a.out_stride = g->out_stride;

    a.vector = gather_vector(plan);
    /* What a lane loads at a time across a row: vectors or elements. */
    const int64_t row_units = a.vector ? a.hidden / GPU_GATHER_VEC : a.hidden;
    a.chunks = row_chunks(row_units, GPU_GATHER_PER_THREAD);
    /* Fewer items than warps that fit: half-size ones (gpu_kernel_args.h). */
    shape = a.vector && a.n_tokens * a.chunks <
                            gather_resident_blocks(st) *
                                (GPU_ROW_THREADS / WARP_THREADS)
                ? GATHER_SMALL
                : GATHER_USUAL;
    /* A call with few entries, known to be outside a graph's capture
     * (where the driver cannot say, it counts as captured): every block of
     * the gather checks them all and no check kernel runs. One launch
     * instead of two took a single call of 128 tokens on an H200 from
     * 15.8-17.6 to 14.0-15.3 us; replayed from a graph, where a launch
     * costs nothing, the check kernel beside the gather was the faster,
     * 7.66 against 8.32 us (bench/NOTES.md, v28). The checking kernels
     * are of the small shape, vector rows or not, and apart from the
     * small ones: with the check in them, the small kernels had taken
     * 128 registers instead of 112 and the ep layer's captured dispatch
     * of 128 tokens 1 us more (v29). */
    if ((shape == GATHER_SMALL || !a.vector) &&
        a.n_tokens * a.top_k <= GPU_GATHER_SELF_CHECK_ENTRIES &&
        gpu_capture_status(ctx) == 0)
        shape = GATHER_CHECKED;
    if (shape != GATHER_USUAL)
        a.chunks = row_chunks(row_units, GPU_GATHER_SMALL_PER_THREAD);
    /* Else the check's last block writes the record; the gather may
     * start while it runs and waits for it before storing. The check
     * itself may start before the kernel ahead of it ends: it waits for
     * it first thing, and its blocks (256 threads of few registers) hold
     * next to nothing while they wait. */
    if (shape != GATHER_CHECKED)
        MOES_TRY(gpu_launch_next(
            ctx, GPU_K_CHECK_OUT_INDEX,
            gpu_grid_for(a.n_tokens * a.top_k, GPU_CHECK_THREADS),
            GPU_CHECK_THREADS, &a));
    return gpu_launch_next(ctx,
                           gpu_gather_kernel(a.y_dtype, a.out_dtype, shape),
                           gather_blocks(st, a.n_tokens, a.chunks),
                           GPU_ROW_THREADS, &a);
}
