/* SPDX-License-Identifier: MIT */
/*
 * gpu_memory.c - device memory, copies and fills on the context's stream,
 * waiting for the stream and reading the device's error record, and the
 * timestamps.
 */
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

int gpu_free(moes_context *ctx, void *ptr)
{
    CUresult r;
    ENTER(ctx);
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

int gpu_copy_to_backend(moes_context *ctx, void *dst, const void *src,
                        int64_t bytes)
{
    ENTER(ctx);
    return wait_stream(ctx,
        DRV(ctx).cuMemcpyHtoDAsync((CUdeviceptr)(uintptr_t)dst, src,
                                   (size_t)bytes, gpu_stream_of(ctx)),
        "copying to the device");
}

int gpu_copy_to_host(moes_context *ctx, void *dst, const void *src,
                     int64_t bytes)
{
    ENTER(ctx);
    return wait_stream(ctx,
        DRV(ctx).cuMemcpyDtoHAsync(dst, (CUdeviceptr)(uintptr_t)src,
                                   (size_t)bytes, gpu_stream_of(ctx)),
        "copying to the host");
}

int gpu_copy_within(moes_context *ctx, void *dst, const void *src,
                    int64_t bytes)
{
    ENTER(ctx);
    return wait_stream(ctx,
        DRV(ctx).cuMemcpyDtoDAsync((CUdeviceptr)(uintptr_t)dst,
                                   (CUdeviceptr)(uintptr_t)src, (size_t)bytes,
                                   gpu_stream_of(ctx)),
        "copying within the device");
}

int gpu_fill(moes_context *ctx, void *ptr, int value, int64_t bytes)
{
    CUresult r;
    ENTER(ctx);
    r = DRV(ctx).cuMemsetD8Async((CUdeviceptr)(uintptr_t)ptr,
                                 (unsigned char)value, (size_t)bytes,
                                 gpu_stream_of(ctx));
    return r ? gpu_fail(ctx, r, "cuMemsetD8Async") : MOES_OK;
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
