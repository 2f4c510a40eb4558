/* SPDX-License-Identifier: MIT */
/*
 * test_ep.c - the ep suite, run under mpirun with 1 to 4 ranks.
 *
 * Every rank draws the same random cases (all ranks' inputs, from the
 * seed), runs its own part through moes_ep_dispatch and moes_ep_combine,
 * and compares every output buffer byte for byte with a reference that
 * one process builds from the test kit's oracle with the same rank
 * grouping: each rank's received tokens (source rank ascending, then the
 * source's order), their oracle scatter, the oracle gather of that rank's
 * expert outputs into fp32 partials, and the oracle gather of the
 * partials in ascending rank order. Outputs start poisoned, so that a
 * byte the dispatch should not write, or forgot to write, shows.
 *
 *     mpirun -np 3 ep/test_ep [cases] [first seed]
 *
 * Built with EP_TEST_NCCL (ep/nccl-one-gpu.sh), the same cases run
 * through the NCCL transport, one rank per GPU and per thread of one
 * process (MOES_EP_GPUS of them, default 1; mpi_threads.h stands in for
 * MPI): inputs and outputs are copied to and from device buffers around
 * each call.
 * Then the bounded cases run again with no host output, so that nothing
 * waits: eagerly, captured in a CUDA graph and replayed, and with an id
 * out of range that only moes_ep_synchronize reports.
 */
#include "config.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef EP_TEST_NCCL
#include "device_harness.h"
#include "mpi_threads.h"
#else
#include <mpi.h>
#endif

#include "moescatter_ep.h"
#include "oracle.h"
#include "rng.h"

#define MAX_RANKS 8

/* Built as test_ep_queued, the suite runs the bounded mode's queued path
 * (the one NCCL takes) over MPI, with the same checks. */
#ifndef EP_QUEUED_ON_HOST
#define EP_QUEUED_ON_HOST 0
#endif

/* Open MPI unloads its components at exit, before LeakSanitizer looks:
 * what they keep would then come from no known module, and no suppression
 * could name it. Keeping them loaded lets lsan.supp name them, so that a
 * leak of the ep layer itself still fails the suite. */
__attribute__((visibility("default"))) int dlclose(void *handle);
int dlclose(void *handle)
{
    (void)handle;
    return 0;
}

/* In the NCCL build each rank is a thread (mpi_threads.h): what is a
 * rank's own is thread-local there. */
#ifdef EP_TEST_NCCL
#define RANK_LOCAL _Thread_local
#else
#define RANK_LOCAL
#endif
static RANK_LOCAL int rank;
static int n_ranks;
static RANK_LOCAL long checks, failures;

#ifdef EP_TEST_NCCL
/* This rank's CUDA context and NCCL communicator. */
static RANK_LOCAL moes_context *dev_ctx;
static RANK_LOCAL void *nccl_comm;
/* Rank r's communicator, opened for every rank by main(). */
static void *nccl_comms[MAX_RANKS];

static void *to_dev(const void *host, int64_t bytes)
{
    void *d = NULL;
    if (moes_malloc(dev_ctx, &d, bytes > 0 ? bytes : 64) != MOES_OK ||
        (bytes > 0 && moes_copy_to_backend(dev_ctx, d, host, bytes)))
        MPI_Abort(MPI_COMM_WORLD, 4);
    return d;
}

static void from_dev(void *host, void *d, int64_t bytes)
{
    if (bytes > 0 && moes_copy_to_host(dev_ctx, host, d, bytes) != MOES_OK)
        MPI_Abort(MPI_COMM_WORLD, 4);
}

static void drop_dev(const void *d)
{
    moes_free(dev_ctx, (void *)d);
}
#endif

static void *xalloc(int64_t bytes)
{
    void *p = calloc(1, (size_t)(bytes > 0 ? bytes : 1));
    if (!p) {
        fprintf(stderr, "out of memory\n");
        MPI_Abort(MPI_COMM_WORLD, 2);
    }
    return p;
}

static void random_bytes(moes_rng *g, void *p, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        ((uint8_t *)p)[i] = (uint8_t)moes_rng_next(g);
}

static void expect(int ok, uint64_t seed, const char *what)
{
    checks++;
    if (!ok) {
        failures++;
        if (failures <= 20)
            fprintf(stderr, "rank %d/%d, seed %llu: %s\n", rank, n_ranks,
                    (unsigned long long)seed, what);
    }
}

/* Whether every rank's dispatch returned MOES_OK. The queued path on the
 * CPU returns a failure of its own local scatter at once, on that rank
 * only; a combine on the other ranks would then wait for it forever. */
static int all_ranks_ok(int rc)
{
    long failed = rc != MOES_OK;
    MPI_Allreduce(MPI_IN_PLACE, &failed, 1, MPI_LONG, MPI_SUM,
                  MPI_COMM_WORLD);
    return failed == 0;
}

static void expect_same(const void *a, const void *b, int64_t n,
                        uint64_t seed, const char *what)
{
    char text[160];
    int64_t i = 0;
    while (i < n && ((const uint8_t *)a)[i] == ((const uint8_t *)b)[i])
        i++;
    snprintf(text, sizeof text, "%s differs from the reference at byte %lld "
             "of %lld", what, (long long)i, (long long)n);
    expect(i == n, seed, text);
}

/* ------------------------------------------------------------------ */
/* One case                                                           */
/* ------------------------------------------------------------------ */

typedef struct rank_input {
    int64_t n;
    uint8_t *x;
    float *scales;
    void *ids;
    float *weights;
} rank_input;

/* The local layout's output buffers of one rank. */
typedef struct local_out {
    int64_t rows, capacity;
    uint8_t *out, *out_scales, *counts, *start, *end, *m_indices, *masked_m;
    int64_t n_dropped;
    int64_t out_bytes, scales_bytes, index_bytes, m_bytes;
} local_out;

typedef struct ep_case {
    uint64_t seed;
    int64_t El, H, K, max_tokens, B, scale_block, S;
    int x_dtype, ids_dtype, y_dtype, out_dtype, mode;
    int has_scales, has_weights, scale_format;
    int layout, index_dtype;
    int64_t alignment, masked_C;
    unsigned scatter_flags, gather_flags;
    int want_counts, want_start, want_m;
    int64_t x_stride, ids_stride, w_stride, xs_stride;
    size_t x_size, ids_size;
    rank_input in[MAX_RANKS];
    uint8_t poison;
} ep_case;

static int64_t get_id(const ep_case *c, const void *ids, int64_t i)
{
    return c->ids_size == 4 ? ((const int32_t *)ids)[i]
                            : ((const int64_t *)ids)[i];
}

static void set_id(const ep_case *c, void *ids, int64_t i, int64_t v)
{
    if (c->ids_size == 4)
        ((int32_t *)ids)[i] = (int32_t)v;
    else
        ((int64_t *)ids)[i] = v;
}

static void draw_case(ep_case *c, uint64_t seed)
{
    static const int rows[] = {MOES_DTYPE_FP8_E4M3, MOES_DTYPE_FP8_E5M2,
                               MOES_DTYPE_BF16, MOES_DTYPE_FP16,
                               MOES_DTYPE_FP32};
    static const int floats[] = {MOES_DTYPE_BF16, MOES_DTYPE_FP16,
                                 MOES_DTYPE_FP32};
    moes_rng g;
    moes_rng_seed(&g, seed * 1000003u + (uint64_t)n_ranks);
    memset(c, 0, sizeof *c);
    c->seed = seed;
    c->El = moes_rng_range(&g, 1, 3);
    c->H = moes_rng_range(&g, 1, 37);
    c->K = moes_rng_range(&g, 1, 4);
    c->max_tokens = moes_rng_range(&g, 0, 12);
    c->mode = moes_rng_chance(&g, 50) ? MOES_EP_MODE_EXACT
                                      : MOES_EP_MODE_BOUNDED;
    c->B = moes_rng_range(&g, 1, 5);
    c->x_dtype = rows[moes_rng_below(&g, 5)];
    c->ids_dtype = moes_rng_chance(&g, 50) ? MOES_DTYPE_INT32
                                           : MOES_DTYPE_INT64;
    c->y_dtype = floats[moes_rng_below(&g, 3)];
    c->out_dtype = floats[moes_rng_below(&g, 3)];
    c->has_scales = moes_rng_chance(&g, 40);
    c->scale_format = moes_rng_chance(&g, 50) ? MOES_SCALES_FP32
                                              : MOES_SCALES_UE8M0;
    c->scale_block = moes_rng_range(&g, 1, 16);
    c->S = (c->H + c->scale_block - 1) / c->scale_block;
    /* About one case in sixteen has rows with more scales than one
     * moes_fill_rows pattern holds: the bounded mode then sets its empty
     * slots in pieces. */
    if (moes_rng_chance(&g, 6)) {
        c->H = moes_rng_range(&g, 520, 600);
        c->scale_block = 1;
        c->S = c->H;
    }
    c->has_weights = moes_rng_chance(&g, 75);
    c->layout = (int)moes_rng_range(&g, 1, 3);
    c->index_dtype = moes_rng_chance(&g, 50) ? MOES_DTYPE_INT32
                                             : MOES_DTYPE_INT64;
    static const int64_t aligns[] = {1, 2, 4, 8};
    c->alignment = aligns[moes_rng_below(&g, 4)];
    c->masked_C = moes_rng_range(&g, 0, 4);
    c->scatter_flags = (unsigned)moes_rng_below(&g, 4);
    c->gather_flags = moes_rng_chance(&g, 25) ? MOES_GATHER_ACCUMULATE : 0;
    c->want_counts = moes_rng_chance(&g, 50);
    c->want_start = moes_rng_chance(&g, 50);
    c->want_m = c->layout == MOES_LAYOUT_CONTIGUOUS ||
                (c->layout == MOES_LAYOUT_GROUPED && moes_rng_chance(&g, 50));
    c->x_stride = c->H + moes_rng_range(&g, 0, 2);
    c->ids_stride = c->K + moes_rng_range(&g, 0, 1);
    c->w_stride = c->K + moes_rng_range(&g, 0, 1);
    c->xs_stride = c->S + moes_rng_range(&g, 0, 1);
    moes_dtype_size(c->x_dtype, &c->x_size);
    c->ids_size = c->ids_dtype == MOES_DTYPE_INT32 ? 4 : 8;
    c->poison = (uint8_t)moes_rng_range(&g, 1, 255);

    /* Routings: random, everything to one rank, nothing anywhere, and
     * few experts (many duplicates). */
    int style = (int)moes_rng_below(&g, 4);
    int64_t E = c->El * n_ranks;
    int target = (int)moes_rng_below(&g, n_ranks);
    for (int s = 0; s < n_ranks; s++) {
        rank_input *in = &c->in[s];
        in->n = moes_rng_chance(&g, 15) ? 0
                                        : moes_rng_range(&g, 0, c->max_tokens);
        in->x = xalloc(in->n * c->x_stride * (int64_t)c->x_size);
        random_bytes(&g, in->x, in->n * c->x_stride * (int64_t)c->x_size);
        in->scales = xalloc(in->n * c->xs_stride * 4);
        for (int64_t i = 0; i < in->n * c->xs_stride; i++)
            in->scales[i] =
                c->scale_format == MOES_SCALES_UE8M0
                    ? ldexpf(1.0f, (int)moes_rng_range(&g, -20, 20))
                    : (float)moes_rng_range(&g, -1000, 1000) / 7.0f;
        in->ids = xalloc(in->n * c->ids_stride * (int64_t)c->ids_size);
        for (int64_t t = 0; t < in->n; t++)
            for (int64_t k = 0; k < c->ids_stride; k++) {
                int64_t id;
                if (k >= c->K)
                    id = 12345; /* past K: must never be read */
                else if (style == 1)
                    id = moes_rng_chance(&g, 10)
                             ? -1
                             : target * c->El + moes_rng_below(&g, c->El);
                else if (style == 2)
                    id = -1;
                else if (style == 3)
                    id = moes_rng_below(&g, E < 2 ? E : 2);
                else
                    id = moes_rng_range(&g, -1, E - 1);
                set_id(c, in->ids, t * c->ids_stride + k, id);
            }
        in->weights = xalloc(in->n * c->w_stride * 4);
        for (int64_t i = 0; i < in->n * c->w_stride; i++)
            in->weights[i] = (float)moes_rng_range(&g, -64, 64) / 16.0f;
    }
}

static void free_case(ep_case *c)
{
    for (int s = 0; s < n_ranks; s++) {
        free(c->in[s].x);
        free(c->in[s].scales);
        free(c->in[s].ids);
        free(c->in[s].weights);
    }
}

/* Whether token t of source s goes to rank r. */
static int goes_to(const ep_case *c, int s, int64_t t, int r)
{
    for (int64_t k = 0; k < c->K; k++) {
        int64_t id = get_id(c, c->in[s].ids, t * c->ids_stride + k);
        if (id >= 0 && id / c->El == r)
            return 1;
    }
    return 0;
}

/* What rank r receives: (source, token) pairs in the contract's order,
 * the bounded mode keeping the first B of each pair. */
static int64_t received(const ep_case *c, int r, int *src, int64_t *tok)
{
    int64_t n = 0;
    for (int s = 0; s < n_ranks; s++) {
        int64_t sent = 0;
        for (int64_t t = 0; t < c->in[s].n; t++) {
            if (!goes_to(c, s, t, r))
                continue;
            if (c->mode == MOES_EP_MODE_BOUNDED && sent == c->B)
                continue;
            sent++;
            src[n] = s;
            tok[n] = t;
            n++;
        }
    }
    return n;
}

static int64_t scale_row_elems(const ep_case *c)
{
    return c->scale_format == MOES_SCALES_UE8M0 ? (c->S + 3) / 4 : c->S;
}

static void alloc_local(const ep_case *c, int64_t n_recv, local_out *o)
{
    memset(o, 0, sizeof *o);
    if (c->layout == MOES_LAYOUT_MASKED) {
        o->capacity = c->masked_C;
        o->rows = c->El * c->masked_C;
    } else {
        moes_scatter_capacity(NULL, c->layout, n_recv, c->K, c->El,
                              c->alignment, &o->capacity);
        o->rows = o->capacity;
    }
    o->out_bytes = o->rows * c->H * (int64_t)c->x_size;
    o->scales_bytes = c->has_scales ? o->rows * scale_row_elems(c) * 4 : 0;
    o->index_bytes = c->El * 8;
    o->m_bytes = o->rows * 8;
    o->out = xalloc(o->out_bytes);
    o->out_scales = xalloc(o->scales_bytes);
    o->counts = xalloc(o->index_bytes);
    o->start = xalloc(o->index_bytes);
    o->end = xalloc(o->index_bytes);
    o->masked_m = xalloc(o->index_bytes);
    o->m_indices = xalloc(o->m_bytes);
}

static void poison_local(const ep_case *c, local_out *o)
{
    memset(o->out, c->poison, (size_t)o->out_bytes);
    memset(o->out_scales, c->poison, (size_t)o->scales_bytes);
    memset(o->counts, c->poison, (size_t)o->index_bytes);
    memset(o->start, c->poison, (size_t)o->index_bytes);
    memset(o->end, c->poison, (size_t)o->index_bytes);
    memset(o->masked_m, c->poison, (size_t)o->index_bytes);
    memset(o->m_indices, c->poison, (size_t)o->m_bytes);
    memset(&o->n_dropped, c->poison, sizeof o->n_dropped);
}

static void free_local(local_out *o)
{
    free(o->out);
    free(o->out_scales);
    free(o->counts);
    free(o->start);
    free(o->end);
    free(o->masked_m);
    free(o->m_indices);
}

/* The caller's layout over o (x, out_index and the rest left to fill). */
static void local_args(const ep_case *c, local_out *o, moes_scatter_args *s)
{
    moes_scatter_args_init(s);
    s->layout = c->layout;
    s->alignment = c->alignment;
    s->capacity = o->capacity;
    s->flags = c->scatter_flags;
    s->out = o->out;
    if (c->has_scales) {
        s->out_scales = o->out_scales;
        s->out_scales_format = c->scale_format;
    }
    s->index_dtype = c->index_dtype;
    s->counts = c->want_counts ? o->counts : NULL;
    s->expert_start = c->want_start ? o->start : NULL;
    s->expert_end = c->layout == MOES_LAYOUT_GROUPED ? o->end : NULL;
    s->m_indices = c->want_m ? o->m_indices : NULL;
    s->masked_m = c->layout == MOES_LAYOUT_MASKED ? o->masked_m : NULL;
    s->n_dropped = c->layout == MOES_LAYOUT_MASKED ? &o->n_dropped : NULL;
}

static void *make_y(const ep_case *c, int r, int64_t rows)
{
    size_t ys;
    moes_dtype_size(c->y_dtype, &ys);
    void *y = xalloc(rows * c->H * (int64_t)ys);
    moes_rng g;
    moes_rng_seed(&g, c->seed * 7919u + (uint64_t)r * 31u + 5u);
    if (c->y_dtype == MOES_DTYPE_FP32) {
        for (int64_t i = 0; i < rows * c->H; i++)
            ((float *)y)[i] = (float)moes_rng_range(&g, -4000, 4000) / 64.0f;
    } else {
        /* Any bits: specials included, the gather must agree anyway. */
        random_bytes(&g, y, rows * c->H * (int64_t)ys);
    }
    return y;
}

/* The reference of rank r: its local outputs, and the fp32 partial of
 * each received token. */
typedef struct rank_ref {
    int64_t n_recv;
    int src[MAX_RANKS * 64];
    int64_t tok[MAX_RANKS * 64];
    local_out o;
    float *partial;
    void *y;
} rank_ref;

static void reference_rank(const ep_case *c, int r, rank_ref *ref)
{
    ref->n_recv = received(c, r, ref->src, ref->tok);
    int64_t n = ref->n_recv;
    alloc_local(c, n, &ref->o);
    poison_local(c, &ref->o);
    uint8_t *x = xalloc(n * c->H * (int64_t)c->x_size);
    float *scales = xalloc(n * c->S * 4);
    void *ids = xalloc(n * c->K * (int64_t)c->ids_size);
    float *w = xalloc(n * c->K * 4);
    for (int64_t j = 0; j < n; j++) {
        const rank_input *in = &c->in[ref->src[j]];
        int64_t t = ref->tok[j];
        memcpy(x + j * c->H * c->x_size, in->x + t * c->x_stride * c->x_size,
               (size_t)c->H * c->x_size);
        memcpy(scales + j * c->S, in->scales + t * c->xs_stride,
               (size_t)c->S * 4);
        memcpy(w + j * c->K, in->weights + t * c->w_stride, (size_t)c->K * 4);
        ep_case *cc = (ep_case *)c;
        for (int64_t k = 0; k < c->K; k++) {
            int64_t id = get_id(c, in->ids, t * c->ids_stride + k);
            set_id(cc, ids, j * c->K + k,
                   id >= 0 && id / c->El == r ? id % c->El : -1);
        }
    }
    moes_routing rt;
    moes_routing_init(&rt);
    rt.n_tokens = n;
    rt.top_k = c->K;
    rt.ids = ids;
    rt.ids_dtype = c->ids_dtype;
    rt.n_experts_global = c->El;
    rt.n_experts = c->El;
    moes_scatter_args s;
    local_args(c, &ref->o, &s);
    s.x = x;
    s.x_dtype = c->x_dtype;
    s.hidden = c->H;
    s.x_scales = c->has_scales ? scales : NULL;
    s.scale_block = c->scale_block;
    void *out_index = xalloc(n * c->K * 8);
    s.out_index = out_index;
    int rc = moes_oracle_scatter(&rt, &s);
    if (rc != MOES_OK) {
        fprintf(stderr, "seed %llu: the oracle scatter failed: %s\n",
                (unsigned long long)c->seed, moes_oracle_last_error());
        MPI_Abort(MPI_COMM_WORLD, 3);
    }
    ref->y = make_y(c, r, ref->o.rows);
    ref->partial = xalloc(n * c->H * 4);
    moes_gather_args g;
    moes_gather_args_init(&g);
    g.n_tokens = n;
    g.top_k = c->K;
    g.hidden = c->H;
    g.y = ref->y;
    g.y_dtype = c->y_dtype;
    g.y_rows = ref->o.rows;
    g.out_index = out_index;
    g.index_dtype = c->index_dtype;
    g.weights = c->has_weights ? w : NULL;
    g.out = ref->partial;
    g.out_dtype = MOES_DTYPE_FP32;
    if (n > 0 && moes_oracle_gather(&g) != MOES_OK) {
        fprintf(stderr, "seed %llu: the oracle gather failed: %s\n",
                (unsigned long long)c->seed, moes_oracle_last_error());
        MPI_Abort(MPI_COMM_WORLD, 3);
    }
    free(x);
    free(scales);
    free(ids);
    free(w);
    free(out_index);
}

/* The combined output of rank me: the partials of its tokens, ascending
 * rank, added by the oracle gather with unit weights. */
static void reference_combine(const ep_case *c, rank_ref *refs, void *out)
{
    int64_t N = c->in[rank].n;
    int64_t total = 0;
    for (int r = 0; r < n_ranks; r++)
        total += refs[r].n_recv;
    float *stack = xalloc(total * c->H * 4);
    int64_t *index = xalloc(N * n_ranks * 8);
    for (int64_t i = 0; i < N * n_ranks; i++)
        index[i] = -1;
    int64_t row = 0;
    for (int r = 0; r < n_ranks; r++)
        for (int64_t j = 0; j < refs[r].n_recv; j++) {
            if (refs[r].src[j] != rank)
                continue;
            memcpy(stack + row * c->H, refs[r].partial + j * c->H,
                   (size_t)c->H * 4);
            index[refs[r].tok[j] * n_ranks + r] = row++;
        }
    moes_gather_args g;
    moes_gather_args_init(&g);
    g.flags = c->gather_flags;
    g.n_tokens = N;
    g.top_k = n_ranks;
    g.hidden = c->H;
    g.y = stack;
    g.y_dtype = MOES_DTYPE_FP32;
    g.y_rows = row;
    g.out_index = index;
    g.index_dtype = MOES_DTYPE_INT64;
    g.out = out;
    g.out_dtype = c->out_dtype;
    if (N > 0 && moes_oracle_gather(&g) != MOES_OK) {
        fprintf(stderr, "seed %llu: the oracle combine failed: %s\n",
                (unsigned long long)c->seed, moes_oracle_last_error());
        MPI_Abort(MPI_COMM_WORLD, 3);
    }
    free(stack);
    free(index);
}

/* This rank's combine output before the call (random bytes under
 * MOES_GATHER_ACCUMULATE, else the case's poison) in *out_init, and what
 * the reference makes of it in *ref_out; returns their size in bytes. */
static int64_t combine_expected(const ep_case *c, rank_ref *refs,
                                uint64_t seed, void **out_init, void **ref_out)
{
    size_t os;
    moes_dtype_size(c->out_dtype, &os);
    const int64_t out_bytes = c->in[rank].n * c->H * (int64_t)os;
    moes_rng g;
    moes_rng_seed(&g, seed * 17u + (uint64_t)rank);
    *out_init = xalloc(out_bytes);
    if (c->gather_flags & MOES_GATHER_ACCUMULATE)
        random_bytes(&g, *out_init, out_bytes);
    else
        memset(*out_init, c->poison, (size_t)out_bytes);
    *ref_out = xalloc(out_bytes);
    memcpy(*ref_out, *out_init, (size_t)out_bytes);
    reference_combine(c, refs, *ref_out);
    return out_bytes;
}

static void free_refs(rank_ref *refs)
{
    for (int r = 0; r < n_ranks; r++) {
        free_local(&refs[r].o);
        free(refs[r].partial);
        free(refs[r].y);
    }
    free(refs);
}

static void default_options(const ep_case *c, moes_ep_options *o)
{
    moes_ep_options_init(o);
    o->n_ranks = n_ranks;
    o->experts_per_rank = c->El;
    o->hidden = c->H;
    o->top_k = c->K;
    o->max_tokens = c->max_tokens;
    o->x_dtype = c->x_dtype;
    o->scale_block = c->scale_block;
    o->ids_dtype = c->ids_dtype;
    o->y_dtype = c->y_dtype;
    o->out_dtype = c->out_dtype;
    o->mode = c->mode;
    o->tokens_per_pair = c->B;
}

static void dispatch_args(const ep_case *c, const moes_scatter_args *local,
                          int64_t *n_received, int64_t *n_dropped,
                          moes_ep_dispatch_args *d)
{
    const rank_input *in = &c->in[rank];
    moes_ep_dispatch_args_init(d);
    d->n_tokens = in->n;
    d->x = in->x;
    d->x_stride = c->x_stride;
    d->x_scales = c->has_scales ? in->scales : NULL;
    d->x_scales_stride = c->xs_stride;
    d->ids = in->ids;
    d->ids_stride = c->ids_stride;
    d->weights = c->has_weights ? in->weights : NULL;
    d->weights_stride = c->w_stride;
    d->local = local;
    d->n_received = n_received;
    d->n_dropped = n_dropped;
}

static int64_t expected_dropped(const ep_case *c)
{
    if (c->mode != MOES_EP_MODE_BOUNDED)
        return 0;
    int64_t dropped = 0;
    for (int r = 0; r < n_ranks; r++) {
        int64_t n = 0;
        for (int64_t t = 0; t < c->in[rank].n; t++)
            n += goes_to(c, rank, t, r);
        if (n > c->B)
            dropped += n - c->B;
    }
    return dropped;
}

/* Every output of the local layout against the reference. */
static void expect_local(const local_out *o, const local_out *e,
                         uint64_t seed, const char *when)
{
    char what[96];
    const struct {
        const void *a, *b;
        int64_t n;
        const char *name;
    } cmp[] = {{o->out, e->out, o->out_bytes, "out"},
               {o->out_scales, e->out_scales, o->scales_bytes, "out_scales"},
               {o->counts, e->counts, o->index_bytes, "counts"},
               {o->start, e->start, o->index_bytes, "expert_start"},
               {o->end, e->end, o->index_bytes, "expert_end"},
               {o->masked_m, e->masked_m, o->index_bytes, "masked_m"},
               {o->m_indices, e->m_indices, o->m_bytes, "m_indices"},
               {&o->n_dropped, &e->n_dropped, 8, "local n_dropped"}};
    for (size_t i = 0; i < sizeof cmp / sizeof *cmp; i++) {
        snprintf(what, sizeof what, "%s, %s", when, cmp[i].name);
        expect_same(cmp[i].a, cmp[i].b, cmp[i].n, seed, what);
    }
}

#ifdef EP_TEST_NCCL
static graph_api cu;

/* The device copies of a case's buffers for this rank: its inputs
 * (swapped into c->in[rank] until device_run_close), a local_out's
 * buffers, y and the combined out. */
typedef struct device_run {
    local_out od;       /* device pointers in a host local_out's shape */
    int64_t *local_dropped, *pairs_dropped;
    rank_input host_in; /* the host inputs, put back at the end        */
    void *y, *out;
} device_run;

static void upload_outputs(const local_out *o, const void *out_init,
                           int64_t out_bytes, device_run *dr)
{
    const struct {
        void *d;
        const void *h;
        int64_t n;
    } up[] = {{dr->od.out, o->out, o->out_bytes},
              {dr->od.out_scales, o->out_scales, o->scales_bytes},
              {dr->od.counts, o->counts, o->index_bytes},
              {dr->od.start, o->start, o->index_bytes},
              {dr->od.end, o->end, o->index_bytes},
              {dr->od.masked_m, o->masked_m, o->index_bytes},
              {dr->od.m_indices, o->m_indices, o->m_bytes},
              {dr->local_dropped, &o->n_dropped, 8},
              {dr->out, out_init, out_bytes}};
    for (size_t i = 0; i < sizeof up / sizeof *up; i++)
        if (up[i].n > 0 &&
            moes_copy_to_backend(dev_ctx, up[i].d, up[i].h, up[i].n))
            MPI_Abort(MPI_COMM_WORLD, 4);
}

static void download_outputs(local_out *o, void *out, int64_t out_bytes,
                             const device_run *dr)
{
    from_dev(o->out, dr->od.out, o->out_bytes);
    from_dev(o->out_scales, dr->od.out_scales, o->scales_bytes);
    from_dev(o->counts, dr->od.counts, o->index_bytes);
    from_dev(o->start, dr->od.start, o->index_bytes);
    from_dev(o->end, dr->od.end, o->index_bytes);
    from_dev(o->masked_m, dr->od.masked_m, o->index_bytes);
    from_dev(o->m_indices, dr->od.m_indices, o->m_bytes);
    from_dev(&o->n_dropped, dr->local_dropped, 8);
    from_dev(out, dr->out, out_bytes);
}

/* Uploads this rank's inputs (into c->in[rank]), o's buffers, y and out. */
static void device_run_open(ep_case *c, const local_out *o, const void *y,
                            int64_t y_bytes, const void *out,
                            int64_t out_bytes, device_run *dr)
{
    dr->od = *o;
    dr->od.out = to_dev(o->out, o->out_bytes);
    dr->od.out_scales = to_dev(o->out_scales, o->scales_bytes);
    dr->od.counts = to_dev(o->counts, o->index_bytes);
    dr->od.start = to_dev(o->start, o->index_bytes);
    dr->od.end = to_dev(o->end, o->index_bytes);
    dr->od.masked_m = to_dev(o->masked_m, o->index_bytes);
    dr->od.m_indices = to_dev(o->m_indices, o->m_bytes);
    dr->local_dropped = to_dev(&o->n_dropped, 8);
    int64_t minus_one = -1;
    dr->pairs_dropped = to_dev(&minus_one, 8);
    dr->y = to_dev(y, y_bytes);
    dr->out = to_dev(out, out_bytes);
    dr->host_in = c->in[rank];
    rank_input *in = &c->in[rank];
    in->x = to_dev(dr->host_in.x, in->n * c->x_stride * (int64_t)c->x_size);
    in->scales = to_dev(dr->host_in.scales, in->n * c->xs_stride * 4);
    in->ids = to_dev(dr->host_in.ids,
                     in->n * c->ids_stride * (int64_t)c->ids_size);
    in->weights = to_dev(dr->host_in.weights, in->n * c->w_stride * 4);
}

/* Frees the device copies and puts the host inputs back. */
static void device_run_close(ep_case *c, device_run *dr)
{
    rank_input *in = &c->in[rank];
    void *dev_bufs[] = {dr->od.out,      dr->od.out_scales,  dr->od.counts,
                        dr->od.start,    dr->od.end,         dr->od.masked_m,
                        dr->od.m_indices, dr->local_dropped, dr->pairs_dropped,
                        dr->y,           dr->out,            in->x,
                        in->scales,      in->ids,            in->weights};
    for (size_t i = 0; i < sizeof dev_bufs / sizeof *dev_bufs; i++)
        drop_dev(dev_bufs[i]);
    *in = dr->host_in;
}

#endif

static void run_case(moes_context *ctx, uint64_t seed)
{
    ep_case c;
    draw_case(&c, seed);
    rank_ref *refs = xalloc((int64_t)sizeof *refs * n_ranks);
    for (int r = 0; r < n_ranks; r++)
        reference_rank(&c, r, &refs[r]);
    rank_ref *mine = &refs[rank];

    void *out_init, *ref_out;
    const int64_t out_bytes = combine_expected(&c, refs, seed, &out_init,
                                               &ref_out);

    moes_ep_options opts;
    default_options(&c, &opts);
    moes_ep *ep = NULL;
#ifdef EP_TEST_NCCL
    (void)ctx;
    int rc = moes_ep_create_nccl(&ep, dev_ctx, &opts, nccl_comm, NULL);
#else
    int rc = moes_ep_create_mpi(&ep, ctx, &opts, MPI_COMM_WORLD);
#endif
    expect(rc == MOES_OK, seed, moes_ep_last_error(NULL));
    if (rc == MOES_OK) {
        local_out o;
        alloc_local(&c, mine->n_recv, &o);
        poison_local(&c, &o);
        moes_scatter_args local;
        int64_t n_received = -1, n_dropped = -1;
        moes_ep_dispatch_args d;
        void *out = xalloc(out_bytes);
        memcpy(out, out_init, (size_t)out_bytes);
        moes_ep_combine_args ca;
        moes_ep_combine_args_init(&ca);
        ca.flags = c.gather_flags;
        ca.y = mine->y;
        ca.y_rows = o.rows;
        ca.out = out;
#ifdef EP_TEST_NCCL
        /* The same buffers on the device, poisoned alike. */
        size_t ys;
        moes_dtype_size(c.y_dtype, &ys);
        device_run dr;
        device_run_open(&c, &o, mine->y, o.rows * c.H * (int64_t)ys, out,
                        out_bytes, &dr);
        local_args(&c, &dr.od, &local);
        if (local.n_dropped)
            local.n_dropped = dr.local_dropped;
        dispatch_args(&c, &local, &n_received, &n_dropped, &d);
        ca.y = dr.y;
        ca.out = dr.out;
        int rd = moes_ep_dispatch(ep, &d);
        if (all_ranks_ok(rd)) {
            rc = moes_ep_combine(ep, &ca);
            if (rc == MOES_OK)
                rc = moes_synchronize(dev_ctx);
        }
        download_outputs(&o, out, out_bytes, &dr);
        device_run_close(&c, &dr);
#else
        local_args(&c, &o, &local);
        dispatch_args(&c, &local, &n_received, &n_dropped, &d);
        int rd = moes_ep_dispatch(ep, &d);
        if (all_ranks_ok(rd))
            rc = moes_ep_combine(ep, &ca);
#endif
        expect(rd == MOES_OK, seed, moes_ep_last_error(ep));
        expect(n_received == mine->n_recv, seed, "n_received");
        expect(n_dropped == expected_dropped(&c), seed, "n_dropped");
        expect_local(&o, &mine->o, seed, "dispatch");
        expect(rc == MOES_OK, seed, moes_ep_last_error(ep));
        expect_same(out, ref_out, out_bytes, seed, "combined out");
        free(out);
        free_local(&o);
        moes_ep_destroy(ep);
    }
    free_refs(refs);
    free(out_init);
    free(ref_out);
    free_case(&c);
}

#ifdef EP_TEST_NCCL
/* ------------------------------------------------------------------ */
/* Bounded mode on the device, with nothing waiting                  */
/* ------------------------------------------------------------------ */


/* A bounded case (the first from seed on) with no host output: eagerly
 * (graph 0) or captured once in a CUDA graph and replayed twice (graph
 * 1), every output compared with the reference; then, eagerly, an id out
 * of range: dispatch and combine return MOES_OK, moes_ep_synchronize
 * MOES_ERR_INVALID_ID, and every output is as it was. */
static void run_bounded_on_device(uint64_t seed, int graph)
{
    ep_case c;
    for (;; seed++) {
        draw_case(&c, seed);
        if (c.mode == MOES_EP_MODE_BOUNDED)
            break;
        free_case(&c);
    }
    rank_ref *refs = xalloc((int64_t)sizeof *refs * n_ranks);
    for (int r = 0; r < n_ranks; r++)
        reference_rank(&c, r, &refs[r]);
    rank_ref *mine = &refs[rank];
    size_t ys;
    moes_dtype_size(c.y_dtype, &ys);
    void *out_init, *ref_out;
    const int64_t out_bytes = combine_expected(&c, refs, seed, &out_init,
                                               &ref_out);
    void *out = xalloc(out_bytes);

    void *stream = NULL;
    if (cu.stream_create(&stream, CU_STREAM_NON_BLOCKING_))
        MPI_Abort(MPI_COMM_WORLD, 5);
    moes_ep_options opts;
    default_options(&c, &opts);
    moes_ep *ep = NULL;
    int rc = moes_ep_create_nccl(&ep, dev_ctx, &opts, nccl_comm, stream);
    expect(rc == MOES_OK, seed, moes_ep_last_error(NULL));
    if (rc != MOES_OK)
        MPI_Abort(MPI_COMM_WORLD, 5);

    local_out o, fresh;
    alloc_local(&c, mine->n_recv, &o);
    alloc_local(&c, mine->n_recv, &fresh);
    poison_local(&c, &o);
    poison_local(&c, &fresh);
    /* From the host ids, before they are swapped for device ones. */
    const int64_t want_dropped = expected_dropped(&c);
    device_run dr;
    device_run_open(&c, &o, mine->y, o.rows * c.H * (int64_t)ys, out_init,
                    out_bytes, &dr);
    rank_input *in = &c.in[rank];
    moes_scatter_args local;
    local_args(&c, &dr.od, &local);
    if (local.n_dropped)
        local.n_dropped = dr.local_dropped;
    moes_ep_dispatch_args d;
    dispatch_args(&c, &local, NULL, NULL, &d);
    d.n_dropped_device = dr.pairs_dropped;
    moes_ep_combine_args ca;
    moes_ep_combine_args_init(&ca);
    ca.flags = c.gather_flags;
    ca.y = dr.y;
    ca.y_rows = o.rows;
    ca.out = dr.out;

    int rd = moes_ep_dispatch(ep, &d);
    int rcb = moes_ep_combine(ep, &ca);
    expect(rd == MOES_OK && rcb == MOES_OK, seed, moes_ep_last_error(ep));
    rc = moes_ep_synchronize(ep);
    expect(rc == MOES_OK, seed, moes_ep_last_error(ep));
    if (graph) {
        /* The eager run above grew the workspace; capture from fresh
         * outputs, replay twice (out put back before each). */
        void *cg = NULL, *exec = NULL;
        upload_outputs(&o, out_init, out_bytes, &dr);
        expect(cu.begin_capture(stream, CU_CAPTURE_THREAD_LOCAL_) == 0, seed,
               "cuStreamBeginCapture");
        rd = moes_ep_dispatch(ep, &d);
        rcb = moes_ep_combine(ep, &ca);
        int ce = cu.end_capture(stream, &cg);
        expect(rd == MOES_OK && rcb == MOES_OK, seed, moes_ep_last_error(ep));
        expect(ce == 0 && cg, seed, "cuStreamEndCapture");
        ce = cg ? cu.instantiate(&exec, cg, 0) : 1;
        expect(ce == 0, seed, "cuGraphInstantiate");
        for (int rep = 0; exec && rep < 2; rep++) {
            upload_outputs(&o, out_init, out_bytes, &dr);
            expect(cu.launch(exec, stream) == 0, seed, "cuGraphLaunch");
            expect(cu.stream_sync(stream) == 0, seed, "cuStreamSynchronize");
        }
        rc = moes_ep_synchronize(ep);
        expect(rc == MOES_OK, seed, moes_ep_last_error(ep));
        if (exec)
            cu.exec_destroy(exec);
        if (cg)
            cu.graph_destroy(cg);
    }
    download_outputs(&o, out, out_bytes, &dr);
    int64_t pairs = -1;
    from_dev(&pairs, dr.pairs_dropped, 8);
    expect_local(&o, &mine->o, seed, graph ? "graph replay" : "no wait");
    expect_same(out, ref_out, out_bytes, seed,
                graph ? "combined out (graph replay)"
                      : "combined out (no wait)");
    expect(pairs == want_dropped, seed, "n_dropped_device");

    if (!graph && in->n > 0) {
        /* An id one past the last expert: found on the device. */
        upload_outputs(&fresh, out_init, out_bytes, &dr);
        int64_t ids_bytes = in->n * c.ids_stride * (int64_t)c.ids_size;
        void *bad = xalloc(ids_bytes);
        memcpy(bad, dr.host_in.ids, (size_t)ids_bytes);
        set_id(&c, bad, (in->n - 1) * c.ids_stride, c.El * n_ranks);
        if (moes_copy_to_backend(dev_ctx, in->ids, bad, ids_bytes))
            MPI_Abort(MPI_COMM_WORLD, 4);
        rd = moes_ep_dispatch(ep, &d);
        rcb = moes_ep_combine(ep, &ca);
        expect(rd == MOES_OK && rcb == MOES_OK, seed,
               "a bad id is not known to the host at once");
        rc = moes_ep_synchronize(ep);
        expect(rc == MOES_ERR_INVALID_ID, seed,
               "moes_ep_synchronize after a bad id");
        download_outputs(&o, out, out_bytes, &dr);
        expect_local(&o, &fresh, seed, "after a bad id");
        expect_same(out, out_init, out_bytes, seed,
                    "combined out after a bad id");
        free(bad);
    }

    device_run_close(&c, &dr);
    moes_ep_destroy(ep);
    moes_set_stream(dev_ctx, NULL);
    cu.stream_destroy(stream);
    free_local(&o);
    free_local(&fresh);
    free_refs(refs);
    free(out_init);
    free(ref_out);
    free(out);
    free_case(&c);
}
#endif

/* ------------------------------------------------------------------ */
/* A NULL out or opts on one rank: every rank fails, none waits       */
/* ------------------------------------------------------------------ */

/* This build's transport, over every rank of the job. */
static int create_on_job(moes_ep **out, moes_context *ctx,
                         const moes_ep_options *opts)
{
#ifdef EP_TEST_NCCL
    (void)ctx;
    return moes_ep_create_nccl(out, dev_ctx, opts, nccl_comm, NULL);
#else
    return moes_ep_create_mpi(out, ctx, opts, MPI_COMM_WORLD);
#endif
}

/* Rank 0 gives a NULL out (ep) or opts, the others good arguments. The
 * peers wait for rank 0 in the create's agreement: a rank 0 that
 * returned at once would leave them waiting there, or put their
 * collectives out of step with its own (the launcher's timeout ends a
 * run that hangs). Every rank must fail, rank 0 with its own message,
 * the others naming it, and a good create on every rank after it shows
 * that the communicator's collectives are still in step. With opts NULL
 * the NCCL create fails after setting the stream, so that the agreement
 * runs where its peers' does. */
static void null_on_rank0(moes_context *ctx, const moes_ep_options *opts,
                          int null_opts)
{
    const uint64_t seed = 0x0E1;
    const char *arg = null_opts ? "opts" : "ep";
    const int null_ep = rank == 0 && !null_opts;
    static char not_an_ep;
    moes_ep *ep = (moes_ep *)(void *)&not_an_ep; /* must become NULL */
    int rc = create_on_job(null_ep ? NULL : &ep, ctx,
                           rank == 0 && null_opts ? NULL : opts);
    char what[640], own[32];
    snprintf(what, sizeof what, "create with %s NULL on rank 0 returned "
             "%d (%s)", arg, rc, moes_ep_last_error(NULL));
    snprintf(own, sizeof own, "%s is NULL", arg);
    expect(rc == MOES_ERR_NULL_POINTER && (null_ep || ep == NULL) &&
               strstr(moes_ep_last_error(NULL), rank == 0 ? own : "rank 0"),
           seed, what);
    ep = NULL;
    rc = create_on_job(&ep, ctx, opts);
    expect(rc == MOES_OK && ep != NULL, seed, moes_ep_last_error(NULL));
    moes_ep_destroy(ep);
}

static void null_out(moes_context *ctx)
{
    ep_case c;
    draw_case(&c, 1);
    moes_ep_options opts;
    default_options(&c, &opts);
    free_case(&c);
    null_on_rank0(ctx, &opts, 0);
    null_on_rank0(ctx, &opts, 1);
}

/* ------------------------------------------------------------------ */
/* Bad input: an error on every rank, nothing written anywhere        */
/* ------------------------------------------------------------------ */

#ifndef EP_TEST_NCCL
/* A NULL pointer where ep is good: MOES_ERR_NULL_POINTER and ep's
 * message naming the argument. */
static void expect_null(const moes_ep *ep, int rc, const char *name)
{
    char what[640];
    snprintf(what, sizeof what, "NULL %s returned %d, message \"%s\"",
             name, rc, moes_ep_last_error(ep));
    char named[64];
    snprintf(named, sizeof named, "%s is NULL", name);
    expect(rc == MOES_ERR_NULL_POINTER &&
               strstr(moes_ep_last_error(ep), named) != NULL,
           0xBAD, what);
}

/* Every public function's NULL pointers, with ep good and with ep NULL
 * (nothing then holds a message: the status alone). The dispatches and
 * combines are collective, and every rank gives the same NULL. */
static void null_arguments(moes_ep *ep, const ep_case *c)
{
    const uint64_t seed = 0xBAD;
    int64_t capacity = -1;
    const int64_t per_pair =
        c->mode == MOES_EP_MODE_BOUNDED ? c->B : c->max_tokens;
    expect_null(ep, moes_ep_capacity(ep, MOES_LAYOUT_CONTIGUOUS, 1, NULL),
                "capacity");
    expect(moes_ep_capacity(ep, MOES_LAYOUT_CONTIGUOUS, 1, &capacity) ==
                   MOES_OK && capacity >= per_pair * n_ranks,
           seed, moes_ep_last_error(ep));
    expect_null(ep, moes_ep_get_stats(ep, NULL), "stats");
    moes_ep_stats stats = {.struct_size = sizeof stats};
    expect(moes_ep_get_stats(ep, &stats) == MOES_OK && stats.rank == rank &&
               stats.n_ranks == n_ranks,
           seed, moes_ep_last_error(ep));
    expect_null(ep, moes_ep_dispatch(ep, NULL), "args");
    moes_ep_dispatch_args d;
    dispatch_args(c, NULL, NULL, NULL, &d);
    expect_null(ep, moes_ep_dispatch(ep, &d), "args->local");
    expect_null(ep, moes_ep_combine(ep, NULL), "args");

    moes_ep_combine_args ca;
    moes_ep_combine_args_init(&ca);
    expect(moes_ep_capacity(NULL, MOES_LAYOUT_CONTIGUOUS, 1, &capacity) ==
                   MOES_ERR_NULL_POINTER &&
               moes_ep_get_stats(NULL, &stats) == MOES_ERR_NULL_POINTER &&
               moes_ep_dispatch(NULL, &d) == MOES_ERR_NULL_POINTER &&
               moes_ep_combine(NULL, &ca) == MOES_ERR_NULL_POINTER &&
               moes_ep_synchronize(NULL) == MOES_ERR_NULL_POINTER &&
               moes_ep_options_init(NULL) == MOES_ERR_NULL_POINTER &&
               moes_ep_dispatch_args_init(NULL) == MOES_ERR_NULL_POINTER &&
               moes_ep_combine_args_init(NULL) == MOES_ERR_NULL_POINTER &&
               moes_ep_destroy(NULL) == MOES_OK,
           seed, "a NULL ep or args did not return MOES_ERR_NULL_POINTER");
}

static void bad_inputs(moes_context *ctx)
{
    const uint64_t seed = 0xBAD;
    ep_case c;
    /* A case where every rank sends something everywhere. */
    for (uint64_t s = 1;; s++) {
        draw_case(&c, s);
        int ok = c.layout != MOES_LAYOUT_MASKED && c.max_tokens > 0 &&
                 (!EP_QUEUED_ON_HOST || c.mode == MOES_EP_MODE_BOUNDED);
        for (int r = 0; ok && r < n_ranks; r++)
            ok = c.in[r].n > 0;
        if (ok)
            break;
        free_case(&c);
    }
    moes_ep_options opts;
    default_options(&c, &opts);
    moes_ep *ep = NULL;
    char what[128];

    /* The communicator's size wrong, on every rank. */
    opts.n_ranks = n_ranks + 1;
    int rc = moes_ep_create_mpi(&ep, ctx, &opts, MPI_COMM_WORLD);
    expect(rc == MOES_ERR_INVALID_ARGUMENT && !ep, seed,
           "create with n_ranks = size + 1 succeeded");
    /* One rank disagrees on the hidden size: every rank fails. */
    default_options(&c, &opts);
    if (rank == n_ranks - 1)
        opts.hidden++;
    rc = moes_ep_create_mpi(&ep, ctx, &opts, MPI_COMM_WORLD);
    expect(n_ranks == 1 ? rc == MOES_OK : rc == MOES_ERR_INVALID_ARGUMENT,
           seed, "create with one rank's hidden size different");
    moes_ep_destroy(ep);
    ep = NULL;
    /* max_tokens sizes the exact mode's buffers and moes_ep_capacity:
     * one rank with another fails every rank too. */
    default_options(&c, &opts);
    if (rank == n_ranks - 1)
        opts.max_tokens++;
    rc = moes_ep_create_mpi(&ep, ctx, &opts, MPI_COMM_WORLD);
    expect(n_ranks == 1 ? rc == MOES_OK : rc == MOES_ERR_INVALID_ARGUMENT,
           seed, "create with one rank's max_tokens different");
    moes_ep_destroy(ep);
    ep = NULL;
    /* One rank with a bad size of its own: its status, on every rank
     * (INT64_MIN, which the agreement of the options takes whole). */
    default_options(&c, &opts);
    if (rank == 0)
        opts.top_k = 0;
    rc = moes_ep_create_mpi(&ep, ctx, &opts, MPI_COMM_WORLD);
    expect(rc == MOES_ERR_INVALID_SIZE && !ep, seed,
           "create with top_k 0 on rank 0");
    default_options(&c, &opts);
    if (rank == 0)
        opts.experts_per_rank = INT64_MIN;
    rc = moes_ep_create_mpi(&ep, ctx, &opts, MPI_COMM_WORLD);
    expect(rc == MOES_ERR_INVALID_SIZE && !ep, seed,
           "create with experts_per_rank INT64_MIN on rank 0");

    default_options(&c, &opts);
    rc = moes_ep_create_mpi(&ep, ctx, &opts, MPI_COMM_WORLD);
    expect(rc == MOES_OK, seed, moes_ep_last_error(NULL));
    if (rc != MOES_OK) {
        free_case(&c);
        return;
    }
    moes_ep_combine_args ca;
    moes_ep_combine_args_init(&ca);
    uint8_t dummy[8];
    ca.y = dummy;
    ca.out = dummy;
    rc = moes_ep_combine(ep, &ca);
    expect(rc == MOES_ERR_INVALID_ARGUMENT, seed,
           "combine before any dispatch");
    null_arguments(ep, &c);

    local_out o, fresh;
    alloc_local(&c, c.max_tokens * n_ranks, &o);
    alloc_local(&c, c.max_tokens * n_ranks, &fresh);
    poison_local(&c, &fresh);
    /* The queued path tells a peer of a failure through its markers: a
     * bad id and a bad argument of the caller's layout have the same
     * status on every rank there, a bad size or capacity is the failing
     * rank's alone (found after the tokens travel, by that rank's own
     * scatter). */
    for (int fault = 0; fault < 5; fault++) {
        if (EP_QUEUED_ON_HOST && fault != 0 && fault != 3)
            continue;
        poison_local(&c, &o);
        moes_scatter_args local;
        local_args(&c, &o, &local);
        int64_t n_received = -7, n_dropped = -7;
        moes_ep_dispatch_args d;
        dispatch_args(&c, &local, &n_received, &n_dropped, &d);
        int faulty = n_ranks - 1;
        int expected;
        void *saved = xalloc(c.in[faulty].n * c.ids_stride * 8);
        if (fault == 0) {
            /* An id one past the last expert on the last rank. */
            memcpy(saved, c.in[faulty].ids,
                   (size_t)(c.in[faulty].n * c.ids_stride) * c.ids_size);
            set_id(&c, c.in[faulty].ids, (c.in[faulty].n - 1) * c.ids_stride,
                   c.El * n_ranks);
            expected = MOES_ERR_INVALID_ID;
        } else if (fault == 1) {
            if (rank == faulty)
                d.n_tokens = c.max_tokens + 1;
            expected = MOES_ERR_INVALID_SIZE;
        } else if (fault == 2) {
            /* Every token everywhere is sent somewhere, so a layout of no
             * rows cannot hold what some rank receives. */
            for (int r = 0; r < n_ranks; r++)
                for (int64_t t = 0; t < c.in[r].n; t++)
                    set_id(&c, c.in[r].ids, t * c.ids_stride, 0);
            if (rank == 0)
                local.capacity = 0;
            expected = MOES_ERR_CAPACITY;
        } else if (fault == 3) {
            /* The caller's layout wrong on rank 0 alone: found before any
             * rank sends a token. */
            if (rank == 0)
                local.out_stride = c.H - 1;
            expected = MOES_ERR_INVALID_STRIDE;
        } else {
            /* An alignment whose blocks no capacity holds (their sum
             * would pass INT64_MAX where two experts receive). */
            for (int r = 0; r < n_ranks; r++)
                for (int64_t t = 0; t < c.in[r].n; t++)
                    set_id(&c, c.in[r].ids, t * c.ids_stride,
                           c.El > 1 ? t % 2 : 0);
            if (rank == 0)
                local.alignment = (int64_t)1 << 62;
            expected = MOES_ERR_CAPACITY;
        }
        rc = moes_ep_dispatch(ep, &d);
        snprintf(what, sizeof what, "bad dispatch %d returned %d, not %d",
                 fault, rc, expected);
        expect(rc == expected, seed, what);
        snprintf(what, sizeof what, "bad dispatch %d wrote an output", fault);
        expect(n_received == -7 && n_dropped == -7 &&
                   !memcmp(o.out, fresh.out, (size_t)o.out_bytes) &&
                   !memcmp(o.m_indices, fresh.m_indices, (size_t)o.m_bytes) &&
                   !memcmp(o.end, fresh.end, (size_t)o.index_bytes) &&
                   !memcmp(o.counts, fresh.counts, (size_t)o.index_bytes),
               seed, what);
        if (fault == 0)
            memcpy(c.in[faulty].ids, saved,
                   (size_t)(c.in[faulty].n * c.ids_stride) * c.ids_size);
        free(saved);
        /* A failed dispatch leaves nothing to combine. */
        rc = moes_ep_combine(ep, &ca);
        expect(rc == MOES_ERR_INVALID_ARGUMENT, seed,
               "combine after a failed dispatch");
    }
    /* A combine whose out is misaligned on rank 0 alone: every rank
     * fails before a partial travels, and no rank's out is written. */
    {
        poison_local(&c, &o);
        moes_scatter_args local;
        local_args(&c, &o, &local);
        moes_ep_dispatch_args d;
        dispatch_args(&c, &local, NULL, NULL, &d);
        rc = moes_ep_dispatch(ep, &d);
        expect(rc == MOES_OK, seed, moes_ep_last_error(ep));
        size_t os;
        moes_dtype_size(c.out_dtype, &os);
        void *y = make_y(&c, rank, o.rows);
        const int64_t out_bytes = (c.in[rank].n * c.H + 1) * (int64_t)os;
        unsigned char *out = xalloc(out_bytes), *before = xalloc(out_bytes);
        memset(out, 0x5A, (size_t)out_bytes);
        memcpy(before, out, (size_t)out_bytes);
        moes_ep_combine_args cb;
        moes_ep_combine_args_init(&cb);
        cb.y = y;
        cb.y_rows = o.rows;
        cb.out = rank == 0 ? out + 1 : out; /* elements of 2 or 4 bytes */
        rc = moes_ep_combine(ep, &cb);
        snprintf(what, sizeof what,
                 "combine with rank 0's out misaligned returned %d", rc);
        expect(rc == MOES_ERR_MISALIGNED, seed, what);
        expect(!memcmp(out, before, (size_t)out_bytes), seed,
               "a failed combine wrote out");
        free(y);
        free(out);
        free(before);
    }
    free_local(&o);
    free_local(&fresh);
    moes_ep_destroy(ep);
    free_case(&c);

    /* NCCL over a missing communicator: refused on every rank, no wait. */
    rc = moes_ep_create_nccl(&ep, ctx, &opts, NULL, NULL);
    expect(rc == MOES_ERR_NULL_POINTER && !ep, seed,
           "moes_ep_create_nccl with no communicator");
}
#endif

#ifdef EP_TEST_NCCL
/* This rank's GPU (device `rank`) and its communicator. */
static void open_gpu(void)
{
    moes_context_options o;
    moes_context_options_init(&o);
    o.backend = MOES_BACKEND_CUDA;
    o.cuda_device = rank;
    if (moes_context_create(&dev_ctx, &o) != MOES_OK) {
        printf("no usable GPU %d (%s): skipped\n", rank,
               moes_last_error(NULL));
        exit(77);
    }
    nccl_comm = nccl_comms[rank];
}
#endif

typedef struct suite_args {
    int argc;
    char **argv;
} suite_args;

/* One rank's part of the suite; returns its exit status. */
static int suite(void *p)
{
    const suite_args *sa = p;
    int argc = sa->argc;
    char **argv = sa->argv;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    if (n_ranks == 0) /* MPI: the size of the job (threads: set by main) */
        MPI_Comm_size(MPI_COMM_WORLD, &n_ranks);
    if (n_ranks > MAX_RANKS) {
        if (rank == 0)
            fprintf(stderr, "at most %d ranks\n", MAX_RANKS);
        return 1;
    }
    long cases = argc > 1 ? atol(argv[1]) : 150;
    uint64_t first = argc > 2 ? strtoull(argv[2], NULL, 0) : 1;

    moes_context_options copts;
    moes_context_options_init(&copts);
    copts.backend = MOES_BACKEND_CPU;
    copts.cpu_threads = 1;
    moes_context *ctx = NULL;
    if (moes_context_create(&ctx, &copts) != MOES_OK) {
        fprintf(stderr, "moes_context_create: %s\n", moes_last_error(NULL));
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
#ifdef EP_TEST_NCCL
    open_gpu();
#endif
    for (long i = 0; i < cases; i++)
        run_case(ctx, first + (uint64_t)i);
    null_out(ctx);
#ifdef EP_TEST_NCCL
    long bounded_cases = cases < 40 ? cases : 40;
    open_graph_api(&cu, rank);
    for (long i = 0; i < bounded_cases; i++) {
        run_bounded_on_device(first + 1000u * (uint64_t)i, 0);
        run_bounded_on_device(first + 1000u * (uint64_t)i, 1);
    }
    moes_ep *ep = NULL;
    moes_ep_options bad;
    moes_ep_options_init(&bad);
    int rc = moes_ep_create_nccl(&ep, dev_ctx, &bad, NULL, NULL);
    expect(rc == MOES_ERR_NULL_POINTER && !ep, 0,
           "moes_ep_create_nccl with no communicator");
    moes_context_destroy(dev_ctx);
#else
    bad_inputs(ctx);
#endif
    moes_context_destroy(ctx);

    long totals[2] = {checks, failures};
    MPI_Allreduce(MPI_IN_PLACE, totals, 2, MPI_LONG, MPI_SUM, MPI_COMM_WORLD);
    if (rank == 0)
        printf("ep suite%s, %d rank%s: %ld cases, %ld checks, %ld failed\n",
               EP_QUEUED_ON_HOST ? " (bounded mode queued)" : "", n_ranks,
               n_ranks > 1 ? "s" : "", cases, totals[0], totals[1]);
    return totals[1] == 0 ? 0 : 1;
}

int main(int argc, char **argv)
{
    suite_args sa = {argc, argv};
    MPI_Init(&argc, &argv);
#ifdef EP_TEST_NCCL
    /* MOES_EP_GPUS ranks, one GPU and one thread each (default 1). */
    const char *gpus = getenv("MOES_EP_GPUS");
    int n = gpus && *gpus ? atoi(gpus) : 1;
    if (n < 1 || n > MAX_RANKS) {
        fprintf(stderr, "MOES_EP_GPUS = %s: 1 to %d\n", gpus, MAX_RANKS);
        return 2;
    }
    open_nccl(n, nccl_comms);
    n_ranks = n;
    int status = mpi_threads_run(n, suite, &sa);
#else
    int status = suite(&sa);
#endif
    MPI_Finalize();
    return status;
}
