/* SPDX-License-Identifier: MIT */
/*
 * cpu_backend.c - the CPU backend's table: host memory, the workspace, and
 * count. Scatter and gather live in their own files.
 */
/* madvise and MADV_HUGEPAGE are Linux extensions beyond POSIX. */
#if defined(__linux__) && !defined(_DEFAULT_SOURCE)
#define _DEFAULT_SOURCE 1
#endif
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#if defined(__linux__)
#include <sys/mman.h>
#endif

#include "cpu_backend.h"
#include "cpu_copy.h"
#include "cpu_omp.h"
#include "distinct_row.h"

#if defined(__FLT_EVAL_METHOD__) && __FLT_EVAL_METHOD__ != 0
#error "the gather needs FLT_EVAL_METHOD 0 (fp32 rounded at each operation)"
#endif

static cpu_state *state_of(moes_context *ctx)
{
    return (cpu_state *)ctx->state;
}

/* Set in the child of a fork(): from then on every call of this process
 * runs on one thread (see cpu_threads). */
static volatile sig_atomic_t in_forked_child;

static void mark_forked_child(void)
{
    in_forked_child = 1;
}

static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

static void install_atfork(void)
{
    (void)pthread_atfork(NULL, NULL, mark_forked_child);
}

/* At load time where the compiler can, so that a fork made before the
 * first context (after the program's own OpenMP use) is seen too; else
 * when the first CPU context opens. */
#if defined(__GNUC__)
__attribute__((constructor)) static void install_atfork_at_load(void)
{
    (void)pthread_once(&atfork_once, install_atfork);
}
#endif

int cpu_threads(const moes_context *ctx)
{
    return in_forked_child ? 1 : ctx->cpu_threads;
}

int64_t cpu_grain(const moes_context *ctx)
{
    return ctx->cpu_work_per_thread > 0 ? ctx->cpu_work_per_thread
                                        : CPU_WORK_PER_THREAD;
}

static int cpu_open(moes_context *ctx, char *reason, size_t reason_len)
{
    cpu_state *s = calloc(1, sizeof *s);
    if (!s) {
        snprintf(reason, reason_len, "cannot allocate the CPU state");
        return MOES_ERR_OUT_OF_MEMORY;
    }
    (void)pthread_once(&atfork_once, install_atfork);
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

int cpu_workspace(moes_context *ctx, int64_t bytes, void **out)
{
    cpu_state *s = state_of(ctx);
    void *w;
    if (bytes <= s->workspace_bytes) {
        *out = s->workspace;
        return MOES_OK;
    }
    MOES_TRY(moes_workspace_can_have(ctx, bytes, s->workspace_bytes));
    if ((uint64_t)bytes > SIZE_MAX || !(w = malloc((size_t)bytes)))
        return moes_set_error(ctx, MOES_ERR_OUT_OF_MEMORY,
            "cannot allocate %lld bytes of workspace", (long long)bytes);
    free(s->workspace);
    s->workspace = w;
    s->workspace_bytes = bytes;
    *out = w;
    return MOES_OK;
}

/* The routing's workspace in *bytes, or the error that it does not fit. */
static int route_bytes(moes_context *ctx, const moes_route_plan *plan,
                       int scatter, int64_t *bytes)
{
    *bytes = cpu_route_workspace_bytes(plan, cpu_threads(ctx), scatter);
    if (*bytes < 0)
        return moes_set_error(ctx, MOES_ERR_OVERFLOW,
            "the routing's workspace for routing->n_tokens * top_k = %lld "
            "choices over n_experts = %lld does not fit a 64-bit byte count",
            (long long)plan->n_choices, (long long)plan->r.n_experts);
    return MOES_OK;
}

/* MOES_SCATTER_CHECK_ONLY and MOES_GATHER_CHECK_ONLY: the one check the
 * CPU makes before it runs a call that lib/ has not made, its
 * workspace's (what cpu_workspace asks before it grows one). */
static int cpu_check_scatter(moes_context *ctx, const moes_scatter_plan *plan)
{
    int64_t bytes;
    MOES_TRY(route_bytes(ctx, &plan->route, 1, &bytes));
    return moes_workspace_can_have(ctx, bytes, state_of(ctx)->workspace_bytes);
}

static int cpu_check_gather(moes_context *ctx, const moes_gather_plan *plan)
{
    if (plan->a.n_tokens == 0)
        return MOES_OK;
    return moes_workspace_can_have(
        ctx,
        cpu_gather_workspace_bytes(cpu_threads(ctx), plan->a.n_tokens,
                                   plan->a.hidden),
        state_of(ctx)->workspace_bytes);
}

int cpu_route_prepare(moes_context *ctx, const moes_route_plan *plan,
                      cpu_route *route, int scatter)
{
    const int threads = cpu_threads(ctx);
    int64_t bytes;
    void *w;
    MOES_TRY(route_bytes(ctx, plan, scatter, &bytes));
    MOES_TRY(cpu_workspace(ctx, bytes, &w));
    cpu_route_init(route, plan, threads, scatter, w);
    route->grain = cpu_grain(ctx);
    return MOES_OK;
}

/* The most workspace any call up to these sizes needs: the routing (dense:
 * at most max(N*K, E) part counters and two [E] arrays; sparse: six int64
 * per choice) or the gather (a chunk of accumulators per thread), whichever
 * is larger; -1 when that does not fit int64. */
static int64_t reserve_bytes(int threads, int64_t n_tokens, int64_t top_k,
                             int64_t n_experts)
{
    int64_t nk, dense, sparse, gather;
    if (!moes_mul_i64(n_tokens, top_k, &nk) ||
        !moes_mul_i64(n_experts, 2, &dense) ||
        !moes_add_i64(dense, nk > n_experts ? nk : n_experts, &dense) ||
        !moes_mul_i64(dense, 8, &dense) || !moes_mul_i64(nk, 48, &sparse))
        return -1;
    gather = cpu_gather_workspace_bytes(threads, INT64_MAX, INT64_MAX);
    if (dense < sparse)
        dense = sparse;
    return dense > gather ? dense : gather;
}

static int cpu_reserve(moes_context *ctx, int64_t n_tokens, int64_t top_k,
                       int64_t n_experts)
{
    int64_t bytes = reserve_bytes(cpu_threads(ctx), n_tokens, top_k,
                                  n_experts);
    void *w;
    if (bytes < 0)
        return moes_set_error(ctx, MOES_ERR_OVERFLOW,
            "the workspace for %lld tokens of top_k %lld and %lld experts "
            "does not fit a 64-bit byte count", (long long)n_tokens,
            (long long)top_k, (long long)n_experts);
    /* lib/ keeps the reservation before this one in force if this fails. */
    return cpu_workspace(ctx, bytes, &w);
}

static int cpu_workspace_size(moes_context *ctx, int64_t n_tokens,
                              int64_t top_k, int64_t n_experts,
                              int64_t *bytes)
{
    *bytes = reserve_bytes(cpu_threads(ctx), n_tokens, top_k, n_experts);
    if (*bytes < 0)
        return moes_set_error(ctx, MOES_ERR_OVERFLOW,
            "the workspace for %lld tokens of top_k %lld and %lld experts "
            "does not fit a 64-bit byte count", (long long)n_tokens,
            (long long)top_k, (long long)n_experts);
    return MOES_OK;
}

/* The caller's host buffer becomes the workspace, as it is: the calls
 * carve their arrays out of it as out of the context's own. */
static int cpu_set_workspace(moes_context *ctx, void *ptr, int64_t bytes)
{
    cpu_state *s = state_of(ctx);
    if (!s->workspace_from_caller)
        free(s->workspace);
    s->workspace = ptr;
    s->workspace_bytes = ptr ? bytes : 0;
    s->workspace_from_caller = ptr != NULL;
    return MOES_OK;
}

static int cpu_workspace_held(moes_context *ctx, int64_t *bytes)
{
    *bytes = state_of(ctx)->workspace_bytes;
    return MOES_OK;
}

static int cpu_count(moes_context *ctx, const moes_count_plan *plan,
                     moes_data_error *err)
{
    cpu_route route;
    const int64_t n_experts = plan->route.r.n_experts;
    const int threads = cpu_threads(ctx);
    size_t elem = moes_index_dtype_size(plan->counts_dtype);
    int st = cpu_route_prepare(ctx, &plan->route, &route, 0);
    if (st != MOES_OK)
        return st;
    st = cpu_route_count(&route, threads, err);
    if (st != MOES_OK)
        return st;
    if (!route.sparse) {
        for (int64_t e = 0; e < n_experts; e++)
            moes_index_store(plan->counts, elem, e, route.counts[e]);
        return MOES_OK;
    }
    /* Sparse: zeros, then the experts that have rows. */
    CPU_FOR_TEAM(cpu_team(threads, route.grain, n_experts), schedule(static),
                 e, n_experts, moes_index_store(plan->counts, elem, e, 0));
    for (int64_t g = 0; g < route.n_groups; g++)
        moes_index_store(plan->counts, elem, route.group_expert[g],
                         (g + 1 < route.n_groups ? route.group_first[g + 1]
                                                 : route.n_valid) -
                             route.group_first[g]);
    return MOES_OK;
}

/* Token t's row of the distinct experts' output. */
static void distinct_token(const moes_distinct_plan *plan, int64_t t)
{
    const moes_route_plan *rp = &plan->route;
    const int64_t top_k = rp->r.top_k;
    const size_t elem = moes_index_dtype_size(plan->out_dtype);
    char *row = (char *)plan->out + (size_t)(t * plan->out_stride) * elem;
    for (int64_t k = 0; k < top_k; k++)
        moes_index_store(row, elem, k, cpu_local_expert(rp, t, k));
    moes_distinct_row(row, (int64_t)elem, top_k);
}

/* The routing pass checks the map and the ids (its counts go unused), and
 * only then is any row written. */
static int cpu_distinct(moes_context *ctx, const moes_distinct_plan *plan,
                        moes_data_error *err)
{
    cpu_route route;
    const moes_route_plan *rp = &plan->route;
    const int threads = cpu_threads(ctx);
    int st = cpu_route_prepare(ctx, rp, &route, 0);
    if (st != MOES_OK)
        return st;
    st = cpu_route_count(&route, threads, err);
    if (st != MOES_OK)
        return st;
    CPU_FOR_TEAM(cpu_team(threads, route.grain, rp->n_choices),
                 schedule(static), t, rp->r.n_tokens, distinct_token(plan, t));
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
    *ms = (double)(s->timestamps[to].tv_sec -
                   s->timestamps[from].tv_sec) * 1e3 +
          (double)(s->timestamps[to].tv_nsec -
                   s->timestamps[from].tv_nsec) * 1e-6;
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
    if (parts > cpu_threads(ctx))
        parts = cpu_threads(ctx);
    return parts < 1 ? 1 : parts;
}

/* The first byte of part p of `parts` over `bytes` (p == parts: the end). */
static int64_t byte_part_begin(int64_t bytes, int64_t parts, int64_t p)
{
    return p == parts ? bytes : bytes / parts * p;
}

/* Part p of a copy split into `parts`, with streaming stores. */
static void copy_part(char *d, const char *s, int64_t bytes, int64_t parts,
                      int64_t p)
{
    const int64_t begin = byte_part_begin(bytes, parts, p);
    const int64_t end = byte_part_begin(bytes, parts, p + 1);
    cpu_copy_row(d + begin, s + begin, (size_t)(end - begin));
    cpu_copy_fence();
}

/* Part p of a fill split into `parts`. */
static void fill_part(char *d, int value, int64_t bytes, int64_t parts,
                      int64_t p)
{
    const int64_t begin = byte_part_begin(bytes, parts, p);
    const int64_t end = byte_part_begin(bytes, parts, p + 1);
    memset(d + begin, value, (size_t)(end - begin));
}

static int cpu_copy(moes_context *ctx, void *dst, const void *src,
                    int64_t bytes)
{
    const char *s = src;
    char *d = dst;
    int64_t parts = split_parts(ctx, bytes);
    /* Overlapping ranges need memmove's order: one piece. */
    uintptr_t ds = (uintptr_t)d, ss = (uintptr_t)s;
    if (parts == 1 ||
        (ds < ss + (uintptr_t)bytes && ss < ds + (uintptr_t)bytes)) {
        memmove(dst, src, (size_t)bytes);
        return MOES_OK;
    }
    /* Streaming stores, as the scatter's rows go out: a large copy's
     * destination is not read back soon, and reading it into the cache
     * first (write-allocate) would cost a third more traffic. */
    CPU_FOR_TEAM((int)parts, schedule(static, 1), p, parts,
                 copy_part(d, s, bytes, parts, p));
    return MOES_OK;
}

static int cpu_fill(moes_context *ctx, void *ptr, int value, int64_t bytes)
{
    char *d = ptr;
    int64_t parts = split_parts(ctx, bytes);
    CPU_FOR_TEAM((int)parts, schedule(static, 1), p, parts,
                 fill_part(d, value, bytes, parts, p));
    return MOES_OK;
}

static int cpu_fill_rows(moes_context *ctx, void *dst, int64_t rows,
                         int64_t row_stride, const void *pattern,
                         int64_t pattern_bytes)
{
    /* The pattern may lie inside the rows: the bytes as they were when
     * the call was made, as on a device. */
    unsigned char copy[MOES_FILL_ROWS_MAX_PATTERN];
    char *d = dst;
    memcpy(copy, pattern, (size_t)pattern_bytes);
    int64_t parts = split_parts(ctx, rows * pattern_bytes);
    if (parts > rows)
        parts = rows;
    CPU_FOR_TEAM((int)parts, schedule(static), r, rows,
                 memcpy(d + r * row_stride, copy, (size_t)pattern_bytes));
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
    .fill_rows = cpu_fill_rows,
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
    .distinct = cpu_distinct,
    .check_scatter = cpu_check_scatter,
    .check_gather = cpu_check_gather,
};
