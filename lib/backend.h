/* SPDX-License-Identifier: MIT */
/*
 * backend.h - the private interface between lib/ and a backend.
 *
 * lib/ validates every argument once (validate.c) and hands the backend a
 * plan: the caller's struct with zero strides resolved and the derived
 * sizes computed. A backend may then trust every size, stride and pointer
 * in the plan; what it must still check is the data behind the pointers
 * (ids, map entries, out_index entries, the capacity against the real
 * counts), which only it can read. It reports such an error through a
 * moes_data_error (data_error.h), and must then leave every output buffer
 * unmodified.
 *
 * Backends: cpu/ (the ground truth, always built) and gpu/ (CUDA, or a stub
 * whose open() says the library was built without CUDA).
 */
#ifndef MOES_BACKEND_H
#define MOES_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include "moescatter.h"
#include "data_error.h"

/* A routing, validated. ids_stride resolved; n_experts_global resolved. */
typedef struct moes_route_plan {
    moes_routing r;
    size_t ids_elem;          /* 4 or 8                                    */
    int64_t n_choices;        /* N * K                                     */
} moes_route_plan;

typedef struct moes_count_plan {
    moes_route_plan route;
    void *counts;
    int counts_dtype;         /* MOES_DTYPE_INT32 or MOES_DTYPE_INT64      */
} moes_count_plan;

typedef struct moes_distinct_plan {
    moes_route_plan route;
    void *out;                /* [N][out_stride]                           */
    int out_dtype;            /* MOES_DTYPE_INT32 or MOES_DTYPE_INT64      */
    int64_t out_stride;       /* >= K, resolved (never 0)                  */
} moes_distinct_plan;

/* A scatter, validated. Every stride in a is resolved (never 0). */
typedef struct moes_scatter_plan {
    moes_route_plan route;
    moes_scatter_args a;
    size_t x_elem;            /* bytes per element of x and out            */
    int64_t row_bytes;        /* hidden * x_elem                           */
    int64_t out_rows;         /* rows of out: capacity, or E * C (masked)  */
    int64_t n_scales;         /* S = ceil(H / B), 0 without scales         */
    int64_t n_scale_cols;     /* S (fp32) or ceil(S / 4) (UE8M0), or 0     */
    size_t index_elem;        /* 4 or 8                                    */
    int index_only;           /* x, x_scales, out, out_scales all NULL: no
                                 row is read or written; hidden, x_elem
                                 and row_bytes are 0                       */
} moes_scatter_plan;

/* A gather, validated. Every stride in a is resolved. */
typedef struct moes_gather_plan {
    moes_gather_args a;
    size_t y_elem;
    size_t out_elem;
    size_t index_elem;
} moes_gather_plan;

/*
 * The backend's table. Every slot is required unless marked optional.
 * Every function returns a moes_status; on failure it writes a message
 * with moes_set_error() (lib/internal.h), except for data errors, which
 * are returned through *err for lib/ to describe.
 */
typedef struct moes_backend_ops {
    const char *name;         /* "cpu", "cuda"                             */

    /* Opens the backend on ctx (ctx->state is NULL before). On failure,
     * returns MOES_ERR_BACKEND_UNAVAILABLE or MOES_ERR_DEVICE and writes
     * why into reason (reason_len bytes, NUL-terminated); AUTO then falls
     * back to the CPU with that reason. */
    int (*open)(moes_context *ctx, char *reason, size_t reason_len);
    /* Releases ctx->state. Always called once after a successful open. */
    int (*close)(moes_context *ctx);
    /* Fills the device fields of info. Optional: the CPU leaves them. */
    int (*get_info)(moes_context *ctx, moes_context_info *info);

    int (*malloc)(moes_context *ctx, void **ptr, int64_t bytes);
    int (*free)(moes_context *ctx, void *ptr);
    int (*copy_to_backend)(moes_context *ctx, void *dst, const void *src,
                           int64_t bytes);
    int (*copy_to_host)(moes_context *ctx, void *dst, const void *src,
                        int64_t bytes);
    int (*copy_within)(moes_context *ctx, void *dst, const void *src,
                       int64_t bytes);
    int (*fill)(moes_context *ctx, void *ptr, int value, int64_t bytes);
    /* The pattern at the start of each row (lib/ has checked the sizes:
     * 1 <= pattern_bytes <= MOES_FILL_ROWS_MAX_PATTERN, rows >= 1, the
     * rows' copies apart and inside the address space). The pattern is
     * host memory, read before the call returns; it may lie inside the
     * rows on the CPU. */
    int (*fill_rows)(moes_context *ctx, void *dst, int64_t rows,
                     int64_t row_stride, const void *pattern,
                     int64_t pattern_bytes);

    /* Optional: a backend without streams ignores the value (lib/ keeps it
     * in ctx->stream either way). */
    int (*set_stream)(moes_context *ctx, void *stream);
    /* Optional: waits for queued work and moves a deferred data error into
     * *err (clearing it on the device). Absent means synchronous. */
    int (*synchronize)(moes_context *ctx, moes_data_error *err);
    /* Optional: reads, without waiting, a deferred data error already
     * found by finished work. */
    int (*get_error)(moes_context *ctx, moes_data_error *err);
    /* Records a timestamp in slot (checked by lib/), and measures between
     * two recorded slots, waiting for `to`. */
    int (*timestamp)(moes_context *ctx, int slot);
    int (*elapsed_ms)(moes_context *ctx, int from, int to, double *ms);
    /* Optional: reserves workspace for calls up to these sizes. It is
     * called with ctx->workspace_reserved cleared, so that it may grow the
     * workspace; lib/ sets the flag again whether it succeeds or not. With
     * the caller's workspace in place it allocates nothing and returns
     * MOES_ERR_WORKSPACE when that is too small for these sizes. */
    int (*reserve_workspace)(moes_context *ctx, int64_t n_tokens,
                             int64_t top_k, int64_t n_experts);
    /* Optional, all three or none; absent means the backend uses no
     * scratch memory (lib/ then reports 0 bytes and accepts any caller's
     * workspace without using it).
     * workspace_size: the bytes that every call up to these sizes needs
     * (sizes checked by lib/, n_tokens * top_k does not overflow).
     * set_workspace: calls take their scratch memory from [ptr, ptr +
     * bytes) from now on and never allocate, failing with
     * MOES_ERR_WORKSPACE when it is too small; the backend's own
     * workspace is freed. ptr NULL (bytes 0) returns to the backend's own,
     * grown on demand. lib/ has checked the sizes and the alignment
     * (MOES_WORKSPACE_ALIGNMENT); the backend checks that it can reach
     * the memory.
     * workspace_held: the bytes of workspace the calls use now. */
    int (*workspace_size)(moes_context *ctx, int64_t n_tokens, int64_t top_k,
                          int64_t n_experts, int64_t *bytes);
    int (*set_workspace)(moes_context *ctx, void *ptr, int64_t bytes);
    int (*workspace_held)(moes_context *ctx, int64_t *bytes);

    /* The operations. On a data error a synchronous backend fills *err
     * and returns err->status, having written nothing. An asynchronous
     * backend records the error on the device, writes nothing, and returns
     * MOES_OK; synchronize() reports it later. */
    int (*count)(moes_context *ctx, const moes_count_plan *plan,
                 moes_data_error *err);
    int (*scatter)(moes_context *ctx, const moes_scatter_plan *plan,
                   moes_data_error *err);
    int (*gather)(moes_context *ctx, const moes_gather_plan *plan,
                  moes_data_error *err);
    int (*distinct)(moes_context *ctx, const moes_distinct_plan *plan,
                    moes_data_error *err);
    /* Optional: the checks of a scatter's or a gather's buffers that the
     * backend makes before it runs one (CUDA: memory the device reaches),
     * without running it: what MOES_SCATTER_CHECK_ONLY and
     * MOES_GATHER_CHECK_ONLY add to lib/'s checks. Absent: none. */
    int (*check_scatter)(moes_context *ctx, const moes_scatter_plan *plan);
    int (*check_gather)(moes_context *ctx, const moes_gather_plan *plan);
} moes_backend_ops;

extern const moes_backend_ops moes_cpu_backend;
/* Defined by gpu/: the CUDA backend, or the stub when built without CUDA. */
extern const moes_backend_ops moes_cuda_backend;
/* 1 when gpu/ holds the real CUDA backend, 0 for the stub. */
extern const int moes_cuda_compiled;

#endif /* MOES_BACKEND_H */
