/* SPDX-License-Identifier: MIT */
/*
 * caserun.c - one case, three calls, on a backend or on the oracle.
 *
 * The same sequence runs on both sides; only where memory lives and which
 * functions are called differ, and those are hidden behind side_*().
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "caserun.h"
#include "oracle.h"

/* ctx NULL: host memory and the oracle. */
typedef struct side {
    moes_context *ctx;
    char *msg;
    size_t msg_len;
} side;

static int side_fail(side *s, int st, const char *what)
{
    snprintf(s->msg, s->msg_len, "%s failed: %s (%s)", what,
             moes_strerror(st),
             s->ctx ? moes_last_error(s->ctx) : "host memory");
    return st;
}

static int side_alloc(side *s, void **p, int64_t bytes)
{
    int st = MOES_OK;
    *p = NULL;
    if (bytes == 0)
        return MOES_OK;
    if (s->ctx)
        st = moes_malloc(s->ctx, p, bytes);
    else if (!(*p = malloc((size_t)bytes)))
        st = MOES_ERR_OUT_OF_MEMORY;
    return st == MOES_OK ? st : side_fail(s, st, "allocation");
}

static void side_free(side *s, void *p)
{
    if (s->ctx)
        moes_free(s->ctx, p);
    else
        free(p);
}

static int side_upload(side *s, void *dst, const void *src, int64_t bytes)
{
    int st = MOES_OK;
    if (bytes == 0)
        return MOES_OK;
    if (s->ctx)
        st = moes_copy_to_backend(s->ctx, dst, src, bytes);
    else
        memcpy(dst, src, (size_t)bytes);
    return st == MOES_OK ? st : side_fail(s, st, "copy to the backend");
}

static int side_fill(side *s, void *p, int64_t bytes)
{
    int st = MOES_OK;
    if (bytes == 0)
        return MOES_OK;
    if (s->ctx)
        st = moes_fill(s->ctx, p, MOES_CANARY, bytes);
    else
        memset(p, MOES_CANARY, (size_t)bytes);
    return st == MOES_OK ? st : side_fail(s, st, "fill");
}

/* A host copy of backend buffer p into b (bytes long). */
static int side_download(side *s, moes_case_buffer *b, const void *p,
                         int64_t bytes)
{
    int st = MOES_OK;
    b->bytes = bytes;
    b->data = NULL;
    if (bytes == 0)
        return MOES_OK;
    if (!(b->data = malloc((size_t)bytes)))
        return side_fail(s, MOES_ERR_OUT_OF_MEMORY, "host copy");
    if (s->ctx)
        st = moes_copy_to_host(s->ctx, b->data, p, bytes);
    else
        memcpy(b->data, p, (size_t)bytes);
    return st == MOES_OK ? st : side_fail(s, st, "copy to the host");
}

/* The status of a call as docs/design-rules.md defines it on an asynchronous
 * backend: the call's own error, else the next synchronize's. */
static void finish_call(side *s, int st, int *status, char *message,
                        size_t len)
{
    if (s->ctx) {
        int sync;
        if (st != MOES_OK)
            snprintf(message, len, "%s", moes_last_error(s->ctx));
        sync = moes_synchronize(s->ctx);
        if (st == MOES_OK && sync != MOES_OK) {
            st = sync;
            snprintf(message, len, "%s", moes_last_error(s->ctx));
        }
    } else if (st != MOES_OK) {
        snprintf(message, len, "%s", moes_oracle_last_error());
    }
    *status = st;
}

enum { IN_IDS, IN_MAP, IN_X, IN_SCALES, IN_Y, IN_WEIGHTS, IN_GATHER_INDEX,
       IN_COUNT_OF };

typedef struct run_buffers {
    void *in[IN_COUNT_OF];
    void *out[MOES_OUT_COUNT_OF];
} run_buffers;

static int64_t output_bytes(const moes_case *c, int i)
{
    const int masked = c->scatter.layout == MOES_LAYOUT_MASKED;
    switch (i) {
    case MOES_OUT_COUNT_COUNTS: return c->count_bytes;
    case MOES_OUT_DATA: return c->out_bytes;
    case MOES_OUT_SCALES: return c->out_scales_bytes;
    case MOES_OUT_INDEX: return c->out_index_bytes;
    case MOES_OUT_COUNTS: return c->want_counts ? c->expert_array_bytes : 0;
    case MOES_OUT_START: return c->want_start ? c->expert_array_bytes : 0;
    case MOES_OUT_END: return c->want_end ? c->expert_array_bytes : 0;
    case MOES_OUT_M_INDICES: return c->m_indices_bytes;
    case MOES_OUT_MASKED_M: return masked ? c->expert_array_bytes : 0;
    case MOES_OUT_N_DROPPED: return c->want_n_dropped ? 8 : 0;
    case MOES_OUT_ROW_SOURCE: return c->row_source_bytes;
    case MOES_OUT_GATHER: return c->gather_out_bytes;
    case MOES_OUT_DISTINCT: return c->distinct_bytes;
    default: return 0;
    }
}

static int run_calls(side *s, const moes_case *c, run_buffers *b,
                     moes_case_result *res)
{
    const moes_case_buffer *in[IN_COUNT_OF] = {
        &c->ids, &c->map, &c->x, &c->x_scales, &c->y, &c->weights,
        &c->gather_index};
    moes_routing routing = c->routing;
    moes_scatter_args sa = c->scatter;
    moes_gather_args ga = c->gather;
    int st;

    for (int i = 0; i < IN_COUNT_OF; i++) {
        if ((st = side_alloc(s, &b->in[i], in[i]->bytes)) != MOES_OK ||
            (st = side_upload(s, b->in[i], in[i]->data, in[i]->bytes)) !=
                MOES_OK)
            return st;
    }
    for (int i = 0; i < MOES_OUT_COUNT_OF; i++) {
        int64_t bytes = output_bytes(c, i);
        if ((st = side_alloc(s, &b->out[i], bytes)) != MOES_OK)
            return st;
        if (i == MOES_OUT_GATHER && (ga.flags & MOES_GATHER_ACCUMULATE))
            st = side_upload(s, b->out[i], c->gather_out_init.data, bytes);
        else
            st = side_fill(s, b->out[i], bytes);
        if (st != MOES_OK)
            return st;
    }
    routing.ids = b->in[IN_IDS];
    routing.expert_map = b->in[IN_MAP];

    /* count */
    st = s->ctx ? moes_count(s->ctx, &routing, b->out[MOES_OUT_COUNT_COUNTS],
                             c->counts_dtype)
                : moes_oracle_count(&routing, b->out[MOES_OUT_COUNT_COUNTS],
                                    c->counts_dtype);
    finish_call(s, st, &res->status[MOES_CALL_COUNT],
                res->message[MOES_CALL_COUNT], sizeof res->message[0]);

    /* distinct experts, in the scatter's index dtype */
    st = s->ctx ? moes_distinct_experts(s->ctx, &routing,
                                        b->out[MOES_OUT_DISTINCT],
                                        c->scatter.index_dtype,
                                        c->distinct_stride)
                : moes_oracle_distinct_experts(&routing,
                                               b->out[MOES_OUT_DISTINCT],
                                               c->scatter.index_dtype,
                                               c->distinct_stride);
    finish_call(s, st, &res->status[MOES_CALL_DISTINCT],
                res->message[MOES_CALL_DISTINCT], sizeof res->message[0]);

    /* scatter */
    sa.x = b->in[IN_X];
    sa.x_scales = b->in[IN_SCALES];
    sa.out = b->out[MOES_OUT_DATA];
    sa.out_scales = b->out[MOES_OUT_SCALES];
    sa.out_index = b->out[MOES_OUT_INDEX];
    sa.counts = b->out[MOES_OUT_COUNTS];
    sa.expert_start = b->out[MOES_OUT_START];
    sa.expert_end = b->out[MOES_OUT_END];
    sa.m_indices = b->out[MOES_OUT_M_INDICES];
    sa.masked_m = b->out[MOES_OUT_MASKED_M];
    sa.n_dropped = b->out[MOES_OUT_N_DROPPED];
    sa.row_source = b->out[MOES_OUT_ROW_SOURCE];
    st = s->ctx ? moes_scatter(s->ctx, &routing, &sa)
                : moes_oracle_scatter(&routing, &sa);
    finish_call(s, st, &res->status[MOES_CALL_SCATTER],
                res->message[MOES_CALL_SCATTER], sizeof res->message[0]);

    /* gather, on the scatter's out_index when there is a good one */
    ga.y = b->in[IN_Y];
    ga.weights = b->in[IN_WEIGHTS];
    ga.out = b->out[MOES_OUT_GATHER];
    ga.out_index = res->status[MOES_CALL_SCATTER] == MOES_OK &&
                           c->fault != MOES_CASE_BAD_OUT_INDEX
                       ? b->out[MOES_OUT_INDEX]
                       : b->in[IN_GATHER_INDEX];
    st = s->ctx ? moes_gather(s->ctx, &ga) : moes_oracle_gather(&ga);
    finish_call(s, st, &res->status[MOES_CALL_GATHER],
                res->message[MOES_CALL_GATHER], sizeof res->message[0]);

    for (int i = 0; i < MOES_OUT_COUNT_OF; i++)
        if ((st = side_download(s, &res->out[i], b->out[i],
                                output_bytes(c, i))) != MOES_OK)
            return st;
    return MOES_OK;
}

int moes_case_run(moes_context *ctx, const moes_case *c, moes_case_result *res,
                  char *msg, size_t msg_len)
{
    side s = {ctx, msg, msg_len};
    run_buffers b;
    int st;
    memset(res, 0, sizeof *res);
    memset(&b, 0, sizeof b);
    if (msg_len)
        msg[0] = '\0';
    st = run_calls(&s, c, &b, res);
    for (int i = 0; i < IN_COUNT_OF; i++)
        side_free(&s, b.in[i]);
    for (int i = 0; i < MOES_OUT_COUNT_OF; i++)
        side_free(&s, b.out[i]);
    return st;
}

void moes_case_result_free(moes_case_result *res)
{
    for (int i = 0; i < MOES_OUT_COUNT_OF; i++) {
        free(res->out[i].data);
        res->out[i].data = NULL;
        res->out[i].bytes = 0;
    }
}

const char *moes_case_output_name(int i)
{
    static const char *names[MOES_OUT_COUNT_OF] = {
        "count: counts", "scatter: out", "scatter: out_scales",
        "scatter: out_index", "scatter: counts", "scatter: expert_start",
        "scatter: expert_end", "scatter: m_indices", "scatter: masked_m",
        "scatter: n_dropped", "scatter: row_source", "gather: out",
        "distinct_experts: out"};
    return i >= 0 && i < MOES_OUT_COUNT_OF ? names[i] : "?";
}
