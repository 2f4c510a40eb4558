/* SPDX-License-Identifier: MIT */
/*
 * error_chain.c - a deferred data error stops the calls queued after it.
 *
 * On CUDA a scatter that meets a bad id returns MOES_OK and records the
 * error on the device; until moes_synchronize reports it, every count,
 * distinct-experts, scatter and gather queued after it on the context
 * must write nothing (the ep layer's markers rely on it: a peer's failure
 * stops a rank's stream the same way). For a decode-sized call (the
 * one-launch scatter) and a prefill-sized one (the grid path), this
 * queues a scatter with one bad id, then valid calls of each kind into
 * canary-filled outputs, and checks that moes_synchronize returns
 * MOES_ERR_INVALID_ID and that every output still holds the canary; then
 * the same valid calls again, which must write (so that the first check
 * could have failed).
 *
 *   error_chain     prints one line per size and a last line
 *                   "error_chain: <n> checks, <n> failed"
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "moescatter.h"
#include "test_random.h"

#define CANARY 0xA5

static int checks, failed;

static void check(int ok, const char *what, int64_t n)
{
    checks++;
    if (!ok) {
        failed++;
        printf("FAIL (%lld tokens): %s\n", (long long)n, what);
    }
}

static void stop(moes_context *ctx)
{
    fprintf(stderr, "error_chain: %s\n", moes_last_error(ctx));
    exit(2);
}

/* Device memory of bytes, filled with the canary. */
static void *dev(moes_context *ctx, int64_t bytes)
{
    void *p = NULL;
    if (moes_malloc(ctx, &p, bytes) != MOES_OK ||
        moes_fill(ctx, p, CANARY, bytes) != MOES_OK)
        stop(ctx);
    return p;
}

/* Device memory holding a copy of bytes of host. */
static void *dev_copy(moes_context *ctx, const void *host, int64_t bytes)
{
    void *p = dev(ctx, bytes);
    if (moes_copy_to_backend(ctx, p, host, bytes) != MOES_OK)
        stop(ctx);
    return p;
}

/* Whether bytes of device memory still hold the canary. */
static int untouched(moes_context *ctx, const void *p, int64_t bytes)
{
    unsigned char *h = malloc((size_t)bytes);
    int ok = h && moes_copy_to_host(ctx, h, p, bytes) == MOES_OK;
    for (int64_t i = 0; ok && i < bytes; i++)
        ok = h[i] == CANARY;
    free(h);
    return ok;
}

typedef struct outputs {
    void *counts, *distinct, *out, *out_index, *m_indices, *sums;
    int64_t counts_bytes, distinct_bytes, out_bytes, index_bytes, m_bytes,
        sums_bytes;
} outputs;

/* A count, a distinct-experts, a scatter (s with o's outputs) and a
 * gather of s's rows through gather_index, all valid, into o; returns the
 * first status that is not MOES_OK. */
static int valid_calls(moes_context *ctx, const moes_routing *r,
                       const moes_scatter_args *s, const void *gather_index,
                       const outputs *o, int64_t n, int64_t k, int64_t h)
{
    int st = moes_count(ctx, r, o->counts, MOES_DTYPE_INT64);
    if (st == MOES_OK)
        st = moes_distinct_experts(ctx, r, o->distinct, MOES_DTYPE_INT32,
                                   0);
    moes_scatter_args a = *s;
    a.out = o->out;
    a.out_index = o->out_index;
    a.m_indices = o->m_indices;
    if (st == MOES_OK)
        st = moes_scatter(ctx, r, &a);
    moes_gather_args g;
    moes_gather_args_init(&g);
    g.n_tokens = n;
    g.top_k = k;
    g.hidden = h;
    g.y = s->x;        /* any rows: x's n rows, out_index below n */
    g.y_rows = n;
    g.out_index = gather_index;
    g.out = o->sums;
    if (st == MOES_OK)
        st = moes_gather(ctx, &g);
    return st;
}

static void run(moes_context *ctx, int64_t n)
{
    const int64_t k = 8, e = 256, h = 512, alignment = 128;
    int64_t cap;
    if (moes_scatter_capacity(ctx, MOES_LAYOUT_CONTIGUOUS, n, k, e,
                              alignment, &cap) != MOES_OK)
        stop(ctx);
    int32_t *ids = malloc((size_t)(n * k) * 4);
    int32_t *index = malloc((size_t)(n * k) * 4);
    uint16_t *x = malloc((size_t)(n * h) * 2);
    uint64_t state = 0x9E3779B97F4A7C15u ^ (uint64_t)n;
    for (int64_t i = 0; i < n * k; i++) {
        ids[i] = (int32_t)(test_xorshift(&state) % (uint64_t)e);
        index[i] = (int32_t)(test_xorshift(&state) % (uint64_t)n); /* x */
    }
    for (int64_t i = 0; i < n * h; i++)
        x[i] = (uint16_t)(0x3C00 + (i * 37) % 1024);
    void *d_ids = dev_copy(ctx, ids, n * k * 4);
    void *d_index = dev_copy(ctx, index, n * k * 4);
    void *d_x = dev_copy(ctx, x, n * h * 2);
    ids[(n - 1) * k + 3] = (int32_t)e; /* one past the last expert */
    void *d_bad = dev_copy(ctx, ids, n * k * 4);

    outputs o = {0};
    o.counts_bytes = e * 8;
    o.distinct_bytes = n * k * 4;
    o.out_bytes = cap * h * 2;
    o.index_bytes = n * k * 4;
    o.m_bytes = cap * 4;
    o.sums_bytes = n * h * 2;
    o.counts = dev(ctx, o.counts_bytes);
    o.distinct = dev(ctx, o.distinct_bytes);
    o.out = dev(ctx, o.out_bytes);
    o.out_index = dev(ctx, o.index_bytes);
    o.m_indices = dev(ctx, o.m_bytes);
    o.sums = dev(ctx, o.sums_bytes);
    void *bad_out = dev(ctx, o.out_bytes),
         *bad_index = dev(ctx, o.index_bytes);
    void *bad_m = dev(ctx, o.m_bytes);

    moes_routing r;
    moes_routing_init(&r);
    r.n_tokens = n;
    r.top_k = k;
    r.n_experts = e;
    r.ids = d_bad;
    moes_scatter_args s;
    moes_scatter_args_init(&s);
    s.alignment = alignment;
    s.capacity = cap;
    s.x = d_x;
    s.hidden = h;
    s.out = bad_out;
    s.out_index = bad_index;
    s.m_indices = bad_m;
    check(moes_scatter(ctx, &r, &s) == MOES_OK, "the bad scatter's own "
          "status (deferred)", n);
    r.ids = d_ids;
    check(valid_calls(ctx, &r, &s, d_index, &o, n, k, h) == MOES_OK,
          "the valid calls after it returned an error", n);
    check(moes_synchronize(ctx) == MOES_ERR_INVALID_ID,
          "moes_synchronize did not report the bad id", n);
    check(strstr(moes_last_error(ctx), "ids[") != NULL,
          "the message does not name the id", n);
    check(untouched(ctx, bad_out, o.out_bytes) &&
              untouched(ctx, bad_index, o.index_bytes) &&
              untouched(ctx, bad_m, o.m_bytes),
          "the bad scatter wrote", n);
    check(untouched(ctx, o.counts, o.counts_bytes), "a count after it wrote",
          n);
    check(untouched(ctx, o.distinct, o.distinct_bytes),
          "a distinct-experts call after it wrote", n);
    check(untouched(ctx, o.out, o.out_bytes) &&
              untouched(ctx, o.out_index, o.index_bytes) &&
              untouched(ctx, o.m_indices, o.m_bytes),
          "a scatter after it wrote", n);
    check(untouched(ctx, o.sums, o.sums_bytes), "a gather after it wrote", n);

    /* Reported and cleared: the same calls write. */
    check(valid_calls(ctx, &r, &s, d_index, &o, n, k, h) == MOES_OK &&
              moes_synchronize(ctx) == MOES_OK,
          "the valid calls failed after the report", n);
    check(!untouched(ctx, o.counts, o.counts_bytes) &&
              !untouched(ctx, o.distinct, o.distinct_bytes) &&
              !untouched(ctx, o.out_index, o.index_bytes) &&
              !untouched(ctx, o.sums, o.sums_bytes),
          "the valid calls wrote nothing after the report", n);
    printf("error_chain: %lld tokens checked\n", (long long)n);

    void *all[] = {d_ids,      d_bad,   d_x,         d_index,    o.counts,
                   o.distinct, o.out,   o.out_index, o.m_indices, o.sums,
                   bad_out,    bad_index, bad_m};
    for (size_t i = 0; i < sizeof all / sizeof *all; i++)
        moes_free(ctx, all[i]);
    free(ids);
    free(index);
    free(x);
}

int main(void)
{
    moes_context *ctx;
    moes_context_options opts;
    moes_context_options_init(&opts);
    opts.backend = MOES_BACKEND_CUDA;
    if (moes_context_create(&ctx, &opts) != MOES_OK) {
        fprintf(stderr, "error_chain: no CUDA context: %s\n",
                moes_last_error(NULL));
        return 2;
    }
    run(ctx, 16);   /* one launch */
    run(ctx, 4096); /* the grid path */
    checks++;
    if (moes_context_destroy(ctx) != MOES_OK) {
        failed++;
        printf("FAIL: moes_context_destroy\n");
    }
    printf("error_chain: %d checks, %d failed\n", checks, failed);
    return failed != 0;
}
