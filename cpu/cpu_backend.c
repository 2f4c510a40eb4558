/* SPDX-License-Identifier: MIT */
/*
 * cpu_backend.c - the CPU backend's table: host memory, the workspace, and
 * count. Scatter and gather live in their own files.
 */
/* madvise and MADV_HUGEPAGE are Linux extensions beyond POSIX. */
#if defined(__linux__) && !defined(_DEFAULT_SOURCE)
#define _DEFAULT_SOURCE 1
#endif
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#if defined(__linux__)
#include <sys/mman.h>
#endif

#include "cpu_backend.h"
#include "cpu_omp.h"

#if defined(__FLT_EVAL_METHOD__) && __FLT_EVAL_METHOD__ != 0
#error "the gather needs fp32 arithmetic rounded at each operation (FLT_EVAL_METHOD 0)"
#endif

static cpu_state *state_of(moes_context *ctx)
{
    return (cpu_state *)ctx->state;
}

static int cpu_open(moes_context *ctx, char *reason, size_t reason_len)
{
    cpu_state *s = calloc(1, sizeof *s);
    if (!s) {
        snprintf(reason, reason_len, "cannot allocate the CPU state");
        return MOES_ERR_OUT_OF_MEMORY;
    }
    ctx->state = s;
    return MOES_OK;
}

static int cpu_close(moes_context *ctx)
{
    cpu_state *s = state_of(ctx);
    if (s) {
        if (!s->workspace_from_caller)
            free(s->workspace);
        free(s);
    }
    ctx->state = NULL;
    return MOES_OK;
}

/* How many parts the tokens are cut into: one per thread, but never more
 * parts than tokens (and at least one). */
static int64_t parts_for(const moes_context *ctx, int64_t n_tokens)
{
    int64_t parts = ctx->cpu_threads;
    if (parts > n_tokens)
        parts = n_tokens;
    return parts < 1 ? 1 : parts;
}

/* Makes the workspace hold len int64 elements. */
static int ensure_workspace(moes_context *ctx, int64_t len)
{
    cpu_state *s = state_of(ctx);
    int64_t *w;
    if (len <= s->workspace_len)
        return MOES_OK;
    if (s->workspace_from_caller)
        return moes_set_error(ctx, MOES_ERR_WORKSPACE,
            "this call needs %lld bytes of workspace, more than the %lld "
            "of the caller's workspace (moes_set_workspace)",
            (long long)len * 8, (long long)s->workspace_len * 8);
    if (ctx->workspace_reserved)
        return moes_set_error(ctx, MOES_ERR_WORKSPACE,
            "this call needs %lld bytes of workspace, more than the %lld "
            "reserved", (long long)len * 8,
            (long long)s->workspace_len * 8);
    if ((uint64_t)len > SIZE_MAX / sizeof *w || !(w = malloc((size_t)len * sizeof *w)))
        return moes_set_error(ctx, MOES_ERR_OUT_OF_MEMORY,
            "cannot allocate %lld bytes of workspace", (long long)len * 8);
    free(s->workspace);
    s->workspace = w;
    s->workspace_len = len;
    return MOES_OK;
}

/* Workspace elements for P parts, E experts and `arrays` [E] arrays. */
static int workspace_len(int64_t parts, int64_t n_experts, int arrays,
                         int64_t *len)
{
    return moes_mul_i64(parts + arrays, n_experts, len);
}

int cpu_route_prepare(moes_context *ctx, const moes_route_plan *plan,
                      cpu_route *route, int extra_arrays, int64_t **extra)
{
    const int64_t n_experts = plan->r.n_experts;
    int64_t len;
    int st;
    route->plan = plan;
    route->parts = parts_for(ctx, plan->r.n_tokens);
    if (!workspace_len(route->parts, n_experts, 1 + extra_arrays, &len))
        return moes_set_error(ctx, MOES_ERR_OVERFLOW,
            "the workspace for %lld experts overflows",
            (long long)n_experts);
    if ((st = ensure_workspace(ctx, len)) != MOES_OK)
        return st;
    route->part_counts = state_of(ctx)->workspace;
    route->counts = route->part_counts + route->parts * n_experts;
    if (extra)
        *extra = extra_arrays > 0 ? route->counts + n_experts : NULL;
    return MOES_OK;
}

/* The most workspace elements a call up to these sizes needs: the
 * scatter is the largest user (part counts, counts, start). */
static int reserve_len(moes_context *ctx, int64_t n_tokens,
                       int64_t n_experts, int64_t *len)
{
    if (!workspace_len(parts_for(ctx, n_tokens), n_experts, 2, len))
        return moes_set_error(ctx, MOES_ERR_OVERFLOW,
            "the workspace for %lld experts overflows",
            (long long)n_experts);
    return MOES_OK;
}

static int cpu_reserve(moes_context *ctx, int64_t n_tokens, int64_t top_k,
                       int64_t n_experts)
{
    int64_t len;
    int reserved = ctx->workspace_reserved, st;
    (void)top_k;
    MOES_TRY(reserve_len(ctx, n_tokens, n_experts, &len));
    /* A new reservation may grow the workspace; when it cannot, the
     * reservation before it still holds (calls must not start to
     * allocate because a larger reservation failed). */
    ctx->workspace_reserved = 0;
    st = ensure_workspace(ctx, len);
    if (st != MOES_OK)
        ctx->workspace_reserved = reserved;
    return st;
}

static int cpu_workspace_size(moes_context *ctx, int64_t n_tokens,
                              int64_t top_k, int64_t n_experts,
                              int64_t *bytes)
{
    int64_t len;
    (void)top_k;
    MOES_TRY(reserve_len(ctx, n_tokens, n_experts, &len));
    if (!moes_mul_i64(len, (int64_t)sizeof(int64_t), bytes))
        return moes_set_error(ctx, MOES_ERR_OVERFLOW,
            "the workspace for %lld experts overflows",
            (long long)n_experts);
    return MOES_OK;
}

/* The caller's host buffer becomes the workspace, as it is: the calls
 * carve the same int64 arrays out of it as out of the context's own. */
static int cpu_set_workspace(moes_context *ctx, void *ptr, int64_t bytes)
{
    cpu_state *s = state_of(ctx);
    if (!s->workspace_from_caller)
        free(s->workspace);
    s->workspace = ptr;
    s->workspace_len = ptr ? bytes / (int64_t)sizeof(int64_t) : 0;
    s->workspace_from_caller = ptr != NULL;
    return MOES_OK;
}

static int cpu_workspace_held(moes_context *ctx, int64_t *bytes)
{
    *bytes = state_of(ctx)->workspace_len * (int64_t)sizeof(int64_t);
    return MOES_OK;
}

static int cpu_count(moes_context *ctx, const moes_count_plan *plan,
                     moes_data_error *err)
{
    cpu_route route;
    const int64_t n_experts = plan->route.r.n_experts;
    size_t elem = moes_index_dtype_size(plan->counts_dtype);
    int st = cpu_route_prepare(ctx, &plan->route, &route, 0, NULL);
    if (st != MOES_OK)
        return st;
    st = cpu_route_count(&route, ctx->cpu_threads, err);
    if (st != MOES_OK)
        return st;
    for (int64_t e = 0; e < n_experts; e++)
        moes_index_store(plan->counts, elem, e, route.counts[e]);
    return MOES_OK;
}

static int cpu_timestamp(moes_context *ctx, int slot)
{
    cpu_state *s = state_of(ctx);
    clock_gettime(CLOCK_MONOTONIC, &s->timestamps[slot]);
    return MOES_OK;
}

static int cpu_elapsed_ms(moes_context *ctx, int from, int to, double *ms)
{
    const cpu_state *s = state_of(ctx);
    *ms = (double)(s->timestamps[to].tv_sec - s->timestamps[from].tv_sec) * 1e3 +
          (double)(s->timestamps[to].tv_nsec - s->timestamps[from].tv_nsec) * 1e-6;
    return MOES_OK;
}

/* Buffers of 4 MiB and more are placed on 2 MiB boundaries and offered
 * transparent huge pages: the scatter writes and the gather reads rows at
 * scattered places of buffers of hundreds of MiB, and with 4 KiB pages
 * nearly every row costs a TLB miss. Where the kernel does not give huge
 * pages this changes nothing but the alignment. */
#define CPU_HUGE_PAGE_BYTES ((uint64_t)2 << 20)
#define CPU_HUGE_MIN_BYTES ((uint64_t)4 << 20)

static int cpu_malloc(moes_context *ctx, void **ptr, int64_t bytes)
{
    const uint64_t align = (uint64_t)bytes >= CPU_HUGE_MIN_BYTES
                               ? CPU_HUGE_PAGE_BYTES
                               : 64u;
    /* aligned_alloc wants a multiple of the alignment. */
    uint64_t rounded = ((uint64_t)bytes + align - 1u) & ~(align - 1u);
    void *p = rounded <= SIZE_MAX && rounded >= (uint64_t)bytes
                  ? aligned_alloc((size_t)align, (size_t)rounded)
                  : NULL;
    if (!p)
        return moes_set_error(ctx, MOES_ERR_OUT_OF_MEMORY,
            "cannot allocate %lld bytes", (long long)bytes);
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    if (align == CPU_HUGE_PAGE_BYTES)
        (void)madvise(p, (size_t)rounded, MADV_HUGEPAGE); /* a hint only */
#endif
    *ptr = p;
    return MOES_OK;
}

static int cpu_free(moes_context *ctx, void *ptr)
{
    (void)ctx;
    free(ptr);
    return MOES_OK;
}

/* Large copies and fills are split over the context's threads, so that
 * they run at the bandwidth the scatter and gather get (the benchmark's
 * yardstick is a copy over the same cores). */
#define CPU_SPLIT_MIN_BYTES (1 << 20)

static int64_t split_parts(const moes_context *ctx, int64_t bytes)
{
    int64_t parts = bytes / CPU_SPLIT_MIN_BYTES;
    if (parts > ctx->cpu_threads)
        parts = ctx->cpu_threads;
    return parts < 1 ? 1 : parts;
}

static int cpu_copy(moes_context *ctx, void *dst, const void *src,
                    int64_t bytes)
{
    const char *s = src;
    char *d = dst;
    int64_t parts = split_parts(ctx, bytes);
    /* Overlapping ranges need memmove's order: one piece. */
    uintptr_t ds = (uintptr_t)d, ss = (uintptr_t)s;
    if (parts == 1 || (ds < ss + (uintptr_t)bytes && ss < ds + (uintptr_t)bytes)) {
        memmove(dst, src, (size_t)bytes);
        return MOES_OK;
    }
    MOES_OMP(parallel for num_threads((int)parts) schedule(static, 1))
    for (int64_t p = 0; p < parts; p++) {
        int64_t begin = bytes / parts * p;
        int64_t end = p == parts - 1 ? bytes : bytes / parts * (p + 1);
        memcpy(d + begin, s + begin, (size_t)(end - begin));
    }
    return MOES_OK;
}

static int cpu_fill(moes_context *ctx, void *ptr, int value, int64_t bytes)
{
    char *d = ptr;
    int64_t parts = split_parts(ctx, bytes);
    MOES_OMP(parallel for num_threads((int)parts) schedule(static, 1))
    for (int64_t p = 0; p < parts; p++) {
        int64_t begin = bytes / parts * p;
        int64_t end = p == parts - 1 ? bytes : bytes / parts * (p + 1);
        memset(d + begin, value, (size_t)(end - begin));
    }
    return MOES_OK;
}

const moes_backend_ops moes_cpu_backend = {
    .name = "cpu",
    .open = cpu_open,
    .close = cpu_close,
    .get_info = NULL,
    .malloc = cpu_malloc,
    .free = cpu_free,
    .copy_to_backend = cpu_copy,
    .copy_to_host = cpu_copy,
    .copy_within = cpu_copy,
    .fill = cpu_fill,
    .set_stream = NULL,
    .synchronize = NULL,
    .get_error = NULL,
    .timestamp = cpu_timestamp,
    .elapsed_ms = cpu_elapsed_ms,
    .reserve_workspace = cpu_reserve,
    .workspace_size = cpu_workspace_size,
    .set_workspace = cpu_set_workspace,
    .workspace_held = cpu_workspace_held,
    .count = cpu_count,
    .scatter = cpu_scatter,
    .gather = cpu_gather,
};
