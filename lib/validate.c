/* SPDX-License-Identifier: MIT */
/*
 * validate.c - every argument check of the library, in one place, so that
 * every backend rejects the same inputs with the same status and message.
 */
#include <string.h>

#include "struct_size.h"
#include "validate.h"

#define LL(v) ((long long)(v))

/* A dense [rows][stride] buffer of elem-byte elements must have a byte
 * size that fits int64. */
static int check_extent(moes_context *ctx, const char *name, int64_t rows,
                        int64_t stride, size_t elem)
{
    int64_t n;
    if (!moes_mul_i64(rows, stride, &n) || !moes_mul_i64(n, (int64_t)elem, &n))
        return moes_set_error(ctx, MOES_ERR_OVERFLOW,
            "%s: %lld rows of stride %lld overflow a 64-bit byte count",
            name, LL(rows), LL(stride));
    return MOES_OK;
}

/* Resolves a row stride (0 means dense) and checks it against the row. */
static int resolve_stride(moes_context *ctx, const char *name,
                          int64_t *stride, int64_t row, const char *row_name)
{
    if (*stride == 0)
        *stride = row;
    if (*stride < row)
        return moes_set_error(ctx, MOES_ERR_INVALID_STRIDE,
            "%s = %lld is smaller than %s = %lld", name, LL(*stride),
            row_name, LL(row));
    return MOES_OK;
}

static int is_float_dtype(int d)
{
    return d == MOES_DTYPE_BF16 || d == MOES_DTYPE_FP16 ||
           d == MOES_DTYPE_FP32;
}

/* ------------------------------------------------------------------ */
/* Pointers: alignment and overlap, once every extent is known.       */
/* ------------------------------------------------------------------ */

/* The bytes a buffer argument covers: from its first element to the end
 * of the last one a call may touch. Empty for a NULL pointer or no rows. */
typedef struct moes_span {
    const char *name;
    const void *ptr;
    size_t elem;       /* alignment the pointer needs                     */
    uintptr_t begin, end;
    /* Rows of row_bytes every period bytes from begin (a single row
     * too: its stride places it among another buffer's rows of the same
     * stride); period 0 where the rows are longer than their stride (the
     * column-major scales): then only [begin, end) is known. */
    uintptr_t period, row_bytes;
} moes_span;

/* A [rows][stride] buffer of which row_len elements per row are used:
 * ((rows - 1) * stride + row_len) * elem bytes. Every caller has checked
 * that this count fits int64 (rows * stride * elem with row_len <=
 * stride, or the scales' own extent), so it is formed without overflow. */
static moes_span span_rows(const char *name, const void *ptr, int64_t rows,
                           int64_t stride, int64_t row_len, size_t elem)
{
    moes_span sp = {name, ptr, elem, 0, 0, 0, 0};
    if (ptr && rows > 0 && row_len > 0) {
        uint64_t bytes =
            ((uint64_t)(rows - 1) * (uint64_t)stride + (uint64_t)row_len) *
            (uint64_t)elem;
        sp.begin = (uintptr_t)ptr;
        if (row_len <= stride && (uint64_t)stride <= UINTPTR_MAX / elem) {
            sp.period = (uintptr_t)stride * elem;
            sp.row_bytes = (uintptr_t)row_len * elem;
        }
        /* A range past the top of the address space cannot be a real
         * buffer; clamped, it still overlaps whatever lies above it. */
        sp.end = bytes > UINTPTR_MAX - sp.begin ? UINTPTR_MAX
                                                : sp.begin + (uintptr_t)bytes;
    }
    return sp;
}

/* Each non-NULL pointer must be aligned to its element size: the
 * backends load and store whole elements (and CUDA faults on a
 * misaligned access), and a misaligned element access is undefined
 * behaviour in C. */
static int check_alignment(moes_context *ctx, const moes_span *spans, int n)
{
    for (int i = 0; i < n; i++)
        if (spans[i].ptr && spans[i].elem > 1 &&
            (uintptr_t)spans[i].ptr % spans[i].elem != 0)
            return moes_set_error(ctx, MOES_ERR_MISALIGNED,
                "%s = %p is not aligned to its %zu-byte elements",
                spans[i].name, spans[i].ptr, spans[i].elem);
    return MOES_OK;
}

/* Whether two spans share a byte. Rows of the same period interleave
 * without sharing one when, seen from a row of a, b's rows start at or
 * past its end and end at or before the next one: records of several
 * fields in one buffer (a row and its scales, say), each field an
 * argument of its own. */
/* A single row has no period of its own (span_rows gives it its stride,
 * which nothing repeats): against rows of another period that it fits
 * in, it takes theirs, so that a row inside another buffer's row gaps is
 * no overlap whatever stride it was given. */
static int span_is_one_row(const moes_span *s)
{
    return s->period != 0 && s->end - s->begin == s->row_bytes;
}

static uintptr_t period_against(const moes_span *s, const moes_span *other)
{
    return span_is_one_row(s) && other->period >= s->row_bytes
               ? other->period
               : s->period;
}

static int spans_overlap(const moes_span *a, const moes_span *b)
{
    if (!(a->begin < a->end && b->begin < b->end && a->begin < b->end &&
          b->begin < a->end))
        return 0;
    /* Two single rows whose ranges meet share a byte. */
    if (span_is_one_row(a) && span_is_one_row(b))
        return 1;
    const uintptr_t p = period_against(a, b);
    if (p == 0 || p != period_against(b, a) || a->row_bytes > p - b->row_bytes)
        return 1;
    /* b's first row, from the row of a at or before it. */
    const uintptr_t d = b->begin >= a->begin
                            ? (b->begin - a->begin) % p
                            : (p - (a->begin - b->begin) % p) % p;
    return d < a->row_bytes || d > p - b->row_bytes;
}

/* No output may share a byte with an input or with another output: a
 * call reads its inputs while it writes, and an output written over an
 * input (or over another output) would be read back as if it were input.
 * Outputs are taken in order; each is compared with every input, then
 * with the outputs before it, so the pair reported is fixed. */
static int check_overlaps(moes_context *ctx, const moes_span *in, int n_in,
                          const moes_span *out, int n_out)
{
    for (int o = 0; o < n_out; o++) {
        for (int i = 0; i < n_in; i++)
            if (spans_overlap(&out[o], &in[i]))
                return moes_set_error(ctx, MOES_ERR_OVERLAP,
                    "%s overlaps %s: an output must not share memory "
                    "with an input", out[o].name, in[i].name);
        for (int p = 0; p < o; p++)
            if (spans_overlap(&out[o], &out[p]))
                return moes_set_error(ctx, MOES_ERR_OVERLAP,
                    "%s overlaps %s: outputs must not share memory",
                    out[o].name, out[p].name);
    }
    return MOES_OK;
}

/* The routing's inputs: ids, then the map. */
static int routing_spans(const moes_route_plan *rp, moes_span *in)
{
    const moes_routing *r = &rp->r;
    in[0] = span_rows("routing->ids", r->ids, r->n_tokens, r->ids_stride,
                      r->top_k, rp->ids_elem);
    in[1] = span_rows("routing->expert_map", r->expert_map, 1,
                      r->n_experts_global, r->n_experts_global, 4);
    return 2;
}

int moes_validate_routing(moes_context *ctx, const moes_routing *routing,
                          moes_route_plan *plan)
{
    moes_routing r;
    if (!routing)
        return moes_set_error(ctx, MOES_ERR_NULL_POINTER, "routing is NULL");
    MOES_TRY(moes_routing_from_caller(ctx, routing, &r));
    if (r.n_tokens < 0)
        return moes_set_error(ctx, MOES_ERR_INVALID_SIZE,
            "routing->n_tokens = %lld is negative", LL(r.n_tokens));
    if (r.top_k < 1)
        return moes_set_error(ctx, MOES_ERR_INVALID_SIZE,
            "routing->top_k = %lld must be at least 1", LL(r.top_k));
    if (r.n_experts < 1)
        return moes_set_error(ctx, MOES_ERR_INVALID_SIZE,
            "routing->n_experts = %lld must be at least 1", LL(r.n_experts));
    if (r.expert_map) {
        if (r.n_experts_global < 1)
            return moes_set_error(ctx, MOES_ERR_INVALID_SIZE,
                "routing->n_experts_global = %lld must be at least 1 with "
                "an expert map", LL(r.n_experts_global));
    } else {
        if (r.n_experts_global < 0)
            return moes_set_error(ctx, MOES_ERR_INVALID_SIZE,
                "routing->n_experts_global = %lld is negative",
                LL(r.n_experts_global));
        if (r.n_experts_global == 0)
            r.n_experts_global = r.n_experts;
        if (r.n_experts_global != r.n_experts)
            return moes_set_error(ctx, MOES_ERR_INVALID_ARGUMENT,
                "routing->n_experts_global = %lld differs from n_experts = "
                "%lld, but there is no expert_map", LL(r.n_experts_global),
                LL(r.n_experts));
    }
    plan->ids_elem = moes_index_dtype_size(r.ids_dtype);
    if (!plan->ids_elem)
        return moes_set_error(ctx, MOES_ERR_INVALID_DTYPE,
            "routing->ids_dtype = %d is not MOES_DTYPE_INT32 or "
            "MOES_DTYPE_INT64", r.ids_dtype);
    MOES_TRY(resolve_stride(ctx, "routing->ids_stride", &r.ids_stride, r.top_k,
                       "top_k"));
    MOES_TRY(check_extent(ctx, "routing->ids", r.n_tokens, r.ids_stride,
                     plan->ids_elem));
    if (!moes_mul_i64(r.n_tokens, r.top_k, &plan->n_choices))
        return moes_set_error(ctx, MOES_ERR_OVERFLOW,
            "routing->n_tokens * top_k overflows 64 bits");
    if (r.n_tokens > 0 && !r.ids)
        return moes_set_error(ctx, MOES_ERR_NULL_POINTER,
            "routing->ids is NULL");
    /* E_global entries of the map (E without one) must have a byte count;
     * without a map the limit is on n_experts, and the message says so. */
    if (r.expert_map)
        MOES_TRY(check_extent(ctx, "routing->expert_map", 1,
                              r.n_experts_global, 4));
    else
        MOES_TRY(check_extent(ctx, "routing->n_experts", 1, r.n_experts, 4));
    plan->r = r;
    return MOES_OK;
}

/* An int32 index output must be able to hold every value it may get.
 * `cause` names the argument whose size makes the values that large. */
static int check_index_range(moes_context *ctx, const char *output,
                             const char *cause, int64_t cause_value,
                             size_t elem, int64_t max_value)
{
    if (elem == 4 && max_value > INT32_MAX)
        return moes_set_error(ctx, MOES_ERR_OVERFLOW,
            "%s = %lld: %s get values up to %lld, which do not fit "
            "MOES_DTYPE_INT32; use MOES_DTYPE_INT64", cause,
            LL(cause_value), output, LL(max_value));
    return MOES_OK;
}

int moes_validate_count(moes_context *ctx, const moes_routing *routing,
                        void *counts, int counts_dtype, moes_count_plan *plan)
{
    size_t elem;
    MOES_TRY(moes_validate_routing(ctx, routing, &plan->route));
    elem = moes_index_dtype_size(counts_dtype);
    if (!elem)
        return moes_set_error(ctx, MOES_ERR_INVALID_DTYPE,
            "counts_dtype = %d is not MOES_DTYPE_INT32 or MOES_DTYPE_INT64",
            counts_dtype);
    if (!counts)
        return moes_set_error(ctx, MOES_ERR_NULL_POINTER, "counts is NULL");
    MOES_TRY(check_index_range(ctx, "counts", "routing->n_tokens * top_k",
                               plan->route.n_choices, elem,
                               plan->route.n_choices));
    MOES_TRY(check_extent(ctx, "counts", 1, plan->route.r.n_experts, elem));
    plan->counts = counts;
    plan->counts_dtype = counts_dtype;
    {
        moes_span in[2], out[1];
        int n_in = routing_spans(&plan->route, in);
        out[0] = span_rows("counts", counts, 1, plan->route.r.n_experts,
                           plan->route.r.n_experts, elem);
        MOES_TRY(check_alignment(ctx, in, n_in));
        MOES_TRY(check_alignment(ctx, out, 1));
        MOES_TRY(check_overlaps(ctx, in, n_in, out, 1));
    }
    return MOES_OK;
}

int moes_validate_distinct(moes_context *ctx, const moes_routing *routing,
                           void *out, int out_dtype, int64_t out_stride,
                           moes_distinct_plan *plan)
{
    size_t elem;
    const moes_route_plan *rp = &plan->route;
    MOES_TRY(moes_validate_routing(ctx, routing, &plan->route));
    elem = moes_index_dtype_size(out_dtype);
    if (!elem)
        return moes_set_error(ctx, MOES_ERR_INVALID_DTYPE,
            "out_dtype = %d is not MOES_DTYPE_INT32 or MOES_DTYPE_INT64",
            out_dtype);
    if (rp->n_choices > 0 && !out)
        return moes_set_error(ctx, MOES_ERR_NULL_POINTER, "out is NULL");
    MOES_TRY(check_index_range(ctx, "out", "routing->n_experts",
                               rp->r.n_experts, elem, rp->r.n_experts - 1));
    MOES_TRY(resolve_stride(ctx, "out_stride", &out_stride, rp->r.top_k,
                            "routing->top_k"));
    MOES_TRY(check_extent(ctx, "out", rp->r.n_tokens, out_stride, elem));
    plan->out = out;
    plan->out_dtype = out_dtype;
    plan->out_stride = out_stride;
    {
        moes_span in[2], outs[1];
        int n_in = routing_spans(rp, in);
        outs[0] = span_rows("out", out, rp->r.n_tokens, out_stride,
                            rp->r.top_k, elem);
        MOES_TRY(check_alignment(ctx, in, n_in));
        MOES_TRY(check_alignment(ctx, outs, 1));
        MOES_TRY(check_overlaps(ctx, in, n_in, outs, 1));
    }
    return MOES_OK;
}

/* Scales out: [rows][cols] at (row_stride, col_stride) elements. The rows
 * must not overlap: either row-major-like (row_stride covers a row) or
 * column-major-like (col_stride covers a column). */
static int resolve_scale_strides(moes_context *ctx, moes_scatter_args *a,
                                 int64_t rows, int64_t cols)
{
    int64_t rs = a->out_scales_row_stride, cs = a->out_scales_col_stride;
    int64_t row_span, col_span, last;
    if (rs < 0 || cs < 0)
        return moes_set_error(ctx, MOES_ERR_INVALID_STRIDE,
            "args->out_scales_row_stride = %lld and out_scales_col_stride "
            "= %lld must not be negative", LL(rs), LL(cs));
    /* Both zero means dense row-major. One zero alone has two readings
     * (a dense row, or a stride the caller forgot), and a caller who
     * sized the buffer for the other one would get writes past its end. */
    if ((rs == 0) != (cs == 0))
        return moes_set_error(ctx, MOES_ERR_INVALID_STRIDE,
            "args->out_scales_row_stride = %lld and out_scales_col_stride "
            "= %lld: a zero stride is only valid when both are zero "
            "(dense row-major)", LL(rs), LL(cs));
    if (cs == 0)
        cs = 1;
    if (rs == 0 && !moes_mul_i64(cols, cs, &rs))
        return moes_set_error(ctx, MOES_ERR_OVERFLOW,
            "args->out_scales: the row stride overflows");
    if (!moes_mul_i64(cols, cs, &row_span) ||
        !moes_mul_i64(rows, rs, &col_span))
        return moes_set_error(ctx, MOES_ERR_OVERFLOW,
            "args->out_scales: the strides overflow");
    if (rows > 1 && cols > 1 && rs < row_span && cs < col_span)
        return moes_set_error(ctx, MOES_ERR_INVALID_STRIDE,
            "args->out_scales_row_stride = %lld and out_scales_col_stride "
            "= %lld make rows overlap (%lld rows of %lld columns)", LL(rs),
            LL(cs), LL(rows), LL(cols));
    /* The byte extent: (offset of the last element + 1) * 4. */
    if (rows > 0 &&
        (!moes_mul_i64(rows - 1, rs, &last) ||
         !moes_mul_i64(cols - 1, cs, &row_span) ||
         !moes_add_i64(last, row_span, &last) ||
         !moes_add_i64(last, 1, &last) || !moes_mul_i64(last, 4, &last)))
        return moes_set_error(ctx, MOES_ERR_OVERFLOW,
            "args->out_scales: the byte extent overflows 64 bits");
    a->out_scales_row_stride = rs;
    a->out_scales_col_stride = cs;
    return MOES_OK;
}

#define SCATTER_FLAGS                                                     \
    (MOES_SCATTER_ZERO_PADDING | MOES_SCATTER_LABEL_PADDING |              \
     MOES_SCATTER_UNPADDED_END | MOES_SCATTER_CHECK_ONLY)
#define GATHER_FLAGS (MOES_GATHER_ACCUMULATE | MOES_GATHER_CHECK_ONLY)

/* Rows in and out of a scatter that copies them: dtype, sizes, strides,
 * extents and pointers. */
static int check_scatter_rows(moes_context *ctx, moes_scatter_args *a,
                              int64_t n_tokens, int64_t out_rows,
                              size_t *x_elem)
{
    /* Some of x, x_scales, out and out_scales are given, so this is not
     * an index-only scatter: the others must be there too. Said first, as
     * a caller who meant an index-only call has left the row sizes
     * unset too. */
    if (n_tokens > 0 && !a->x)
        return moes_set_error(ctx, MOES_ERR_NULL_POINTER,
            "args->x is NULL, but %s is given (an index-only scatter leaves "
            "x, x_scales, out and out_scales all NULL)",
            a->out ? "out" : a->x_scales ? "x_scales" : "out_scales");
    if (out_rows > 0 && !a->out)
        return moes_set_error(ctx, MOES_ERR_NULL_POINTER,
            "args->out is NULL, but %s is given (an index-only scatter "
            "leaves x, x_scales, out and out_scales all NULL)",
            a->x ? "x" : a->x_scales ? "x_scales" : "out_scales");
    if (moes_dtype_size(a->x_dtype, x_elem) != MOES_OK ||
        a->x_dtype == MOES_DTYPE_INT32 || a->x_dtype == MOES_DTYPE_INT64)
        return moes_set_error(ctx, MOES_ERR_INVALID_DTYPE,
            "args->x_dtype = %d is not an fp8, bf16, fp16 or fp32 dtype",
            a->x_dtype);
    if (a->hidden < 1)
        return moes_set_error(ctx, MOES_ERR_INVALID_SIZE,
            "args->hidden = %lld must be at least 1", LL(a->hidden));
    MOES_TRY(resolve_stride(ctx, "args->x_stride", &a->x_stride, a->hidden,
                            "hidden"));
    MOES_TRY(resolve_stride(ctx, "args->out_stride", &a->out_stride,
                            a->hidden, "hidden"));
    MOES_TRY(check_extent(ctx, "args->x", n_tokens, a->x_stride, *x_elem));
    MOES_TRY(check_extent(ctx, "args->out", out_rows, a->out_stride,
                          *x_elem));
    return MOES_OK;
}

int moes_validate_scatter(moes_context *ctx, const moes_routing *routing,
                          const moes_scatter_args *args,
                          moes_scatter_plan *plan)
{
    moes_scatter_args a;
    const moes_routing *r;
    int64_t n_tokens, n_experts;
    size_t x_elem = 0;

    memset(plan, 0, sizeof *plan);
    MOES_TRY(moes_validate_routing(ctx, routing, &plan->route));
    r = &plan->route.r;
    n_tokens = r->n_tokens;
    n_experts = r->n_experts;
    if (!args)
        return moes_set_error(ctx, MOES_ERR_NULL_POINTER, "args is NULL");
    MOES_TRY(moes_scatter_args_from_caller(ctx, args, &a));

    if (a.layout != MOES_LAYOUT_CONTIGUOUS &&
        a.layout != MOES_LAYOUT_GROUPED && a.layout != MOES_LAYOUT_MASKED)
        return moes_set_error(ctx, MOES_ERR_INVALID_ARGUMENT,
            "args->layout = %d is not a moes_layout", a.layout);
    if (a.flags & ~SCATTER_FLAGS)
        return moes_set_error(ctx, MOES_ERR_INVALID_FLAGS,
            "args->flags = 0x%x has unknown bits 0x%x", a.flags,
            a.flags & ~SCATTER_FLAGS);
    if (a.alignment < 1)
        return moes_set_error(ctx, MOES_ERR_INVALID_ALIGNMENT,
            "args->alignment = %lld must be at least 1", LL(a.alignment));
    if (a.capacity < 0)
        return moes_set_error(ctx, MOES_ERR_INVALID_SIZE,
            "args->capacity = %lld is negative", LL(a.capacity));
    if (a.layout == MOES_LAYOUT_MASKED) {
        if (!moes_mul_i64(n_experts, a.capacity, &plan->out_rows))
            return moes_set_error(ctx, MOES_ERR_OVERFLOW,
                "args->capacity = %lld times n_experts = %lld overflows",
                LL(a.capacity), LL(n_experts));
    } else {
        plan->out_rows = a.capacity;
    }

    /* Rows in and out, unless there are none: an index-only scatter
     * reads no row and writes none. */
    plan->index_only = !a.x && !a.x_scales && !a.out && !a.out_scales;
    if (plan->index_only) {
        if ((a.flags & MOES_SCATTER_ZERO_PADDING) && plan->out_rows > 0)
            return moes_set_error(ctx, MOES_ERR_INVALID_FLAGS,
                "args->flags has MOES_SCATTER_ZERO_PADDING, but this "
                "scatter is index-only (x, x_scales, out and out_scales "
                "NULL): there are no rows to zero");
        a.hidden = 0;
        a.x_stride = 0;
        a.out_stride = 0;
    } else {
        MOES_TRY(check_scatter_rows(ctx, &a, n_tokens, plan->out_rows,
                                    &x_elem));
    }

    /* Scales. */
    if (a.x_scales) {
        if (a.scale_block < 1)
            return moes_set_error(ctx, MOES_ERR_INVALID_SIZE,
                "args->scale_block = %lld must be at least 1",
                LL(a.scale_block));
        plan->n_scales = (a.hidden - 1) / a.scale_block + 1;
        MOES_TRY(resolve_stride(ctx, "args->x_scales_stride",
                           &a.x_scales_stride, plan->n_scales,
                           "the scales per row"));
        MOES_TRY(check_extent(ctx, "args->x_scales", n_tokens,
                         a.x_scales_stride, 4));
        if (a.out_scales_format == MOES_SCALES_FP32)
            plan->n_scale_cols = plan->n_scales;
        else if (a.out_scales_format == MOES_SCALES_UE8M0)
            /* ceil(S / 4), without S + 3, which overflows for an S
             * near INT64_MAX (a huge hidden with no tokens is valid). */
            plan->n_scale_cols =
                plan->n_scales / 4 + (plan->n_scales % 4 != 0);
        else
            return moes_set_error(ctx, MOES_ERR_INVALID_ARGUMENT,
                "args->out_scales_format = %d is not MOES_SCALES_FP32 or "
                "MOES_SCALES_UE8M0, but x_scales is given",
                a.out_scales_format);
        if (!a.out_scales && plan->out_rows > 0)
            return moes_set_error(ctx, MOES_ERR_NULL_POINTER,
                "args->out_scales is NULL, but x_scales is given");
        MOES_TRY(resolve_scale_strides(ctx, &a, plan->out_rows,
                                  plan->n_scale_cols));
    } else {
        if (a.out_scales)
            return moes_set_error(ctx, MOES_ERR_INVALID_ARGUMENT,
                "args->out_scales is given, but x_scales is NULL");
        if (a.out_scales_format != MOES_SCALES_NONE)
            return moes_set_error(ctx, MOES_ERR_INVALID_ARGUMENT,
                "args->out_scales_format = %d, but x_scales is NULL",
                a.out_scales_format);
    }

    /* Index outputs. */
    plan->index_elem = moes_index_dtype_size(a.index_dtype);
    if (!plan->index_elem)
        return moes_set_error(ctx, MOES_ERR_INVALID_DTYPE,
            "args->index_dtype = %d is not MOES_DTYPE_INT32 or "
            "MOES_DTYPE_INT64", a.index_dtype);
    /* out_index, expert_start and expert_end hold rows of out (up to
     * out_rows), counts and masked_m up to N*K choices, m_indices expert
     * ids (only checked when it is given: nothing else holds one). */
    MOES_TRY(check_index_range(ctx, "the row indices (out_index, "
                               "expert_start, expert_end)",
                               a.layout == MOES_LAYOUT_MASKED
                                   ? "args->capacity * n_experts"
                                   : "args->capacity",
                               plan->out_rows, plan->index_elem,
                               plan->out_rows));
    /* counts hold up to N*K, row_source up to N*K - 1 and its pad (no
     * other output holds a count of choices: masked_m is at most the
     * capacity, checked above). */
    if (a.counts || a.row_source)
        MOES_TRY(check_index_range(ctx,
                                   !a.row_source ? "args->counts"
                                   : !a.counts   ? "args->row_source"
                                                 : "args->counts and "
                                                   "args->row_source",
                                   "routing->n_tokens * top_k",
                                   plan->route.n_choices, plan->index_elem,
                                   plan->route.n_choices));
    if (a.row_source && plan->index_elem == 4 &&
        (a.row_source_pad < INT32_MIN || a.row_source_pad > INT32_MAX))
        return moes_set_error(ctx, MOES_ERR_OVERFLOW,
            "args->row_source_pad = %lld does not fit MOES_DTYPE_INT32, "
            "the index_dtype; use MOES_DTYPE_INT64",
            LL(a.row_source_pad));
    if (a.m_indices)
        MOES_TRY(check_index_range(ctx, "args->m_indices",
                                   "routing->n_experts", n_experts,
                                   plan->index_elem, n_experts - 1));
    MOES_TRY(resolve_stride(ctx, "args->out_index_stride", &a.out_index_stride,
                       r->top_k, "top_k"));
    MOES_TRY(check_extent(ctx, "args->out_index", n_tokens, a.out_index_stride,
                     plan->index_elem));
    MOES_TRY(check_extent(ctx, a.m_indices    ? "args->m_indices"
                               : a.row_source ? "args->row_source"
                                              : "args->capacity (the rows of "
                                                "m_indices)",
                          1, plan->out_rows, plan->index_elem));
    if (a.counts || a.expert_start || a.expert_end || a.masked_m)
        MOES_TRY(check_extent(ctx, "the per-expert outputs (counts, "
                                   "expert_start, expert_end, masked_m)",
                              1, n_experts, plan->index_elem));
    if (n_tokens > 0 && !a.out_index)
        return moes_set_error(ctx, MOES_ERR_NULL_POINTER,
                              "args->out_index is NULL");
    switch (a.layout) {
    case MOES_LAYOUT_CONTIGUOUS:
        if (!a.m_indices && plan->out_rows > 0)
            return moes_set_error(ctx, MOES_ERR_NULL_POINTER,
                "args->m_indices is NULL; the contiguous layout reports it");
        break;
    case MOES_LAYOUT_GROUPED:
        if (!a.expert_end)
            return moes_set_error(ctx, MOES_ERR_NULL_POINTER,
                "args->expert_end is NULL; the grouped layout reports it");
        break;
    default: /* MOES_LAYOUT_MASKED */
        if (!a.masked_m)
            return moes_set_error(ctx, MOES_ERR_NULL_POINTER,
                "args->masked_m is NULL; the masked layout reports it");
        break;
    }
    if (a.layout != MOES_LAYOUT_MASKED) {
        if (a.masked_m)
            return moes_set_error(ctx, MOES_ERR_INVALID_ARGUMENT,
                "args->masked_m is given, but the layout is not masked");
        if (a.n_dropped)
            return moes_set_error(ctx, MOES_ERR_INVALID_ARGUMENT,
                "args->n_dropped is given, but the layout is not masked");
    }
    {
        moes_span in[4], out[10];
        int n_in = routing_spans(&plan->route, in);
        const int64_t out_rows = plan->out_rows;
        in[n_in++] = span_rows("args->x", a.x, n_tokens, a.x_stride,
                               a.hidden, x_elem);
        in[n_in++] = span_rows("args->x_scales", a.x_scales, n_tokens,
                               a.x_scales_stride, plan->n_scales, 4);
        out[0] = span_rows("args->out", a.out, out_rows, a.out_stride,
                           a.hidden, x_elem);
        /* (rows - 1) * rs + (cols - 1) * cs + 1 elements, checked by
         * resolve_scale_strides; written as rows of that stride. Without
         * x_scales there are none, and the strides were not checked. */
        out[1] = span_rows("args->out_scales",
                           a.x_scales ? a.out_scales : NULL,
                           out_rows, a.out_scales_row_stride,
                           a.x_scales ? (plan->n_scale_cols - 1) *
                                                a.out_scales_col_stride + 1
                                      : 0, 4);
        out[2] = span_rows("args->out_index", a.out_index, n_tokens,
                           a.out_index_stride, r->top_k, plan->index_elem);
        out[3] = span_rows("args->counts", a.counts, 1, n_experts, n_experts,
                           plan->index_elem);
        out[4] = span_rows("args->expert_start", a.expert_start, 1,
                           n_experts, n_experts, plan->index_elem);
        out[5] = span_rows("args->expert_end", a.expert_end, 1, n_experts,
                           n_experts, plan->index_elem);
        out[6] = span_rows("args->m_indices", a.m_indices, 1, out_rows,
                           out_rows, plan->index_elem);
        out[7] = span_rows("args->masked_m", a.masked_m, 1, n_experts,
                           n_experts, plan->index_elem);
        out[8] = span_rows("args->n_dropped", a.n_dropped, 1, 1, 1, 8);
        out[9] = span_rows("args->row_source", a.row_source, 1, out_rows,
                           out_rows, plan->index_elem);
        MOES_TRY(check_alignment(ctx, in, n_in));
        MOES_TRY(check_alignment(ctx, out, 10));
        MOES_TRY(check_overlaps(ctx, in, n_in, out, 10));
    }
    plan->a = a;
    plan->x_elem = x_elem;
    /* hidden * x_elem fits whenever a row of x or of out exists (their
     * extents were checked above). With neither, hidden may be any size:
     * nothing is copied, and the product must not be formed. */
    if (!moes_mul_i64(a.hidden, (int64_t)x_elem, &plan->row_bytes))
        plan->row_bytes = 0;
    return MOES_OK;
}

int moes_validate_gather(moes_context *ctx, const moes_gather_args *args,
                         moes_gather_plan *plan)
{
    moes_gather_args a;
    memset(plan, 0, sizeof *plan);
    if (!args)
        return moes_set_error(ctx, MOES_ERR_NULL_POINTER, "args is NULL");
    MOES_TRY(moes_gather_args_from_caller(ctx, args, &a));
    if (a.flags & ~GATHER_FLAGS)
        return moes_set_error(ctx, MOES_ERR_INVALID_FLAGS,
            "args->flags = 0x%x has unknown bits 0x%x", a.flags,
            a.flags & ~GATHER_FLAGS);
    if (a.n_tokens < 0)
        return moes_set_error(ctx, MOES_ERR_INVALID_SIZE,
            "args->n_tokens = %lld is negative", LL(a.n_tokens));
    if (a.top_k < 1)
        return moes_set_error(ctx, MOES_ERR_INVALID_SIZE,
            "args->top_k = %lld must be at least 1", LL(a.top_k));
    if (a.hidden < 1)
        return moes_set_error(ctx, MOES_ERR_INVALID_SIZE,
            "args->hidden = %lld must be at least 1", LL(a.hidden));
    if (a.y_rows < 0)
        return moes_set_error(ctx, MOES_ERR_INVALID_SIZE,
            "args->y_rows = %lld is negative", LL(a.y_rows));
    if (!is_float_dtype(a.y_dtype))
        return moes_set_error(ctx, MOES_ERR_INVALID_DTYPE,
            "args->y_dtype = %d is not bf16, fp16 or fp32", a.y_dtype);
    if (!is_float_dtype(a.out_dtype))
        return moes_set_error(ctx, MOES_ERR_INVALID_DTYPE,
            "args->out_dtype = %d is not bf16, fp16 or fp32", a.out_dtype);
    plan->index_elem = moes_index_dtype_size(a.index_dtype);
    if (!plan->index_elem)
        return moes_set_error(ctx, MOES_ERR_INVALID_DTYPE,
            "args->index_dtype = %d is not MOES_DTYPE_INT32 or "
            "MOES_DTYPE_INT64", a.index_dtype);
    moes_dtype_size(a.y_dtype, &plan->y_elem);
    moes_dtype_size(a.out_dtype, &plan->out_elem);
    MOES_TRY(resolve_stride(ctx, "args->y_stride", &a.y_stride, a.hidden,
                       "hidden"));
    MOES_TRY(resolve_stride(ctx, "args->out_index_stride", &a.out_index_stride,
                       a.top_k, "top_k"));
    /* Without weights their stride is not looked at (as x_scales_stride
     * without x_scales), and K where a backend forms an offset with it. */
    if (a.weights)
        MOES_TRY(resolve_stride(ctx, "args->weights_stride",
                                &a.weights_stride, a.top_k, "top_k"));
    else
        a.weights_stride = a.top_k;
    MOES_TRY(resolve_stride(ctx, "args->out_stride", &a.out_stride, a.hidden,
                       "hidden"));
    MOES_TRY(check_extent(ctx, "args->y", a.y_rows, a.y_stride, plan->y_elem));
    MOES_TRY(check_extent(ctx, "args->out_index", a.n_tokens,
                     a.out_index_stride, plan->index_elem));
    MOES_TRY(check_extent(ctx, "args->weights", a.n_tokens, a.weights_stride,
                     4));
    MOES_TRY(check_extent(ctx, "args->out", a.n_tokens, a.out_stride,
                     plan->out_elem));
    if (a.y_rows > 0 && !a.y)
        return moes_set_error(ctx, MOES_ERR_NULL_POINTER, "args->y is NULL");
    if (a.n_tokens > 0 && !a.out_index)
        return moes_set_error(ctx, MOES_ERR_NULL_POINTER,
                              "args->out_index is NULL");
    if (a.n_tokens > 0 && !a.out)
        return moes_set_error(ctx, MOES_ERR_NULL_POINTER,
                              "args->out is NULL");
    {
        moes_span in[3], out[1];
        in[0] = span_rows("args->y", a.y, a.y_rows, a.y_stride, a.hidden,
                          plan->y_elem);
        in[1] = span_rows("args->out_index", a.out_index, a.n_tokens,
                          a.out_index_stride, a.top_k, plan->index_elem);
        in[2] = span_rows("args->weights", a.weights, a.n_tokens,
                          a.weights_stride, a.top_k, 4);
        out[0] = span_rows("args->out", a.out, a.n_tokens, a.out_stride,
                           a.hidden, plan->out_elem);
        MOES_TRY(check_alignment(ctx, in, 3));
        MOES_TRY(check_alignment(ctx, out, 1));
        MOES_TRY(check_overlaps(ctx, in, 3, out, 1));
    }
    plan->a = a;
    return MOES_OK;
}
