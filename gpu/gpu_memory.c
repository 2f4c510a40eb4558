/* SPDX-License-Identifier: MIT */
/*
 * gpu_memory.c - device memory, copies and fills on the context's stream,
 * waiting for the stream and reading the device's error record, the
 * timestamps, the caller's workspace, and the check that a call's buffers
 * are memory the device can access.
 */
#include <stdio.h>
#include <string.h>

#include "gpu_state.h"

#define ENTER(ctx)                                                          \
    do {                                                                    \
        int st_ = gpu_enter(ctx);                                           \
        if (st_ != MOES_OK)                                                 \
            return st_;                                                     \
    } while (0)

#define DRV(ctx) (gpu_state_of(ctx)->drv)

int gpu_malloc(moes_context *ctx, void **ptr, int64_t bytes)
{
    CUdeviceptr p = 0;
    CUresult r;
    ENTER(ctx);
    r = DRV(ctx).cuMemAlloc(&p, (size_t)bytes);
    if (r == GPU_CUDA_ERROR_OUT_OF_MEMORY)
        return moes_set_error(ctx, MOES_ERR_OUT_OF_MEMORY,
            "cannot allocate %lld bytes of device memory", (long long)bytes);
    if (r)
        return gpu_fail(ctx, r, "cuMemAlloc");
    *ptr = (void *)(uintptr_t)p;
    return MOES_OK;
}

/* What CUDA knows of the memory at ptr: a GPU_CU_MEMORYTYPE_*, or 0 for
 * memory it does not know (not allocated, registered or mapped through
 * CUDA: malloc'd, or freed already); else the driver's error. */
static CUresult memory_type(gpu_state *s, const void *ptr,
                            unsigned int *type)
{
    CUresult r = s->drv.cuPointerGetAttribute(
        type, GPU_CU_POINTER_ATTRIBUTE_MEMORY_TYPE,
        (CUdeviceptr)(uintptr_t)ptr);
    if (r == GPU_CUDA_ERROR_INVALID_VALUE) {
        *type = 0;
        return 0;
    }
    return r;
}

/* The driver's error when it could not say where the argument `name`
 * points. */
static int query_failed(moes_context *ctx, CUresult r, const char *name,
                        const void *ptr)
{
    char what[160];
    snprintf(what, sizeof what, "asking where %s = %p points", name, ptr);
    return gpu_fail(ctx, r, what);
}

/* Only device memory can come from moes_malloc (cuMemAlloc): host memory,
 * malloc'd or page-locked, is refused before the driver is asked to free
 * it, and is left as it is. The driver is asked even where the device
 * reads pageable host memory (which gpu_check_pointer then lets through):
 * reading it is not freeing it. Not cached: a free is rare, and forgets
 * the cache anyway. */
static int check_freeable(moes_context *ctx, void *ptr)
{
    unsigned int type = 0;
    CUdeviceptr start = 0;
    CUresult r = memory_type(gpu_state_of(ctx), ptr, &type);
    if (r)
        return query_failed(ctx, r, "ptr", ptr);
    if (type == 0)
        return moes_set_error(ctx, MOES_ERR_INVALID_ARGUMENT,
            "ptr = %p is not device memory from moes_malloc (host memory, "
            "or memory already freed): nothing was freed", ptr);
    if (type == GPU_CU_MEMORYTYPE_HOST)
        return moes_set_error(ctx, MOES_ERR_INVALID_ARGUMENT,
            "ptr = %p is page-locked host memory, not device memory from "
            "moes_malloc: nothing was freed", ptr);
    /* The driver frees only an allocation's first address, and says no
     * more than "invalid value" for any other. */
    r = gpu_state_of(ctx)->drv.cuPointerGetAttribute(
        &start, GPU_CU_POINTER_ATTRIBUTE_RANGE_START_ADDR,
        (CUdeviceptr)(uintptr_t)ptr);
    if (r)
        return query_failed(ctx, r, "ptr", ptr);
    if (start != (CUdeviceptr)(uintptr_t)ptr)
        return moes_set_error(ctx, MOES_ERR_INVALID_ARGUMENT,
            "ptr = %p lies %llu bytes inside the allocation that starts at "
            "%p: give moes_free the pointer moes_malloc gave; nothing was "
            "freed", ptr,
            (unsigned long long)((CUdeviceptr)(uintptr_t)ptr - start),
            (void *)(uintptr_t)start);
    return MOES_OK;
}

int gpu_free(moes_context *ctx, void *ptr)
{
    CUresult r;
    int st;
    ENTER(ctx);
    if ((st = check_freeable(ctx, ptr)) != MOES_OK)
        return st;
    /* Its address may come back as other memory: forget what was found. */
    memset(gpu_state_of(ctx)->reachable, 0,
           sizeof gpu_state_of(ctx)->reachable);
    r = DRV(ctx).cuMemFree((CUdeviceptr)(uintptr_t)ptr);
    return r ? gpu_fail(ctx, r, "cuMemFree") : MOES_OK;
}

/* The copies are ordered on the stream, then waited for. */
static int wait_stream(moes_context *ctx, CUresult r, const char *what)
{
    if (!r)
        r = DRV(ctx).cuStreamSynchronize(gpu_stream_of(ctx));
    return r ? gpu_fail(ctx, r, what) : MOES_OK;
}

/* The device-side pointers of the copies and the fill are checked as a
 * kernel's buffers are (gpu_check_pointer, cached) before the driver sees
 * them: a host pointer is then an error that names the argument as the
 * header does, not the driver's words about an address. The host side of
 * a copy is any host memory, which the driver copies from or to. */
int gpu_copy_to_backend(moes_context *ctx, void *dst, const void *src,
                        int64_t bytes)
{
    int st;
    ENTER(ctx);
    if ((st = gpu_check_pointer(ctx, "dst", dst)) != MOES_OK)
        return st;
    return wait_stream(ctx,
        DRV(ctx).cuMemcpyHtoDAsync((CUdeviceptr)(uintptr_t)dst, src,
                                   (size_t)bytes, gpu_stream_of(ctx)),
        "copying to the device");
}

int gpu_copy_to_host(moes_context *ctx, void *dst, const void *src,
                     int64_t bytes)
{
    int st;
    ENTER(ctx);
    if ((st = gpu_check_pointer(ctx, "src", src)) != MOES_OK)
        return st;
    return wait_stream(ctx,
        DRV(ctx).cuMemcpyDtoHAsync(dst, (CUdeviceptr)(uintptr_t)src,
                                   (size_t)bytes, gpu_stream_of(ctx)),
        "copying to the host");
}

int gpu_copy_within(moes_context *ctx, void *dst, const void *src,
                    int64_t bytes)
{
    int st;
    ENTER(ctx);
    if ((st = gpu_check_pointer(ctx, "dst", dst)) != MOES_OK ||
        (st = gpu_check_pointer(ctx, "src", src)) != MOES_OK)
        return st;
    return wait_stream(ctx,
        DRV(ctx).cuMemcpyDtoDAsync((CUdeviceptr)(uintptr_t)dst,
                                   (CUdeviceptr)(uintptr_t)src, (size_t)bytes,
                                   gpu_stream_of(ctx)),
        "copying within the device");
}

int gpu_fill(moes_context *ctx, void *ptr, int value, int64_t bytes)
{
    CUresult r;
    int st;
    ENTER(ctx);
    if ((st = gpu_check_pointer(ctx, "ptr", ptr)) != MOES_OK)
        return st;
    r = DRV(ctx).cuMemsetD8Async((CUdeviceptr)(uintptr_t)ptr,
                                 (unsigned char)value, (size_t)bytes,
                                 gpu_stream_of(ctx));
    return r ? gpu_fail(ctx, r, "cuMemsetD8Async") : MOES_OK;
}

_Static_assert(GPU_FILL_ROWS_MAX_PATTERN == MOES_FILL_ROWS_MAX_PATTERN,
               "the kernel's pattern holds the longest the API takes");

int gpu_fill_rows(moes_context *ctx, void *dst, int64_t rows,
                  int64_t row_stride, const void *pattern,
                  int64_t pattern_bytes)
{
    gpu_fill_rows_args a;
    int st;
    ENTER(ctx);
    if ((st = gpu_check_pointer(ctx, "dst", dst)) != MOES_OK)
        return st;
    memset(&a, 0, sizeof a);
    a.dst = dst;
    a.rows = rows;
    a.row_stride = rows > 1 ? row_stride : 0;
    a.word = (uintptr_t)dst % 4 == 0 && a.row_stride % 4 == 0 &&
             pattern_bytes % 4 == 0;
    a.units = a.word ? pattern_bytes / 4 : pattern_bytes;
    memcpy(a.pattern, pattern, (size_t)pattern_bytes);
    return gpu_launch(ctx, GPU_K_FILL_ROWS,
                      gpu_grid_for(rows * a.units, GPU_FILL_ROWS_THREADS),
                      GPU_FILL_ROWS_THREADS, &a);
}

/* Reads the device's error record (the stream must be idle). */
static int read_record(moes_context *ctx, moes_data_error *rec)
{
    gpu_state *s = gpu_state_of(ctx);
    return wait_stream(ctx,
        s->drv.cuMemcpyDtoHAsync(rec,
                                 s->dev_state +
                                     offsetof(gpu_device_state, record),
                                 sizeof *rec, gpu_stream_of(ctx)),
        "reading the error record");
}

int gpu_synchronize(moes_context *ctx, moes_data_error *err)
{
    gpu_state *s = gpu_state_of(ctx);
    moes_data_error rec;
    int st;
    ENTER(ctx);
    st = wait_stream(ctx, 0, "waiting for the stream");
    if (st == MOES_OK)
        st = read_record(ctx, &rec);
    if (st != MOES_OK)
        return st;
    if (rec.status != MOES_OK) {
        /* Cleared on the device: later calls run again. */
        st = wait_stream(ctx,
            s->drv.cuMemsetD8Async(s->dev_state +
                                       offsetof(gpu_device_state, record),
                                   0, sizeof rec, gpu_stream_of(ctx)),
            "clearing the error record");
        if (st != MOES_OK)
            return st;
        *err = rec;
    }
    memset(&s->known, 0, sizeof s->known);
    return MOES_OK;
}

int gpu_get_error(moes_context *ctx, moes_data_error *err)
{
    gpu_state *s = gpu_state_of(ctx);
    CUresult r;
    ENTER(ctx);
    r = s->drv.cuStreamQuery(gpu_stream_of(ctx));
    if (r == GPU_CUDA_ERROR_NOT_READY) {
        /* Work is still running: what an earlier read found, no wait. */
        *err = s->known;
        return MOES_OK;
    }
    if (r)
        return gpu_fail(ctx, r, "querying the stream");
    {
        moes_data_error rec;
        int st = read_record(ctx, &rec);
        if (st != MOES_OK)
            return st;
        s->known = rec;
    }
    *err = s->known;
    return MOES_OK;
}

int gpu_timestamp(moes_context *ctx, int slot)
{
    gpu_state *s = gpu_state_of(ctx);
    CUresult r;
    ENTER(ctx);
    if (!s->events[slot]) {
        r = s->drv.cuEventCreate(&s->events[slot], 0);
        if (r) {
            s->events[slot] = NULL;
            return gpu_fail(ctx, r, "cuEventCreate");
        }
    }
    r = s->drv.cuEventRecord(s->events[slot], gpu_stream_of(ctx));
    return r ? gpu_fail(ctx, r, "cuEventRecord") : MOES_OK;
}

int gpu_elapsed_ms(moes_context *ctx, int from, int to, double *ms)
{
    gpu_state *s = gpu_state_of(ctx);
    float f = 0.0f;
    CUresult r;
    ENTER(ctx);
    r = s->drv.cuEventSynchronize(s->events[to]);
    if (!r)
        r = s->drv.cuEventElapsedTime(&f, s->events[from], s->events[to]);
    if (r)
        return gpu_fail(ctx, r, "measuring between timestamps");
    *ms = (double)f;
    return MOES_OK;
}

/* ---------------------------------------------------------------- */
/* The caller's workspace                                           */
/* ---------------------------------------------------------------- */

int gpu_workspace_size(moes_context *ctx, int64_t n_tokens, int64_t top_k,
                       int64_t n_experts, int64_t *bytes)
{
    /* The reservation's bound: it covers every call up to these sizes
     * (gpu_reserved_workspace_bytes), and so does a buffer of that size. */
    if (!gpu_reserved_workspace_bytes(n_tokens * top_k, n_experts, bytes))
        return moes_set_error(ctx, MOES_ERR_OVERFLOW,
            "the workspace for %lld experts overflows", (long long)n_experts);
    return MOES_OK;
}

int gpu_set_workspace(moes_context *ctx, void *ptr, int64_t bytes)
{
    gpu_state *s = gpu_state_of(ctx);
    CUresult r;
    ENTER(ctx);
    if (ptr) {
        int st = gpu_check_pointer(ctx, "ptr", ptr);
        if (st != MOES_OK)
            return st;
    }
    if (s->workspace && !s->workspace_from_caller) {
        /* Freeing the context's own workspace waits for the stream, which
         * a capture does not allow (the wait would invalidate it). */
        if (gpu_capture_status(ctx) == 1)
            return moes_set_error(ctx, MOES_ERR_WORKSPACE,
                "the context's own workspace cannot be replaced while its "
                "stream is being captured into a CUDA graph: set the "
                "workspace before capturing");
        /* Kernels queued on the stream may still use the context's own
         * workspace. (The caller's needs no wait: it is never freed
         * here, and the caller orders its reuse on the stream.) */
        r = s->drv.cuStreamSynchronize(gpu_stream_of(ctx));
        if (!r)
            r = s->drv.cuMemFree(s->workspace);
        if (r)
            return gpu_fail(ctx, r, "releasing the context's own workspace");
    }
    s->workspace = (CUdeviceptr)(uintptr_t)ptr;
    s->workspace_bytes = ptr ? bytes : 0;
    s->workspace_from_caller = ptr != NULL;
    return MOES_OK;
}

int gpu_workspace_held(moes_context *ctx, int64_t *bytes)
{
    *bytes = gpu_state_of(ctx)->workspace_bytes;
    return MOES_OK;
}

/* ---------------------------------------------------------------- */
/* Which memory a pointer is in                                     */
/* ---------------------------------------------------------------- */

static size_t cache_slot(uintptr_t p)
{
    /* Fibonacci hashing: allocations are aligned, so the low bits alone
     * would crowd a few entries. */
    return (size_t)(((uint64_t)p * 0x9E3779B97F4A7C15ull) >> 58) &
           (GPU_POINTER_CACHE - 1);
}

/* 1 when a kernel can read and write through ptr itself: device memory,
 * managed memory, and page-locked host memory mapped at the same address
 * (cuMemHostAlloc, and cuMemHostRegister where the device uses the host's
 * addresses); 0 for memory CUDA does not know (malloc'd) or host memory
 * mapped elsewhere on the device; -1 with the driver's error in *r. */
static int device_reaches(gpu_state *s, const void *ptr, CUresult *r)
{
    const CUdeviceptr p = (CUdeviceptr)(uintptr_t)ptr;
    unsigned int type = 0;
    CUdeviceptr mapped = 0;
    *r = memory_type(s, ptr, &type);
    if (*r)
        return -1;
    if (type == GPU_CU_MEMORYTYPE_DEVICE || type == GPU_CU_MEMORYTYPE_UNIFIED)
        return 1;
    if (type != GPU_CU_MEMORYTYPE_HOST)
        return 0;
    *r = s->drv.cuPointerGetAttribute(&mapped,
                                      GPU_CU_POINTER_ATTRIBUTE_DEVICE_POINTER,
                                      p);
    if (*r == GPU_CUDA_ERROR_INVALID_VALUE) {
        /* Page-locked but not mapped into the device's address space. */
        *r = 0;
        return 0;
    }
    if (*r)
        return -1;
    return mapped == p;
}

int gpu_check_pointer(moes_context *ctx, const char *name, const void *ptr)
{
    gpu_state *s = gpu_state_of(ctx);
    const uintptr_t p = (uintptr_t)ptr;
    const size_t slot = cache_slot(p);
    CUresult r = 0;
    int reaches;
    /* Where the device reads pageable host memory (HMM, ATS) every
     * pointer the validation let through is fine. */
    if (!ptr || s->pageable_access || s->reachable[slot] == p)
        return MOES_OK;
    reaches = device_reaches(s, ptr, &r);
    if (reaches < 0)
        return query_failed(ctx, r, name, ptr);
    if (!reaches)
        return moes_set_error(ctx, MOES_ERR_INVALID_ARGUMENT,
            "%s = %p is host memory that the GPU cannot access (malloc'd, "
            "or page-locked but not mapped): on the CUDA backend give device "
            "memory (cudaMalloc, moes_malloc), managed memory, or host "
            "memory registered with CUDA", name, ptr);
    s->reachable[slot] = p;
    return MOES_OK;
}

/* Checks ptr when the buffer holds at least one element. */
#define CHECK_BUFFER(ctx, name, ptr, used)                                 \
    do {                                                                   \
        if (used) {                                                        \
            int st_ = gpu_check_pointer(ctx, name, ptr);                   \
            if (st_ != MOES_OK)                                            \
                return st_;                                                \
        }                                                                  \
    } while (0)

static int check_route_pointers(moes_context *ctx, const moes_route_plan *rp)
{
    CHECK_BUFFER(ctx, "routing->ids", rp->r.ids, rp->n_choices > 0);
    CHECK_BUFFER(ctx, "routing->expert_map", rp->r.expert_map, 1);
    return MOES_OK;
}

int gpu_check_count_pointers(moes_context *ctx, const moes_count_plan *plan)
{
    int st = check_route_pointers(ctx, &plan->route);
    if (st != MOES_OK)
        return st;
    CHECK_BUFFER(ctx, "counts", plan->counts, 1);
    return MOES_OK;
}

int gpu_check_distinct_pointers(moes_context *ctx,
                                const moes_distinct_plan *plan)
{
    int st = check_route_pointers(ctx, &plan->route);
    if (st != MOES_OK)
        return st;
    CHECK_BUFFER(ctx, "out", plan->out, plan->route.n_choices > 0);
    return MOES_OK;
}

int gpu_check_scatter_pointers(moes_context *ctx,
                               const moes_scatter_plan *plan)
{
    const moes_scatter_args *a = &plan->a;
    const int tokens = plan->route.n_choices > 0;
    const int rows = plan->out_rows > 0;
    int st = check_route_pointers(ctx, &plan->route);
    if (st != MOES_OK)
        return st;
    CHECK_BUFFER(ctx, "args->x", a->x, tokens);
    CHECK_BUFFER(ctx, "args->x_scales", a->x_scales, tokens);
    CHECK_BUFFER(ctx, "args->out_index", a->out_index, tokens);
    CHECK_BUFFER(ctx, "args->out", a->out, rows);
    CHECK_BUFFER(ctx, "args->out_scales", a->out_scales, rows);
    CHECK_BUFFER(ctx, "args->m_indices", a->m_indices, rows);
    CHECK_BUFFER(ctx, "args->row_source", a->row_source, rows);
    CHECK_BUFFER(ctx, "args->counts", a->counts, 1);
    CHECK_BUFFER(ctx, "args->expert_start", a->expert_start, 1);
    CHECK_BUFFER(ctx, "args->expert_end", a->expert_end, 1);
    CHECK_BUFFER(ctx, "args->masked_m", a->masked_m, 1);
    CHECK_BUFFER(ctx, "args->n_dropped", a->n_dropped, 1);
    return MOES_OK;
}

int gpu_check_gather_pointers(moes_context *ctx,
                              const moes_gather_plan *plan)
{
    const moes_gather_args *g = &plan->a;
    const int tokens = g->n_tokens > 0;
    CHECK_BUFFER(ctx, "args->y", g->y, tokens && g->y_rows > 0);
    CHECK_BUFFER(ctx, "args->out_index", g->out_index, tokens);
    CHECK_BUFFER(ctx, "args->weights", g->weights, tokens);
    CHECK_BUFFER(ctx, "args->out", g->out, tokens);
    return MOES_OK;
}
