/* SPDX-License-Identifier: MIT */
/*
 * bench_workload.c - the input sets of `moescatter bench`: random routings
 * drawn from the seed, the buffers they need on the backend, and the
 * fewest bytes each call must move.
 *
 * The sets rotate so that no call finds its inputs in a cache: there are
 * enough of them that together they move more than cfg->rotate_bytes
 * (one set alone when it is larger), and they live in one allocation.
 * The scatter's outputs that are as large as the capacity (out, its
 * scales, m_indices) are shared by the sets in turn: a call writes only
 * its placed rows there, and with a capacity bound far above the rows
 * used (a few tokens), a copy per set made the footprint thousands of
 * times what a call moves. They get as many copies as fit in
 * rotate_bytes, so memory stays proportional to what is timed.
 */
#include <stdlib.h>
#include <string.h>

#include "bench.h"
#include "rng.h"

/* The most sets, and the most backend memory they may take together. */
#define BENCH_MAX_SETS 4096
#define BENCH_MAX_ARENA (8ll << 30)
/* Every buffer of a set starts at a multiple of this. */
#define BENCH_ALIGN 256

/* What one set's routing leads to, found on the host. */
typedef struct set_stats {
    int64_t placed, tokens_touched, rows_used, max_count;
} set_stats;

static int64_t round_up(int64_t v, int64_t a)
{
    return (v + a - 1) / a * a;
}

static int64_t dtype_bytes(int dtype)
{
    size_t s = 0;
    moes_dtype_size(dtype, &s);
    return (int64_t)s;
}

/* Scale columns per row of out: S fp32 values, or ceil(S / 4) words. */
static int64_t scale_cols(const bench_config *cfg)
{
    const bench_preset *p = cfg->preset;
    int64_t s;
    if (!p->scale_block)
        return 0;
    s = (p->hidden + p->scale_block - 1) / p->scale_block;
    return cfg->ue8m0 ? (s + 3) / 4 : s;
}

static int64_t scales_per_row(const bench_preset *p)
{
    return p->scale_block ? (p->hidden + p->scale_block - 1) / p->scale_block
                          : 0;
}

/* Rank 0 of expert parallelism holds experts 0 .. E-1 of E_global. */
static int32_t local_expert(const bench_preset *p, int32_t id)
{
    if (id < 0)
        return -1;
    return id < p->n_experts ? id : -1;
}

/* K experts for each of N tokens, distinct within a token unless repeats
 * are allowed. */
static void draw_routing(const bench_config *cfg, tool_rng *rng, int32_t *ids)
{
    const bench_preset *p = cfg->preset;
    const int64_t n = cfg->tokens, k_top = p->top_k;
    for (int64_t t = 0; t < n; t++) {
        int32_t *row = ids + t * k_top;
        for (int64_t k = 0; k < k_top; k++) {
            int repeat;
            do {
                row[k] = (int32_t)tool_rng_below(
                    rng, (uint64_t)p->n_experts_global);
                repeat = 0;
                for (int64_t j = 0; j < k && !cfg->allow_repeats; j++)
                    repeat |= row[j] == row[k];
            } while (repeat);
        }
    }
}

static void routing_stats(const bench_config *cfg, const int32_t *ids,
                          int64_t *counts, set_stats *st)
{
    const bench_preset *p = cfg->preset;
    const int64_t n = cfg->tokens, k_top = p->top_k;
    memset(st, 0, sizeof *st);
    memset(counts, 0, (size_t)p->n_experts * sizeof *counts);
    for (int64_t t = 0; t < n; t++) {
        int touched = 0;
        for (int64_t k = 0; k < k_top; k++) {
            int32_t e = local_expert(p, ids[t * k_top + k]);
            if (e >= 0) {
                counts[e]++;
                touched = 1;
            }
        }
        st->tokens_touched += touched;
    }
    for (int64_t e = 0; e < p->n_experts; e++) {
        st->placed += counts[e];
        st->rows_used += round_up(counts[e], cfg->alignment);
        if (counts[e] > st->max_count)
            st->max_count = counts[e];
    }
}

/* out_index of a dense placement (alignment 1, in t*K+k order inside each
 * expert): the gather reads y through it, so y holds only the placed
 * rows. Where the rows of y lie does not change what the gather moves. */
static void dense_index(const bench_config *cfg, const int32_t *ids,
                        const int64_t *counts, int64_t *next, int32_t *index)
{
    const bench_preset *p = cfg->preset;
    const int64_t nk = cfg->tokens * p->top_k;
    int64_t row = 0;
    for (int64_t e = 0; e < p->n_experts; e++) {
        next[e] = row;
        row += counts[e];
    }
    for (int64_t i = 0; i < nk; i++) {
        int32_t e = local_expert(p, ids[i]);
        index[i] = e >= 0 ? (int32_t)next[e]++ : -1;
    }
}

/* The fewest bytes each call must move: every input read once, every
 * output written once (moescatter(1), BYTES MOVED). */
static void set_bytes(const bench_workload *w, bench_set *s)
{
    const bench_config *cfg = &w->cfg;
    const bench_preset *p = cfg->preset;
    const double n = (double)cfg->tokens, k = (double)p->top_k;
    const double h = (double)p->hidden, e = (double)p->n_experts;
    const double xe = (double)dtype_bytes(p->x_dtype);
    const double idx = 4.0; /* int32 ids and index outputs */
    double sc = 0.0, rd, wr;

    /* Scatter reads: ids, the map, the rows and scales of the tokens
     * that go somewhere. */
    rd = n * k * idx + (w->expert_map ? 4.0 * (double)p->n_experts_global : 0);
    if (!cfg->index_only) {
        rd += (double)s->tokens_touched * h * xe;
        if (p->scale_block)
            rd += (double)s->tokens_touched * (double)scales_per_row(p) * 4.0;
    }
    /* Writes: the placed rows and their scales (index-only: row_source
     * instead), out_index, and what the layout reports. */
    if (p->scale_block)
        sc = (double)scale_cols(cfg) * 4.0;
    wr = cfg->index_only ? (double)w->out_rows * idx
                         : (double)s->placed * (h * xe + sc);
    /* Zeroed padding: every other row of out, scales included. */
    if (cfg->zero_padding)
        wr += (double)(w->out_rows - s->placed) * (h * xe + sc);
    wr += n * k * idx;
    switch (cfg->layout) {
    case MOES_LAYOUT_CONTIGUOUS: wr += (double)w->out_rows * idx; break;
    case MOES_LAYOUT_GROUPED: wr += 2.0 * e * idx; break;
    default: wr += e * idx + 8.0; break; /* masked_m, n_dropped */
    }
    s->scatter_bytes = rd + wr;

    /* Gather reads the placed rows of y, out_index and the weights (and
     * the old output when accumulating), writes the output once. */
    rd = (double)s->placed * h * (double)dtype_bytes(p->y_dtype) +
         n * k * (idx + 4.0);
    wr = n * h * (double)dtype_bytes(p->out_dtype);
    if (cfg->accumulate)
        rd += wr;
    s->gather_bytes = rd + wr;
}

/* Random contents. The scatter copies bytes, so any pattern will do for
 * x; y, the weights and the scales are finite numbers of modest size. */
static void fill_random_bytes(tool_rng *rng, void *dst, int64_t bytes)
{
    unsigned char *d = dst;
    int64_t i = 0;
    for (; i + 8 <= bytes; i += 8) {
        uint64_t v = tool_rng_next(rng);
        memcpy(d + i, &v, 8);
    }
    if (i < bytes) {
        uint64_t v = tool_rng_next(rng);
        memcpy(d + i, &v, (size_t)(bytes - i));
    }
}

static void fill_values(tool_rng *rng, void *dst, int dtype, int64_t n)
{
    for (int64_t i = 0; i < n; i++) {
        uint64_t r = tool_rng_next(rng);
        uint32_t sign = (uint32_t)(r >> 63), exp = (uint32_t)((r >> 40) % 8);
        if (dtype == MOES_DTYPE_FP32) { /* |v| in [2^-9, 1) */
            ((uint32_t *)dst)[i] = sign << 31 | (118u + exp) << 23 |
                                   (uint32_t)(r & 0x7FFFFFu);
        } else if (dtype == MOES_DTYPE_BF16) {
            ((uint16_t *)dst)[i] = (uint16_t)(sign << 15 | (118u + exp) << 7 |
                                              (uint32_t)(r & 0x7Fu));
        } else { /* fp16 */
            ((uint16_t *)dst)[i] = (uint16_t)(sign << 15 | (6u + exp) << 10 |
                                              (uint32_t)(r & 0x3FFu));
        }
    }
}

static void fill_weights(tool_rng *rng, float *dst, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        dst[i] = (float)(tool_rng_next(rng) >> 40) * 0x1p-24f;
}

/* Positive normal scales near 2^-10; powers of two only when they are to
 * be packed as UE8M0 (which keeps the exponent alone and refuses the
 * others). */
static void fill_scales(tool_rng *rng, float *dst, int64_t n, int ue8m0)
{
    for (int64_t i = 0; i < n; i++) {
        uint64_t r = tool_rng_next(rng);
        uint32_t bits = (uint32_t)(110u + r % 24) << 23 |
                        (ue8m0 ? 0u : (uint32_t)((r >> 8) & 0x7FFFFFu));
        memcpy(&dst[i], &bits, 4);
    }
}

/* Carves bytes out of the arena at *offset (NULL arena: only counts). */
static void *carve(void *arena, int64_t *offset, int64_t bytes)
{
    void *p = arena ? (char *)arena + *offset : NULL;
    *offset += round_up(bytes > 0 ? bytes : 1, BENCH_ALIGN);
    return p;
}

/* Lays out the buffers of set s that grow with what a call moves, in the
 * arena from *offset; with arena NULL only adds up the bytes. */
static void layout_inputs(const bench_workload *w, void *arena,
                          int64_t *offset, bench_set *s)
{
    const bench_config *cfg = &w->cfg;
    const bench_preset *p = cfg->preset;
    const int64_t n = cfg->tokens, nk = n * p->top_k, h = p->hidden;
    const int64_t e = p->n_experts;
    s->ids = carve(arena, offset, nk * 4);
    s->x = carve(arena, offset, n * h * dtype_bytes(p->x_dtype));
    s->x_scales = p->scale_block
                      ? carve(arena, offset, n * scales_per_row(p) * 4)
                      : NULL;
    s->weights = carve(arena, offset, nk * 4);
    s->y = carve(arena, offset, w->y_rows * h * dtype_bytes(p->y_dtype));
    s->out_index = carve(arena, offset, nk * 4);
    s->expert_start = s->expert_end = NULL;
    s->masked_m = s->n_dropped = NULL;
    if (cfg->layout == MOES_LAYOUT_GROUPED) {
        s->expert_start = carve(arena, offset, e * 4);
        s->expert_end = carve(arena, offset, e * 4);
    } else if (cfg->layout == MOES_LAYOUT_MASKED) {
        s->masked_m = carve(arena, offset, e * 4);
        s->n_dropped = carve(arena, offset, 8);
    }
    s->gather_index = carve(arena, offset, nk * 4);
    s->gather_out = carve(arena, offset, n * h * dtype_bytes(p->out_dtype));
}

/* Lays out the scatter's outputs as large as the capacity (out, its
 * scales, m_indices) for set s; with arena NULL only adds up the bytes. */
static void layout_outputs(const bench_workload *w, void *arena,
                           int64_t *offset, bench_set *s)
{
    const bench_config *cfg = &w->cfg;
    const bench_preset *p = cfg->preset;
    const int64_t h = p->hidden;
    s->out = s->out_scales = s->row_source = NULL;
    if (cfg->index_only)
        s->row_source = carve(arena, offset, w->out_rows * 4);
    else
        s->out = carve(arena, offset,
                       w->out_rows * h * dtype_bytes(p->x_dtype));
    if (p->scale_block && !cfg->index_only)
        s->out_scales = carve(arena, offset,
                              w->out_rows * scale_cols(cfg) * 4);
    s->m_indices = cfg->layout == MOES_LAYOUT_CONTIGUOUS
                       ? carve(arena, offset, w->out_rows * 4)
                       : NULL;
}

/* Lays out every set: the inputs of each, then n_out copies of the large
 * outputs that the sets take in turn. Returns the bytes (arena NULL:
 * only counts them). */
static int64_t layout_sets(bench_workload *w, void *arena, int64_t n_out)
{
    int64_t offset = 0;
    for (int64_t i = 0; i < w->n_sets; i++)
        layout_inputs(w, arena, &offset, &w->sets[i]);
    for (int64_t i = 0; i < w->n_sets; i++) {
        bench_set *s = &w->sets[i];
        if (i < n_out) {
            layout_outputs(w, arena, &offset, s);
        } else {
            const bench_set *same = &w->sets[i % n_out];
            s->out = same->out;
            s->out_scales = same->out_scales;
            s->m_indices = same->m_indices;
            s->row_source = same->row_source;
        }
    }
    return offset;
}

static int upload(moes_context *ctx, void *dst, const void *src,
                  int64_t bytes)
{
    int st = moes_copy_to_backend(ctx, dst, src, bytes);
    if (st != MOES_OK)
        return tool_library_error("bench", ctx, "moes_copy_to_backend", st);
    return TOOL_EXIT_OK;
}

/* Writes the inputs of every set into the arena. */
static int fill_sets(moes_context *ctx, bench_workload *w, const int32_t *ids,
                     tool_rng *rng)
{
    const bench_config *cfg = &w->cfg;
    const bench_preset *p = cfg->preset;
    const int64_t n = cfg->tokens, nk = n * p->top_k, h = p->hidden;
    int64_t most = nk * 4, y_bytes = w->y_rows * h * dtype_bytes(p->y_dtype);
    int64_t x_bytes = n * h * dtype_bytes(p->x_dtype);
    int64_t *counts = malloc((size_t)p->n_experts * 2 * sizeof *counts);
    void *host;
    int rc = TOOL_EXIT_OK;

    if (y_bytes > most)
        most = y_bytes;
    if (x_bytes > most)
        most = x_bytes;
    if (n * scales_per_row(p) * 4 > most)
        most = n * scales_per_row(p) * 4;
    host = malloc((size_t)most);
    if (!host || !counts) {
        free(host);
        free(counts);
        return tool_fail("bench", "cannot allocate %lld bytes of host memory",
                         (long long)most);
    }
    for (int64_t i = 0; i < w->n_sets && rc == TOOL_EXIT_OK; i++) {
        bench_set *s = &w->sets[i];
        const int32_t *set_ids = ids + i * nk;
        set_stats st;
        rc = upload(ctx, s->ids, set_ids, nk * 4);
        routing_stats(cfg, set_ids, counts, &st);
        s->placed = st.placed;
        s->tokens_touched = st.tokens_touched;
        set_bytes(w, s);
        dense_index(cfg, set_ids, counts, counts + p->n_experts, host);
        if (rc == TOOL_EXIT_OK)
            rc = upload(ctx, s->gather_index, host, nk * 4);
        fill_random_bytes(rng, host, x_bytes);
        if (rc == TOOL_EXIT_OK)
            rc = upload(ctx, s->x, host, x_bytes);
        if (p->scale_block && rc == TOOL_EXIT_OK) {
            fill_scales(rng, host, n * scales_per_row(p), cfg->ue8m0);
            rc = upload(ctx, s->x_scales, host, n * scales_per_row(p) * 4);
        }
        fill_weights(rng, host, nk);
        if (rc == TOOL_EXIT_OK)
            rc = upload(ctx, s->weights, host, nk * 4);
        fill_values(rng, host, p->y_dtype, w->y_rows * h);
        if (rc == TOOL_EXIT_OK)
            rc = upload(ctx, s->y, host, y_bytes);
        /* The accumulating gather starts from the old output. */
        fill_values(rng, host, p->out_dtype, n * h);
        if (rc == TOOL_EXIT_OK)
            rc = upload(ctx, s->gather_out, host,
                        n * h * dtype_bytes(p->out_dtype));
    }
    free(host);
    free(counts);
    return rc;
}

static int make_expert_map(moes_context *ctx, bench_workload *w)
{
    const bench_preset *p = w->cfg.preset;
    int32_t *map;
    int st;
    w->expert_map = NULL;
    if (p->n_experts == p->n_experts_global)
        return TOOL_EXIT_OK;
    map = malloc((size_t)p->n_experts_global * sizeof *map);
    if (!map)
        return tool_fail("bench", "cannot allocate the expert map");
    for (int64_t g = 0; g < p->n_experts_global; g++)
        map[g] = local_expert(p, (int32_t)g);
    st = moes_malloc(ctx, (void **)&w->expert_map,
                     p->n_experts_global * (int64_t)sizeof *map);
    if (st == MOES_OK)
        st = moes_copy_to_backend(ctx, w->expert_map, map,
                                  p->n_experts_global * (int64_t)sizeof *map);
    free(map);
    if (st != MOES_OK)
        return tool_library_error("bench", ctx, "expert map", st);
    return TOOL_EXIT_OK;
}

/* The scatter's capacity and the rows of out, for routings that use at
 * most rows_used rows (contiguous, grouped) and put at most max_count
 * rows on one expert (masked). */
static void choose_capacity(bench_workload *w, int64_t rows_used,
                            int64_t max_count)
{
    const bench_config *cfg = &w->cfg;
    if (cfg->layout == MOES_LAYOUT_MASKED) {
        /* A capacity per expert that drops nothing: the largest count. */
        w->capacity = max_count > 0 ? max_count : 1;
        w->out_rows = cfg->preset->n_experts * w->capacity;
    } else if (cfg->exact_capacity) {
        w->capacity = rows_used > 0 ? rows_used : 1;
        w->out_rows = w->capacity;
    } else {
        /* What a caller that sizes its buffers once (and captures the
         * calls in a graph) passes: never too small for any routing. */
        w->capacity = w->capacity_bound;
        w->out_rows = w->capacity;
    }
}

int bench_workload_create(moes_context *ctx, const bench_config *cfg,
                          bench_workload *w)
{
    const bench_preset *p = cfg->preset;
    const int64_t nk = cfg->tokens * p->top_k;
    int64_t *counts = NULL, offset, set_alloc, out_alloc, max_by_arena, want;
    int64_t n_out;
    int32_t *ids = NULL;
    set_stats st0;
    bench_set probe;
    tool_rng rng;
    int st, rc = TOOL_EXIT_FAILURE;

    memset(w, 0, sizeof *w);
    w->cfg = *cfg;
    tool_rng_seed(&rng, cfg->seed);
    st = moes_scatter_capacity(ctx, cfg->layout, cfg->tokens, p->top_k,
                               p->n_experts, cfg->alignment,
                               &w->capacity_bound);
    if (st != MOES_OK)
        return tool_library_error("bench", ctx, "moes_scatter_capacity", st);

    /* The first routing sizes a set, and so how many sets there are. */
    counts = malloc((size_t)p->n_experts * sizeof *counts);
    ids = malloc((size_t)(nk > 0 ? nk : 1) * sizeof *ids);
    if (!counts || !ids)
        goto out_of_memory;
    draw_routing(cfg, &rng, ids);
    routing_stats(cfg, ids, counts, &st0);
    w->rows_used_max = st0.rows_used;
    w->y_rows = st0.placed;
    choose_capacity(w, st0.rows_used, st0.max_count);
    if (make_expert_map(ctx, w) != TOOL_EXIT_OK)
        goto done;
    probe.tokens_touched = st0.tokens_touched;
    probe.placed = st0.placed;
    set_bytes(w, &probe);
    want = (int64_t)((double)cfg->rotate_bytes /
                     (probe.scatter_bytes + probe.gather_bytes)) + 1;
    offset = 0;
    layout_inputs(w, NULL, &offset, &probe);
    /* Other routings may need more rows: leave room for an eighth more. */
    set_alloc = offset + offset / 8;
    offset = 0;
    layout_outputs(w, NULL, &offset, &probe);
    out_alloc = offset + offset / 8;
    max_by_arena = BENCH_MAX_ARENA > out_alloc
                       ? (BENCH_MAX_ARENA - out_alloc) / set_alloc
                       : 1;
    w->n_sets = want < BENCH_MAX_SETS ? want : BENCH_MAX_SETS;
    if (w->n_sets > max_by_arena)
        w->n_sets = max_by_arena;
    if (w->n_sets < 1)
        w->n_sets = 1;

    /* Every set's routing, then the sizes that fit them all. */
    {
        int32_t *more =
            realloc(ids, (size_t)(w->n_sets * nk > 0 ? w->n_sets * nk : 1) *
                             sizeof *ids);
        if (!more)
            goto out_of_memory;
        ids = more;
    }
    for (int64_t i = 1; i < w->n_sets; i++) {
        set_stats si;
        draw_routing(cfg, &rng, ids + i * nk);
        routing_stats(cfg, ids + i * nk, counts, &si);
        if (si.rows_used > w->rows_used_max)
            w->rows_used_max = si.rows_used;
        if (si.placed > w->y_rows)
            w->y_rows = si.placed;
        if (si.max_count > st0.max_count)
            st0.max_count = si.max_count;
    }
    if (w->y_rows < 1)
        w->y_rows = 1;
    choose_capacity(w, w->rows_used_max, st0.max_count);

    w->sets = calloc((size_t)w->n_sets, sizeof *w->sets);
    if (!w->sets)
        goto out_of_memory;
    /* Copies of the large outputs: as many as rotate_bytes holds, at
     * least one, at most one per set. */
    offset = 0;
    layout_outputs(w, NULL, &offset, &probe);
    n_out = cfg->rotate_bytes / offset;
    if (n_out > w->n_sets)
        n_out = w->n_sets;
    if (n_out < 1)
        n_out = 1;
    w->arena_bytes = layout_sets(w, NULL, n_out);
    st = moes_malloc(ctx, &w->arena, w->arena_bytes);
    if (st != MOES_OK) {
        tool_library_error("bench", ctx, "moes_malloc of the input sets", st);
        goto done;
    }
    layout_sets(w, w->arena, n_out);
    rc = fill_sets(ctx, w, ids, &rng);
    goto done;

out_of_memory:
    tool_fail("bench", "cannot allocate host memory for the routings");
done:
    free(ids);
    free(counts);
    if (rc != TOOL_EXIT_OK)
        bench_workload_destroy(ctx, w);
    return rc;
}

void bench_workload_destroy(moes_context *ctx, bench_workload *w)
{
    moes_free(ctx, w->arena);
    moes_free(ctx, w->expert_map);
    free(w->sets);
    w->arena = NULL;
    w->expert_map = NULL;
    w->sets = NULL;
}

void bench_scatter_call(const bench_workload *w, const bench_set *s,
                        moes_routing *routing, moes_scatter_args *args)
{
    const bench_config *cfg = &w->cfg;
    const bench_preset *p = cfg->preset;
    moes_routing_init(routing);
    routing->n_tokens = cfg->tokens;
    routing->top_k = p->top_k;
    routing->ids = s->ids;
    routing->ids_dtype = MOES_DTYPE_INT32;
    routing->expert_map = w->expert_map;
    routing->n_experts_global = p->n_experts_global;
    routing->n_experts = p->n_experts;

    moes_scatter_args_init(args);
    args->layout = cfg->layout;
    args->alignment = cfg->alignment;
    args->capacity = w->capacity;
    args->x_dtype = p->x_dtype;
    args->hidden = p->hidden;
    if (cfg->index_only) {
        /* No rows: the indices, and row_source padded as vLLM pads. */
        args->row_source = s->row_source;
        args->row_source_pad = cfg->tokens * p->top_k;
    } else {
        args->x = s->x;
        args->out = s->out;
    }
    if (cfg->zero_padding)
        args->flags |= MOES_SCATTER_ZERO_PADDING;
    if (p->scale_block && !cfg->index_only) {
        args->x_scales = s->x_scales;
        args->scale_block = p->scale_block;
        args->out_scales = s->out_scales;
        args->out_scales_format =
            cfg->ue8m0 ? MOES_SCALES_UE8M0 : MOES_SCALES_FP32;
    }
    args->index_dtype = MOES_DTYPE_INT32;
    args->out_index = s->out_index;
    args->m_indices = s->m_indices;
    args->expert_start = s->expert_start;
    args->expert_end = s->expert_end;
    args->masked_m = s->masked_m;
    args->n_dropped = s->n_dropped;
}

void bench_gather_call(const bench_workload *w, const bench_set *s,
                       moes_gather_args *args)
{
    const bench_config *cfg = &w->cfg;
    const bench_preset *p = cfg->preset;
    moes_gather_args_init(args);
    args->flags = cfg->accumulate ? MOES_GATHER_ACCUMULATE : 0;
    args->n_tokens = cfg->tokens;
    args->top_k = p->top_k;
    args->hidden = p->hidden;
    args->y = s->y;
    args->y_dtype = p->y_dtype;
    args->y_rows = w->y_rows;
    args->out_index = s->gather_index;
    args->index_dtype = MOES_DTYPE_INT32;
    args->weights = s->weights;
    args->out = s->gather_out;
    args->out_dtype = p->out_dtype;
}
