/* SPDX-License-Identifier: MIT */
/*
 * ep.c - dispatch and combine across ranks, written once over the
 * transport's collectives and the library's public scatter and gather.
 *
 * Dispatch, on every rank:
 *   1. route: on the host, which ranks each token goes to (pack_ids[t][r]
 *      = r, or -1), checking every id;
 *   2. pack: moes_scatter with the ranks as experts puts each token's row,
 *      scales, ids and weights once per destination, destinations in
 *      ascending order and tokens in their order within each; its
 *      out_index [N][R] is the row each (token, rank) takes in the send
 *      buffer, which is also where its partial comes back;
 *   3. agree: one all-to-all carries every rank's status and counts, so a
 *      rank that found bad input stops every rank before any data moves;
 *   4. exchange rows, scales, ids and weights;
 *   5. scatter what arrived (source rank ascending, then the source's
 *      order) into the caller's layout, global ids turned local by a map.
 * Combine gathers each received token into one fp32 partial, sends the
 * partials back, and gathers them once more with K = R and unit weights:
 * acc = 0 + 1*p_0 + 1*p_1 ... is exactly the ascending-rank fp32 sum, and
 * the library's gather converts it and makes every NaN canonical.
 */
#include "config.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ep_internal.h"

/* A test build (test_ep_queued) runs the bounded mode's queued path over
 * MPI too, so that its exchanges and markers meet 2 to 4 ranks. */
#ifndef EP_QUEUED_ON_HOST
#define EP_QUEUED_ON_HOST 0
#endif

static _Thread_local char create_error[512];

void moes_ep_set_create_error(const char *message)
{
    snprintf(create_error, sizeof create_error, "%s", message);
}

int moes_ep_fail_alone(moes_ep **out, int status, const char *message)
{
    if (!out) {
        status = MOES_ERR_NULL_POINTER;
        message = "ep is NULL";
    }
    moes_ep_set_create_error(message);
    return status;
}

int moes_ep_fail(moes_ep *ep, int status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ep->message, sizeof ep->message, fmt, ap);
    va_end(ap);
    return status;
}

const char *moes_ep_last_error(const moes_ep *ep)
{
    return ep ? ep->message : create_error;
}

int moes_ep_options_init(moes_ep_options *opts)
{
    if (!opts)
        return MOES_ERR_NULL_POINTER;
    memset(opts, 0, sizeof *opts);
    opts->struct_size = sizeof *opts;
    opts->n_ranks = 1;
    opts->x_dtype = MOES_DTYPE_BF16;
    opts->scale_block = 128;
    opts->ids_dtype = MOES_DTYPE_INT32;
    opts->y_dtype = MOES_DTYPE_BF16;
    opts->out_dtype = MOES_DTYPE_BF16;
    opts->mode = MOES_EP_MODE_EXACT;
    return MOES_OK;
}

int moes_ep_dispatch_args_init(moes_ep_dispatch_args *args)
{
    if (!args)
        return MOES_ERR_NULL_POINTER;
    memset(args, 0, sizeof *args);
    args->struct_size = sizeof *args;
    return MOES_OK;
}

int moes_ep_combine_args_init(moes_ep_combine_args *args)
{
    if (!args)
        return MOES_ERR_NULL_POINTER;
    memset(args, 0, sizeof *args);
    args->struct_size = sizeof *args;
    return MOES_OK;
}

/* ------------------------------------------------------------------ */
/* Statuses every rank agrees on                                      */
/* ------------------------------------------------------------------ */

/* A status and the rank that had it in one int64, so that the maximum
 * over the ranks is the highest status, from the lowest rank that had it. */
#define EP_RANK_BITS 20
static int64_t encode_status(const moes_ep *ep, int status)
{
    if (status == MOES_OK)
        return 0;
    return ((int64_t)status << EP_RANK_BITS) |
           (((int64_t)1 << EP_RANK_BITS) - 1 - ep->rank);
}

/* After the agreement: MOES_OK when every rank was fine; a failing rank
 * keeps its own status and message, the others report the peer's. */
static int agreed_status(moes_ep *ep, int own, int64_t worst)
{
    if (own != MOES_OK)
        return own;
    if (worst == 0)
        return MOES_OK;
    int status = (int)(worst >> EP_RANK_BITS);
    int rank = (int)(((int64_t)1 << EP_RANK_BITS) - 1 -
                     (worst & (((int64_t)1 << EP_RANK_BITS) - 1)));
    return moes_ep_fail(ep, status,
                        "rank %d failed (%s): nothing of this call was "
                        "written", rank, moes_strerror(status));
}

static int agree(moes_ep *ep, int status)
{
    int64_t v = encode_status(ep, status);
    int rc = ep->transport->allreduce_max_i64(ep, &v, 1);
    if (rc != MOES_OK)
        return rc;
    return agreed_status(ep, status, v);
}

/* ------------------------------------------------------------------ */
/* Buffers                                                            */
/* ------------------------------------------------------------------ */

int moes_ep_release(moes_ep *ep, ep_buffer *b)
{
    int rc = b->ptr ? moes_free(ep->ctx, b->ptr) : MOES_OK;
    b->ptr = NULL;
    b->bytes = 0;
    return rc;
}

int moes_ep_ensure(moes_ep *ep, ep_buffer *b, int64_t bytes)
{
    if (bytes < 64)
        bytes = 64;
    if (b->ptr && b->bytes >= bytes)
        return MOES_OK;
    const int64_t old_bytes = b->bytes;
    int rc = moes_ep_release(ep, b);
    if (rc != MOES_OK)
        return moes_ep_fail(ep, rc, "cannot free %lld bytes: %s",
                            (long long)old_bytes, moes_last_error(ep->ctx));
    rc = moes_malloc(ep->ctx, &b->ptr, bytes);
    if (rc != MOES_OK) {
        b->ptr = NULL;
        return moes_ep_fail(ep, rc, "cannot allocate %lld bytes: %s",
                            (long long)bytes, moes_last_error(ep->ctx));
    }
    b->bytes = bytes;
    /* Zeros from the start: the fields of a record that a call leaves
     * unset (no scales, no weights) travel defined, and the markers' rows
     * of zeros (mark_y) and the index of zeros (zero_index) need nothing
     * more. */
    if ((rc = moes_fill(ep->ctx, b->ptr, 0, bytes)) != MOES_OK)
        return moes_ep_fail(ep, rc, "cannot clear %lld bytes: %s",
                            (long long)bytes, moes_last_error(ep->ctx));
    return MOES_OK;
}

static int mul_ok(int64_t a, int64_t b, int64_t *r)
{
    return !__builtin_mul_overflow(a, b, r) && *r >= 0;
}

/* Per-token payload sizes. */
static int64_t row_bytes(const moes_ep *ep)
{
    return ep->opts.hidden * ep->x_size;
}
static int64_t scale_bytes(const moes_ep *ep)
{
    return ep->n_scales * (int64_t)sizeof(float);
}
static int64_t ids_bytes(const moes_ep *ep)
{
    return ep->opts.top_k * ep->ids_size;
}
static int64_t weight_bytes(const moes_ep *ep)
{
    return ep->opts.top_k * (int64_t)sizeof(float);
}
static int64_t partial_bytes(const moes_ep *ep)
{
    return ep->opts.hidden * (int64_t)sizeof(float);
}

static int64_t round_up(int64_t v, int64_t m)
{
    return (v + m - 1) / m * m;
}

/* A token travels as one record: its row, its scales, its ids and its
 * weights, each field on a boundary of its elements and the record a
 * multiple of 16 bytes (so that rows read from records keep the
 * backends' 16-byte copies). One exchange per pair moves them all: over
 * NCCL on one H200, each buffer of its own had cost 2.2-3.0 us a
 * dispatch, and with records the bounded dispatch of 128 tokens went
 * from 51.1-51.3 to 44.5-44.6 us (a graph replay, one rank;
 * bench/NOTES.md, v27). The fields are the scatters' and the gathers'
 * arguments, with the record as their stride. */
static void set_record(moes_ep *ep)
{
    ep->scales_at = round_up(row_bytes(ep), 4);
    ep->ids_at = round_up(ep->scales_at + scale_bytes(ep), ep->ids_size);
    ep->weights_at = ep->ids_at + ids_bytes(ep);
    ep->record = round_up(ep->weights_at + weight_bytes(ep), 16);
}

/* Send-side buffers for `slots` tokens, receive-side for `recv` tokens. */
static int size_send(moes_ep *ep, int64_t slots)
{
    int rc;
    if ((rc = moes_ep_ensure(ep, &ep->send_records, slots * ep->record)) ||
        (rc = moes_ep_ensure(ep, &ep->back, slots * partial_bytes(ep))))
        return rc;
    return MOES_OK;
}

static int size_recv(moes_ep *ep, int64_t slots)
{
    const int64_t lead = slots + ep->marker_rows;
    int rc;
    if ((rc = moes_ep_ensure(ep, &ep->recv_records, lead * ep->record)) ||
        (rc = moes_ep_ensure(ep, &ep->recv_index,
                             lead * ep->opts.top_k * 8)) ||
        (rc = moes_ep_ensure(ep, &ep->partial, lead * partial_bytes(ep))))
        return rc;
    return MOES_OK;
}

/* The received slots' rows of recv_records, recv_index (8 bytes an
 * entry, whatever the index dtype) and partial: past the marker rows in
 * front of them (none but in the bounded mode on a device; see there). */
static char *recv_slots_at(const moes_ep *ep)
{
    return (char *)ep->recv_records.ptr + ep->marker_rows * ep->record;
}
static void *recv_index_slots(const moes_ep *ep)
{
    return (char *)ep->recv_index.ptr + ep->marker_rows * ep->opts.top_k * 8;
}
static void *partial_slots(const moes_ep *ep)
{
    return (char *)ep->partial.ptr + ep->marker_rows * partial_bytes(ep);
}

/* ------------------------------------------------------------------ */
/* Create and destroy                                                 */
/* ------------------------------------------------------------------ */

moes_ep *moes_ep_alloc(moes_context *ctx, const moes_ep_options *opts)
{
    moes_ep *ep = calloc(1, sizeof *ep);
    if (!ep)
        return NULL;
    ep->ctx = ctx;
    if (opts && opts->struct_size == sizeof *opts)
        ep->opts = *opts;
    else if (opts)
        ep->opts.struct_size = opts->struct_size; /* for the message */
    return ep;
}

static int is_row_dtype(int d)
{
    return d == MOES_DTYPE_FP8_E4M3 || d == MOES_DTYPE_FP8_E5M2 ||
           d == MOES_DTYPE_BF16 || d == MOES_DTYPE_FP16 ||
           d == MOES_DTYPE_FP32;
}

static int is_float_dtype(int d)
{
    return d == MOES_DTYPE_BF16 || d == MOES_DTYPE_FP16 ||
           d == MOES_DTYPE_FP32;
}

static int validate_options(moes_ep *ep)
{
    const moes_ep_options *o = &ep->opts;
    if (o->struct_size != sizeof *o)
        return moes_ep_fail(ep, MOES_ERR_INVALID_ARGUMENT,
                            "opts->struct_size is %zu, expected %zu",
                            o->struct_size, sizeof *o);
    if (o->n_ranks != ep->n_ranks)
        return moes_ep_fail(ep, MOES_ERR_INVALID_ARGUMENT,
                            "opts->n_ranks = %d but the communicator has "
                            "%d ranks", o->n_ranks, ep->n_ranks);
    if (o->experts_per_rank < 1 || o->hidden < 1 || o->top_k < 1 ||
        o->max_tokens < 0 || o->scale_block < 1)
        return moes_ep_fail(ep, MOES_ERR_INVALID_SIZE,
                            "experts_per_rank, hidden, top_k and scale_block "
                            "must be >= 1 and max_tokens >= 0 (got %lld, "
                            "%lld, %lld, %lld, %lld)",
                            (long long)o->experts_per_rank,
                            (long long)o->hidden, (long long)o->top_k,
                            (long long)o->scale_block,
                            (long long)o->max_tokens);
    if (!is_row_dtype(o->x_dtype))
        return moes_ep_fail(ep, MOES_ERR_INVALID_DTYPE,
                            "opts->x_dtype = %d is not a row dtype",
                            o->x_dtype);
    if (!is_float_dtype(o->y_dtype) || !is_float_dtype(o->out_dtype))
        return moes_ep_fail(ep, MOES_ERR_INVALID_DTYPE,
                            "opts->y_dtype = %d and opts->out_dtype = %d "
                            "must be bf16, fp16 or fp32",
                            o->y_dtype, o->out_dtype);
    if (o->ids_dtype != MOES_DTYPE_INT32 && o->ids_dtype != MOES_DTYPE_INT64)
        return moes_ep_fail(ep, MOES_ERR_INVALID_DTYPE,
                            "opts->ids_dtype = %d is neither int32 nor int64",
                            o->ids_dtype);
    if (o->mode != MOES_EP_MODE_EXACT && o->mode != MOES_EP_MODE_BOUNDED)
        return moes_ep_fail(ep, MOES_ERR_INVALID_ARGUMENT,
                            "opts->mode = %d is unknown", o->mode);
    if (o->mode == MOES_EP_MODE_BOUNDED && o->tokens_per_pair < 1)
        return moes_ep_fail(ep, MOES_ERR_INVALID_SIZE,
                            "opts->tokens_per_pair = %lld: the bounded mode "
                            "needs at least 1", (long long)o->tokens_per_pair);
    size_t xs = 0;
    moes_dtype_size(o->x_dtype, &xs);
    ep->x_size = (int64_t)xs;
    ep->ids_size = o->ids_dtype == MOES_DTYPE_INT32 ? 4 : 8;
    ep->n_scales = (o->hidden + o->scale_block - 1) / o->scale_block;

    /* Every byte count the exchanges use must fit, and an MPI count an
     * int: checked once here rather than half-way through a dispatch. */
    int64_t experts, routing, slots, bytes;
    int64_t slots_max = o->mode == MOES_EP_MODE_BOUNDED ? o->tokens_per_pair
                                                        : o->max_tokens;
    if (!mul_ok(o->experts_per_rank, ep->n_ranks, &experts) ||
        (o->ids_dtype == MOES_DTYPE_INT32 && experts > INT32_MAX) ||
        /* The expert maps hold local experts as int32. */
        o->experts_per_rank > INT32_MAX ||
        !mul_ok(o->max_tokens, ep->n_ranks, &routing) ||
        !mul_ok(routing, 8, &bytes) ||
        !mul_ok(o->max_tokens, o->top_k, &routing) ||
        !mul_ok(routing, 8, &bytes) ||
        !mul_ok(slots_max, ep->n_ranks, &slots) || slots > INT32_MAX ||
        !mul_ok(o->hidden, 8, &bytes) || bytes > INT32_MAX ||
        o->top_k > INT32_MAX / 16 ||
        /* A record (set_record) is at most 8H + 16K + 32 bytes, one
         * element of an MPI exchange. */
        bytes + o->top_k * 16 + 32 > INT32_MAX ||
        !mul_ok(slots, bytes + o->top_k * 16 + 32, &bytes))
        return moes_ep_fail(ep, MOES_ERR_OVERFLOW,
                            "the sizes given (%d ranks, %lld experts each, "
                            "%lld tokens, hidden %lld) overflow a buffer's "
                            "byte count or an exchange's count",
                            ep->n_ranks, (long long)o->experts_per_rank,
                            (long long)slots_max, (long long)o->hidden);
    set_record(ep);
    return MOES_OK;
}

static int allocate(moes_ep *ep)
{
    const moes_ep_options *o = &ep->opts;
    int R = ep->n_ranks;
    const int64_t El = o->experts_per_rank;
    int64_t routing = o->max_tokens * o->top_k;
    ep->async = o->mode == MOES_EP_MODE_BOUNDED &&
                (ep->on_device || EP_QUEUED_ON_HOST);
    /* Enough fp32 rows of H for R int64 markers. */
    ep->marker_rows = ep->async ? ((int64_t)R * 8 + partial_bytes(ep) - 1) /
                                      partial_bytes(ep)
                                : 0;
    ep->send_counts = calloc((size_t)R, sizeof(int64_t));
    ep->send_displs = calloc((size_t)R, sizeof(int64_t));
    ep->recv_counts = calloc((size_t)R, sizeof(int64_t));
    ep->recv_displs = calloc((size_t)R, sizeof(int64_t));
    ep->exchange_send = calloc((size_t)R * 4, sizeof(int64_t));
    ep->exchange_recv = calloc((size_t)R * 4, sizeof(int64_t));
    ep->one_counts = calloc((size_t)R, sizeof(int64_t));
    ep->one_displs = calloc((size_t)R, sizeof(int64_t));
    int32_t *map = calloc((size_t)(El * R), sizeof(int32_t));
    int32_t *ranks = calloc((size_t)(El * R), sizeof(int32_t));
    if (!ep->send_counts || !ep->send_displs || !ep->recv_counts ||
        !ep->recv_displs || !ep->exchange_send || !ep->exchange_recv ||
        !ep->one_counts || !ep->one_displs || !map || !ranks) {
        free(map);
        free(ranks);
        return moes_ep_fail(ep, MOES_ERR_OUT_OF_MEMORY,
                            "cannot allocate the ep context's host arrays");
    }
    for (int64_t p = 0; p < El * R; p++) {
        map[p] = p / El == ep->rank ? (int32_t)(p % El) : -1;
        ranks[p] = (int32_t)(p / El);
    }
    for (int r = 0; r < R; r++) {
        ep->one_counts[r] = 1;
        ep->one_displs[r] = r;
    }
    int rc;
    if ((rc = moes_ep_ensure(ep, &ep->pack_ids, routing * 4)) ||
        (rc = moes_ep_ensure(ep, &ep->pack_index, routing * 8)) ||
        (rc = moes_ep_ensure(ep, &ep->scratch_index, routing * 8)) ||
        (rc = moes_ep_ensure(ep, &ep->rank_tmp, (int64_t)R * 8)) ||
        (rc = moes_ep_ensure(ep, &ep->local_counts, El * 8)) ||
        (rc = moes_ep_ensure(ep, &ep->expert_map, El * R * 4)) ||
        (rc = moes_ep_ensure(ep, &ep->rank_map, El * R * 4)) ||
        (rc = moes_ep_ensure(ep, &ep->dropped, 8))) {
        free(map);
        free(ranks);
        return rc;
    }
    rc = moes_copy_to_backend(ep->ctx, ep->expert_map.ptr, map, El * R * 4);
    if (rc == MOES_OK)
        rc = moes_copy_to_backend(ep->ctx, ep->rank_map.ptr, ranks,
                                  El * R * 4);
    free(map);
    free(ranks);
    if (rc != MOES_OK)
        return moes_ep_fail(ep, rc, "cannot copy the expert maps: %s",
                            moes_last_error(ep->ctx));
    if (ep->async &&
        ((rc = moes_ep_ensure(ep, &ep->marks_send, (int64_t)R * 8)) ||
         (rc = moes_ep_ensure(ep, &ep->marks_recv, (int64_t)R * 8)) ||
         (rc = moes_ep_ensure(ep, &ep->back_marks_recv, (int64_t)R * 8)) ||
         (rc = moes_ep_ensure(ep, &ep->mark_y,
                              (o->tokens_per_pair + 2) * 4)) ||
         (rc = moes_ep_ensure(ep, &ep->mark_out, (int64_t)R * 4))))
        return rc;
    if (o->mode == MOES_EP_MODE_BOUNDED) {
        int64_t slots = o->tokens_per_pair * R;
        if ((rc = size_send(ep, slots)) || (rc = size_recv(ep, slots)))
            return rc;
        if (ep->async) {
            /* The combine's marker rows: every index -1 (0xFF bytes, in
             * either index dtype; their records hold weights of 0 from
             * the allocation); the markers themselves are the first R
             * int64 of partial. */
            const int64_t K = o->top_k;
            ep->back_marks_send.ptr = ep->partial.ptr;
            ep->back_marks_send.bytes = (int64_t)R * 8;
            if ((rc = moes_fill(ep->ctx, ep->recv_index.ptr, 0xFF,
                                ep->marker_rows * K * 8)))
                return moes_ep_fail(ep, rc, "cannot set the marker rows: %s",
                                    moes_last_error(ep->ctx));
            /* zero_markers' gather takes row 0 for every rank. */
            if ((rc = moes_ep_ensure(ep, &ep->zero_index, (int64_t)R * 4)))
                return rc;
        }
    }
    return MOES_OK;
}

int moes_ep_destroy(moes_ep *ep)
{
    if (!ep)
        return MOES_OK;
    ep_buffer *all[] = {
        &ep->pack_ids,     &ep->pack_index,      &ep->scratch_index,
        &ep->rank_tmp,     &ep->expert_map,      &ep->local_counts,
        &ep->send_records, &ep->recv_records,    &ep->recv_index,
        &ep->partial,      &ep->back,
        &ep->rank_map,     &ep->marks_send,      &ep->marks_recv,
        &ep->back_marks_recv,
        &ep->mark_y,       &ep->mark_out,        &ep->dropped,
        &ep->zero_index};
    /* Every buffer is freed; the first failure is the status. */
    int status = MOES_OK;
    if (ep->ctx)
        for (size_t i = 0; i < sizeof all / sizeof *all; i++) {
            const int rc = moes_ep_release(ep, all[i]);
            if (status == MOES_OK)
                status = rc;
        }
    if (ep->transport && ep->transport->release) {
        const int rc = ep->transport->release(ep);
        if (status == MOES_OK)
            status = rc;
    }
    free(ep->empty_fields);
    free(ep->send_counts);
    free(ep->send_displs);
    free(ep->recv_counts);
    free(ep->recv_displs);
    free(ep->exchange_send);
    free(ep->exchange_recv);
    free(ep->one_counts);
    free(ep->one_displs);
    free(ep);
    return status;
}

/* The options every rank must give alike, compared through one maximum
 * of each value and of its complement (~v, which unlike -v never
 * overflows): the values agree when the maximum is ~ the other. */
#define EP_AGREED_FIELDS 12
static void agreed_fields(const moes_ep *ep, int64_t *v)
{
    const moes_ep_options *o = &ep->opts;
    v[0] = o->n_ranks;
    v[1] = o->experts_per_rank;
    v[2] = o->hidden;
    v[3] = o->top_k;
    v[4] = o->x_dtype;
    v[5] = o->scale_block;
    v[6] = o->ids_dtype;
    v[7] = o->y_dtype;
    v[8] = o->out_dtype;
    v[9] = o->mode;
    v[10] = o->mode == MOES_EP_MODE_BOUNDED ? o->tokens_per_pair : 0;
    /* The exact mode's buffers and moes_ep_capacity follow it. */
    v[11] = o->max_tokens;
}

static const char *const agreed_names[EP_AGREED_FIELDS] = {
    "n_ranks", "experts_per_rank", "hidden", "top_k", "x_dtype",
    "scale_block", "ids_dtype", "y_dtype", "out_dtype", "mode",
    "tokens_per_pair", "max_tokens"};

int moes_ep_finish_create(moes_ep **out, moes_ep *ep, int status)
{
    if (status == MOES_OK)
        status = validate_options(ep);
    if (status == MOES_OK)
        status = allocate(ep);

    /* Every rank takes part, whatever it found: one maximum over the
     * status and the fields, and over the fields' complements. */
    int64_t v[1 + 2 * EP_AGREED_FIELDS];
    int64_t fields[EP_AGREED_FIELDS];
    agreed_fields(ep, fields);
    v[0] = encode_status(ep, status);
    for (int i = 0; i < EP_AGREED_FIELDS; i++) {
        v[1 + i] = fields[i];
        v[1 + EP_AGREED_FIELDS + i] = ~fields[i];
    }
    int rc = ep->transport->allreduce_max_i64(ep, v, 1 + 2 * EP_AGREED_FIELDS);
    if (rc == MOES_OK) {
        rc = agreed_status(ep, status, v[0]);
        for (int i = 0; rc == MOES_OK && i < EP_AGREED_FIELDS; i++)
            if (v[1 + i] != ~v[1 + EP_AGREED_FIELDS + i])
                rc = moes_ep_fail(ep, MOES_ERR_INVALID_ARGUMENT,
                                  "the ranks disagree on %s: from %lld to "
                                  "%lld", agreed_names[i],
                                  (long long)~v[1 + EP_AGREED_FIELDS + i],
                                  (long long)v[1 + i]);
    }
    if (rc != MOES_OK) {
        moes_ep_set_create_error(ep->message);
        moes_ep_destroy(ep);
        if (out) /* a NULL out is this rank's own failure */
            *out = NULL;
        return rc;
    }
    *out = ep;
    return MOES_OK;
}

int moes_ep_capacity(moes_ep *ep, int layout, int64_t alignment,
                     int64_t *capacity)
{
    if (!ep)
        return MOES_ERR_NULL_POINTER;
    if (!capacity)
        return moes_ep_fail(ep, MOES_ERR_NULL_POINTER, "capacity is NULL");
    int64_t per_pair = ep->opts.mode == MOES_EP_MODE_BOUNDED
                           ? ep->opts.tokens_per_pair
                           : ep->opts.max_tokens;
    int rc = moes_scatter_capacity(ep->ctx, layout, per_pair * ep->n_ranks,
                                   ep->opts.top_k, ep->opts.experts_per_rank,
                                   alignment, capacity);
    if (rc != MOES_OK)
        return moes_ep_fail(ep, rc, "%s", moes_last_error(ep->ctx));
    return MOES_OK;
}

int moes_ep_get_stats(moes_ep *ep, moes_ep_stats *stats)
{
    if (!ep)
        return MOES_ERR_NULL_POINTER;
    if (!stats)
        return moes_ep_fail(ep, MOES_ERR_NULL_POINTER, "stats is NULL");
    if (stats->struct_size != sizeof *stats)
        return moes_ep_fail(ep, MOES_ERR_INVALID_ARGUMENT,
                            "stats->struct_size is %zu, expected %zu",
                            stats->struct_size, sizeof *stats);
    stats->rank = ep->rank;
    stats->n_ranks = ep->n_ranks;
    stats->bytes_sent = ep->bytes_sent;
    stats->bytes_received = ep->bytes_received;
    return MOES_OK;
}

/* ------------------------------------------------------------------ */
/* Dispatch                                                           */
/* ------------------------------------------------------------------ */

static int check_dispatch(moes_ep *ep, const moes_ep_dispatch_args *a)
{
    const moes_ep_options *o = &ep->opts;
    if (a->struct_size != sizeof *a)
        return moes_ep_fail(ep, MOES_ERR_INVALID_ARGUMENT,
                            "args->struct_size is %zu, expected %zu",
                            a->struct_size, sizeof *a);
    if (!a->local)
        return moes_ep_fail(ep, MOES_ERR_NULL_POINTER,
                            "args->local is NULL");
    /* This version's struct, or the 0.2 one that ends before row_source
     * (moes_scatter checks the size again for its own call). */
    if (a->local->struct_size != sizeof(moes_scatter_args) &&
        a->local->struct_size != offsetof(moes_scatter_args, row_source))
        return moes_ep_fail(ep, MOES_ERR_INVALID_ARGUMENT,
                            "args->local->struct_size is %zu, expected %zu "
                            "(or %zu, that of 0.2)",
                            a->local->struct_size, sizeof(moes_scatter_args),
                            offsetof(moes_scatter_args, row_source));
    if (a->n_tokens < 0 || a->n_tokens > o->max_tokens)
        return moes_ep_fail(ep, MOES_ERR_INVALID_SIZE,
                            "args->n_tokens = %lld is outside [0, %lld] "
                            "(max_tokens)", (long long)a->n_tokens,
                            (long long)o->max_tokens);
    if (a->n_tokens > 0 && (!a->x || !a->ids))
        return moes_ep_fail(ep, MOES_ERR_NULL_POINTER, "args->%s is NULL",
                            !a->x ? "x" : "ids");
    const struct {
        const char *name, *row_name;
        int64_t stride, row;
        const void *ptr;
        int64_t elem;
    } in[] = {
        {"x", "hidden", a->x_stride, o->hidden, a->x, ep->x_size},
        {"ids", "top_k", a->ids_stride, o->top_k, a->ids, ep->ids_size},
        {"weights", "top_k", a->weights_stride, o->top_k, a->weights, 4},
        {"x_scales", "the scales a row", a->x_scales_stride, ep->n_scales,
         a->x_scales, 4},
    };
    for (size_t i = 0; i < sizeof in / sizeof *in; i++) {
        if (in[i].stride < 0 ||
            (in[i].stride != 0 && in[i].stride < in[i].row))
            return moes_ep_fail(ep, MOES_ERR_INVALID_STRIDE,
                                "args->%s_stride = %lld is smaller than %s "
                                "= %lld", in[i].name, (long long)in[i].stride,
                                in[i].row_name, (long long)in[i].row);
        if ((uintptr_t)in[i].ptr % (uintptr_t)in[i].elem != 0)
            return moes_ep_fail(ep, MOES_ERR_MISALIGNED,
                                "args->%s = %p is not aligned to its "
                                "%lld-byte elements", in[i].name, in[i].ptr,
                                (long long)in[i].elem);
    }
    if ((uintptr_t)a->n_dropped_device % 8 != 0)
        return moes_ep_fail(ep, MOES_ERR_MISALIGNED,
                            "args->n_dropped_device = %p is not aligned to "
                            "8 bytes", (void *)a->n_dropped_device);
    const moes_scatter_args *l = a->local;
    if (l->layout != MOES_LAYOUT_CONTIGUOUS &&
        l->layout != MOES_LAYOUT_GROUPED && l->layout != MOES_LAYOUT_MASKED)
        return moes_ep_fail(ep, MOES_ERR_INVALID_ARGUMENT,
                            "args->local->layout = %d is unknown", l->layout);
    if (l->alignment < 1)
        return moes_ep_fail(ep, MOES_ERR_INVALID_ALIGNMENT,
                            "args->local->alignment = %lld is below 1",
                            (long long)l->alignment);
    if (l->capacity < 0)
        return moes_ep_fail(ep, MOES_ERR_INVALID_SIZE,
                            "args->local->capacity = %lld is negative",
                            (long long)l->capacity);
    if (l->index_dtype != MOES_DTYPE_INT32 &&
        l->index_dtype != MOES_DTYPE_INT64)
        return moes_ep_fail(ep, MOES_ERR_INVALID_DTYPE,
                            "args->local->index_dtype = %d is neither int32 "
                            "nor int64", l->index_dtype);
    if (!l->out || (a->x_scales && !l->out_scales))
        return moes_ep_fail(ep, MOES_ERR_NULL_POINTER,
                            "args->local->%s is NULL",
                            !l->out ? "out" : "out_scales");
    return MOES_OK;
}

/* The library's message without its "routing->" prefix: the ids are the
 * caller's args->ids. */
static int fail_ids(moes_ep *ep, int rc)
{
    const char *m = moes_last_error(ep->ctx);
    if (strncmp(m, "routing->", 9) == 0)
        return moes_ep_fail(ep, rc, "args->%s", m + 9);
    return moes_ep_fail(ep, rc, "args->ids: %s", m);
}

/* Step 1: pack_ids[t] = the ranks token t goes to, ascending, then -1:
 * the distinct experts of its choices through the map from each expert to
 * its rank. The library checks every id (deferred on a device). */
static int route(moes_ep *ep, const moes_ep_dispatch_args *a)
{
    moes_routing r;
    moes_routing_init(&r);
    r.n_tokens = a->n_tokens;
    r.top_k = ep->opts.top_k;
    r.ids = a->ids;
    r.ids_dtype = ep->opts.ids_dtype;
    r.ids_stride = a->ids_stride;
    r.expert_map = ep->rank_map.ptr;
    r.n_experts_global = ep->opts.experts_per_rank * ep->n_ranks;
    r.n_experts = ep->n_ranks;
    int rc = moes_distinct_experts(ep->ctx, &r, ep->pack_ids.ptr,
                                   MOES_DTYPE_INT32, 0);
    return rc == MOES_OK ? MOES_OK : fail_ids(ep, rc);
}

/* The routing of the packing: the ranks as experts. */
static void pack_routing(const moes_ep *ep, int64_t n_tokens, moes_routing *r)
{
    moes_routing_init(r);
    r->n_tokens = n_tokens;
    r->top_k = ep->opts.top_k;
    r->ids = ep->pack_ids.ptr;
    r->ids_dtype = MOES_DTYPE_INT32;
    r->n_experts_global = ep->n_ranks;
    r->n_experts = ep->n_ranks;
}

/* send_counts[r]: the tokens bound for rank r, on the host. On a device
 * this waits, and a bad id found there is reported here. */
static int count_destinations(moes_ep *ep, int64_t n_tokens)
{
    moes_routing r;
    pack_routing(ep, n_tokens, &r);
    int rc = moes_count(ep->ctx, &r, ep->rank_tmp.ptr, MOES_DTYPE_INT64);
    if (rc == MOES_OK)
        rc = moes_copy_to_host(ep->ctx, ep->send_counts, ep->rank_tmp.ptr,
                               (int64_t)ep->n_ranks * 8);
    if (rc == MOES_OK && ep->on_device)
        rc = moes_synchronize(ep->ctx);
    return rc == MOES_OK ? MOES_OK : fail_ids(ep, rc);
}

/* One moes_scatter of the ranks as experts: `elems` elements of dtype per
 * token from src (stride in elements) into the field at byte `at` of the
 * send records, one record per (token, destination), and the scales into
 * the field at `scales_at`. Bounded: masked_m (tokens kept per
 * destination) and n_dropped go where given. */
static int pack_one(moes_ep *ep, int64_t N, const void *src, int dtype,
                    int64_t elems, int64_t stride, const float *scales,
                    int64_t scale_block, int64_t scales_stride, int64_t at,
                    int64_t scales_at, void *out_index, void *masked_m,
                    int64_t *n_dropped)
{
    char *records = ep->send_records.ptr;
    size_t elem = 0;
    moes_dtype_size(dtype, &elem);
    moes_routing r;
    pack_routing(ep, N, &r);
    moes_scatter_args s;
    moes_scatter_args_init(&s);
    if (ep->opts.mode == MOES_EP_MODE_BOUNDED) {
        s.layout = MOES_LAYOUT_MASKED;
        s.capacity = ep->opts.tokens_per_pair;
        s.masked_m = masked_m ? masked_m : ep->rank_tmp.ptr;
        s.n_dropped = n_dropped;
    } else {
        s.layout = MOES_LAYOUT_GROUPED;
        s.capacity = ep->send_slots;
        s.expert_end = ep->rank_tmp.ptr;
    }
    s.alignment = 1;
    s.x = src;
    s.x_dtype = dtype;
    s.hidden = elems;
    s.x_stride = stride;
    s.x_scales = scales;
    s.scale_block = scale_block;
    s.x_scales_stride = scales_stride;
    s.out = records + at;
    s.out_stride = ep->record / (int64_t)elem;
    if (scales) {
        s.out_scales = records + scales_at;
        s.out_scales_format = MOES_SCALES_FP32;
        s.out_scales_row_stride = ep->record / 4;
        s.out_scales_col_stride = 1;
    }
    s.index_dtype = MOES_DTYPE_INT64;
    s.out_index = out_index;
    int rc = moes_scatter(ep->ctx, &r, &s);
    if (rc != MOES_OK)
        return moes_ep_fail(ep, rc, "packing for the other ranks: %s",
                            moes_last_error(ep->ctx));
    return MOES_OK;
}

/* out[t] = y[out_index[t]] for n_tokens rows of `cols` fp32 (top_k 1,
 * unit weight: 0 + 1.0 * y is y exactly), queued without a wait, and like
 * every step of a stream written only when nothing before it failed. The
 * bounded mode on a device writes and checks its markers with this. */
static int copy_rows_by_gather(moes_ep *ep, int64_t n_tokens, int64_t cols,
                               const void *y, int64_t y_rows,
                               const void *out_index, int index_dtype,
                               void *out, int64_t out_stride)
{
    moes_gather_args g;
    moes_gather_args_init(&g);
    g.n_tokens = n_tokens;
    g.top_k = 1;
    g.hidden = cols;
    g.y = y;
    g.y_dtype = MOES_DTYPE_FP32;
    g.y_rows = y_rows;
    g.out_index = out_index;
    g.index_dtype = index_dtype;
    g.out = out;
    g.out_dtype = MOES_DTYPE_FP32;
    g.out_stride = out_stride;
    return moes_gather(ep->ctx, &g);
}

/* Bounded: slots past a pair's count travel too, and must read as "no
 * expert here" on arrival: their ids -1. Their scales are scattered too
 * (the receiver's scatter takes every slot as a token), and a UE8M0
 * layout rejects any scale that is not a power of two, so they carry 1.0;
 * on a device the scales and weights of a rank that gives none travel as
 * 1.0 for every slot the same way (no peer learns what it gave). One
 * moes_fill_rows writes these fields of every record, from the first
 * that needs it to the last: rows and weights that a slot past its
 * pair's count carries are never read. On an H200 the whole records'
 * 0xFF memset and a gather of 1.0 scales (a check kernel and the gather
 * in a capture: three kernels) cost 4.8 us of a bounded dispatch of 128
 * tokens (bench/NOTES.md, v27). a may be NULL: a failed dispatch sends
 * only its -1 ids, and on a device the 1.0 scales and weights. */
static int clear_slots(moes_ep *ep, const moes_ep_dispatch_args *a)
{
    const int64_t K = ep->opts.top_k;
    /* Queued, no rank learns whether its peers give scales: a rank
     * without them sends 1.0 in every slot, as it does weights. */
    const int scales = ep->async || (a && a->x_scales);
    const int weights = ep->async && (!a || !a->weights);
    const int64_t from = scales ? ep->scales_at : ep->ids_at;
    const int64_t to = weights ? ep->weights_at + K * 4
                               : ep->ids_at + K * ep->ids_size;
    int rc = MOES_OK;
    /* Every call's fields are a slice of these: the record lays out
     * scales, ids and weights in that order. */
    if (!ep->empty_fields) {
        const int64_t bytes = ep->weights_at + K * 4 - ep->scales_at;
        const float one = 1.0f;
        unsigned char *f = malloc((size_t)bytes);
        if (!f)
            return moes_ep_fail(ep, MOES_ERR_OUT_OF_MEMORY,
                                "cannot allocate the empty slots' fields");
        /* 0xFF: the ids, and the bytes between the scales and the ids. */
        memset(f, 0xFF, (size_t)bytes);
        for (int64_t i = 0; i < ep->n_scales; i++)
            memcpy(f + i * 4, &one, 4);
        for (int64_t i = 0; i < K; i++)
            memcpy(f + ep->weights_at - ep->scales_at + i * 4, &one, 4);
        ep->empty_fields = f;
    }
    const unsigned char *fields = ep->empty_fields + (from - ep->scales_at);
    /* In pieces of the longest pattern a call takes (one for the usual
     * sizes: DeepSeek-V3's scales, ids and weights are 288 bytes). */
    for (int64_t at = 0; rc == MOES_OK && at < to - from;
         at += MOES_FILL_ROWS_MAX_PATTERN) {
        const int64_t left = to - from - at;
        rc = moes_fill_rows(ep->ctx, (char *)ep->send_records.ptr + from + at,
                            ep->opts.tokens_per_pair * ep->n_ranks, ep->record,
                            fields + at,
                            left < MOES_FILL_ROWS_MAX_PATTERN
                                ? left
                                : MOES_FILL_ROWS_MAX_PATTERN);
    }
    if (rc != MOES_OK)
        return moes_ep_fail(ep, rc, "%s", moes_last_error(ep->ctx));
    return MOES_OK;
}

/* Step 2: the send buffers, destinations ascending. masked_m and
 * n_dropped: the bounded rows' (NULL: none kept). */
static int pack(moes_ep *ep, const moes_ep_dispatch_args *a, void *masked_m,
                int64_t *n_dropped)
{
    const int64_t N = a->n_tokens, K = ep->opts.top_k;
    const int R = ep->n_ranks;
    int rc;
    if (ep->opts.mode == MOES_EP_MODE_EXACT) {
        ep->send_slots = 0;
        for (int r = 0; r < R; r++)
            ep->send_slots += ep->send_counts[r];
        if ((rc = size_send(ep, ep->send_slots)))
            return rc;
    } else {
        ep->send_slots = ep->opts.tokens_per_pair * R;
        if (!ep->async && (rc = clear_slots(ep, a)))
            return rc;
    }
    if (N == 0)
        return MOES_OK;
    if ((rc = pack_one(ep, N, a->x, ep->opts.x_dtype, ep->opts.hidden,
                       a->x_stride, a->x_scales, ep->opts.scale_block,
                       a->x_scales_stride, 0, ep->scales_at,
                       ep->pack_index.ptr, masked_m, n_dropped)))
        return rc;
    /* Ids and weights in one more scatter: the ids as rows of 4-byte
     * elements (the scatter copies bytes), the weights as their fp32
     * "scales", one per id (a block of one id's words), which the scatter
     * copies bit for bit. */
    int64_t words = ep->ids_size / 4;
    int64_t ids_stride = a->ids_stride ? a->ids_stride : K;
    return pack_one(ep, N, a->ids, MOES_DTYPE_FP32, K * words,
                    ids_stride * words, a->weights, words, a->weights_stride,
                    ep->ids_at, ep->weights_at, ep->scratch_index.ptr, NULL,
                    NULL);
}

static int exchange(moes_ep *ep, void *send, void *recv, int64_t elem_bytes,
                    int forward)
{
    int rc;
    if (forward)
        rc = ep->transport->alltoallv(ep, send, ep->send_counts,
                                      ep->send_displs, recv, ep->recv_counts,
                                      ep->recv_displs, elem_bytes);
    else
        rc = ep->transport->alltoallv(ep, send, ep->recv_counts,
                                      ep->recv_displs, recv, ep->send_counts,
                                      ep->send_displs, elem_bytes);
    if (rc != MOES_OK)
        return rc;
    for (int r = 0; r < ep->n_ranks; r++) {
        if (r == ep->rank)
            continue;
        ep->bytes_sent += (forward ? ep->send_counts : ep->recv_counts)[r] *
                          elem_bytes;
        ep->bytes_received +=
            (forward ? ep->recv_counts : ep->send_counts)[r] * elem_bytes;
    }
    return MOES_OK;
}

/* Begins (1) or ends (0) a group of exchanges that the transport may
 * issue as one operation (one NCCL launch instead of one per buffer). */
static int exchange_group(moes_ep *ep, int begin)
{
    return ep->transport->group ? ep->transport->group(ep, begin) : MOES_OK;
}

/* The routing of the received slots, in the caller's local experts. */
static void received_routing(moes_ep *ep, moes_routing *r)
{
    moes_routing_init(r);
    r->n_tokens = ep->recv_slots;
    r->top_k = ep->opts.top_k;
    r->ids = recv_slots_at(ep) + ep->ids_at;
    r->ids_dtype = ep->opts.ids_dtype;
    r->ids_stride = ep->record / ep->ids_size;
    r->expert_map = ep->expert_map.ptr;
    r->n_experts_global = ep->opts.experts_per_rank * ep->n_ranks;
    r->n_experts = ep->opts.experts_per_rank;
}

/* Whether the caller's layout holds what arrived: checked before anything
 * of the caller's is written, so that every rank can stop. */
static int check_capacity(moes_ep *ep, const moes_scatter_args *l)
{
    if (l->layout == MOES_LAYOUT_MASKED)
        return MOES_OK;
    moes_routing r;
    received_routing(ep, &r);
    const int64_t El = ep->opts.experts_per_rank;
    int rc = moes_count(ep->ctx, &r, ep->local_counts.ptr, MOES_DTYPE_INT64);
    int64_t *counts = malloc((size_t)El * sizeof *counts);
    if (!counts)
        return moes_ep_fail(ep, MOES_ERR_OUT_OF_MEMORY,
                            "cannot allocate the local counts");
    if (rc == MOES_OK)
        rc = moes_copy_to_host(ep->ctx, counts, ep->local_counts.ptr, El * 8);
    if (rc == MOES_OK && ep->on_device)
        rc = moes_synchronize(ep->ctx);
    if (rc != MOES_OK) {
        free(counts);
        return moes_ep_fail(ep, rc, "counting the received tokens: %s",
                            moes_last_error(ep->ctx));
    }
    /* Each expert's rows rounded up to the alignment, summed while they
     * stay within the capacity (so that no sum overflows). */
    const int64_t A = l->alignment;
    int64_t rows = 0, e = 0;
    for (; e < El; e++) {
        const int64_t blocks = counts[e] / A + (counts[e] % A != 0);
        if (blocks > (l->capacity - rows) / A)
            break;
        rows += blocks * A;
    }
    free(counts);
    if (e < El)
        return moes_ep_fail(ep, MOES_ERR_CAPACITY,
                            "args->local->capacity = %lld rows cannot hold "
                            "the tokens this rank receives at alignment "
                            "%lld (local expert %lld's block passes it)",
                            (long long)l->capacity, (long long)A,
                            (long long)e);
    return MOES_OK;
}

/* A failure of the local scatter, its message naming the caller's
 * fields as the caller wrote them: args->local->out for the scatter's
 * args->out. */
static int fail_local(moes_ep *ep, int rc)
{
    static const char field[] = "args->", local[] = "args->local->";
    const char *m = moes_last_error(ep->ctx);
    char named[sizeof ep->message];
    size_t n = 0;
    while (*m && n + sizeof local < sizeof named) {
        if (strncmp(m, field, sizeof field - 1) == 0) {
            memcpy(named + n, local, sizeof local - 1);
            n += sizeof local - 1;
            m += sizeof field - 1;
        } else {
            named[n++] = *m++;
        }
    }
    named[n] = '\0';
    return moes_ep_fail(ep, rc, "the local scatter: %s", named);
}

/* Step 5: what arrived, scattered into the caller's layout as if it
 * were this rank's own tokens; with MOES_SCATTER_CHECK_ONLY in flags,
 * the same call's argument checks alone, which every rank agrees on
 * before anything of a caller's is written. */
static int scatter_received(moes_ep *ep, const moes_scatter_args *l,
                            int has_scales, unsigned flags)
{
    moes_routing r;
    received_routing(ep, &r);
    /* The caller's struct over this version's defaults: it may be the
     * smaller 0.2 one (check_dispatch). */
    moes_scatter_args s;
    moes_scatter_args_init(&s);
    memcpy(&s, l, l->struct_size);
    s.struct_size = sizeof s;
    s.x = recv_slots_at(ep);
    s.x_dtype = ep->opts.x_dtype;
    s.hidden = ep->opts.hidden;
    s.x_stride = ep->record / ep->x_size;
    s.x_scales = has_scales ? (const float *)(recv_slots_at(ep) +
                                              ep->scales_at)
                            : NULL;
    s.scale_block = ep->opts.scale_block;
    s.x_scales_stride = ep->record / 4;
    s.out_index = recv_index_slots(ep);
    s.out_index_stride = 0;
    s.flags |= flags;
    const int rc = moes_scatter(ep->ctx, &r, &s);
    return rc == MOES_OK ? MOES_OK : fail_local(ep, rc);
}

/* args->n_dropped_device on the exact path: the count known on the host. */
static int copy_dropped(moes_ep *ep, const moes_ep_dispatch_args *args,
                        int64_t dropped)
{
    int rc = moes_copy_to_backend(ep->ctx, args->n_dropped_device, &dropped,
                                  8);
    if (rc != MOES_OK)
        return moes_ep_fail(ep, rc, "args->n_dropped_device: %s",
                            moes_last_error(ep->ctx));
    return MOES_OK;
}

/* ------------------------------------------------------------------ */
/* Bounded mode on a device                                           */
/* ------------------------------------------------------------------ */

/*
 * Over NCCL the bounded mode queues every step on the stream and never
 * waits for the host, so that a CUDA graph can capture a dispatch and a
 * combine. Its buffers and exchanges have fixed sizes, and every rank
 * takes part in every exchange whatever it found, so no peer waits.
 *
 * What no host round trip can do is tell a peer, before the call returns,
 * that this rank failed. Instead each pair's exchange carries a marker
 * (one int64) that only a clean run writes:
 *   - dispatch: marks_send[r] starts as a failure marker and becomes the
 *     number of tokens kept for rank r, written by the packing scatter
 *     (masked_m), which the library runs only when nothing before it in
 *     the stream failed (a bad id found on the device leaves it as is);
 *   - combine: back_marks_send[r] starts the same way and becomes 0,
 *     written by the local gather itself: the markers are the first
 *     bytes of partial, in rows in front of the received slots whose
 *     indices are all -1, and such a row sums to +0.0. One gather less in
 *     the chain: 28.5-30.2 -> 25.9-26.0 us a combine of 128 tokens on an
 *     H200 (a graph replay, one rank; bench/NOTES.md, v27).
 * A failure marker is a byte pattern (FAIL_BYTE, or 0x80 | the status of
 * an error found on the host) that as an int64 is below -1. The receiver
 * checks the markers it got as the out_index of a one-column gather
 * (valid: 0 .. B), so a failed peer becomes this rank's own deferred
 * error before anything of the caller's is written, and every later step
 * of the stream writes nothing. moes_ep_synchronize returns it, with the
 * status the marker carries and the rank whose marker it was. (On the
 * CPU the check fails at once, and the call returns that.)
 */
#define EP_FAIL_BYTE 0xFE

static int marker_byte(int status)
{
    return status == MOES_OK ? EP_FAIL_BYTE : 0x80 | (status & 0x7F);
}

/* Fills R markers with the failure pattern of status. */
static int set_markers(moes_ep *ep, ep_buffer *b, int status)
{
    int rc = moes_fill(ep->ctx, b->ptr, marker_byte(status),
                       (int64_t)ep->n_ranks * 8);
    return rc == MOES_OK
               ? MOES_OK
               : moes_ep_fail(ep, rc, "%s", moes_last_error(ep->ctx));
}

/* Markers of 0 (a dispatch that kept no token) in all R cells: zeros,
 * two fp32 a cell, written only when nothing before them in the stream
 * failed. */
static int zero_markers(moes_ep *ep, ep_buffer *b)
{
    int rc = copy_rows_by_gather(ep, ep->n_ranks, 2, ep->mark_y.ptr, 1,
                                 ep->zero_index.ptr, MOES_DTYPE_INT32,
                                 b->ptr, 0);
    return rc == MOES_OK
               ? MOES_OK
               : moes_ep_fail(ep, rc, "%s", moes_last_error(ep->ctx));
}

/* The rank whose failure marker (markers[r] below -1) is the first, or -1;
 * *status gets the status it carries (MOES_ERR_INVALID_ID for a failure
 * found on that rank's device). */
static int failed_rank(const int64_t *markers, int n, int *status)
{
    for (int r = 0; r < n; r++)
        if (markers[r] < -1) {
            int byte = (int)(markers[r] & 0xFF);
            *status = byte == EP_FAIL_BYTE ? MOES_ERR_INVALID_ID : byte & 0x7F;
            return r;
        }
    return -1;
}

/* The markers received, checked as out_index entries in [-1, limit) of a
 * one-column gather of zeros: a failure marker stops this rank's stream
 * (deferred on a device). Where the check fails at once (on the CPU), the
 * status and message are the failed peer's. */
static int check_markers(moes_ep *ep, const ep_buffer *b, int64_t limit,
                         const char *step)
{
    int rc = copy_rows_by_gather(ep, ep->n_ranks, 1, ep->mark_y.ptr, limit,
                                 b->ptr, MOES_DTYPE_INT64, ep->mark_out.ptr,
                                 0);
    if (rc == MOES_OK)
        return MOES_OK;
    if (rc != MOES_ERR_INVALID_OUT_INDEX)
        return moes_ep_fail(ep, rc, "%s", moes_last_error(ep->ctx));
    int64_t *m = malloc((size_t)ep->n_ranks * sizeof *m);
    int status = rc, r = -1;
    if (m && moes_copy_to_host(ep->ctx, m, b->ptr,
                               (int64_t)ep->n_ranks * 8) == MOES_OK)
        r = failed_rank(m, ep->n_ranks, &status);
    free(m);
    if (r < 0)
        return moes_ep_fail(ep, rc, "%s", moes_last_error(ep->ctx));
    return moes_ep_fail(ep, status,
                        "rank %d's %s failed (%s): nothing it sent was used, "
                        "and this rank's outputs of that step are unchanged",
                        r, step, moes_strerror(status));
}

/* A fixed exchange: per_pair cells of elem_bytes for every pair. */
static int exchange_fixed(moes_ep *ep, void *send, void *recv,
                          int64_t per_pair, int64_t elem_bytes)
{
    const int R = ep->n_ranks;
    for (int r = 0; r < R; r++) {
        ep->send_counts[r] = ep->recv_counts[r] = per_pair;
        ep->send_displs[r] = ep->recv_displs[r] = r * per_pair;
    }
    return exchange(ep, send, recv, elem_bytes, 1);
}

/* The markers travel like the counts of the exact mode: not payload, and
 * not in the statistics. */
static int exchange_markers(moes_ep *ep, const ep_buffer *send,
                            ep_buffer *recv)
{
    const int64_t sent = ep->bytes_sent, received = ep->bytes_received;
    int rc = exchange_fixed(ep, send->ptr, recv->ptr, 1, 8);
    ep->bytes_sent = sent;
    ep->bytes_received = received;
    return rc;
}

static int dispatch_on_device(moes_ep *ep, const moes_ep_dispatch_args *args)
{
    const int R = ep->n_ranks;
    const int64_t B = ep->opts.tokens_per_pair;
    int status = args ? check_dispatch(ep, args)
                      : moes_ep_fail(ep, MOES_ERR_NULL_POINTER,
                                     "args is NULL");
    int rc;
    ep->send_slots = ep->recv_slots = B * R;
    /* The caller's layout, checked before any rank sends a token. */
    if (status == MOES_OK)
        status = scatter_received(ep, args->local, args->x_scales != NULL,
                                  MOES_SCATTER_CHECK_ONLY);
    /* A failure from here on is this rank's status, and the rank still
     * takes part in every exchange below, as its peers do: returning
     * early would pair its next exchanges with their present ones. (Where
     * even the failure markers cannot be written, the device is beyond
     * what a marker can tell.) */
    rc = set_markers(ep, &ep->marks_send, status);
    if (rc == MOES_OK)
        rc = clear_slots(ep, status == MOES_OK ? args : NULL);
    if (status == MOES_OK)
        status = rc;
    int64_t *dropped = args && args->n_dropped_device
                           ? args->n_dropped_device
                           : ep->dropped.ptr;
    if (status == MOES_OK && args->n_tokens > 0) {
        status = route(ep, args);
        if (status == MOES_OK)
            status = pack(ep, args, ep->marks_send.ptr, dropped);
    } else if (status == MOES_OK) {
        /* No tokens: none kept for any rank, none dropped. */
        status = zero_markers(ep, &ep->marks_send);
        if (status == MOES_OK &&
            (status = moes_fill(ep->ctx, dropped, 0, 8)) != MOES_OK)
            moes_ep_fail(ep, status, "%s", moes_last_error(ep->ctx));
    }
    /* A failure the host saw after the markers were set (a pack may have
     * written them): the peers get its status. */
    if (status != MOES_OK)
        (void)set_markers(ep, &ep->marks_send, status);
    /* Every buffer travels, whatever this rank found: the exchanges are
     * the same on every rank. */
    if ((rc = exchange_group(ep, 1)))
        return rc;
    if (!(rc = exchange_markers(ep, &ep->marks_send, &ep->marks_recv)))
        rc = exchange_fixed(ep, ep->send_records.ptr, recv_slots_at(ep), B,
                            ep->record);
    int end = exchange_group(ep, 0);
    if ((rc = rc ? rc : end))
        return rc;
    if (status == MOES_OK)
        status = check_markers(ep, &ep->marks_recv, B + 1, "dispatch");
    if (status == MOES_OK)
        status = scatter_received(ep, args->local, args->x_scales != NULL, 0);
    if (status != MOES_OK)
        return status;
    ep->dispatched = 1;
    ep->n_tokens = args->n_tokens;
    ep->recv_index_dtype = args->local->index_dtype;
    /* Weights of 1.0 travel for a rank that gave none. */
    ep->has_weights = 1;
    if (!args->n_received && !args->n_dropped)
        return MOES_OK;
    /* Host counts asked for: wait for them. */
    int64_t *marks = malloc((size_t)R * sizeof *marks);
    int64_t n_dropped = 0;
    if (!marks)
        return moes_ep_fail(ep, MOES_ERR_OUT_OF_MEMORY,
                            "cannot allocate the received counts");
    rc = moes_copy_to_host(ep->ctx, marks, ep->marks_recv.ptr,
                           (int64_t)R * 8);
    if (rc == MOES_OK)
        rc = moes_copy_to_host(ep->ctx, &n_dropped, dropped, 8);
    if (rc == MOES_OK)
        rc = moes_ep_synchronize(ep);
    if (rc == MOES_OK) {
        int64_t received = 0;
        for (int r = 0; r < R; r++)
            received += marks[r];
        if (args->n_received)
            *args->n_received = received;
        if (args->n_dropped)
            *args->n_dropped = n_dropped;
    }
    free(marks);
    return rc;
}

int moes_ep_dispatch(moes_ep *ep, const moes_ep_dispatch_args *args)
{
    if (!ep)
        return MOES_ERR_NULL_POINTER;
    ep->message[0] = '\0';
    ep->dispatched = 0;
    ep->bytes_sent = ep->bytes_received = 0;
    if (ep->async)
        return dispatch_on_device(ep, args);
    const int R = ep->n_ranks;
    const int bounded = ep->opts.mode == MOES_EP_MODE_BOUNDED;
    const int64_t B = ep->opts.tokens_per_pair;

    /* Local work first; its status travels with the counts, so a rank
     * with NULL args still takes part in the exchange of statuses. */
    int status = args ? check_dispatch(ep, args)
                      : moes_ep_fail(ep, MOES_ERR_NULL_POINTER,
                                     "args is NULL");
    if (status == MOES_OK)
        status = route(ep, args);
    if (status == MOES_OK)
        status = count_destinations(ep, args->n_tokens);
    if (status == MOES_OK)
        status = pack(ep, args, NULL, NULL);
    int has_scales = status == MOES_OK && args->x_scales != NULL;
    int has_weights = status == MOES_OK && args->weights != NULL;
    int64_t dropped = 0;
    for (int r = 0; r < R; r++) {
        int64_t n = status == MOES_OK ? ep->send_counts[r] : 0;
        if (bounded && n > B) {
            dropped += n - B;
            n = B;
        }
        ep->send_counts[r] = n;
        ep->exchange_send[r * 4 + 0] = encode_status(ep, status);
        ep->exchange_send[r * 4 + 1] = n;
        ep->exchange_send[r * 4 + 2] = has_scales;
        ep->exchange_send[r * 4 + 3] = has_weights;
    }
    int rc = ep->transport->alltoall_i64(ep, ep->exchange_send,
                                         ep->exchange_recv, 4);
    if (rc != MOES_OK)
        return rc;
    int64_t worst = 0;
    int flags_differ = 0;
    for (int s = 0; s < R; s++) {
        if (ep->exchange_recv[s * 4] > worst)
            worst = ep->exchange_recv[s * 4];
        flags_differ |= ep->exchange_recv[s * 4 + 2] != has_scales ||
                        ep->exchange_recv[s * 4 + 3] != has_weights;
    }
    if ((rc = agreed_status(ep, status, worst)) != MOES_OK)
        return rc;
    if (flags_differ)
        return moes_ep_fail(ep, MOES_ERR_INVALID_ARGUMENT,
                            "the ranks disagree on whether scales or weights "
                            "are sent: every rank must give both or neither");

    /* Where each pair's tokens sit: packed by the scatter (exact) or in
     * fixed slots of B (bounded). */
    int64_t received = 0;
    for (int r = 0; r < R; r++) {
        ep->recv_counts[r] = ep->exchange_recv[r * 4 + 1];
        received += ep->recv_counts[r];
    }
    if (bounded) {
        for (int r = 0; r < R; r++) {
            ep->send_counts[r] = ep->recv_counts[r] = B;
            ep->send_displs[r] = ep->recv_displs[r] = r * B;
        }
        ep->recv_slots = B * R;
    } else {
        int64_t sd = 0, rd = 0;
        for (int r = 0; r < R; r++) {
            ep->send_displs[r] = sd;
            ep->recv_displs[r] = rd;
            sd += ep->send_counts[r];
            rd += ep->recv_counts[r];
        }
        ep->recv_slots = rd;
        status = rd > INT32_MAX
                     ? moes_ep_fail(ep, MOES_ERR_OVERFLOW,
                                    "%lld tokens arrive, more than one "
                                    "exchange can count", (long long)rd)
                     : size_recv(ep, rd);
    }
    /* The caller's layout, checked (with the routing of what will arrive)
     * before any rank sends a token. */
    if (status == MOES_OK)
        status = scatter_received(ep, args->local, has_scales,
                                  MOES_SCATTER_CHECK_ONLY);
    if ((rc = agree(ep, status)) != MOES_OK)
        return rc;

    if ((rc = exchange_group(ep, 1)))
        return rc;
    rc = exchange(ep, ep->send_records.ptr, recv_slots_at(ep), ep->record, 1);
    int end = exchange_group(ep, 0);
    if ((rc = rc ? rc : end))
        return rc;

    const moes_scatter_args *l = args->local;
    if ((rc = agree(ep, check_capacity(ep, l))) != MOES_OK)
        return rc;

    status = scatter_received(ep, l, has_scales, 0);
    if (status == MOES_OK && ep->on_device &&
        (status = moes_synchronize(ep->ctx)) != MOES_OK)
        fail_local(ep, status);
    if ((rc = agree(ep, status)) != MOES_OK)
        return rc;

    ep->dispatched = 1;
    ep->n_tokens = args->n_tokens;
    ep->recv_index_dtype = l->index_dtype;
    ep->has_weights = has_weights;
    if (args->n_received)
        *args->n_received = received;
    if (args->n_dropped)
        *args->n_dropped = dropped;
    if (args->n_dropped_device)
        return copy_dropped(ep, args, dropped);
    return MOES_OK;
}

/* ------------------------------------------------------------------ */
/* Combine                                                            */
/* ------------------------------------------------------------------ */

static int check_combine(moes_ep *ep, const moes_ep_combine_args *a)
{
    if (a->struct_size != sizeof *a)
        return moes_ep_fail(ep, MOES_ERR_INVALID_ARGUMENT,
                            "args->struct_size is %zu, expected %zu",
                            a->struct_size, sizeof *a);
    if (!ep->dispatched)
        return moes_ep_fail(ep, MOES_ERR_INVALID_ARGUMENT,
                            "no successful moes_ep_dispatch before this "
                            "combine");
    if (a->flags & ~MOES_GATHER_ACCUMULATE)
        return moes_ep_fail(ep, MOES_ERR_INVALID_FLAGS,
                            "args->flags = 0x%x has unknown bits", a->flags);
    if (ep->n_tokens > 0 && !a->out)
        return moes_ep_fail(ep, MOES_ERR_NULL_POINTER, "args->out is NULL");
    if (a->out_stride < 0 ||
        (a->out_stride && a->out_stride < ep->opts.hidden))
        return moes_ep_fail(ep, MOES_ERR_INVALID_STRIDE,
                            "args->out_stride = %lld is smaller than hidden",
                            (long long)a->out_stride);
    return MOES_OK;
}

/* This rank's received tokens, each into one fp32 partial row; the
 * marker rows in front of them (every index -1) come out as +0.0, which
 * makes the combine's markers 0. */
static int gather_partials(moes_ep *ep, const moes_ep_combine_args *args)
{
    size_t index_size = 0;
    moes_dtype_size(ep->recv_index_dtype, &index_size);
    moes_gather_args g;
    moes_gather_args_init(&g);
    g.n_tokens = ep->marker_rows + ep->recv_slots;
    g.top_k = ep->opts.top_k;
    g.hidden = ep->opts.hidden;
    g.y = args->y;
    g.y_dtype = ep->opts.y_dtype;
    g.y_rows = args->y_rows;
    g.y_stride = args->y_stride;
    /* The slots' entries start at recv_index_slots in this dtype; the
     * marker rows' end there. */
    g.out_index = (char *)recv_index_slots(ep) -
                  ep->marker_rows * ep->opts.top_k * (int64_t)index_size;
    g.index_dtype = ep->recv_index_dtype;
    g.weights = ep->has_weights
                    ? (const float *)((char *)ep->recv_records.ptr +
                                      ep->weights_at)
                    : NULL;
    g.weights_stride = ep->record / 4;
    g.out = ep->partial.ptr;
    g.out_dtype = MOES_DTYPE_FP32;
    int rc = moes_gather(ep->ctx, &g);
    /* The exact mode agrees on this status before the partials travel:
     * an error found on the device must be known here. */
    if (rc == MOES_OK && ep->on_device && !ep->async)
        rc = moes_synchronize(ep->ctx);
    if (rc == MOES_ERR_INVALID_OUT_INDEX)
        /* The indices are the dispatch's own: y is what is short. */
        return moes_ep_fail(ep, rc,
                            "args->y_rows = %lld does not reach every row "
                            "the dispatch placed (%s)",
                            (long long)args->y_rows,
                            moes_last_error(ep->ctx));
    if (rc != MOES_OK)
        moes_ep_fail(ep, rc, "the local gather: %s", moes_last_error(ep->ctx));
    return rc;
}

/* The partials that came back, added in ascending rank order: a gather
 * with the packing's out_index and unit weights. With
 * MOES_GATHER_CHECK_ONLY in flags, that gather's argument checks alone
 * (the caller's out), which every rank agrees on before the partials
 * travel. */
static int add_partials(moes_ep *ep, const moes_ep_combine_args *args,
                        unsigned flags)
{
    moes_gather_args g;
    moes_gather_args_init(&g);
    g.flags = args->flags | flags;
    g.n_tokens = ep->n_tokens;
    g.top_k = ep->opts.top_k;
    g.hidden = ep->opts.hidden;
    g.y = ep->back.ptr;
    g.y_dtype = MOES_DTYPE_FP32;
    g.y_rows = ep->send_slots;
    g.out_index = ep->pack_index.ptr;
    g.index_dtype = MOES_DTYPE_INT64;
    g.out = args->out;
    g.out_dtype = ep->opts.out_dtype;
    g.out_stride = args->out_stride;
    int rc = moes_gather(ep->ctx, &g);
    if (rc != MOES_OK)
        return moes_ep_fail(ep, rc, "adding the partials: %s",
                            moes_last_error(ep->ctx));
    return MOES_OK;
}

static int combine_on_device(moes_ep *ep, const moes_ep_combine_args *args)
{
    const int64_t B = ep->opts.tokens_per_pair;
    int status = args ? check_combine(ep, args)
                      : moes_ep_fail(ep, MOES_ERR_NULL_POINTER,
                                     "args is NULL");
    int rc;
    if (status == MOES_OK && ep->n_tokens > 0)
        status = add_partials(ep, args, MOES_GATHER_CHECK_ONLY);
    /* As in the dispatch: a failure is this rank's status, and every
     * exchange below still takes place. */
    rc = set_markers(ep, &ep->back_marks_send, status);
    if (status == MOES_OK)
        status = rc;
    /* The gather writes the markers' 0 too. */
    if (status == MOES_OK)
        status = gather_partials(ep, args);
    if (status != MOES_OK)
        (void)set_markers(ep, &ep->back_marks_send, status);
    if ((rc = exchange_group(ep, 1)))
        return rc;
    if (!(rc = exchange_markers(ep, &ep->back_marks_send,
                                &ep->back_marks_recv)))
        rc = exchange_fixed(ep, partial_slots(ep), ep->back.ptr, B,
                            partial_bytes(ep));
    int end = exchange_group(ep, 0);
    if ((rc = rc ? rc : end))
        return rc;
    if (status == MOES_OK)
        status = check_markers(ep, &ep->back_marks_recv, 2, "combine");
    if (status == MOES_OK && ep->n_tokens > 0)
        status = add_partials(ep, args, 0);
    return status;
}

int moes_ep_combine(moes_ep *ep, const moes_ep_combine_args *args)
{
    if (!ep)
        return MOES_ERR_NULL_POINTER;
    ep->message[0] = '\0';
    ep->bytes_sent = ep->bytes_received = 0;
    if (ep->async)
        return combine_on_device(ep, args);
    int status = args ? check_combine(ep, args)
                      : moes_ep_fail(ep, MOES_ERR_NULL_POINTER,
                                     "args is NULL");
    /* The caller's out, checked before any partial travels. */
    if (status == MOES_OK && ep->n_tokens > 0)
        status = add_partials(ep, args, MOES_GATHER_CHECK_ONLY);
    if (status == MOES_OK && ep->recv_slots > 0)
        status = gather_partials(ep, args);
    int rc = agree(ep, status);
    if (rc != MOES_OK)
        return rc;
    if ((rc = exchange(ep, partial_slots(ep), ep->back.ptr, partial_bytes(ep),
                       0)))
        return rc;
    if (ep->n_tokens == 0)
        return MOES_OK;
    return add_partials(ep, args, 0);
}

int moes_ep_synchronize(moes_ep *ep)
{
    if (!ep)
        return MOES_ERR_NULL_POINTER;
    int st = moes_synchronize(ep->ctx);
    if (st == MOES_OK)
        return MOES_OK;
    if (!ep->async)
        return moes_ep_fail(ep, st, "%s", moes_last_error(ep->ctx));
    /* This rank's own error (its own marker failed too), or the first
     * peer whose marker stopped this rank's stream. */
    char own[512];
    snprintf(own, sizeof own, "%s", moes_last_error(ep->ctx));
    const int R = ep->n_ranks;
    int64_t *m = malloc((size_t)R * 2 * sizeof *m);
    if (!m || moes_copy_to_host(ep->ctx, m, ep->marks_recv.ptr,
                                (int64_t)R * 8) != MOES_OK ||
        moes_copy_to_host(ep->ctx, m + R, ep->back_marks_recv.ptr,
                          (int64_t)R * 8) != MOES_OK) {
        free(m);
        return moes_ep_fail(ep, st, "%s", own);
    }
    int peer_status = st, r;
    if (m[ep->rank] < -1 || m[R + ep->rank] < -1 ||
        ((r = failed_rank(m, R, &peer_status)) < 0 &&
         (r = failed_rank(m + R, R, &peer_status)) < 0)) {
        free(m);
        return moes_ep_fail(ep, st, "%s", own);
    }
    const int in_dispatch = m[r] < -1;
    free(m);
    return moes_ep_fail(ep, peer_status,
                        "rank %d's %s failed (%s): nothing it sent was used, "
                        "and this rank's outputs of that step are unchanged",
                        r, in_dispatch ? "dispatch" : "combine",
                        moes_strerror(peer_status));
}
