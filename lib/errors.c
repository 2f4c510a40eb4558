/* SPDX-License-Identifier: MIT */
/*
 * errors.c - status names, the per-context message, and the description of
 * data errors found by a backend.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* A switch over the enum, with no default: the compiler flags a status
 * added to moescatter.h without a name here. */
static const char *status_name(moes_status status)
{
    switch (status) {
    case MOES_OK: return "success";
    case MOES_ERR_NULL_POINTER: return "null pointer";
    case MOES_ERR_INVALID_SIZE: return "invalid size";
    case MOES_ERR_INVALID_STRIDE: return "invalid stride";
    case MOES_ERR_OVERFLOW: return "size overflow";
    case MOES_ERR_INVALID_DTYPE: return "invalid dtype";
    case MOES_ERR_INVALID_FLAGS: return "invalid flags";
    case MOES_ERR_INVALID_ALIGNMENT: return "invalid alignment";
    case MOES_ERR_INVALID_ID: return "invalid expert id";
    case MOES_ERR_INVALID_MAP: return "invalid expert map entry";
    case MOES_ERR_INVALID_OUT_INDEX: return "invalid out_index entry";
    case MOES_ERR_CAPACITY: return "capacity too small";
    case MOES_ERR_INVALID_ARGUMENT: return "invalid argument";
    case MOES_ERR_OUT_OF_MEMORY: return "out of memory";
    case MOES_ERR_BACKEND_UNAVAILABLE: return "backend unavailable";
    case MOES_ERR_DEVICE: return "device error";
    case MOES_ERR_WORKSPACE: return "workspace too small";
    case MOES_ERR_INVALID_SCALE: return "invalid scale";
    case MOES_ERR_OVERLAP: return "overlapping buffers";
    case MOES_ERR_MISALIGNED: return "misaligned pointer";
    }
    return NULL;
}

MOES_API const char *moes_strerror(int status)
{
    const char *name = status_name((moes_status)status);
    return name ? name : "unknown status";
}

/* The message of a failed moes_context_create, per thread. */
static _Thread_local char creation_message[MOES_MESSAGE_LEN];

int moes_set_error(moes_context *ctx, int status, const char *fmt, ...)
{
    char *dst = ctx ? ctx->message : creation_message;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(dst, MOES_MESSAGE_LEN, fmt, ap);
    va_end(ap);
    return status;
}

MOES_API const char *moes_last_error(const moes_context *ctx)
{
    return ctx ? ctx->message : creation_message;
}

int moes_report_data_error(moes_context *ctx, const moes_data_error *err)
{
    int64_t t = err->row_len > 0 ? err->index / err->row_len : err->index;
    int64_t k = err->row_len > 0 ? err->index % err->row_len : 0;
    switch ((moes_status)err->status) {
    case MOES_ERR_INVALID_ID:
        return moes_set_error(ctx, err->status,
            "ids[%lld][%lld] = %lld is outside [-1, %lld)", (long long)t,
            (long long)k, (long long)err->value, (long long)err->limit);
    case MOES_ERR_INVALID_MAP:
        return moes_set_error(ctx, err->status,
            "expert_map[%lld] = %lld is outside [-1, %lld)",
            (long long)err->index, (long long)err->value,
            (long long)err->limit);
    case MOES_ERR_INVALID_OUT_INDEX:
        return moes_set_error(ctx, err->status,
            "out_index[%lld][%lld] = %lld is outside [-1, %lld)",
            (long long)t, (long long)k, (long long)err->value,
            (long long)err->limit);
    case MOES_ERR_CAPACITY:
        /* The rows needed saturate at INT64_MAX when their sum does not
         * fit: say so rather than print a number that is not the count. */
        if (err->value == INT64_MAX)
            return moes_set_error(ctx, err->status,
                "capacity = %lld is smaller than the rows this routing "
                "needs (their count does not fit 64 bits)",
                (long long)err->limit);
        return moes_set_error(ctx, err->status,
            "capacity = %lld is smaller than the %lld rows this routing needs",
            (long long)err->limit, (long long)err->value);
    case MOES_ERR_INVALID_SCALE: {
        uint32_t bits = (uint32_t)err->value;
        float f;
        memcpy(&f, &bits, sizeof f);
        return moes_set_error(ctx, err->status,
            "x_scales[%lld][%lld] = %g (bits 0x%08x) is not a positive, "
            "finite, normal power of two, which UE8M0 needs",
            (long long)t, (long long)k, (double)f, (unsigned)bits);
    }
    default:
        return moes_set_error(ctx, err->status, "%s",
                              moes_strerror(err->status));
    }
}

void moes_log(const char *fmt, ...)
{
    const char *env = getenv("MOES_LOG");
    if (!env || !*env || strcmp(env, "0") == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    fputs("moescatter: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

int moes_mul_i64(int64_t a, int64_t b, int64_t *out)
{
    int64_t r;
    if (__builtin_mul_overflow(a, b, &r))
        return 0;
    *out = r;
    return 1;
}

int moes_add_i64(int64_t a, int64_t b, int64_t *out)
{
    int64_t r;
    if (__builtin_add_overflow(a, b, &r))
        return 0;
    *out = r;
    return 1;
}

size_t moes_index_dtype_size(int dtype)
{
    return dtype == MOES_DTYPE_INT32 ? 4 : dtype == MOES_DTYPE_INT64 ? 8 : 0;
}
