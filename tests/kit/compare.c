/* SPDX-License-Identifier: MIT */
/*
 * compare.c - where two runs of a case differ, said precisely.
 */
#include <stdio.h>
#include <string.h>

#include "compare.h"

static const char *call_name(int call)
{
    static const char *names[] = {"count", "scatter", "gather",
                                  "distinct_experts"};
    return call >= 0 && call < MOES_CALL_COUNT_OF ? names[call] : "?";
}

static int is_data_error(int st)
{
    return st == MOES_ERR_INVALID_ID || st == MOES_ERR_INVALID_MAP ||
           st == MOES_ERR_INVALID_OUT_INDEX || st == MOES_ERR_CAPACITY;
}

/* How buffer i is laid out: element bytes, whether the elements are
 * integers, and the element offsets of a (row, column) position. */
typedef struct geometry {
    size_t elem;
    int integer;
    int64_t row_stride, col_stride; /* in elements; 0: a flat array */
    int64_t row_len;                /* columns in use per row          */
} geometry;

static geometry geometry_of(const moes_case *c, int i)
{
    const moes_scatter_args *a = &c->scatter;
    const moes_gather_args *g = &c->gather;
    geometry geo = {moes_case_dtype_bytes(a->index_dtype), 1, 0, 0, 0};
    switch (i) {
    case MOES_OUT_COUNT_COUNTS:
        geo.elem = moes_case_dtype_bytes(c->counts_dtype);
        break;
    case MOES_OUT_DISTINCT:
        geo.row_stride = c->distinct_stride ? c->distinct_stride
                                            : c->routing.top_k;
        geo.col_stride = 1;
        geo.row_len = c->routing.top_k;
        break;
    case MOES_OUT_DATA:
        geo.elem = moes_case_dtype_bytes(a->x_dtype);
        geo.integer = 0;
        geo.row_stride = a->out_stride ? a->out_stride : a->hidden;
        geo.col_stride = 1;
        geo.row_len = a->hidden;
        break;
    case MOES_OUT_SCALES: {
        int64_t s = (a->hidden + a->scale_block - 1) / a->scale_block;
        geo.elem = 4;
        geo.integer = a->out_scales_format == MOES_SCALES_UE8M0;
        geo.row_len = a->out_scales_format == MOES_SCALES_UE8M0 ? (s + 3) / 4
                                                                : s;
        geo.col_stride = a->out_scales_col_stride ? a->out_scales_col_stride
                                                  : 1;
        geo.row_stride = a->out_scales_row_stride
                             ? a->out_scales_row_stride
                             : geo.row_len * geo.col_stride;
        break;
    }
    case MOES_OUT_INDEX:
        geo.row_stride = a->out_index_stride ? a->out_index_stride
                                             : c->routing.top_k;
        geo.col_stride = 1;
        geo.row_len = c->routing.top_k;
        break;
    case MOES_OUT_N_DROPPED:
        geo.elem = 8;
        break;
    case MOES_OUT_GATHER:
        geo.elem = moes_case_dtype_bytes(g->out_dtype);
        geo.integer = 0;
        geo.row_stride = g->out_stride ? g->out_stride : g->hidden;
        geo.col_stride = 1;
        geo.row_len = g->hidden;
        break;
    default:
        break;
    }
    return geo;
}

/* Element e's value as text: decimal for integers, hex bits (and the
 * float value when it is fp32) for floating-point data. */
static void element_text(const moes_case_buffer *b, const geometry *geo,
                         int64_t e, char *out, size_t len)
{
    uint64_t bits = 0;
    int64_t off = e * (int64_t)geo->elem;
    size_t n = geo->elem;
    if (off < 0 || off >= b->bytes) {
        snprintf(out, len, "(missing)");
        return;
    }
    if ((int64_t)n > b->bytes - off)
        n = (size_t)(b->bytes - off);
    memcpy(&bits, (const char *)b->data + off, n); /* little-endian */
    if (geo->integer && geo->elem == 4)
        snprintf(out, len, "%d (0x%08x)", (int32_t)(uint32_t)bits,
                 (unsigned)bits);
    else if (geo->integer)
        snprintf(out, len, "%lld (0x%016llx)", (long long)bits,
                 (unsigned long long)bits);
    else if (geo->elem == 4) {
        float f;
        uint32_t u = (uint32_t)bits;
        memcpy(&f, &u, 4);
        snprintf(out, len, "0x%08x (%.9g)", (unsigned)u, (double)f);
    } else
        snprintf(out, len, "0x%0*llx", (int)(2 * geo->elem),
                 (unsigned long long)bits);
}

/* "[row][col]" of element e, or "[e]" for flat arrays, noting a gap. */
static void position_text(const geometry *geo, int64_t e, char *out,
                          size_t len)
{
    int64_t row, col, rest;
    if (geo->row_stride == 0) {
        snprintf(out, len, "[%lld]", (long long)e);
        return;
    }
    if (geo->row_stride >= geo->col_stride) {
        row = e / geo->row_stride;
        rest = e % geo->row_stride;
        col = rest / geo->col_stride;
        rest %= geo->col_stride;
    } else {
        col = e / geo->col_stride;
        rest = e % geo->col_stride;
        row = rest / geo->row_stride;
        rest %= geo->row_stride;
    }
    snprintf(out, len, "[%lld][%lld]%s (element %lld)", (long long)row,
             (long long)col,
             rest != 0 || col >= geo->row_len ? " in a gap between rows" : "",
             (long long)e);
}

int moes_case_compare(const moes_case *c, const moes_case_result *expected,
                      const moes_case_result *got, char *msg, size_t len)
{
    for (int call = 0; call < MOES_CALL_COUNT_OF; call++) {
        int se = expected->status[call], sg = got->status[call];
        if (se != sg) {
            snprintf(msg, len,
                "%s: status %d (%s: %s) expected, got %d (%s: %s)",
                call_name(call), se, moes_strerror(se),
                expected->message[call], sg, moes_strerror(sg),
                got->message[call]);
            return 1;
        }
        if (is_data_error(se) &&
            strcmp(expected->message[call], got->message[call]) != 0) {
            snprintf(msg, len, "%s: message \"%s\" expected, got \"%s\"",
                     call_name(call), expected->message[call],
                     got->message[call]);
            return 1;
        }
    }
    for (int i = 0; i < MOES_OUT_COUNT_OF; i++) {
        const moes_case_buffer *be = &expected->out[i], *bg = &got->out[i];
        const unsigned char *pe = be->data, *pg = bg->data;
        geometry geo;
        char pos[160], ve[80], vg[80];
        int64_t at;
        if (be->bytes != bg->bytes) {
            snprintf(msg, len, "%s: %lld bytes expected, got %lld",
                     moes_case_output_name(i), (long long)be->bytes,
                     (long long)bg->bytes);
            return 1;
        }
        if (be->bytes == 0 || memcmp(pe, pg, (size_t)be->bytes) == 0)
            continue;
        for (at = 0; pe[at] == pg[at]; at++)
            ;
        geo = geometry_of(c, i);
        position_text(&geo, at / (int64_t)geo.elem, pos, sizeof pos);
        element_text(be, &geo, at / (int64_t)geo.elem, ve, sizeof ve);
        element_text(bg, &geo, at / (int64_t)geo.elem, vg, sizeof vg);
        snprintf(msg, len, "%s%s: first difference at byte %lld, %s: "
                 "expected %s, got %s",
                 moes_case_output_name(i),
                 pe[at] == MOES_CANARY ? " (expected untouched)" : "",
                 (long long)at, pos, ve, vg);
        return 1;
    }
    if (len)
        msg[0] = '\0';
    return 0;
}

int moes_case_check(moes_context *ctx, moes_context *ref, uint64_t seed,
                    int fault, const moes_case_limits *limits, char *msg,
                    size_t len)
{
    moes_case c;
    moes_case_result want, got;
    char what[640], desc[1024];
    int verdict = MOES_CHECK_SAME;

    if (moes_case_generate(&c, seed, fault, limits) != MOES_OK) {
        snprintf(msg, len, "seed 0x%016llx: cannot generate the case",
                 (unsigned long long)seed);
        return MOES_CHECK_ERROR;
    }
    moes_case_describe(&c, desc, sizeof desc);
    if (moes_case_run(ref, &c, &want, what, sizeof what) != MOES_OK) {
        snprintf(msg, len, "%s: reference run: %s", desc, what);
        verdict = MOES_CHECK_ERROR;
    } else if (moes_case_run(ctx, &c, &got, what, sizeof what) != MOES_OK) {
        snprintf(msg, len, "%s: run: %s", desc, what);
        verdict = MOES_CHECK_ERROR;
    } else if (moes_case_compare(&c, &want, &got, what, sizeof what)) {
        snprintf(msg, len, "%s: %s", desc, what);
        verdict = MOES_CHECK_DIFFERENT;
    } else if (len) {
        msg[0] = '\0';
    }
    moes_case_result_free(&want);
    moes_case_result_free(&got);
    moes_case_free(&c);
    return verdict;
}
