/* SPDX-License-Identifier: MIT */
/*
 * ep_internal.h - the ep context and the few collectives a transport
 * provides. The dispatch and combine logic (ep.c) is written once over
 * them, so that MPI and NCCL move the same bytes in the same order.
 */
#ifndef MOES_EP_INTERNAL_H
#define MOES_EP_INTERNAL_H

#include <stdint.h>

#include "moescatter_ep.h"

typedef struct ep_transport {
    /* Every rank sends n int64 (host memory) to every rank: send[r*n ..]
     * goes to rank r, recv[s*n ..] came from rank s. */
    int (*alltoall_i64)(moes_ep *ep, const int64_t *send, int64_t *recv,
                        int n);
    /* Element-wise maximum of n int64 (host memory) over the ranks, in
     * place. */
    int (*allreduce_max_i64)(moes_ep *ep, int64_t *values, int n);
    /* Backend buffers; counts and displacements in elements of
     * elem_bytes, one per rank. */
    int (*alltoallv)(moes_ep *ep, const void *send, const int64_t *send_counts,
                     const int64_t *send_displs, void *recv,
                     const int64_t *recv_counts, const int64_t *recv_displs,
                     int64_t elem_bytes);
    /* Optional: begin (1) or end (0) a group of alltoallv calls that the
     * transport may issue as one operation (NCCL's ncclGroupStart/End,
     * which nest). NULL: each call stands alone (MPI, blocking). */
    int (*group)(moes_ep *ep, int begin);
    /* Frees the transport's state; the status of freeing its backend
     * memory (everything is released either way). */
    int (*release)(moes_ep *ep);
} ep_transport;

/* A backend buffer that grows (exact mode) or is sized once (bounded). */
typedef struct ep_buffer {
    void *ptr;
    int64_t bytes;
} ep_buffer;

struct moes_ep {
    moes_context *ctx;
    moes_ep_options opts;
    const ep_transport *transport;
    void *transport_state;
    int rank;
    int n_ranks;
    int on_device;          /* buffers are device memory (NCCL)          */
    int64_t ids_size;       /* bytes of one id                           */
    int64_t x_size;         /* bytes of one row element                  */
    int64_t n_scales;       /* S = ceil(H / B)                           */
    char message[512];

    /* Bounded mode over NCCL: every step queued on the stream, none
     * waiting for the host (see ep.c, "Bounded mode on a device"). */
    int async;
    /* Rows in front of the received slots in recv_index, recv_records
     * and partial that hold the combine's markers (async only, else 0). */
    int64_t marker_rows;

    /* Host arrays, R entries each. */
    int64_t *send_counts, *send_displs, *recv_counts, *recv_displs;
    int64_t *exchange_send, *exchange_recv; /* 4 per rank               */
    int64_t *one_counts, *one_displs;       /* 1 and r: a cell a pair   */

    /* Backend buffers. */
    ep_buffer pack_ids;      /* [N][K] int32: the ranks a token goes to,
                                ascending, then -1                      */
    ep_buffer pack_index;    /* [N][K] int64: its row in send and back  */
    ep_buffer scratch_index; /* [N][K] int64                            */
    ep_buffer rank_tmp;      /* [R] int64 (counts, expert_end, masked_m) */
    ep_buffer expert_map;    /* [R*E_local] int32: this rank's map      */
    ep_buffer rank_map;      /* [R*E_local] int32: p -> p / E_local     */
    /* The markers of the bounded mode on a device: [R] int64 each. */
    ep_buffer marks_send, marks_recv;           /* dispatch: tokens sent */
    ep_buffer back_marks_send, back_marks_recv; /* combine: 0 when done;
                                the first is partial's first R int64, not
                                an allocation of its own                */
    ep_buffer mark_y;        /* [tokens_per_pair + 2] fp32 of 0: the rows
                                the markers index when checked          */
    ep_buffer mark_out;      /* [R] fp32 scratch of that check          */
    ep_buffer dropped;       /* one int64: pairs the last dispatch dropped */
    ep_buffer zero_index;    /* [R] int32 of 0 (zero_markers)           */
    ep_buffer local_counts;  /* [E_local] int64                         */
    /* A token's record: row, scales, ids, weights at these bytes. */
    int64_t scales_at, ids_at, weights_at, record;
    /* An empty slot's fields from scales_at to the end of its weights
     * (host memory, built at the first bounded dispatch): 0xFF, with
     * 1.0f in each scale and weight word. */
    unsigned char *empty_fields;
    ep_buffer send_records;  /* [send slots] records                    */
    ep_buffer recv_records;  /* [marker rows + recv slots] records      */
    ep_buffer recv_index;    /* [marker rows][K] of -1 as int64, then
                                [recv slots][K], local index dtype      */
    ep_buffer partial;       /* [marker rows + recv slots][H] fp32      */
    ep_buffer back;          /* [send slots][H] fp32                    */

    /* What the last dispatch left for the combine. */
    int dispatched;
    int64_t n_tokens;
    int64_t send_slots, recv_slots;
    int recv_index_dtype;
    int has_weights;
    int64_t bytes_sent, bytes_received;
};

int moes_ep_fail(moes_ep *ep, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Shared by the transports' create functions: validates opts, allocates,
 * and checks with the transport that every rank agrees. On failure the ep
 * is freed and *out is NULL. out may be NULL when local_status is already
 * a failure: the rank still takes part, so that its peers fail too. */
int moes_ep_finish_create(moes_ep **out, moes_ep *ep, int local_status);

/* The ep with its options, context and message; transport not yet set. */
moes_ep *moes_ep_alloc(moes_context *ctx, const moes_ep_options *opts);

/* The message of the last failed create in this thread. */
void moes_ep_set_create_error(const char *message);

/* A rank that cannot take part in the creation's agreement (no usable
 * communicator) fails at once: with MOES_ERR_NULL_POINTER and "ep is
 * NULL" when out is NULL, else with status and message. Returns the
 * status. */
int moes_ep_fail_alone(moes_ep **out, int status, const char *message);

/* At least `bytes` (64 at the least) of zeros in b, reallocated when it
 * holds fewer; on failure the message says which step failed. */
int moes_ep_ensure(moes_ep *ep, ep_buffer *b, int64_t bytes);

/* Frees b (nothing when it holds nothing); returns moes_free's status. */
int moes_ep_release(moes_ep *ep, ep_buffer *b);

#endif /* MOES_EP_INTERNAL_H */
