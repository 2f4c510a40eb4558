/* SPDX-License-Identifier: MIT */
/*
 * moescatter_ep.h - expert parallelism across ranks: dispatch and combine
 * over MPI or NCCL, on top of moes_scatter and moes_gather.
 *
 * RANKS AND EXPERTS
 *   Ranks 0 .. R-1 each hold E_local experts. Physical expert p
 *   (0 <= p < R * E_local) lives on rank p / E_local as its local expert
 *   p % E_local. A token's top-k ids are physical ids, or -1 (nowhere).
 *
 * DISPATCH
 *   Every rank gives its N tokens (rows, optional fp32 block scales, top-k
 *   ids and optional weights). Each token is sent once to every rank that
 *   holds at least one of its experts, with its ids turned into that rank's
 *   local ids (or -1). A rank's received tokens are ordered by source rank
 *   ascending, then by the source's token order, and are scattered into
 *   any local layout (moes_scatter_args) as if they were that rank's own
 *   tokens in that order.
 *
 * COMBINE
 *   Each rank gathers its received tokens with moes_gather into one fp32
 *   partial row per (token, rank): the k-ordered sum of that rank's
 *   weighted choices. The partials go back to the source, which adds them
 *   in ascending rank order and converts once:
 *       out[t] = cvt(0 + partial_0[t] + partial_1[t] + ...)
 *   (ranks that got nothing of t skipped). The result is the same bits on
 *   every transport, rank count and backend.
 *
 * MODES
 *   MOES_EP_MODE_EXACT exchanges the counts first and sends exactly what
 *   is needed (prefill). MOES_EP_MODE_BOUNDED sends fixed buffers of
 *   tokens_per_pair tokens for every (source, destination) pair: a token
 *   past the bound at its source is dropped for that destination, counted
 *   in n_dropped, and contributes nothing there (decode).
 *
 * BOUNDED OVER NCCL: NO HOST ROUND TRIP
 *   Over NCCL the bounded mode queues every step on the stream and
 *   returns without waiting, so that a CUDA graph can capture a dispatch
 *   and a combine and replay them (run one of each before capturing, so
 *   that the context's workspace has grown). Host outputs (n_received,
 *   n_dropped) make the dispatch wait; leave them NULL and use
 *   n_dropped_device instead. Errors the host finds (arguments) are
 *   returned at once by the rank that has them; errors found on a device
 *   (an id out of range) are deferred, as everywhere on CUDA. Either way
 *   the failing rank still takes part in every exchange, so no peer
 *   waits, and marks what it sends as failed: each peer's stream then
 *   writes nothing more of that step (outputs unchanged), and
 *   moes_ep_synchronize on every rank returns the error, naming the rank
 *   it came from. Every rank must give scales or none, and weights or
 *   none, alike; this is not checked there (a rank without them sends
 *   1.0).
 *
 * ERRORS
 *   Every function is collective over the communicator and returns a
 *   moes_status on every rank. When one rank finds bad input (ids out of
 *   range, more tokens than max_tokens, bad arguments of its local layout
 *   or of the combine's out, a layout that cannot hold what it receives),
 *   every rank returns an error before anything of a caller's is written:
 *   the rank at fault its own status and message, the others the same
 *   status with a message naming that rank. No rank is left waiting.
 *   moes_ep_last_error() gives the message. (The bounded mode over NCCL
 *   defers what the devices find: see above.)
 *
 * TRANSPORTS
 *   MPI: host buffers, a CPU context (moes_context on MOES_BACKEND_CPU),
 *   MPI_Alltoall and MPI_Alltoallv on the caller's communicator. Declared
 *   when <mpi.h> is included before this header.
 *   NCCL: device buffers, a CUDA context; grouped ncclSend/ncclRecv on the
 *   caller's communicator and stream. libnccl.so.2 is opened at run time.
 */
#ifndef MOESCATTER_EP_H
#define MOESCATTER_EP_H

#include <stddef.h>
#include <stdint.h>

#include "moescatter.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct moes_ep moes_ep; /* opaque */

typedef enum moes_ep_mode {
    MOES_EP_MODE_EXACT = 1,
    MOES_EP_MODE_BOUNDED = 2
} moes_ep_mode;

typedef struct moes_ep_options {
    size_t struct_size;        /* sizeof(moes_ep_options)                 */
    int n_ranks;               /* R: must equal the communicator's size   */
    int64_t experts_per_rank;  /* E_local >= 1                            */
    int64_t hidden;            /* H >= 1                                  */
    int64_t top_k;             /* K >= 1                                  */
    int64_t max_tokens;        /* N per dispatch on a rank, at most       */
    int x_dtype;               /* dispatched rows: fp8, bf16, fp16, fp32  */
    int64_t scale_block;       /* B of the fp32 block scales, when sent   */
    int ids_dtype;             /* MOES_DTYPE_INT32 or MOES_DTYPE_INT64    */
    int y_dtype;               /* expert outputs: bf16, fp16, fp32        */
    int out_dtype;             /* combined output: bf16, fp16, fp32       */
    int mode;                  /* moes_ep_mode                            */
    int64_t tokens_per_pair;   /* BOUNDED: tokens per (source, dest) >= 1 */
} moes_ep_options;

/* Sets opts to the defaults: 1 rank, exact mode, bf16 rows, outputs and
 * expert outputs, int32 ids, scale block 128, every size 0 (to be set).
 * Returns MOES_ERR_NULL_POINTER when opts is NULL. */
MOES_API int moes_ep_options_init(moes_ep_options *opts);

#ifdef MPI_VERSION
/* Creates an ep context over ctx (a CPU context) and the caller's MPI
 * communicator, which must outlive it. Collective: every rank calls it
 * with the same options; a rank with bad arguments (ep NULL included)
 * still takes part, so that every rank fails. Returns
 * MOES_ERR_NULL_POINTER, MOES_ERR_INVALID_SIZE, MOES_ERR_INVALID_DTYPE,
 * MOES_ERR_INVALID_ARGUMENT (the communicator's size is not n_ranks,
 * ranks disagree on the options, a CUDA context), MOES_ERR_OVERFLOW,
 * MOES_ERR_OUT_OF_MEMORY, and the status of a peer that failed. On
 * failure *ep is NULL on every rank that gave an ep. */
MOES_API int moes_ep_create_mpi(moes_ep **ep, moes_context *ctx,
                                const moes_ep_options *opts, MPI_Comm comm);
#endif

/* Creates an ep context over ctx (a CUDA context) and the caller's NCCL
 * communicator (an ncclComm_t) and CUDA stream (a cudaStream_t), which
 * must outlive it; the stream becomes ctx's stream (moes_set_stream).
 * Collective like moes_ep_create_mpi. Returns its codes, and
 * MOES_ERR_BACKEND_UNAVAILABLE when libnccl.so.2 cannot be opened. */
MOES_API int moes_ep_create_nccl(moes_ep **ep, moes_context *ctx,
                                 const moes_ep_options *opts,
                                 void *nccl_comm, void *stream);

/* Waits for the work the ep context queued on its stream (over NCCL)
 * and returns the first error found on a device since the last call:
 * this rank's own, or that of the peer whose failed dispatch or combine
 * stopped this rank's stream, with a message naming it. Not collective.
 * In the exact mode and over MPI, nothing is deferred: returns MOES_OK,
 * or the context's pending error. Returns MOES_ERR_NULL_POINTER,
 * MOES_ERR_DEVICE, or the deferred status. */
MOES_API int moes_ep_synchronize(moes_ep *ep);

/* Frees an ep context (not collective). NULL is accepted. Returns MOES_OK
 * or MOES_ERR_DEVICE (the driver failed to free a buffer: everything is
 * released all the same, and the library context's moes_last_error holds
 * the driver's message). */
MOES_API int moes_ep_destroy(moes_ep *ep);

typedef struct moes_ep_dispatch_args {
    size_t struct_size;        /* sizeof(moes_ep_dispatch_args)           */
    int64_t n_tokens;          /* N, 0 .. max_tokens                      */
    const void *x;             /* [N][x_stride] rows of x_dtype           */
    int64_t x_stride;          /* >= H; 0 means H                         */
    const float *x_scales;     /* [N][x_scales_stride] fp32, or NULL      */
    int64_t x_scales_stride;   /* >= ceil(H / B); 0 means dense           */
    const void *ids;           /* [N][ids_stride] physical ids or -1      */
    int64_t ids_stride;        /* >= K; 0 means K                         */
    const float *weights;      /* [N][weights_stride] fp32, NULL = 1.0    */
    int64_t weights_stride;    /* >= K; 0 means K                         */
    /* The local layout of the received tokens: layout, alignment,
     * capacity, flags, out, out_stride, out_scales and its format and
     * strides, index_dtype, counts, expert_start, expert_end, m_indices,
     * masked_m, n_dropped, exactly as for moes_scatter. Its x, x_dtype,
     * hidden, x_stride, x_scales, scale_block, x_scales_stride, out_index
     * and out_index_stride are ignored: the dispatch fills them. */
    const moes_scatter_args *local;
    int64_t *n_received;       /* out (host), or NULL: tokens this rank
                                  received                                */
    int64_t *n_dropped;        /* out (host), or NULL: BOUNDED, (token,
                                  destination) pairs this rank dropped    */
    int64_t *n_dropped_device; /* out (backend memory, one int64), or
                                  NULL: the same count, written on the
                                  stream (BOUNDED over NCCL: without the
                                  wait that n_dropped costs)             */
} moes_ep_dispatch_args;

/* Sets args to zero sizes, dense strides and NULL pointers, with
 * struct_size filled. Returns MOES_ERR_NULL_POINTER when args is NULL. */
MOES_API int moes_ep_dispatch_args_init(moes_ep_dispatch_args *args);

/* The rows a contiguous or grouped local layout needs so that a dispatch
 * can never fail for capacity (every rank sending it max_tokens tokens,
 * or tokens_per_pair each when bounded), or for masked the capacity per
 * expert that never drops. Not collective. Returns MOES_ERR_NULL_POINTER,
 * MOES_ERR_INVALID_ALIGNMENT, MOES_ERR_INVALID_ARGUMENT,
 * MOES_ERR_OVERFLOW. */
MOES_API int moes_ep_capacity(moes_ep *ep, int layout, int64_t alignment,
                              int64_t *capacity);

/* Sends each token to the ranks that hold its experts and scatters what
 * this rank receives into args->local. Collective. The routing is kept
 * for the next moes_ep_combine. Returns the codes of moes_scatter, and
 * MOES_ERR_INVALID_ID (an id outside [-1, R * E_local)),
 * MOES_ERR_INVALID_SIZE (n_tokens above max_tokens), MOES_ERR_DEVICE (the
 * transport failed), or the status of the peer that failed. On an error
 * found before the exchange, nothing is written on any rank. */
MOES_API int moes_ep_dispatch(moes_ep *ep, const moes_ep_dispatch_args *args);

typedef struct moes_ep_combine_args {
    size_t struct_size;        /* sizeof(moes_ep_combine_args)            */
    unsigned flags;            /* MOES_GATHER_ACCUMULATE or 0             */
    const void *y;             /* [y_rows][y_stride] expert outputs, rows
                                  as the last dispatch's local layout     */
    int64_t y_rows;            /* rows of y (the local capacity, or E*C)  */
    int64_t y_stride;          /* >= H; 0 means H                         */
    void *out;                 /* [N][out_stride] of out_dtype: N of the
                                  last dispatch on this rank              */
    int64_t out_stride;        /* >= H; 0 means H                         */
} moes_ep_combine_args;

/* Sets args to NULL buffers and dense strides, with struct_size filled.
 * Returns MOES_ERR_NULL_POINTER when args is NULL. */
MOES_API int moes_ep_combine_args_init(moes_ep_combine_args *args);

/* Returns each source token's weighted sum of its experts' outputs, in
 * its original order, for the routing of the last dispatch. Collective.
 * Returns the codes of moes_gather, MOES_ERR_INVALID_ARGUMENT (no dispatch
 * before), MOES_ERR_DEVICE, or the status of the peer that failed; then
 * out is unchanged on every rank. */
MOES_API int moes_ep_combine(moes_ep *ep, const moes_ep_combine_args *args);

typedef struct moes_ep_stats {
    size_t struct_size;        /* sizeof(moes_ep_stats)                   */
    int rank;                  /* this rank                               */
    int n_ranks;               /* R                                       */
    int64_t bytes_sent;        /* by the last dispatch and combine        */
    int64_t bytes_received;
} moes_ep_stats;

/* Describes the ep context and the traffic of its last dispatch and
 * combine (payload bytes to and from other ranks; the counts exchanged
 * first are not included). Returns MOES_ERR_NULL_POINTER or
 * MOES_ERR_INVALID_ARGUMENT (struct_size). */
MOES_API int moes_ep_get_stats(moes_ep *ep, moes_ep_stats *stats);

/* The message of the last failed call on ep (or, with ep NULL, of the last
 * failed create in this thread); "" when none. */
MOES_API const char *moes_ep_last_error(const moes_ep *ep);

#ifdef __cplusplus
}
#endif

#endif /* MOESCATTER_EP_H */
