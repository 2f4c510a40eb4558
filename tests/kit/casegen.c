/* SPDX-License-Identifier: MIT */
/*
 * casegen.c - random cases. Each choice is drawn from the seed's own
 * generator, in a fixed order, so a seed always makes the same case.
 *
 * The distributions are skewed toward the inputs that have broken such
 * kernels before: empty and single tokens, one hot expert, -1 ids,
 * duplicate experts in a token's top-k, alignments that are not powers of
 * two, odd hidden sizes, strided rows, NaN/Inf/subnormal values. Sizes are
 * kept so that the largest buffer of a case stays a few MiB, which lets
 * thousands of cases run in a unit test.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "casegen.h"
#include "elements.h"
#include "numerics.h"
#include "rng.h"

/* Bytes the largest output of a case may take. */
enum { CASE_BUFFER_BUDGET = 6 << 20, CASE_MAX_OUT_ROWS = 200000 };

static const uint32_t special_f32[] = {
    0x7FC00000u, 0xFFC00000u, 0x7FC12345u, 0xFFA00001u, /* quiet NaNs      */
    0x7F800001u, 0xFF800123u,                           /* signaling NaNs  */
    0x7F800000u, 0xFF800000u,                           /* infinities      */
    0x00000001u, 0x80000001u, 0x007FFFFFu, 0x00400000u, /* subnormals      */
    0x00000000u, 0x80000000u,                           /* zeros           */
    0x7F7FFFFFu, 0xFF7FFFFFu, 0x7F7F8000u, 0x7F7F7FFFu, /* bf16 overflow   */
    0x477FE000u, 0x477FF000u, 0xC77FEFFFu, 0x47800000u, /* fp16 overflow   */
    0x33000000u, 0x33000001u, 0x387FC000u, 0x38800000u, /* fp16 subnormal  */
    0x3F800000u, 0xBF800000u, 0x3F808000u, 0x3F818000u, /* 1, round ties  */
    0x3F801000u, 0x3F803000u,                           /* fp16 ties       */
};

static const uint16_t special_16[] = {
    0x7C01u, 0xFE01u, 0x7E00u, 0xFC00u, 0x7C00u, 0x0001u, 0x8001u, 0x03FFu,
    0x7BFFu, 0xFBFFu, 0x8000u, 0x0000u, /* fp16 NaN, Inf, subnormal, max */
    0x7F81u, 0xFFC1u, 0x7FC0u, 0x7F80u, 0xFF80u, 0x007Fu, 0x7F7Fu, 0xFF7Fu,
    /* bf16 NaN, Inf, subnormal, max */
};

#define COUNT_OF(a) ((int64_t)(sizeof(a) / sizeof((a)[0])))

/* A finite fp32 number of either sign between 2^-10 and 2^11. */
static uint32_t moderate_f32_bits(moes_rng *g)
{
    uint32_t sign = (uint32_t)moes_rng_below(g, 2) << 31;
    uint32_t exp = (uint32_t)moes_rng_range(g, 127 - 10, 127 + 10);
    uint32_t mant = (uint32_t)moes_rng_below(g, 1 << 23);
    return sign | exp << 23 | mant;
}

/* An fp32 value: mostly moderate numbers, sometimes any bits, sometimes
 * one of the special values. */
static uint32_t draw_f32_bits(moes_rng *g)
{
    int64_t r = moes_rng_below(g, 100);
    if (r < 70)
        return moderate_f32_bits(g);
    if (r < 82)
        return (uint32_t)moes_rng_next(g);
    return special_f32[moes_rng_below(g, COUNT_OF(special_f32))];
}

/* The fp32 value bits at p in dtype (fp32, bf16, fp16), rounded. */
static void store_as(int dtype, uint32_t bits, void *p)
{
    uint16_t h;
    if (dtype == MOES_DTYPE_FP32) {
        memcpy(p, &bits, 4);
        return;
    }
    h = dtype == MOES_DTYPE_BF16 ? moes_f32_to_bf16(moes_bits_to_f32(bits))
                                 : moes_f32_to_f16(moes_bits_to_f32(bits));
    memcpy(p, &h, 2);
}

/* A value of a float dtype (fp32, bf16, fp16) stored at p. */
static void draw_value(moes_rng *g, int dtype, void *p)
{
    uint32_t bits = draw_f32_bits(g);
    uint16_t h;
    if (dtype == MOES_DTYPE_FP32) {
        store_as(dtype, bits, p);
        return;
    }
    if (moes_rng_chance(g, 10)) {
        h = special_16[moes_rng_below(g, COUNT_OF(special_16))];
    } else if (moes_rng_chance(g, 10)) {
        h = (uint16_t)moes_rng_next(g);
    } else {
        store_as(dtype, bits, p);
        return;
    }
    memcpy(p, &h, 2);
}

/* A moderate number of a float dtype at p, never a NaN or an infinity:
 * what a layer's activations and weights mostly are. */
static void draw_finite(moes_rng *g, int dtype, void *p)
{
    store_as(dtype, moderate_f32_bits(g), p);
}

/* Bytes of [rows][stride] elements of which each row uses row_len. */
static int64_t extent(int64_t rows, int64_t stride, int64_t row_len,
                      size_t elem)
{
    return rows > 0 ? ((rows - 1) * stride + row_len) * (int64_t)elem : 0;
}

/* A row stride: dense (0 or the row itself) or with a gap. */
static int64_t draw_stride(moes_rng *g, int64_t row)
{
    int64_t r = moes_rng_below(g, 100);
    if (r < 25)
        return 0;
    if (r < 50)
        return row;
    if (r < 85)
        return row + moes_rng_range(g, 1, 3);
    return row + moes_rng_range(g, 4, 40);
}

static int64_t resolved(int64_t stride, int64_t row)
{
    return stride ? stride : row;
}

static int alloc_buffer(moes_case_buffer *b, int64_t bytes)
{
    b->bytes = bytes;
    b->data = NULL;
    if (bytes == 0)
        return 1;
    b->data = malloc((size_t)bytes);
    return b->data != NULL;
}

static void fill_random_bytes(moes_rng *g, moes_case_buffer *b)
{
    unsigned char *p = b->data;
    for (int64_t i = 0; i < b->bytes; i++)
        p[i] = (unsigned char)moes_rng_next(g);
}

static int64_t pick_tokens(moes_rng *g, int64_t max)
{
    int64_t r = moes_rng_below(g, 100), n;
    if (r < 5)
        n = 0;
    else if (r < 15)
        n = 1;
    else if (r < 60)
        n = moes_rng_range(g, 2, 16);
    else if (r < 85)
        n = moes_rng_range(g, 17, 64);
    else /* up to max when a caller allows more than 400 */
        n = moes_rng_range(g, 65, max > 400 ? max : 400);
    return n < max ? n : max;
}

static int64_t pick_experts(moes_rng *g, int64_t max)
{
    int64_t r = moes_rng_below(g, 100), e;
    if (r < 10)
        e = 1;
    else if (r < 70)
        e = moes_rng_range(g, 2, 16);
    else if (r < 94)
        e = moes_rng_range(g, 17, 256);
    else /* up to max when a caller allows more than 3000 */
        e = moes_rng_range(g, 257, max > 3000 ? max : 3000);
    return e < max ? e : max;
}

static int64_t pick_alignment(moes_rng *g)
{
    static const int64_t odd[] = {3, 7, 48, 96, 5, 100, 33};
    int64_t r = moes_rng_below(g, 100);
    if (r < 25)
        return 1;
    if (r < 45)
        return 128;
    if (r < 60)
        return (int64_t)1 << moes_rng_range(g, 1, 6);
    if (r < 85)
        return odd[moes_rng_below(g, COUNT_OF(odd))];
    return moes_rng_range(g, 2, 300);
}

static int64_t round_up(int64_t v, int64_t a)
{
    return (v + a - 1) / a * a;
}

/* The routing: N, K, E, the map, the ids. */
static int draw_routing(moes_rng *g, moes_case *c, const moes_case_limits *lim)
{
    moes_routing *r = &c->routing;
    int64_t n, k, e, eg, ids_stride;
    size_t ie;
    int has_map;
    int neg_percent, dup_percent, mode;
    int64_t hot;

    moes_routing_init(r);
    n = pick_tokens(g, lim->max_tokens);
    /* spread over the range, not piled at its floor */
    if (n < lim->min_tokens)
        n = moes_rng_range(g, lim->min_tokens, lim->max_tokens);
    if (n == 0 && c->fault != MOES_CASE_VALID && c->fault != MOES_CASE_BAD_MAP)
        n = 1; /* the fault needs a (t, k) to break */
    k = moes_rng_range(g, 1, lim->max_top_k);
    e = pick_experts(g, lim->max_experts);
    has_map = moes_rng_chance(g, 35) || c->fault == MOES_CASE_BAD_MAP;
    r->n_tokens = n;
    r->top_k = k;
    r->n_experts = e;
    r->ids_dtype =
        moes_rng_chance(g, 50) ? MOES_DTYPE_INT32 : MOES_DTYPE_INT64;
    ie = moes_case_dtype_bytes(r->ids_dtype);
    r->ids_stride = draw_stride(g, k);
    ids_stride = resolved(r->ids_stride, k);

    if (has_map) {
        int64_t m = moes_rng_below(g, 100);
        /* A slice's first entry: the first rank's (0), the last rank's
         * (eg - e), one in the middle or anywhere between; one time in
         * five from e - 1 entries before entry 0 up to 0, or from eg - e
         * up to e - 1 entries past it (mostly a slice cut short at the
         * front or at the back). */
        int64_t first = 0;
        eg = moes_rng_range(g, 1, 2 * e + 5);
        if (eg > e) {
            switch (moes_rng_below(g, 4)) {
            case 0: first = 0; break;
            case 1: first = eg - e; break;
            case 2: first = (eg - e) / 2; break;
            default: first = moes_rng_range(g, 0, eg - e); break;
            }
        }
        if (moes_rng_chance(g, 20))
            first = moes_rng_chance(g, 50)
                        ? -moes_rng_range(g, 0, e - 1)
                        : eg - e + moes_rng_range(g, 0, e - 1);
        if (!alloc_buffer(&c->map, eg * 4))
            return 0;
        for (int64_t i = 0; i < eg; i++) {
            int32_t v;
            if (m < 40) { /* expert parallelism: this rank holds a slice */
                v = (i >= first && i - first < e) ? (int32_t)(i - first) : -1;
            } else if (m < 80) {
                v = moes_rng_chance(g, 25) ? -1
                                           : (int32_t)moes_rng_below(g, e);
            } else {
                v = (int32_t)moes_rng_below(g, e); /* no -1 at all */
            }
            ((int32_t *)c->map.data)[i] = v;
        }
        /* Almost a slice: one entry that breaks the run. */
        if (m < 40 && moes_rng_chance(g, 25)) {
            int64_t at = moes_rng_below(g, eg);
            int32_t *map = c->map.data;
            map[at] = map[at] >= 0 && moes_rng_chance(g, 50)
                          ? -1
                          : (int32_t)moes_rng_below(g, e);
        }
        r->n_experts_global = eg;
    } else {
        eg = e;
        r->n_experts_global = moes_rng_chance(g, 50) ? 0 : e;
    }

    if (!alloc_buffer(&c->ids, extent(n, ids_stride, k, ie)))
        return 0;
    /* The gaps between rows hold garbage that must never be read. */
    fill_random_bytes(g, &c->ids);
    mode = (int)moes_rng_below(g, 4);
    neg_percent = (int[]){0, 0, 5, 30, 90}[moes_rng_below(g, 5)];
    dup_percent = moes_rng_chance(g, 30) ? 40 : 0;
    hot = moes_rng_below(g, eg);
    for (int64_t t = 0; t < n; t++) {
        for (int64_t j = 0; j < k; j++) {
            int64_t id;
            if (moes_rng_chance(g, neg_percent))
                id = -1;
            else if (j > 0 && moes_rng_chance(g, dup_percent))
                id = load_index(c->ids.data, ie, t * ids_stride + j - 1);
            else if (mode == 1 && moes_rng_chance(g, 80))
                id = hot; /* one hot expert */
            else if (mode == 2)
                id = (hot + moes_rng_below(g, 3)) % eg; /* a few experts */
            else
                id = moes_rng_below(g, eg);
            store_index(c->ids.data, ie, t * ids_stride + j, id);
        }
    }
    return 1;
}

/* counts[e] of the (valid) routing. */
static void count_routing(const moes_case *c, int64_t *counts)
{
    const moes_routing *r = &c->routing;
    size_t ie = moes_case_dtype_bytes(r->ids_dtype);
    int64_t stride = resolved(r->ids_stride, r->top_k);
    memset(counts, 0, (size_t)r->n_experts * sizeof *counts);
    for (int64_t t = 0; t < r->n_tokens; t++) {
        for (int64_t j = 0; j < r->top_k; j++) {
            int64_t id = load_index(c->ids.data, ie, t * stride + j);
            int64_t e = id >= 0 && c->map.data ? ((int32_t *)c->map.data)[id]
                                               : id;
            if (e >= 0)
                counts[e]++;
        }
    }
}

static int64_t rows_needed(const int64_t *counts, int64_t e, int64_t a)
{
    int64_t m = 0;
    for (int64_t i = 0; i < e; i++)
        m += round_up(counts[i], a);
    return m;
}

/* Makes sure some (t, k) lands on a local expert (a capacity can only be
 * too small when rows are needed). */
static void force_one_placed(moes_case *c)
{
    moes_routing *r = &c->routing;
    size_t ie = moes_case_dtype_bytes(r->ids_dtype);
    int64_t id = 0;
    if (c->map.data) {
        int32_t *map = c->map.data;
        while (id < r->n_experts_global && map[id] < 0)
            id++;
        if (id == r->n_experts_global) {
            id = 0;
            map[0] = 0;
        }
    }
    store_index(c->ids.data, ie, 0, id);
}

/* Layout, alignment and capacity, from the real counts. */
static int draw_placement(moes_rng *g, moes_case *c)
{
    moes_routing *r = &c->routing;
    moes_scatter_args *a = &c->scatter;
    const int64_t e = r->n_experts;
    int64_t *counts = malloc((size_t)e * sizeof *counts);
    int64_t m, max_count = 0;
    if (!counts)
        return 0;

    a->layout = (int)moes_rng_range(g, MOES_LAYOUT_CONTIGUOUS,
                                    MOES_LAYOUT_MASKED);
    if (c->fault == MOES_CASE_BAD_CAPACITY && a->layout == MOES_LAYOUT_MASKED)
        a->layout = (int)moes_rng_range(g, MOES_LAYOUT_CONTIGUOUS,
                                        MOES_LAYOUT_GROUPED);
    if (c->fault == MOES_CASE_BAD_CAPACITY)
        force_one_placed(c);
    count_routing(c, counts);
    for (int64_t i = 0; i < e; i++)
        max_count = counts[i] > max_count ? counts[i] : max_count;

    a->alignment = pick_alignment(g);
    m = rows_needed(counts, e, a->alignment);
    if (m > CASE_MAX_OUT_ROWS) { /* many experts with a big alignment */
        a->alignment = moes_rng_range(g, 1, 4);
        m = rows_needed(counts, e, a->alignment);
    }
    c->rows_needed = a->layout == MOES_LAYOUT_MASKED ? 0 : m;

    if (a->layout == MOES_LAYOUT_MASKED) {
        int64_t most = CASE_MAX_OUT_ROWS / e, cap;
        int64_t r100 = moes_rng_below(g, 100);
        if (r100 < 3)
            cap = 0;
        else if (r100 < 40) /* drops tokens */
            cap = moes_rng_range(g, 1, max_count > 1 ? max_count : 1);
        else
            cap = max_count + moes_rng_range(g, 0, 5);
        if (cap > most)
            cap = most;
        a->capacity = cap;
        c->out_rows = cap * e;
    } else {
        int64_t r100 = moes_rng_below(g, 100), cap, helper = 0;
        moes_scatter_capacity(NULL, a->layout, r->n_tokens, r->top_k, e,
                              a->alignment, &helper);
        if (c->fault == MOES_CASE_BAD_CAPACITY)
            cap = moes_rng_range(g, m > 4 ? m - 4 : 0, m - 1);
        else if (r100 < 30)
            cap = m;
        else if (r100 < 60 && helper <= CASE_MAX_OUT_ROWS)
            cap = helper;
        else
            cap = m + moes_rng_range(g, 1, 2 * a->alignment + 3);
        a->capacity = cap;
        c->out_rows = cap;
    }
    free(counts);
    return 1;
}

static void draw_scales(moes_rng *g, moes_case *c, int64_t *out_scales_bytes)
{
    moes_scatter_args *a = &c->scatter;
    int64_t r = moes_rng_below(g, 100), s, cols, rs, cs, rows = c->out_rows;
    *out_scales_bytes = 0;
    if (r < 40 && c->fault != MOES_CASE_BAD_SCALE)
        return;
    a->out_scales_format = r < 70 && c->fault != MOES_CASE_BAD_SCALE
                               ? MOES_SCALES_FP32
                               : MOES_SCALES_UE8M0;
    r = moes_rng_below(g, 100);
    a->scale_block = r < 10 ? 1 : r < 40 ? 128 : moes_rng_range(g, 2, 200);
    s = (a->hidden + a->scale_block - 1) / a->scale_block;
    cols = a->out_scales_format == MOES_SCALES_FP32 ? s : (s + 3) / 4;
    a->x_scales_stride = draw_stride(g, s);
    r = moes_rng_below(g, 100);
    if (r < 30) { /* row-major, dense */
        rs = 0;
        cs = 0;
    } else if (r < 60) { /* row-major with gaps */
        cs = moes_rng_chance(g, 75) ? 1 : moes_rng_range(g, 2, 3);
        rs = cols * cs + moes_rng_range(g, 0, 5);
    } else { /* MN-major: a column's rows are contiguous */
        rs = 1;
        /* At least 1 with no rows: a zero column stride beside a row
         * stride of 1 is an argument error, not this case's fault. */
        cs = (rows > 0 ? rows : 1) +
             (moes_rng_chance(g, 50) ? 0 : moes_rng_range(g, 1, 5));
    }
    a->out_scales_row_stride = rs;
    a->out_scales_col_stride = cs;
    if (cs == 0)
        cs = 1;
    if (rs == 0)
        rs = cols * cs;
    *out_scales_bytes = rows > 0 ? ((rows - 1) * rs + (cols - 1) * cs + 1) * 4
                                 : 0;
}

/* Breaks 1 to 3 elements of the kind the fault names. */
static void inject_fault(moes_rng *g, moes_case *c)
{
    const moes_routing *r = &c->routing;
    int64_t n_bad = moes_rng_range(g, 1, 3);
    for (int64_t i = 0; i < n_bad; i++) {
        int64_t v = 0, pick = moes_rng_below(g, 4);
        if (c->fault == MOES_CASE_BAD_ID) {
            size_t ie = moes_case_dtype_bytes(r->ids_dtype);
            int64_t eg = r->n_experts_global ? r->n_experts_global
                                             : r->n_experts;
            int64_t t = moes_rng_below(g, r->n_tokens);
            int64_t j = moes_rng_below(g, r->top_k);
            v = pick == 0 ? eg : pick == 1 ? eg + moes_rng_range(g, 1, 1000)
              : pick == 2 ? -2 - moes_rng_below(g, 5)
                          : (ie == 4 ? INT32_MIN : -((int64_t)1 << 40));
            store_index(c->ids.data, ie,
                        t * resolved(r->ids_stride, r->top_k) + j, v);
        } else if (c->fault == MOES_CASE_BAD_MAP) {
            int64_t at = moes_rng_below(g, r->n_experts_global);
            v = pick == 0 ? r->n_experts : pick == 1 ? INT32_MAX
              : pick == 2 ? -2 - moes_rng_below(g, 5) : INT32_MIN;
            ((int32_t *)c->map.data)[at] = (int32_t)v;
        } else if (c->fault == MOES_CASE_BAD_SCALE) {
            /* Not a power of two, negative, zero, subnormal, inf, NaN. */
            static const uint32_t bad[] = {
                0x3FC00000u, 0x40400000u, 0x3F400000u, 0xBF800000u,
                0x00000000u, 0x80000000u, 0x00400000u, 0x7F800000u,
                0x7FC00000u, 0xFF800001u, 0x3F800001u, 0x7F7FFFFFu};
            const moes_scatter_args *a = &c->scatter;
            int64_t s = (a->hidden + a->scale_block - 1) / a->scale_block;
            int64_t t = moes_rng_below(g, r->n_tokens);
            int64_t j = moes_rng_below(g, s);
            uint32_t bits = bad[moes_rng_below(g, sizeof bad / sizeof bad[0])];
            memcpy((char *)c->x_scales.data +
                       (t * resolved(a->x_scales_stride, s) + j) * 4,
                   &bits, 4);
        } else if (c->fault == MOES_CASE_BAD_OUT_INDEX) {
            size_t ie = moes_case_dtype_bytes(c->scatter.index_dtype);
            int64_t t = moes_rng_below(g, r->n_tokens);
            int64_t j = moes_rng_below(g, r->top_k);
            v = pick == 0 ? c->out_rows : pick == 1
                ? c->out_rows + moes_rng_range(g, 1, 100)
              : pick == 2 ? -2 - moes_rng_below(g, 5)
                          : (ie == 4 ? INT32_MIN : INT64_MIN);
            store_index(c->gather_index.data, ie,
                        t * c->gather.out_index_stride + j, v);
        }
    }
}

/* A stride drawn as draw_stride does, then, for vector rows, rounded up
 * to a multiple of 8 elements (0 stays 0: dense). */
static int64_t draw_row_stride(moes_rng *g, int64_t row, int vector_rows)
{
    const int64_t s = draw_stride(g, row);
    return vector_rows ? round_up(s, 8) : s;
}

static int draw_gather(moes_rng *g, moes_case *c, int vector_rows,
                       int sparse)
{
    moes_gather_args *ga = &c->gather;
    const moes_scatter_args *sa = &c->scatter;
    const int64_t n = c->routing.n_tokens, k = c->routing.top_k;
    const int64_t h = sa->hidden;
    size_t ie = moes_case_dtype_bytes(sa->index_dtype), ye, oe;
    static const int float_dtypes[] = {MOES_DTYPE_BF16, MOES_DTYPE_FP16,
                                       MOES_DTYPE_FP32};

    moes_gather_args_init(ga);
    ga->flags = moes_rng_chance(g, 40) ? MOES_GATHER_ACCUMULATE : 0;
    ga->n_tokens = n;
    ga->top_k = k;
    ga->hidden = h;
    ga->y_dtype = float_dtypes[moes_rng_below(g, 3)];
    ga->out_dtype = float_dtypes[moes_rng_below(g, 3)];
    ga->y_rows = c->out_rows;
    ga->y_stride = draw_row_stride(g, h, vector_rows);
    ga->index_dtype = sa->index_dtype;
    ga->out_index_stride = resolved(sa->out_index_stride, k);
    ga->weights_stride = draw_stride(g, k);
    ga->out_stride = draw_row_stride(g, h, vector_rows);
    ye = moes_case_dtype_bytes(ga->y_dtype);
    oe = moes_case_dtype_bytes(ga->out_dtype);

    if (!alloc_buffer(&c->y, extent(c->out_rows, resolved(ga->y_stride, h), h,
                                    ye)))
        return 0;
    if (sparse) {
        /* Row by row (with the stride's padding after each): one in 64
         * drawn as usual, the others finite. */
        const int64_t row_elems = resolved(ga->y_stride, h);
        int usual = 0;
        for (int64_t i = 0; i < c->y.bytes / (int64_t)ye; i++) {
            char *value = (char *)c->y.data + i * (int64_t)ye;
            if (i % row_elems == 0)
                usual = moes_rng_below(g, 64) == 0;
            if (usual)
                draw_value(g, ga->y_dtype, value);
            else
                draw_finite(g, ga->y_dtype, value);
        }
    } else {
        for (int64_t i = 0; i < c->y.bytes / (int64_t)ye; i++)
            draw_value(g, ga->y_dtype, (char *)c->y.data + i * (int64_t)ye);
    }

    if (moes_rng_chance(g, 70)) {
        int64_t ws = resolved(ga->weights_stride, k);
        if (!alloc_buffer(&c->weights, extent(n, ws, k, 4)))
            return 0;
        for (int64_t i = 0; i < c->weights.bytes / 4; i++) {
            float w = (float)moes_rng_below(g, 1 << 20) / (float)(1 << 20);
            if (sparse ? moes_rng_below(g, 64) == 0 : moes_rng_chance(g, 15))
                draw_value(g, MOES_DTYPE_FP32,
                           (char *)c->weights.data + i * 4);
            else
                memcpy((char *)c->weights.data + i * 4, &w, 4);
        }
    }

    if (!alloc_buffer(&c->gather_index,
                      extent(n, ga->out_index_stride, k, ie)))
        return 0;
    fill_random_bytes(g, &c->gather_index);
    for (int64_t t = 0; t < n; t++)
        for (int64_t j = 0; j < k; j++) {
            int64_t row = moes_rng_below(g, c->out_rows + 1) - 1;
            /* An expert-parallel rank holds the rows of one expert in
             * eight: most of a token's entries are -1, many tokens have
             * one row or none. */
            if (sparse && moes_rng_below(g, 8) != 0)
                row = -1;
            store_index(c->gather_index.data, ie,
                        t * ga->out_index_stride + j, row);
        }

    c->gather_out_bytes = extent(n, resolved(ga->out_stride, h), h, oe);
    if (ga->flags & MOES_GATHER_ACCUMULATE) {
        if (!alloc_buffer(&c->gather_out_init, c->gather_out_bytes))
            return 0;
        for (int64_t i = 0; i < c->gather_out_bytes / (int64_t)oe; i++)
            draw_value(g, ga->out_dtype,
                       (char *)c->gather_out_init.data + i * (int64_t)oe);
    }
    return 1;
}

static int draw_case(moes_rng *g, moes_case *c, const moes_case_limits *lim)
{
    moes_scatter_args *a = &c->scatter;
    const moes_routing *r = &c->routing;
    static const int x_dtypes[] = {MOES_DTYPE_FP8_E4M3, MOES_DTYPE_FP8_E5M2,
                                   MOES_DTYPE_BF16, MOES_DTYPE_FP16,
                                   MOES_DTYPE_FP32};
    int64_t h, hmax, biggest, k, n, e;
    size_t xe, ie;
    int vector_rows; /* the hidden size and the gather's strides by 8 */

    if (!draw_routing(g, c, lim))
        return 0;
    n = r->n_tokens;
    k = r->top_k;
    e = r->n_experts;
    moes_scatter_args_init(a);
    if (!draw_placement(g, c))
        return 0;
    a->flags = (unsigned)moes_rng_below(g, 8);
    /* Index-only: no rows, so no scales to break and no rows to zero. */
    c->index_only = c->fault != MOES_CASE_BAD_SCALE && moes_rng_chance(g, 15);
    if (c->index_only)
        a->flags &= ~MOES_SCATTER_ZERO_PADDING;

    /* The hidden size, kept so that the biggest buffer fits the budget. */
    a->x_dtype = x_dtypes[moes_rng_below(g, 5)];
    xe = moes_case_dtype_bytes(a->x_dtype);
    {
        int64_t r100 = moes_rng_below(g, 100);
        h = r100 < 8 ? 1 : r100 < 40 ? moes_rng_range(g, 2, 16)
          : r100 < 85 ? moes_rng_range(g, 17, 300)
                      : moes_rng_range(g, 301, 1100);
    }
    biggest = c->out_rows > n ? c->out_rows : n;
    hmax = CASE_BUFFER_BUDGET / ((biggest > 0 ? biggest : 1) * 4 * 2);
    if (hmax > lim->max_hidden)
        hmax = lim->max_hidden;
    if (h > hmax)
        h = hmax > 1 ? moes_rng_range(g, 1, hmax) : 1;
    vector_rows = lim->vector_rows && hmax >= 8;
    if (vector_rows)
        h = h < 8 ? 8 : h / 8 * 8;
    a->hidden = h;
    a->x_stride = draw_stride(g, h);
    a->out_stride = draw_stride(g, h);
    if (!c->index_only) {
        if (!alloc_buffer(&c->x, extent(n, resolved(a->x_stride, h), h, xe)))
            return 0;
        fill_random_bytes(g, &c->x);
        c->out_bytes = extent(c->out_rows, resolved(a->out_stride, h), h, xe);
        draw_scales(g, c, &c->out_scales_bytes);
    }
    if (a->out_scales_format != MOES_SCALES_NONE) {
        int64_t s = (h + a->scale_block - 1) / a->scale_block;
        int64_t bytes = extent(n, resolved(a->x_scales_stride, s), s, 4);
        /* x_scales NULL would mean "no scales": with no tokens the scales
         * are still given, as an empty (but real) buffer. */
        if (!alloc_buffer(&c->x_scales, bytes > 0 ? bytes : 4))
            return 0;
        for (int64_t i = 0; i < c->x_scales.bytes / 4; i++) {
            /* UE8M0 packs powers of two only: the exponent of each one,
             * mostly near 1.0, sometimes at the ends of the range. */
            uint32_t e = moes_rng_chance(g, 90)
                             ? (uint32_t)moes_rng_range(g, 100, 150)
                             : (uint32_t)moes_rng_range(g, 1, 254);
            uint32_t bits = e << 23;
            if (a->out_scales_format == MOES_SCALES_UE8M0)
                memcpy((char *)c->x_scales.data + i * 4, &bits, 4);
            else
                draw_value(g, MOES_DTYPE_FP32,
                           (char *)c->x_scales.data + i * 4);
        }
    }

    a->index_dtype = moes_rng_chance(g, 50) ? MOES_DTYPE_INT32
                                            : MOES_DTYPE_INT64;
    ie = moes_case_dtype_bytes(a->index_dtype);
    a->out_index_stride = draw_stride(g, k);
    c->out_index_bytes = extent(n, resolved(a->out_index_stride, k), k, ie);
    c->expert_array_bytes = e * (int64_t)ie;
    c->want_counts = moes_rng_chance(g, 70);
    c->want_start = moes_rng_chance(g, 60);
    c->want_end = a->layout == MOES_LAYOUT_GROUPED || moes_rng_chance(g, 50);
    c->want_m_indices = a->layout == MOES_LAYOUT_CONTIGUOUS ||
                        moes_rng_chance(g, 50);
    c->want_n_dropped = a->layout == MOES_LAYOUT_MASKED &&
                        moes_rng_chance(g, 70);
    c->m_indices_bytes = c->want_m_indices ? c->out_rows * (int64_t)ie : 0;
    c->want_row_source = moes_rng_chance(g, c->index_only ? 80 : 40);
    c->row_source_bytes = c->want_row_source ? c->out_rows * (int64_t)ie : 0;
    {
        /* -1 (the default), N*K (the convention of vLLM's sorted ids), or
         * any value of the index type. */
        int64_t r100 = moes_rng_below(g, 100);
        a->row_source_pad =
            r100 < 40 ? -1
          : r100 < 70 ? n * k
          : ie == 4 ? (int64_t)(int32_t)moes_rng_next(g)
                    : (int64_t)moes_rng_next(g);
    }

    c->counts_dtype = moes_rng_chance(g, 50) ? MOES_DTYPE_INT32
                                             : MOES_DTYPE_INT64;
    c->count_bytes = e * (int64_t)moes_case_dtype_bytes(c->counts_dtype);
    /* The distinct experts' out takes the out_index's row stride (0 or
     * K and more), so that no draw is added. */
    c->distinct_stride = a->out_index_stride;
    c->distinct_bytes = extent(n, resolved(c->distinct_stride, k), k, ie);

    if (!draw_gather(g, c, vector_rows, lim->sparse_gather))
        return 0;
    if (c->fault != MOES_CASE_VALID && c->fault != MOES_CASE_BAD_CAPACITY)
        inject_fault(g, c);
    return 1;
}

int moes_case_generate(moes_case *c, uint64_t seed, int fault,
                       const moes_case_limits *limits)
{
    moes_rng g;
    moes_case_limits lim = {400, 1100, 3000, 9, 0, 0, 0};
    memset(c, 0, sizeof *c);
    moes_rng_seed(&g, seed);
    if (limits) {
        if (limits->max_tokens > 0)
            lim.max_tokens = limits->max_tokens;
        if (limits->max_hidden > 0)
            lim.max_hidden = limits->max_hidden;
        if (limits->max_experts > 0)
            lim.max_experts = limits->max_experts;
        if (limits->max_top_k > 0)
            lim.max_top_k = limits->max_top_k;
        if (limits->min_tokens > 0)
            lim.min_tokens = limits->min_tokens < lim.max_tokens
                                 ? limits->min_tokens
                                 : lim.max_tokens;
        lim.vector_rows = limits->vector_rows;
        lim.sparse_gather = limits->sparse_gather;
    }
    if (fault < 0 || fault >= MOES_CASE_FAULT_COUNT)
        fault = moes_rng_chance(&g, 50)
                    ? MOES_CASE_VALID
                    : (int)moes_rng_range(&g, 1, MOES_CASE_FAULT_COUNT - 1);
    c->seed = seed;
    c->fault = fault;
    if (!draw_case(&g, c, &lim)) {
        moes_case_free(c);
        return MOES_ERR_OUT_OF_MEMORY;
    }
    return MOES_OK;
}

void moes_case_free(moes_case *c)
{
    moes_case_buffer *b[] = {&c->ids, &c->map, &c->x, &c->x_scales, &c->y,
                             &c->weights, &c->gather_index,
                             &c->gather_out_init};
    for (size_t i = 0; i < sizeof b / sizeof b[0]; i++) {
        free(b[i]->data);
        b[i]->data = NULL;
        b[i]->bytes = 0;
    }
}

const moes_case_limits *moes_case_class_limits(uint64_t seed)
{
    static const moes_case_limits large = {4000, 0, 20000, 0, 0, 0, 0};
    static const moes_case_limits wide = {2000, 0, 0, 48, 0, 0, 0};
    static const moes_case_limits vectors = {4000, 0, 0, 40, 2200, 1, 0};
    static const moes_case_limits ep_rank = {4000, 0, 0, 16, 2200, 1, 1};
    switch (seed % 10) {
    case 0:
        return &large;
    case 3:
        return &vectors;
    case 5:
        return &wide;
    case 7:
        return &ep_rank;
    default:
        return NULL;
    }
}

size_t moes_case_dtype_bytes(int dtype)
{
    size_t s = 0;
    if (moes_dtype_size(dtype, &s) != MOES_OK)
        return 0;
    return s;
}

const char *moes_case_fault_name(int fault)
{
    switch (fault) {
    case MOES_CASE_VALID: return "valid";
    case MOES_CASE_BAD_ID: return "bad id";
    case MOES_CASE_BAD_MAP: return "bad map";
    case MOES_CASE_BAD_CAPACITY: return "bad capacity";
    case MOES_CASE_BAD_OUT_INDEX: return "bad out_index";
    case MOES_CASE_BAD_SCALE: return "bad scale";
    default: return "unknown fault";
    }
}

static const char *dtype_name(int d)
{
    switch (d) {
    case MOES_DTYPE_FP8_E4M3: return "e4m3";
    case MOES_DTYPE_FP8_E5M2: return "e5m2";
    case MOES_DTYPE_BF16: return "bf16";
    case MOES_DTYPE_FP16: return "fp16";
    case MOES_DTYPE_FP32: return "fp32";
    case MOES_DTYPE_INT32: return "i32";
    case MOES_DTYPE_INT64: return "i64";
    default: return "?";
    }
}

void moes_case_describe(const moes_case *c, char *buf, size_t len)
{
    static const char *layouts[] = {"?", "contiguous", "grouped", "masked"};
    static const char *scales[] = {"none", "fp32", "ue8m0"};
    const moes_routing *r = &c->routing;
    const moes_scatter_args *a = &c->scatter;
    const moes_gather_args *ga = &c->gather;
    int layout = a->layout >= 1 && a->layout <= 3 ? a->layout : 0;
    int sf = a->out_scales_format >= 0 && a->out_scales_format <= 2
                 ? a->out_scales_format : 0;
    snprintf(buf, len,
        "seed=0x%016llx fault=%s N=%lld K=%lld E=%lld Eg=%lld map=%s "
        "ids=%s/%lld layout=%s A=%lld cap=%lld rows=%lld need=%lld "
        "flags=0x%x x=%s%s H=%lld xs=%lld os=%lld scales=%s B=%lld "
        "ss=%lld rs=%lld cs=%lld index=%s/%lld out{counts=%d start=%d end=%d "
        "m_indices=%d n_dropped=%d row_source=%d pad=%lld} "
        "gather{y=%s/%lld out=%s/%lld w=%s/%lld "
        "acc=%d} counts=%s",
        (unsigned long long)c->seed, moes_case_fault_name(c->fault),
        (long long)r->n_tokens, (long long)r->top_k, (long long)r->n_experts,
        (long long)r->n_experts_global, c->map.data ? "yes" : "no",
        dtype_name(r->ids_dtype), (long long)r->ids_stride, layouts[layout],
        (long long)a->alignment, (long long)a->capacity,
        (long long)c->out_rows, (long long)c->rows_needed, a->flags,
        c->index_only ? "none (index only), was " : "",
        dtype_name(a->x_dtype), (long long)a->hidden, (long long)a->x_stride,
        (long long)a->out_stride, scales[sf], (long long)a->scale_block,
        (long long)a->x_scales_stride, (long long)a->out_scales_row_stride,
        (long long)a->out_scales_col_stride, dtype_name(a->index_dtype),
        (long long)a->out_index_stride, c->want_counts, c->want_start,
        c->want_end, c->want_m_indices, c->want_n_dropped,
        c->want_row_source, (long long)a->row_source_pad,
        dtype_name(ga->y_dtype), (long long)ga->y_stride,
        dtype_name(ga->out_dtype), (long long)ga->out_stride,
        c->weights.data ? "yes" : "no", (long long)ga->weights_stride,
        (ga->flags & MOES_GATHER_ACCUMULATE) != 0,
        dtype_name(c->counts_dtype));
}
