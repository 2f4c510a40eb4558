/* SPDX-License-Identifier: MIT */
/*
 * operations.c - the entry points of count, scatter and gather: validate
 * once, then hand the plan to the context's backend.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "struct_size.h"
#include "validate.h"

MOES_API int moes_routing_init(moes_routing *routing)
{
    if (!routing)
        return MOES_ERR_NULL_POINTER;
    memset(routing, 0, sizeof *routing);
    routing->struct_size = sizeof *routing;
    routing->top_k = 1;
    routing->ids_dtype = MOES_DTYPE_INT32;
    return MOES_OK;
}

MOES_API int moes_scatter_args_init_sized(moes_scatter_args *args,
                                          size_t struct_size)
{
    moes_scatter_args full;
    if (!args)
        return MOES_ERR_NULL_POINTER;
    if (!moes_scatter_args_size_known(struct_size))
        return MOES_ERR_INVALID_ARGUMENT;
    memset(&full, 0, sizeof full);
    full.layout = MOES_LAYOUT_CONTIGUOUS;
    full.alignment = 128;
    full.scale_block = 128;
    full.x_dtype = MOES_DTYPE_BF16;
    full.out_scales_format = MOES_SCALES_NONE;
    full.index_dtype = MOES_DTYPE_INT32;
    full.row_source_pad = -1;
    full.struct_size = struct_size;
    /* The caller's struct may be an older, smaller one. */
    memcpy(args, &full, struct_size);
    return MOES_OK;
}

/* The 0.1 and 0.2 entry point; the header's macro of the same name is not
 * expanded here (the name is not followed by a parenthesis). */
MOES_API int (moes_scatter_args_init)(moes_scatter_args *args)
{
    return moes_scatter_args_init_sized(args, moes_scatter_args_size_0_2());
}

MOES_API int moes_gather_args_init(moes_gather_args *args)
{
    if (!args)
        return MOES_ERR_NULL_POINTER;
    memset(args, 0, sizeof *args);
    args->struct_size = sizeof *args;
    args->top_k = 1;
    args->y_dtype = MOES_DTYPE_BF16;
    args->out_dtype = MOES_DTYPE_BF16;
    args->index_dtype = MOES_DTYPE_INT32;
    return MOES_OK;
}

/* A backend's result: a data error becomes its status and message. */
static int finish(moes_context *ctx, int st, const moes_data_error *err)
{
    if (st != MOES_OK && err->status != MOES_OK)
        return moes_report_data_error(ctx, err);
    return st;
}

MOES_API int moes_count(moes_context *ctx, const moes_routing *routing,
                        void *counts, int counts_dtype)
{
    moes_count_plan plan;
    moes_data_error err = {0};
    int st;
    if (!ctx)
        return MOES_ERR_NULL_POINTER;
    st = moes_validate_count(ctx, routing, counts, counts_dtype, &plan);
    if (st != MOES_OK)
        return st;
    return finish(ctx, ctx->ops->count(ctx, &plan, &err), &err);
}

MOES_API int moes_distinct_experts(moes_context *ctx,
                                   const moes_routing *routing, void *out,
                                   int out_dtype, int64_t out_stride)
{
    moes_distinct_plan plan;
    moes_data_error err = {0};
    int st;
    if (!ctx)
        return MOES_ERR_NULL_POINTER;
    st = moes_validate_distinct(ctx, routing, out, out_dtype, out_stride,
                                &plan);
    if (st != MOES_OK)
        return st;
    return finish(ctx, ctx->ops->distinct(ctx, &plan, &err), &err);
}

MOES_API int moes_scatter(moes_context *ctx, const moes_routing *routing,
                          const moes_scatter_args *args)
{
    moes_scatter_plan plan;
    moes_data_error err = {0};
    int st;
    if (!ctx)
        return MOES_ERR_NULL_POINTER;
    st = moes_validate_scatter(ctx, routing, args, &plan);
    if (st != MOES_OK)
        return st;
    if (plan.a.flags & MOES_SCATTER_CHECK_ONLY)
        return ctx->ops->check_scatter ? ctx->ops->check_scatter(ctx, &plan)
                                       : MOES_OK;
    return finish(ctx, ctx->ops->scatter(ctx, &plan, &err), &err);
}

MOES_API int moes_gather(moes_context *ctx, const moes_gather_args *args)
{
    moes_gather_plan plan;
    moes_data_error err = {0};
    int st;
    if (!ctx)
        return MOES_ERR_NULL_POINTER;
    st = moes_validate_gather(ctx, args, &plan);
    if (st != MOES_OK)
        return st;
    if (plan.a.flags & MOES_GATHER_CHECK_ONLY)
        return ctx->ops->check_gather ? ctx->ops->check_gather(ctx, &plan)
                                      : MOES_OK;
    return finish(ctx, ctx->ops->gather(ctx, &plan, &err), &err);
}

/* moes_scatter_capacity's errors: recorded on ctx, and not at all when
 * ctx is NULL (moes_last_error(NULL) belongs to moes_context_create). */
#if defined(__GNUC__)
__attribute__((format(printf, 3, 4)))
#endif
static int capacity_error(moes_context *ctx, int status, const char *fmt, ...)
{
    char message[MOES_MESSAGE_LEN];
    va_list ap;
    if (!ctx)
        return status;
    va_start(ap, fmt);
    vsnprintf(message, sizeof message, fmt, ap);
    va_end(ap);
    return moes_set_error(ctx, status, "%s", message);
}

MOES_API int moes_scatter_capacity(moes_context *ctx, int layout,
                                   int64_t n_tokens, int64_t top_k,
                                   int64_t n_experts, int64_t alignment,
                                   int64_t *capacity)
{
    int64_t choices, blocks, rows;
    if (!capacity)
        return capacity_error(ctx, MOES_ERR_NULL_POINTER, "capacity is NULL");
    if (layout != MOES_LAYOUT_CONTIGUOUS && layout != MOES_LAYOUT_GROUPED &&
        layout != MOES_LAYOUT_MASKED)
        return capacity_error(ctx, MOES_ERR_INVALID_ARGUMENT,
            "layout = %d is not a moes_layout", layout);
    if (n_tokens < 0)
        return capacity_error(ctx, MOES_ERR_INVALID_SIZE,
            "n_tokens = %lld is negative", (long long)n_tokens);
    if (top_k < 1)
        return capacity_error(ctx, MOES_ERR_INVALID_SIZE,
            "top_k = %lld must be at least 1", (long long)top_k);
    if (n_experts < 1)
        return capacity_error(ctx, MOES_ERR_INVALID_SIZE,
            "n_experts = %lld must be at least 1", (long long)n_experts);
    if (alignment < 1)
        return capacity_error(ctx, MOES_ERR_INVALID_ALIGNMENT,
            "alignment = %lld must be at least 1", (long long)alignment);
    if (!moes_mul_i64(n_tokens, top_k, &choices))
        return capacity_error(ctx, MOES_ERR_OVERFLOW,
            "n_tokens * top_k overflows 64 bits");
    if (layout == MOES_LAYOUT_MASKED) {
        *capacity = choices;
        return MOES_OK;
    }
    /* Each expert that has rows wastes at most A - 1 rows of padding, and
     * at most min(E, N*K) experts have rows; the sum rounded up to a
     * multiple of A (by quotient and remainder, so that a capacity up to
     * INT64_MAX itself is found). */
    blocks = n_experts < choices ? n_experts : choices;
    if (!moes_mul_i64(blocks, alignment - 1, &rows) ||
        !moes_add_i64(rows, choices, &rows) ||
        !moes_mul_i64(rows / alignment + (rows % alignment != 0), alignment,
                      &rows))
        return capacity_error(ctx, MOES_ERR_OVERFLOW,
            "the capacity for %lld tokens overflows 64 bits",
            (long long)n_tokens);
    *capacity = rows;
    return MOES_OK;
}
