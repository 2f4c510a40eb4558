/* SPDX-License-Identifier: MIT */
/*
 * psum_grouped.c - the grouped layout in the form that grouped GEMMs
 * taking the end of each group's real rows want, and the same routing
 * without copying a row.
 *
 * 1. A grouped scatter with MOES_SCATTER_UNPADDED_END: expert e's rows
 *    start at expert_start[e], a multiple of the alignment, and end at
 *    expert_end[e] = expert_start[e] + counts[e], before the padding of
 *    its block. row_source says which choice t*K + k each row holds (-1
 *    on padding). The program prints each expert's [start, end) and
 *    checks it against counts, row_source against the routing, and each
 *    copied row against its token.
 * 2. The same scatter index-only (x, x_scales, out and out_scales NULL),
 *    as for a GEMM that reads x in place through row_source: no row is
 *    copied, and every index output must equal the first call's.
 *
 * Every buffer comes from moes_malloc, so the program runs unchanged on
 * the CPU and on CUDA. Exit status: 0 when everything matches, 1 on a
 * mismatch or a library error.
 *
 * Build: cc psum_grouped.c $(pkg-config --cflags --libs --static moescatter)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "moescatter.h"

enum { N_TOKENS = 48, HIDDEN = 32, N_EXPERTS = 5, TOP_K = 2, ALIGN = 8 };

/* The value row_source holds on rows without a choice. */
#define PAD (-1)

/* Stops the program with the library's message when a call fails. */
static void check(moes_context *ctx, int status, const char *what)
{
    if (status != MOES_OK) {
        fprintf(stderr, "psum_grouped: %s: %s: %s\n", what,
                moes_strerror(status), moes_last_error(ctx));
        exit(1);
    }
}

static void *backend_alloc(moes_context *ctx, int64_t bytes)
{
    void *p = NULL;
    check(ctx, moes_malloc(ctx, &p, bytes), "moes_malloc");
    return p;
}

/* The index outputs of one scatter, in backend memory. */
typedef struct index_outputs {
    int32_t *out_index;  /* [N_TOKENS][TOP_K]   */
    int32_t *counts;     /* [N_EXPERTS]         */
    int32_t *start;      /* [N_EXPERTS]         */
    int32_t *end;        /* [N_EXPERTS]         */
    int32_t *row_source; /* [capacity]          */
} index_outputs;

static void alloc_outputs(moes_context *ctx, index_outputs *o,
                          int64_t capacity)
{
    o->out_index = backend_alloc(ctx, N_TOKENS * TOP_K * 4);
    o->counts = backend_alloc(ctx, N_EXPERTS * 4);
    o->start = backend_alloc(ctx, N_EXPERTS * 4);
    o->end = backend_alloc(ctx, N_EXPERTS * 4);
    o->row_source = backend_alloc(ctx, capacity * 4);
}

static void free_outputs(moes_context *ctx, index_outputs *o)
{
    moes_free(ctx, o->out_index);
    moes_free(ctx, o->counts);
    moes_free(ctx, o->start);
    moes_free(ctx, o->end);
    moes_free(ctx, o->row_source);
}

/* A grouped scatter of the routing into o, with expert_end at the end of
 * the real rows; x and out NULL make it index-only. */
static void scatter(moes_context *ctx, const moes_routing *routing,
                    int64_t capacity, const float *x, float *out,
                    const index_outputs *o)
{
    moes_scatter_args a;
    moes_scatter_args_init(&a);
    a.layout = MOES_LAYOUT_GROUPED;
    a.alignment = ALIGN;
    a.capacity = capacity;
    a.flags = MOES_SCATTER_UNPADDED_END;
    if (x) {
        a.x = x;
        a.x_dtype = MOES_DTYPE_FP32;
        a.hidden = HIDDEN;
        a.out = out;
    }
    a.out_index = o->out_index;
    a.counts = o->counts;
    a.expert_start = o->start;
    a.expert_end = o->end;
    a.row_source = o->row_source;
    a.row_source_pad = PAD;
    check(ctx, moes_scatter(ctx, routing, &a), "moes_scatter");
    /* On CUDA a bad id or capacity would only show here. */
    check(ctx, moes_synchronize(ctx), "moes_synchronize");
}

/* Copies n int32 from backend memory into a new host array. */
static int32_t *to_host(moes_context *ctx, const int32_t *src, int64_t n)
{
    int32_t *h = malloc((size_t)n * sizeof *h);
    if (!h) {
        fprintf(stderr, "psum_grouped: out of memory\n");
        exit(1);
    }
    check(ctx, moes_copy_to_host(ctx, h, src, n * 4), "moes_copy_to_host");
    return h;
}

/* Compares one index output of the index-only call with the first
 * call's; returns the number of differing entries. */
static int same_entries(moes_context *ctx, const char *name,
                        const int32_t *with_rows, const int32_t *index_only,
                        int64_t n)
{
    int32_t *a = to_host(ctx, with_rows, n), *b = to_host(ctx, index_only, n);
    int differ = 0;
    for (int64_t i = 0; i < n; i++) {
        if (a[i] != b[i] && differ++ < 3)
            fprintf(stderr, "%s[%lld]: %d with rows, %d index-only\n", name,
                    (long long)i, a[i], b[i]);
    }
    free(a);
    free(b);
    return differ;
}

int main(void)
{
    static float x[N_TOKENS * HIDDEN];
    static int32_t ids[N_TOKENS * TOP_K];
    int expected_counts[N_EXPERTS] = {0};
    moes_context *ctx;
    moes_context_info info;
    moes_routing routing;
    index_outputs rows_call, bare_call;
    int64_t capacity;
    float *d_x, *d_out, *out;
    int32_t *d_ids, *out_index, *counts, *start, *end, *row_source;
    unsigned seed = 2024;
    int wrong = 0;

    /* Tokens: row t holds t + h / 1000. Routing: experts drawn at random;
     * expert 3 is held by another rank (-1 here), so it gets no rows. */
    for (int t = 0; t < N_TOKENS; t++)
        for (int h = 0; h < HIDDEN; h++)
            x[t * HIDDEN + h] = (float)t + (float)h / 1000.0f;
    for (int i = 0; i < N_TOKENS * TOP_K; i++) {
        seed = seed * 1103515245u + 12345u;
        ids[i] = (int32_t)((seed >> 16) % N_EXPERTS);
        if (ids[i] == 3)
            ids[i] = -1;
        else
            expected_counts[ids[i]]++;
    }

    if (moes_context_create(&ctx, NULL) != MOES_OK) {
        fprintf(stderr, "psum_grouped: %s\n", moes_last_error(NULL));
        return 1;
    }
    info.struct_size = sizeof info;
    check(ctx, moes_context_get_info(ctx, &info), "moes_context_get_info");
    check(ctx, moes_scatter_capacity(ctx, MOES_LAYOUT_GROUPED, N_TOKENS,
                                     TOP_K, N_EXPERTS, ALIGN, &capacity),
          "moes_scatter_capacity");

    d_x = backend_alloc(ctx, sizeof x);
    d_ids = backend_alloc(ctx, sizeof ids);
    d_out = backend_alloc(ctx, capacity * HIDDEN * 4);
    alloc_outputs(ctx, &rows_call, capacity);
    alloc_outputs(ctx, &bare_call, capacity);
    check(ctx, moes_copy_to_backend(ctx, d_x, x, sizeof x), "copy x");
    check(ctx, moes_copy_to_backend(ctx, d_ids, ids, sizeof ids), "copy ids");

    moes_routing_init(&routing);
    routing.n_tokens = N_TOKENS;
    routing.top_k = TOP_K;
    routing.ids = d_ids;
    routing.n_experts = N_EXPERTS;

    /* 1. With rows. */
    scatter(ctx, &routing, capacity, d_x, d_out, &rows_call);
    out_index = to_host(ctx, rows_call.out_index, N_TOKENS * TOP_K);
    counts = to_host(ctx, rows_call.counts, N_EXPERTS);
    start = to_host(ctx, rows_call.start, N_EXPERTS);
    end = to_host(ctx, rows_call.end, N_EXPERTS);
    row_source = to_host(ctx, rows_call.row_source, capacity);
    out = malloc((size_t)capacity * HIDDEN * sizeof *out);
    if (!out) {
        fprintf(stderr, "psum_grouped: out of memory\n");
        return 1;
    }
    check(ctx, moes_copy_to_host(ctx, out, d_out,
                                 capacity * HIDDEN * (int64_t)sizeof *out),
          "copy out");

    printf("psum_grouped: backend %s (%s): %d tokens, top-%d of %d experts, "
           "alignment %d, %lld rows\n",
           info.backend == MOES_BACKEND_CUDA ? "cuda" : "cpu", info.reason,
           N_TOKENS, TOP_K, N_EXPERTS, ALIGN, (long long)capacity);
    {
        int64_t next_start = 0; /* where the next expert's block begins */
        for (int e = 0; e < N_EXPERTS; e++) {
            int64_t block = (counts[e] + ALIGN - 1) / ALIGN * ALIGN;
            printf("  expert %d: real rows [%d, %d), %d of them; block of "
                   "%lld rows\n", e, start[e], end[e], counts[e],
                   (long long)block);
            if (counts[e] != expected_counts[e] || start[e] != next_start ||
                end[e] - start[e] != counts[e]) {
                fprintf(stderr, "expert %d: [%d, %d) with counts %d; "
                        "expected counts %d from row %lld\n", e, start[e],
                        end[e], counts[e], expected_counts[e],
                        (long long)next_start);
                wrong++;
            }
            next_start += block;
        }
    }

    /* Every real row holds a choice of its expert, in ascending t*K + k
     * order, with its token's data; every other row holds the pad. */
    for (int64_t r = 0, e = 0; r < capacity; r++) {
        while (e < N_EXPERTS - 1 && r >= start[e + 1])
            e++;
        if (r < start[e] || r >= end[e]) {
            if (row_source[r] != PAD && wrong++ < 5)
                fprintf(stderr, "row_source[%lld] = %d on a row without a "
                        "choice, expected %d\n", (long long)r, row_source[r],
                        PAD);
            continue;
        }
        if (row_source[r] < 0 || row_source[r] >= N_TOKENS * TOP_K ||
            ids[row_source[r]] != e ||
            out_index[row_source[r]] != r ||
            (r > start[e] && row_source[r] <= row_source[r - 1]) ||
            memcmp(&out[r * HIDDEN], &x[row_source[r] / TOP_K * HIDDEN],
                   HIDDEN * sizeof *out) != 0) {
            if (wrong++ < 5)
                fprintf(stderr, "row %lld of expert %lld: row_source %d is "
                        "not the next choice of this expert, or the row is "
                        "not its token's\n", (long long)r, (long long)e,
                        row_source[r]);
        }
    }

    /* Choices that go nowhere have no row. */
    for (int i = 0; i < N_TOKENS * TOP_K; i++) {
        if (ids[i] < 0 && out_index[i] != -1 && wrong++ < 5)
            fprintf(stderr, "out_index[%d][%d] = %d for id -1\n",
                    i / TOP_K, i % TOP_K, out_index[i]);
    }

    /* 2. Index-only: the same routing, no rows. */
    scatter(ctx, &routing, capacity, NULL, NULL, &bare_call);
    wrong += same_entries(ctx, "out_index", rows_call.out_index,
                          bare_call.out_index, N_TOKENS * TOP_K);
    wrong += same_entries(ctx, "counts", rows_call.counts, bare_call.counts,
                          N_EXPERTS);
    wrong += same_entries(ctx, "expert_start", rows_call.start,
                          bare_call.start, N_EXPERTS);
    wrong += same_entries(ctx, "expert_end", rows_call.end, bare_call.end,
                          N_EXPERTS);
    wrong += same_entries(ctx, "row_source", rows_call.row_source,
                          bare_call.row_source, capacity);

    printf("psum_grouped: %s\n",
           wrong ? "WRONG"
                 : "each expert's real rows match counts, and the "
                   "index-only scatter gives the same indices");

    moes_free(ctx, d_x);
    moes_free(ctx, d_ids);
    moes_free(ctx, d_out);
    free_outputs(ctx, &rows_call);
    free_outputs(ctx, &bare_call);
    moes_context_destroy(ctx);
    free(out_index);
    free(counts);
    free(start);
    free(end);
    free(row_source);
    free(out);
    return wrong ? 1 : 0;
}
