/* SPDX-License-Identifier: MIT */
/*
 * oracle_args.c - argument checks of the oracle. The rules are those of
 * docs/design-rules.md and moescatter.h; the order in which they are
 * tried is the library's, so that an input with several faults gets the
 * same status.
 * Sizes are computed in 128 bits: no product can wrap here.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "oracle.h"
#include "oracle_args.h"

__extension__ typedef __int128 wide;

static _Thread_local char last_message[512];

int oracle_fail(int status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(last_message, sizeof last_message, fmt, ap);
    va_end(ap);
    return status;
}

const char *moes_oracle_last_error(void)
{
    return last_message;
}

/* Does rows * stride * elem bytes fit int64? */
static int bytes_fit(int64_t rows, int64_t stride, size_t elem)
{
    /* Two int64 factors always fit 128 bits; check before the third. */
    wide elements = (wide)rows * stride;
    return elements <= (wide)INT64_MAX &&
           elements * (wide)elem <= (wide)INT64_MAX;
}

static size_t index_elem(int dtype)
{
    if (dtype == MOES_DTYPE_INT32)
        return 4;
    if (dtype == MOES_DTYPE_INT64)
        return 8;
    return 0;
}

static size_t float_elem(int dtype)
{
    switch (dtype) {
    case MOES_DTYPE_BF16:
    case MOES_DTYPE_FP16: return 2;
    case MOES_DTYPE_FP32: return 4;
    default: return 0;
    }
}

static size_t row_elem(int dtype)
{
    if (dtype == MOES_DTYPE_FP8_E4M3 || dtype == MOES_DTYPE_FP8_E5M2)
        return 1;
    return float_elem(dtype);
}

/* 0 means dense; anything else must hold a row. */
static int stride_ok(int64_t *stride, int64_t row, const char *name)
{
    if (*stride == 0)
        *stride = row;
    if (*stride < row)
        return oracle_fail(MOES_ERR_INVALID_STRIDE, "%s < %lld", name,
                           (long long)row);
    return MOES_OK;
}

#define CHECK(expr)                                                         \
    do {                                                                    \
        int status_ = (expr);                                               \
        if (status_ != MOES_OK)                                             \
            return status_;                                                 \
    } while (0)

/* A buffer's bytes [begin, end): from its first element to the end of
 * the last one a call may touch; empty when absent or without rows. Where
 * its rows do not reach into each other (one row included: its stride
 * places it), period is their distance in bytes and row_bytes what each
 * row covers; else period is 0 and the whole range counts. */
typedef struct oracle_extent {
    const void *p;
    size_t elem;
    wide begin, end;
    wide period, row_bytes;
} oracle_extent;

static oracle_extent extent(const void *p, int64_t rows, int64_t stride,
                            int64_t row_len, size_t elem)
{
    oracle_extent x = {p, elem, 0, 0, 0, 0};
    if (p != NULL && rows > 0 && row_len > 0) {
        x.begin = (wide)(uintptr_t)p;
        x.end = x.begin + ((wide)(rows - 1) * stride + row_len) * (wide)elem;
        if (row_len <= stride) {
            x.period = (wide)stride * (wide)elem;
            x.row_bytes = (wide)row_len * (wide)elem;
        }
    }
    return x;
}

/* Whether two extents share a byte. Rows of the same period p repeat
 * with it: seen from the start of a row of a, a covers the offsets
 * [0, a.row_bytes) of each period and b the offsets [d, d + b.row_bytes)
 * taken mod p, where d is where b's rows start. Inside both ranges they
 * share a byte exactly when those two sets of offsets meet. */
/* One row alone repeats at no period: against another extent's rows it
 * is taken to repeat at theirs when it fits in one period. */
static int one_row(const oracle_extent *x)
{
    return x->period != 0 && x->end - x->begin == x->row_bytes;
}

static wide period_seen_by(const oracle_extent *x, const oracle_extent *other)
{
    return one_row(x) && other->period >= x->row_bytes ? other->period
                                                       : x->period;
}

static int extents_overlap(const oracle_extent *a, const oracle_extent *b)
{
    wide p, d;
    if (!(a->begin < a->end && b->begin < b->end && a->begin < b->end &&
          b->begin < a->end))
        return 0;
    if (one_row(a) && one_row(b))
        return 1; /* two single rows whose ranges meet */
    p = period_seen_by(a, b);
    if (p == 0 || p != period_seen_by(b, a))
        return 1;
    d = (b->begin - a->begin) % p;
    if (d < 0)
        d += p;
    return d < a->row_bytes || d + b->row_bytes > p;
}

/* Every pointer aligned to its element size, then no output sharing a
 * byte with an input or an earlier output. */
static int pointers_ok(const oracle_extent *in, int n_in,
                       const oracle_extent *out, int n_out)
{
    for (int i = 0; i < n_in + n_out; i++) {
        const oracle_extent *x = i < n_in ? &in[i] : &out[i - n_in];
        if (x->p != NULL && (uintptr_t)x->p % x->elem != 0)
            return oracle_fail(MOES_ERR_MISALIGNED, "pointer %d misaligned",
                               i);
    }
    for (int o = 0; o < n_out; o++)
        for (int i = 0; i < n_in + o; i++) {
            const oracle_extent *x = i < n_in ? &in[i] : &out[i - n_in];
            if (extents_overlap(&out[o], x))
                return oracle_fail(MOES_ERR_OVERLAP,
                                   "output %d overlaps buffer %d", o, i);
        }
    return MOES_OK;
}

int oracle_check_routing(const moes_routing *routing, oracle_routing *out)
{
    moes_routing r;
    if (!routing)
        return oracle_fail(MOES_ERR_NULL_POINTER, "routing is NULL");
    if (routing->struct_size != sizeof(moes_routing))
        return oracle_fail(MOES_ERR_INVALID_ARGUMENT, "routing struct_size");
    r = *routing;
    if (r.n_tokens < 0)
        return oracle_fail(MOES_ERR_INVALID_SIZE, "n_tokens < 0");
    if (r.top_k < 1)
        return oracle_fail(MOES_ERR_INVALID_SIZE, "top_k < 1");
    if (r.n_experts < 1)
        return oracle_fail(MOES_ERR_INVALID_SIZE, "n_experts < 1");
    if (r.expert_map != NULL) {
        if (r.n_experts_global < 1)
            return oracle_fail(MOES_ERR_INVALID_SIZE, "n_experts_global < 1");
    } else {
        if (r.n_experts_global < 0)
            return oracle_fail(MOES_ERR_INVALID_SIZE, "n_experts_global < 0");
        if (r.n_experts_global == 0)
            r.n_experts_global = r.n_experts;
        if (r.n_experts_global != r.n_experts)
            return oracle_fail(MOES_ERR_INVALID_ARGUMENT,
                               "n_experts_global != n_experts without a map");
    }
    out->ids_elem = index_elem(r.ids_dtype);
    if (out->ids_elem == 0)
        return oracle_fail(MOES_ERR_INVALID_DTYPE, "ids_dtype");
    CHECK(stride_ok(&r.ids_stride, r.top_k, "ids_stride"));
    if (!bytes_fit(r.n_tokens, r.ids_stride, out->ids_elem))
        return oracle_fail(MOES_ERR_OVERFLOW, "ids bytes");
    out->choices = r.n_tokens * r.top_k; /* <= the ids' byte count */
    if (r.n_tokens > 0 && r.ids == NULL)
        return oracle_fail(MOES_ERR_NULL_POINTER, "ids is NULL");
    if (!bytes_fit(1, r.n_experts_global, 4))
        return oracle_fail(MOES_ERR_OVERFLOW, "expert_map bytes");
    out->r = r;
    return MOES_OK;
}

int oracle_check_count(const moes_routing *routing, const void *counts,
                       int counts_dtype, oracle_routing *out,
                       size_t *counts_elem)
{
    CHECK(oracle_check_routing(routing, out));
    *counts_elem = index_elem(counts_dtype);
    if (*counts_elem == 0)
        return oracle_fail(MOES_ERR_INVALID_DTYPE, "counts_dtype");
    if (counts == NULL)
        return oracle_fail(MOES_ERR_NULL_POINTER, "counts is NULL");
    if (*counts_elem == 4 && out->choices > INT32_MAX)
        return oracle_fail(MOES_ERR_OVERFLOW, "counts do not fit int32");
    if (!bytes_fit(1, out->r.n_experts, *counts_elem))
        return oracle_fail(MOES_ERR_OVERFLOW, "counts bytes");
    {
        const moes_routing *r = &out->r;
        oracle_extent in[2], o[1];
        in[0] = extent(r->ids, r->n_tokens, r->ids_stride, r->top_k,
                       out->ids_elem);
        in[1] = extent(r->expert_map, 1, r->n_experts_global,
                       r->n_experts_global, 4);
        o[0] = extent(counts, 1, r->n_experts, r->n_experts, *counts_elem);
        CHECK(pointers_ok(in, 2, o, 1));
    }
    return MOES_OK;
}

int oracle_check_distinct(const moes_routing *routing, const void *out,
                          int out_dtype, int64_t *out_stride,
                          oracle_routing *or_, size_t *out_elem)
{
    CHECK(oracle_check_routing(routing, or_));
    *out_elem = index_elem(out_dtype);
    if (*out_elem == 0)
        return oracle_fail(MOES_ERR_INVALID_DTYPE, "out_dtype");
    if (out == NULL && or_->choices > 0)
        return oracle_fail(MOES_ERR_NULL_POINTER, "out is NULL");
    if (*out_elem == 4 && or_->r.n_experts - 1 > INT32_MAX)
        return oracle_fail(MOES_ERR_OVERFLOW, "experts do not fit int32");
    if (*out_stride == 0)
        *out_stride = or_->r.top_k;
    if (*out_stride < or_->r.top_k)
        return oracle_fail(MOES_ERR_INVALID_STRIDE, "out_stride");
    if (!bytes_fit(or_->r.n_tokens, *out_stride, *out_elem))
        return oracle_fail(MOES_ERR_OVERFLOW, "out bytes");
    {
        const moes_routing *r = &or_->r;
        oracle_extent in[2], o[1];
        in[0] = extent(r->ids, r->n_tokens, r->ids_stride, r->top_k,
                       or_->ids_elem);
        in[1] = extent(r->expert_map, 1, r->n_experts_global,
                       r->n_experts_global, 4);
        o[0] = extent(out, r->n_tokens, *out_stride, r->top_k, *out_elem);
        CHECK(pointers_ok(in, 2, o, 1));
    }
    return MOES_OK;
}

/* The scale output's strides: 0/0 is row-major dense, a column stride of
 * 0 is 1; rows must not overlap; the last element's byte end must fit. */
static int scale_strides_ok(moes_scatter_args *a, int64_t rows, int64_t cols)
{
    wide rs = a->out_scales_row_stride, cs = a->out_scales_col_stride;
    if (rs < 0 || cs < 0)
        return oracle_fail(MOES_ERR_INVALID_STRIDE, "negative scale stride");
    if ((rs == 0) != (cs == 0))
        return oracle_fail(MOES_ERR_INVALID_STRIDE, "one zero scale stride");
    if (cs == 0)
        cs = 1;
    if (rs == 0) {
        rs = cols * cs;
        if (rs > INT64_MAX)
            return oracle_fail(MOES_ERR_OVERFLOW, "scale row stride");
    }
    if (cols * cs > INT64_MAX || rows * rs > INT64_MAX)
        return oracle_fail(MOES_ERR_OVERFLOW, "scale strides");
    /* Disjoint rows: a row fits in its row stride, or a column in its
     * column stride (MN-major). */
    if (rows > 1 && cols > 1 && rs < cols * cs && cs < rows * rs)
        return oracle_fail(MOES_ERR_INVALID_STRIDE, "scale rows overlap");
    if (rows > 0 && ((rows - 1) * rs + (cols - 1) * cs + 1) * 4 > INT64_MAX)
        return oracle_fail(MOES_ERR_OVERFLOW, "scale bytes");
    a->out_scales_row_stride = (int64_t)rs;
    a->out_scales_col_stride = (int64_t)cs;
    return MOES_OK;
}

int oracle_check_scatter(const moes_routing *routing,
                         const moes_scatter_args *args, oracle_scatter *out)
{
    moes_scatter_args a;
    int64_t n, e;
    memset(out, 0, sizeof *out);
    CHECK(oracle_check_routing(routing, &out->route));
    n = out->route.r.n_tokens;
    e = out->route.r.n_experts;
    if (!args)
        return oracle_fail(MOES_ERR_NULL_POINTER, "args is NULL");
    if (args->struct_size != sizeof(moes_scatter_args))
        return oracle_fail(MOES_ERR_INVALID_ARGUMENT, "args struct_size");
    a = *args;
    if (a.layout < MOES_LAYOUT_CONTIGUOUS || a.layout > MOES_LAYOUT_MASKED)
        return oracle_fail(MOES_ERR_INVALID_ARGUMENT, "layout");
    if (a.flags & ~(unsigned)(MOES_SCATTER_ZERO_PADDING |
                              MOES_SCATTER_LABEL_PADDING |
                              MOES_SCATTER_UNPADDED_END |
                              MOES_SCATTER_CHECK_ONLY))
        return oracle_fail(MOES_ERR_INVALID_FLAGS, "flags");
    if (a.alignment < 1)
        return oracle_fail(MOES_ERR_INVALID_ALIGNMENT, "alignment");
    if (a.capacity < 0)
        return oracle_fail(MOES_ERR_INVALID_SIZE, "capacity < 0");
    if (a.layout == MOES_LAYOUT_MASKED) {
        if ((wide)e * a.capacity > INT64_MAX)
            return oracle_fail(MOES_ERR_OVERFLOW, "E * capacity");
        out->out_rows = e * a.capacity;
    } else {
        out->out_rows = a.capacity;
    }
    /* No rows at all (x, x_scales, out, out_scales NULL): only the
     * indices are made, and the row arguments are not looked at. */
    out->index_only = !a.x && !a.x_scales && !a.out && !a.out_scales;
    if (out->index_only) {
        if ((a.flags & MOES_SCATTER_ZERO_PADDING) && out->out_rows > 0)
            return oracle_fail(MOES_ERR_INVALID_FLAGS,
                               "zero padding without rows");
        a.hidden = 0;
    } else {
        if (n > 0 && a.x == NULL)
            return oracle_fail(MOES_ERR_NULL_POINTER, "x is NULL");
        if (out->out_rows > 0 && a.out == NULL)
            return oracle_fail(MOES_ERR_NULL_POINTER, "out is NULL");
        out->x_elem = row_elem(a.x_dtype);
        if (out->x_elem == 0)
            return oracle_fail(MOES_ERR_INVALID_DTYPE, "x_dtype");
        if (a.hidden < 1)
            return oracle_fail(MOES_ERR_INVALID_SIZE, "hidden < 1");
        CHECK(stride_ok(&a.x_stride, a.hidden, "x_stride"));
        CHECK(stride_ok(&a.out_stride, a.hidden, "out_stride"));
        if (!bytes_fit(n, a.x_stride, out->x_elem))
            return oracle_fail(MOES_ERR_OVERFLOW, "x bytes");
        if (!bytes_fit(out->out_rows, a.out_stride, out->x_elem))
            return oracle_fail(MOES_ERR_OVERFLOW, "out bytes");
    }

    if (a.x_scales != NULL) {
        if (a.scale_block < 1)
            return oracle_fail(MOES_ERR_INVALID_SIZE, "scale_block < 1");
        out->n_scales = a.hidden / a.scale_block +
                        (a.hidden % a.scale_block != 0);
        CHECK(stride_ok(&a.x_scales_stride, out->n_scales,
                        "x_scales_stride"));
        if (!bytes_fit(n, a.x_scales_stride, 4))
            return oracle_fail(MOES_ERR_OVERFLOW, "x_scales bytes");
        if (a.out_scales_format == MOES_SCALES_FP32)
            out->n_scale_cols = out->n_scales;
        else if (a.out_scales_format == MOES_SCALES_UE8M0)
            out->n_scale_cols = out->n_scales / 4 + (out->n_scales % 4 != 0);
        else
            return oracle_fail(MOES_ERR_INVALID_ARGUMENT, "scale format");
        if (a.out_scales == NULL && out->out_rows > 0)
            return oracle_fail(MOES_ERR_NULL_POINTER, "out_scales is NULL");
        CHECK(scale_strides_ok(&a, out->out_rows, out->n_scale_cols));
    } else if (a.out_scales != NULL) {
        return oracle_fail(MOES_ERR_INVALID_ARGUMENT,
                           "out_scales without x_scales");
    } else if (a.out_scales_format != MOES_SCALES_NONE) {
        return oracle_fail(MOES_ERR_INVALID_ARGUMENT,
                           "scale format without x_scales");
    }

    out->index_elem = index_elem(a.index_dtype);
    if (out->index_elem == 0)
        return oracle_fail(MOES_ERR_INVALID_DTYPE, "index_dtype");
    if (out->index_elem == 4 &&
        (out->out_rows > INT32_MAX ||
         ((a.counts != NULL || a.row_source != NULL) &&
          out->route.choices > INT32_MAX) ||
         (a.m_indices != NULL && e - 1 > INT32_MAX)))
        return oracle_fail(MOES_ERR_OVERFLOW, "indices do not fit int32");
    if (out->index_elem == 4 && a.row_source != NULL &&
        (a.row_source_pad < INT32_MIN || a.row_source_pad > INT32_MAX))
        return oracle_fail(MOES_ERR_OVERFLOW, "row_source_pad");
    CHECK(stride_ok(&a.out_index_stride, out->route.r.top_k,
                    "out_index_stride"));
    if (!bytes_fit(n, a.out_index_stride, out->index_elem))
        return oracle_fail(MOES_ERR_OVERFLOW, "out_index bytes");
    if (!bytes_fit(1, out->out_rows, out->index_elem))
        return oracle_fail(MOES_ERR_OVERFLOW, "m_indices bytes");
    if ((a.counts || a.expert_start || a.expert_end || a.masked_m) &&
        !bytes_fit(1, e, out->index_elem))
        return oracle_fail(MOES_ERR_OVERFLOW, "per-expert bytes");
    if (n > 0 && a.out_index == NULL)
        return oracle_fail(MOES_ERR_NULL_POINTER, "out_index is NULL");
    if (a.layout == MOES_LAYOUT_CONTIGUOUS && a.m_indices == NULL &&
        out->out_rows > 0)
        return oracle_fail(MOES_ERR_NULL_POINTER, "m_indices is NULL");
    if (a.layout == MOES_LAYOUT_GROUPED && a.expert_end == NULL)
        return oracle_fail(MOES_ERR_NULL_POINTER, "expert_end is NULL");
    if (a.layout == MOES_LAYOUT_MASKED && a.masked_m == NULL)
        return oracle_fail(MOES_ERR_NULL_POINTER, "masked_m is NULL");
    if (a.layout != MOES_LAYOUT_MASKED &&
        (a.masked_m != NULL || a.n_dropped != NULL))
        return oracle_fail(MOES_ERR_INVALID_ARGUMENT,
                           "masked outputs without the masked layout");
    {
        const moes_routing *r = &out->route.r;
        const int64_t rows = out->out_rows;
        const size_t ie = out->index_elem;
        oracle_extent in[4], o[10];
        in[0] = extent(r->ids, n, r->ids_stride, r->top_k,
                       out->route.ids_elem);
        in[1] = extent(r->expert_map, 1, r->n_experts_global,
                       r->n_experts_global, 4);
        in[2] = extent(a.x, n, a.x_stride, a.hidden, out->x_elem);
        in[3] = extent(a.x_scales, n, a.x_scales_stride, out->n_scales, 4);
        o[0] = extent(a.out, rows, a.out_stride, a.hidden, out->x_elem);
        o[1] = extent(a.x_scales ? a.out_scales : NULL, rows,
                      a.out_scales_row_stride,
                      (out->n_scale_cols - 1) * a.out_scales_col_stride + 1,
                      4);
        o[2] = extent(a.out_index, n, a.out_index_stride, r->top_k, ie);
        o[3] = extent(a.counts, 1, e, e, ie);
        o[4] = extent(a.expert_start, 1, e, e, ie);
        o[5] = extent(a.expert_end, 1, e, e, ie);
        o[6] = extent(a.m_indices, 1, rows, rows, ie);
        o[7] = extent(a.masked_m, 1, e, e, ie);
        o[8] = extent(a.n_dropped, 1, 1, 1, 8);
        o[9] = extent(a.row_source, 1, rows, rows, ie);
        CHECK(pointers_ok(in, 4, o, 10));
    }
    out->a = a;
    return MOES_OK;
}

int oracle_check_gather(const moes_gather_args *args, oracle_gather *out)
{
    moes_gather_args a;
    memset(out, 0, sizeof *out);
    if (!args)
        return oracle_fail(MOES_ERR_NULL_POINTER, "args is NULL");
    if (args->struct_size != sizeof(moes_gather_args))
        return oracle_fail(MOES_ERR_INVALID_ARGUMENT, "args struct_size");
    a = *args;
    if (a.flags & ~(unsigned)(MOES_GATHER_ACCUMULATE | MOES_GATHER_CHECK_ONLY))
        return oracle_fail(MOES_ERR_INVALID_FLAGS, "flags");
    if (a.n_tokens < 0)
        return oracle_fail(MOES_ERR_INVALID_SIZE, "n_tokens < 0");
    if (a.top_k < 1)
        return oracle_fail(MOES_ERR_INVALID_SIZE, "top_k < 1");
    if (a.hidden < 1)
        return oracle_fail(MOES_ERR_INVALID_SIZE, "hidden < 1");
    if (a.y_rows < 0)
        return oracle_fail(MOES_ERR_INVALID_SIZE, "y_rows < 0");
    out->y_elem = float_elem(a.y_dtype);
    if (out->y_elem == 0)
        return oracle_fail(MOES_ERR_INVALID_DTYPE, "y_dtype");
    out->out_elem = float_elem(a.out_dtype);
    if (out->out_elem == 0)
        return oracle_fail(MOES_ERR_INVALID_DTYPE, "out_dtype");
    out->index_elem = index_elem(a.index_dtype);
    if (out->index_elem == 0)
        return oracle_fail(MOES_ERR_INVALID_DTYPE, "index_dtype");
    CHECK(stride_ok(&a.y_stride, a.hidden, "y_stride"));
    CHECK(stride_ok(&a.out_index_stride, a.top_k, "out_index_stride"));
    if (a.weights != NULL)
        CHECK(stride_ok(&a.weights_stride, a.top_k, "weights_stride"));
    else
        a.weights_stride = a.top_k; /* not looked at without weights */
    CHECK(stride_ok(&a.out_stride, a.hidden, "out_stride"));
    if (!bytes_fit(a.y_rows, a.y_stride, out->y_elem) ||
        !bytes_fit(a.n_tokens, a.out_index_stride, out->index_elem) ||
        !bytes_fit(a.n_tokens, a.weights_stride, 4) ||
        !bytes_fit(a.n_tokens, a.out_stride, out->out_elem))
        return oracle_fail(MOES_ERR_OVERFLOW, "gather bytes");
    if (a.y_rows > 0 && a.y == NULL)
        return oracle_fail(MOES_ERR_NULL_POINTER, "y is NULL");
    if (a.n_tokens > 0 && a.out_index == NULL)
        return oracle_fail(MOES_ERR_NULL_POINTER, "out_index is NULL");
    if (a.n_tokens > 0 && a.out == NULL)
        return oracle_fail(MOES_ERR_NULL_POINTER, "out is NULL");
    {
        oracle_extent in[3], o[1];
        in[0] = extent(a.y, a.y_rows, a.y_stride, a.hidden, out->y_elem);
        in[1] = extent(a.out_index, a.n_tokens, a.out_index_stride, a.top_k,
                       out->index_elem);
        in[2] = extent(a.weights, a.n_tokens, a.weights_stride, a.top_k, 4);
        o[0] = extent(a.out, a.n_tokens, a.out_stride, a.hidden,
                      out->out_elem);
        CHECK(pointers_ok(in, 3, o, 1));
    }
    out->a = a;
    return MOES_OK;
}
