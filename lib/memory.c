/* SPDX-License-Identifier: MIT */
/*
 * memory.c - memory on the context's backend: allocation, copies, fills,
 * and the reservation of workspace.
 */
#include "internal.h"

MOES_API int moes_malloc(moes_context *ctx, void **ptr, int64_t bytes)
{
    if (!ctx)
        return MOES_ERR_NULL_POINTER;
    if (!ptr)
        return moes_set_error(ctx, MOES_ERR_NULL_POINTER, "ptr is NULL");
    *ptr = NULL;
    if (bytes <= 0)
        return moes_set_error(ctx, MOES_ERR_INVALID_SIZE,
            "bytes = %lld must be positive", (long long)bytes);
    return ctx->ops->malloc(ctx, ptr, bytes);
}

MOES_API int moes_free(moes_context *ctx, void *ptr)
{
    if (!ctx)
        return MOES_ERR_NULL_POINTER;
    if (!ptr)
        return MOES_OK;
    return ctx->ops->free(ctx, ptr);
}

/* The checks that all copies share. Returns MOES_OK when the copy may go
 * on (bytes == 0 is a valid copy of nothing). */
static int check_copy(moes_context *ctx, const void *dst, const void *src,
                      int64_t bytes)
{
    if (bytes < 0)
        return moes_set_error(ctx, MOES_ERR_INVALID_SIZE,
            "bytes = %lld is negative", (long long)bytes);
    if (bytes > 0 && !dst)
        return moes_set_error(ctx, MOES_ERR_NULL_POINTER, "dst is NULL");
    if (bytes > 0 && !src)
        return moes_set_error(ctx, MOES_ERR_NULL_POINTER, "src is NULL");
    return MOES_OK;
}

MOES_API int moes_copy_to_backend(moes_context *ctx, void *dst,
                                  const void *host_src, int64_t bytes)
{
    int st;
    if (!ctx)
        return MOES_ERR_NULL_POINTER;
    if ((st = check_copy(ctx, dst, host_src, bytes)) != MOES_OK)
        return st;
    return bytes ? ctx->ops->copy_to_backend(ctx, dst, host_src, bytes)
                 : MOES_OK;
}

MOES_API int moes_copy_to_host(moes_context *ctx, void *host_dst,
                               const void *src, int64_t bytes)
{
    int st;
    if (!ctx)
        return MOES_ERR_NULL_POINTER;
    if ((st = check_copy(ctx, host_dst, src, bytes)) != MOES_OK)
        return st;
    return bytes ? ctx->ops->copy_to_host(ctx, host_dst, src, bytes)
                 : MOES_OK;
}

MOES_API int moes_copy_within(moes_context *ctx, void *dst, const void *src,
                              int64_t bytes)
{
    int st;
    if (!ctx)
        return MOES_ERR_NULL_POINTER;
    if ((st = check_copy(ctx, dst, src, bytes)) != MOES_OK)
        return st;
    return bytes ? ctx->ops->copy_within(ctx, dst, src, bytes) : MOES_OK;
}

MOES_API int moes_fill(moes_context *ctx, void *ptr, int value, int64_t bytes)
{
    if (!ctx)
        return MOES_ERR_NULL_POINTER;
    if (bytes < 0)
        return moes_set_error(ctx, MOES_ERR_INVALID_SIZE,
            "bytes = %lld is negative", (long long)bytes);
    if (value < 0 || value > 255)
        return moes_set_error(ctx, MOES_ERR_INVALID_ARGUMENT,
            "value = %d is outside 0..255", value);
    if (bytes == 0)
        return MOES_OK;
    if (!ptr)
        return moes_set_error(ctx, MOES_ERR_NULL_POINTER, "ptr is NULL");
    return ctx->ops->fill(ctx, ptr, value, bytes);
}

MOES_API int moes_fill_rows(moes_context *ctx, void *dst, int64_t rows,
                            int64_t row_stride, const void *pattern,
                            int64_t pattern_bytes)
{
    int64_t span;
    if (!ctx)
        return MOES_ERR_NULL_POINTER;
    if (rows < 0)
        return moes_set_error(ctx, MOES_ERR_INVALID_SIZE,
            "rows = %lld is negative", (long long)rows);
    if (pattern_bytes < 1 || pattern_bytes > MOES_FILL_ROWS_MAX_PATTERN)
        return moes_set_error(ctx, MOES_ERR_INVALID_SIZE,
            "pattern_bytes = %lld is outside 1..%d", (long long)pattern_bytes,
            MOES_FILL_ROWS_MAX_PATTERN);
    if (rows > 1 && row_stride < pattern_bytes)
        return moes_set_error(ctx, MOES_ERR_INVALID_STRIDE,
            "row_stride = %lld is below pattern_bytes = %lld: the rows' "
            "copies would overlap", (long long)row_stride,
            (long long)pattern_bytes);
    if (rows == 0)
        return MOES_OK;
    if (!dst || !pattern)
        return moes_set_error(ctx, MOES_ERR_NULL_POINTER, "%s is NULL",
                              !dst ? "dst" : "pattern");
    /* One row never reads row_stride. */
    if ((rows > 1 && !moes_mul_i64(rows - 1, row_stride, &span)) ||
        !moes_add_i64(rows > 1 ? span : 0, pattern_bytes, &span) ||
        (uint64_t)span > UINTPTR_MAX - (uintptr_t)dst)
        return moes_set_error(ctx, MOES_ERR_OVERFLOW,
            "%lld rows of %lld bytes, %lld apart, from dst = %p end past "
            "the address space", (long long)rows, (long long)pattern_bytes,
            (long long)row_stride, dst);
    return ctx->ops->fill_rows(ctx, dst, rows, row_stride, pattern,
                               pattern_bytes);
}

/* The sizes a workspace is asked for: those of moes_reserve_workspace. */
static int check_workspace_sizes(moes_context *ctx, int64_t n_tokens,
                                 int64_t top_k, int64_t n_experts)
{
    int64_t choices;
    if (n_tokens < 0)
        return moes_set_error(ctx, MOES_ERR_INVALID_SIZE,
            "n_tokens = %lld is negative", (long long)n_tokens);
    if (top_k < 1)
        return moes_set_error(ctx, MOES_ERR_INVALID_SIZE,
            "top_k = %lld must be at least 1", (long long)top_k);
    if (n_experts < 1)
        return moes_set_error(ctx, MOES_ERR_INVALID_SIZE,
            "n_experts = %lld must be at least 1", (long long)n_experts);
    if (!moes_mul_i64(n_tokens, top_k, &choices))
        return moes_set_error(ctx, MOES_ERR_OVERFLOW,
            "n_tokens * top_k overflows 64 bits");
    return MOES_OK;
}

int moes_workspace_can_have(moes_context *ctx, int64_t need, int64_t held)
{
    if (need <= held)
        return MOES_OK;
    if (ctx->workspace_from_caller)
        return moes_set_error(ctx, MOES_ERR_WORKSPACE,
            "this call needs %lld bytes of workspace, more than the %lld "
            "of the caller's workspace (moes_set_workspace)",
            (long long)need, (long long)held);
    if (ctx->workspace_reserved)
        return moes_set_error(ctx, MOES_ERR_WORKSPACE,
            "this call needs %lld bytes of workspace, more than the %lld "
            "reserved", (long long)need, (long long)held);
    return MOES_OK;
}

MOES_API int moes_reserve_workspace(moes_context *ctx, int64_t n_tokens,
                                    int64_t top_k, int64_t n_experts)
{
    int st;
    if (!ctx)
        return MOES_ERR_NULL_POINTER;
    MOES_TRY(check_workspace_sizes(ctx, n_tokens, top_k, n_experts));
    if (ctx->ops->reserve_workspace) {
        /* A new reservation may grow the workspace; when it cannot, the
         * one before it still holds: calls must not start to allocate
         * because a larger reservation failed. */
        const int reserved = ctx->workspace_reserved;
        ctx->workspace_reserved = 0;
        st = ctx->ops->reserve_workspace(ctx, n_tokens, top_k, n_experts);
        if (st != MOES_OK) {
            ctx->workspace_reserved = reserved;
            return st;
        }
    }
    ctx->workspace_reserved = 1;
    return MOES_OK;
}

MOES_API int moes_workspace_size(moes_context *ctx, int64_t n_tokens,
                                 int64_t top_k, int64_t n_experts,
                                 int64_t *bytes)
{
    if (!ctx)
        return MOES_ERR_NULL_POINTER;
    if (!bytes)
        return moes_set_error(ctx, MOES_ERR_NULL_POINTER, "bytes is NULL");
    MOES_TRY(check_workspace_sizes(ctx, n_tokens, top_k, n_experts));
    if (!ctx->ops->workspace_size) {
        *bytes = 0;
        return MOES_OK;
    }
    return ctx->ops->workspace_size(ctx, n_tokens, top_k, n_experts, bytes);
}

MOES_API int moes_set_workspace(moes_context *ctx, void *ptr, int64_t bytes)
{
    if (!ctx)
        return MOES_ERR_NULL_POINTER;
    if (bytes < 0)
        return moes_set_error(ctx, MOES_ERR_INVALID_SIZE,
            "bytes = %lld is negative", (long long)bytes);
    if (!ptr && bytes > 0)
        return moes_set_error(ctx, MOES_ERR_NULL_POINTER,
            "ptr is NULL but bytes = %lld (NULL and 0 give the workspace "
            "back)", (long long)bytes);
    if (ptr && bytes == 0)
        return moes_set_error(ctx, MOES_ERR_INVALID_SIZE,
            "bytes = 0 for a workspace at %p", ptr);
    if ((uintptr_t)ptr % MOES_WORKSPACE_ALIGNMENT != 0)
        return moes_set_error(ctx, MOES_ERR_INVALID_ARGUMENT,
            "ptr = %p is not aligned to MOES_WORKSPACE_ALIGNMENT = %d bytes",
            ptr, MOES_WORKSPACE_ALIGNMENT);
    if (ctx->ops->set_workspace)
        MOES_TRY(ctx->ops->set_workspace(ctx, ptr, bytes));
    ctx->workspace_from_caller = ptr != NULL;
    /* The caller's buffer replaces any reservation; without it the
     * context's own workspace grows again as calls need. */
    ctx->workspace_reserved = 0;
    return MOES_OK;
}
