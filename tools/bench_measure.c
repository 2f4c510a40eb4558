/* SPDX-License-Identifier: MIT */
/*
 * bench_measure.c - timing whole library calls with the library's own
 * timestamps (CUDA events on the context's stream, the monotonic clock on
 * the CPU): warm-up first, then the median of many calls, rotating among
 * the input sets.
 */
#include <stdlib.h>

#include "bench.h"
#include "median.h"

enum { SLOT_BEFORE = 0, SLOT_AFTER = 1 };

double bench_gbps(double bytes, double ms)
{
    return ms > 0.0 ? bytes / (ms * 1e-3) / 1e9 : 0.0;
}

static void summarize(double *ms, int64_t n, bench_timing *t)
{
    t->median_ms = tool_median(ms, n); /* sorts ms */
    t->min_ms = ms[0];
    t->max_ms = ms[n - 1];
}

typedef enum { OP_SCATTER, OP_GATHER } bench_op;

static int call_op(moes_context *ctx, const bench_workload *w,
                   const bench_set *s, bench_op op)
{
    int st;
    if (op == OP_SCATTER) {
        moes_routing routing;
        moes_scatter_args args;
        bench_scatter_call(w, s, &routing, &args);
        st = moes_scatter(ctx, &routing, &args);
        if (st != MOES_OK)
            return tool_library_error("bench", ctx, "moes_scatter", st);
    } else {
        moes_gather_args args;
        bench_gather_call(w, s, &args);
        st = moes_gather(ctx, &args);
        if (st != MOES_OK)
            return tool_library_error("bench", ctx, "moes_gather", st);
    }
    return TOOL_EXIT_OK;
}

/* Queues the fill that a timed call (or copy) comes behind, if any; a
 * moes_fill status. The fill takes tens of microseconds on the device:
 * the host queues the timestamp and the call meanwhile, so the first
 * timestamp is taken when the fill ends and the call's launches are
 * already waiting. */
static int queue_clear(moes_context *ctx, const bench_clear *clear)
{
    return clear->bytes > 0 ? moes_fill(ctx, clear->buf, 0x3C, clear->bytes)
                            : MOES_OK;
}

/* One timed call: a timestamp before and after, the elapsed time between
 * them (which waits for the call to finish on CUDA). */
static int timed_call(moes_context *ctx, const bench_workload *w,
                      const bench_set *s, const bench_clear *clear,
                      bench_op op, double *ms)
{
    int st = queue_clear(ctx, clear);
    if (st != MOES_OK)
        return tool_library_error("bench", ctx, "moes_fill", st);
    st = moes_timestamp(ctx, SLOT_BEFORE);
    if (st != MOES_OK)
        return tool_library_error("bench", ctx, "moes_timestamp", st);
    if (call_op(ctx, w, s, op) != TOOL_EXIT_OK)
        return TOOL_EXIT_FAILURE;
    st = moes_timestamp(ctx, SLOT_AFTER);
    if (st == MOES_OK)
        st = moes_elapsed_ms(ctx, SLOT_BEFORE, SLOT_AFTER, ms);
    if (st != MOES_OK)
        return tool_library_error("bench", ctx, "moes_elapsed_ms", st);
    return TOOL_EXIT_OK;
}

static int measure_op(moes_context *ctx, const bench_workload *w,
                      const bench_clear *clear, bench_op op, double *ms,
                      bench_timing *t)
{
    const int64_t sets = w->n_sets;
    int64_t warmup = w->cfg.warmup > sets ? w->cfg.warmup : sets;
    double bytes = 0.0;
    int st;
    /* The warm-up touches every set once (first-touch page faults, lazy
     * module loading) before anything is timed. */
    for (int64_t i = 0; i < warmup; i++)
        if (call_op(ctx, w, &w->sets[i % sets], op) != TOOL_EXIT_OK)
            return TOOL_EXIT_FAILURE;
    for (int64_t i = 0; i < w->cfg.iters; i++)
        if (timed_call(ctx, w, &w->sets[i % sets], clear, op, &ms[i]) !=
            TOOL_EXIT_OK)
            return TOOL_EXIT_FAILURE;
    /* A data error found on the device surfaces here. */
    st = moes_synchronize(ctx);
    if (st != MOES_OK)
        return tool_library_error("bench", ctx, "moes_synchronize", st);
    summarize(ms, w->cfg.iters, t);
    for (int64_t i = 0; i < sets; i++)
        bytes += op == OP_SCATTER ? w->sets[i].scatter_bytes
                                  : w->sets[i].gather_bytes;
    t->bytes = bytes / (double)sets;
    return TOOL_EXIT_OK;
}

int bench_measure(moes_context *ctx, const bench_workload *w,
                  const bench_clear *clear, bench_result *r)
{
    double *ms = malloc((size_t)w->cfg.iters * sizeof *ms);
    int rc;
    if (!ms)
        return tool_fail("bench", "cannot allocate the timings");
    r->tokens = w->cfg.tokens;
    r->capacity_bound = w->capacity_bound;
    r->capacity = w->capacity;
    r->rows_used_max = w->cfg.layout == MOES_LAYOUT_MASKED ? w->out_rows
                                                           : w->rows_used_max;
    r->n_sets = w->n_sets;
    r->sets_bytes = 0.0;
    for (int64_t i = 0; i < w->n_sets; i++)
        r->sets_bytes += w->sets[i].scatter_bytes + w->sets[i].gather_bytes;
    rc = measure_op(ctx, w, clear, OP_SCATTER, ms, &r->scatter);
    if (rc == TOOL_EXIT_OK)
        rc = measure_op(ctx, w, clear, OP_GATHER, ms, &r->gather);
    free(ms);
    return rc;
}

int bench_measure_copy(moes_context *ctx, int64_t bytes, int64_t iters,
                       const bench_clear *clear, bench_timing *t)
{
    void *src = NULL, *dst = NULL;
    double *ms = malloc((size_t)iters * sizeof *ms);
    int st, rc = TOOL_EXIT_FAILURE;
    if (!ms)
        return tool_fail("bench", "cannot allocate the timings");
    st = moes_malloc(ctx, &src, bytes);
    if (st == MOES_OK)
        st = moes_malloc(ctx, &dst, bytes);
    /* Touch both once so that the copy does not time page faults. */
    if (st == MOES_OK)
        st = moes_fill(ctx, src, 0x5A, bytes);
    if (st == MOES_OK)
        st = moes_copy_within(ctx, dst, src, bytes);
    for (int64_t i = 0; st == MOES_OK && i < iters; i++) {
        st = queue_clear(ctx, clear);
        if (st == MOES_OK)
            st = moes_timestamp(ctx, SLOT_BEFORE);
        if (st == MOES_OK)
            st = moes_copy_within(ctx, dst, src, bytes);
        if (st == MOES_OK)
            st = moes_timestamp(ctx, SLOT_AFTER);
        if (st == MOES_OK)
            st = moes_elapsed_ms(ctx, SLOT_BEFORE, SLOT_AFTER, &ms[i]);
    }
    if (st != MOES_OK) {
        tool_library_error("bench", ctx, "the copy bandwidth", st);
    } else {
        summarize(ms, iters, t);
        t->bytes = 2.0 * (double)bytes;
        rc = TOOL_EXIT_OK;
    }
    moes_free(ctx, dst);
    moes_free(ctx, src);
    free(ms);
    return rc;
}
