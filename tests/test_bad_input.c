/* SPDX-License-Identifier: MIT */
/*
 * test_bad_input.c - every class of bad input of docs/design-rules.md,
 * for count, scatter and gather: the status, a message naming the
 * argument (and the element for data errors), and every output buffer
 * byte-for-byte untouched (they start filled with the canary).
 *
 * One table per call; each row is a parameterized test instance that
 * starts from a valid call and breaks one thing. Rows are passed to the
 * test as an index (Criterion may run tests in a fresh process, where a
 * pointer into this one would mean nothing).
 */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <stdlib.h>
#include <string.h>

#include "helpers.h"

enum { N = 4, K = 2, E = 4, H = 3, S = 2, CAP = 64, EG = 6 };

static const int32_t ids_ok[N * K] = {0, 1, 2, 3, 1, 1, -1, 0};
static const int32_t map_ok[EG] = {0, 1, 2, 3, -1, -1};
/* A valid gather index for y of CAP rows. */
static const int32_t gather_index_ok[N * K] = {0, 5, 63, -1, 2, 2, 7, 1};

typedef struct fixture {
    moes_context *ctx;
    moes_routing r;
    moes_scatter_args s;
    moes_gather_args g;
    void *counts;      /* moes_count's output                          */
    int counts_dtype;
    void *ids, *map, *x, *xs, *y, *w, *gidx;
    void *outs[9];     /* every scatter output, canary-filled           */
    int64_t out_bytes[9];
    void *gout;        /* gather out                                    */
} fixture;

static void put(fixture *f, void *dev, const void *host, int64_t bytes)
{
    cr_assert_eq(moes_copy_to_backend(f->ctx, dev, host, bytes), MOES_OK);
}

static void setup(fixture *f)
{
    uint16_t x[N * H];
    float xs[N * S], y[CAP * H], w[N * K];
    memset(f, 0, sizeof *f);
    for (int i = 0; i < N * H; i++)
        x[i] = (uint16_t)(0x3F80 + i);
    for (int i = 0; i < N * S; i++)
        xs[i] = (float)(i + 1);
    for (int i = 0; i < CAP * H; i++)
        y[i] = (float)i;
    for (int i = 0; i < N * K; i++)
        w[i] = 0.5f;
    f->ctx = test_open(0);
    f->ids = dev_from(f->ctx, ids_ok, sizeof ids_ok);
    f->map = dev_from(f->ctx, map_ok, sizeof map_ok);
    f->x = dev_from(f->ctx, x, sizeof x);
    f->xs = dev_from(f->ctx, xs, sizeof xs);
    f->y = dev_from(f->ctx, y, sizeof y);
    f->w = dev_from(f->ctx, w, sizeof w);
    f->gidx = dev_from(f->ctx, gather_index_ok, sizeof gather_index_ok);
    f->counts = dev_new(f->ctx, E * 8);
    f->counts_dtype = MOES_DTYPE_INT32;
    f->out_bytes[0] = CAP * H * 2;    /* out        */
    f->out_bytes[1] = CAP * S * 4;    /* out_scales */
    f->out_bytes[2] = N * K * 8;      /* out_index  */
    f->out_bytes[3] = E * 8;          /* counts     */
    f->out_bytes[4] = E * 8;          /* start      */
    f->out_bytes[5] = E * 8;          /* end        */
    f->out_bytes[6] = CAP * 8;        /* m_indices  */
    f->out_bytes[7] = E * 8;          /* masked_m   */
    f->out_bytes[8] = CAP * 8;        /* row_source */
    for (int i = 0; i < 9; i++)
        f->outs[i] = dev_new(f->ctx, f->out_bytes[i]);
    f->gout = dev_new(f->ctx, N * H * 4);

    moes_routing_init(&f->r);
    f->r.n_tokens = N;
    f->r.top_k = K;
    f->r.n_experts = E;
    f->r.ids = f->ids;

    moes_scatter_args_init(&f->s);
    f->s.alignment = 2;
    f->s.capacity = CAP;
    f->s.x = f->x;
    f->s.x_dtype = MOES_DTYPE_BF16;
    f->s.hidden = H;
    f->s.x_scales = f->xs;
    f->s.scale_block = 2;
    f->s.out = f->outs[0];
    f->s.out_scales = f->outs[1];
    f->s.out_scales_format = MOES_SCALES_FP32;
    f->s.out_index = f->outs[2];
    f->s.counts = f->outs[3];
    f->s.expert_start = f->outs[4];
    f->s.expert_end = f->outs[5];
    f->s.m_indices = f->outs[6];
    f->s.row_source = f->outs[8];

    moes_gather_args_init(&f->g);
    f->g.n_tokens = N;
    f->g.top_k = K;
    f->g.hidden = H;
    f->g.y = f->y;
    f->g.y_dtype = MOES_DTYPE_FP32;
    f->g.y_rows = CAP;
    f->g.out_index = f->gidx;
    f->g.weights = f->w;
    f->g.out = f->gout;
    f->g.out_dtype = MOES_DTYPE_FP32;
}

static void teardown(fixture *f)
{
    void *bufs[] = {f->counts, f->ids, f->map, f->x, f->xs, f->y, f->w,
                    f->gidx, f->gout};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
        dev_free(f->ctx, bufs[i]);
    for (int i = 0; i < 9; i++)
        dev_free(f->ctx, f->outs[i]);
    test_close(f->ctx);
}

/* The status of a call as the caller sees it: on CUDA a data error comes
 * from the next synchronize. */
static int settle(fixture *f, int st)
{
    int sync = moes_synchronize(f->ctx);
    return st != MOES_OK ? st : sync;
}

static void set_id(fixture *f, int t, int k, int64_t v)
{
    int32_t ids[N * K];
    memcpy(ids, ids_ok, sizeof ids);
    ids[t * K + k] = (int32_t)v;
    put(f, f->ids, ids, sizeof ids);
}

static void set_map(fixture *f, int i, int32_t v)
{
    int32_t map[EG];
    memcpy(map, map_ok, sizeof map);
    map[i] = v;
    put(f, f->map, map, sizeof map);
    f->r.expert_map = f->map;
    f->r.n_experts_global = EG;
}

static void set_gather_index(fixture *f, int t, int k, int32_t v)
{
    int32_t idx[N * K];
    memcpy(idx, gather_index_ok, sizeof idx);
    idx[t * K + k] = v;
    put(f, f->gidx, idx, sizeof idx);
}

typedef struct bad_case {
    const char *name;
    void (*breaks)(fixture *f);
    int status;
    const char *message; /* a substring of moes_last_error()           */
} bad_case;

#define BAD(name, status, message) {#name, name, status, message}

/* ---- routing (through count and scatter) ---------------------------- */

static void routing_null(fixture *f) { (void)f; }
static void routing_struct_size(fixture *f) { f->r.struct_size = 8; }
static void tokens_negative(fixture *f) { f->r.n_tokens = -1; }
static void top_k_zero(fixture *f) { f->r.top_k = 0; }
static void experts_zero(fixture *f) { f->r.n_experts = 0; }
static void experts_negative(fixture *f) { f->r.n_experts = -5; }
static void global_without_map(fixture *f) { f->r.n_experts_global = 9; }
static void global_negative(fixture *f) { f->r.n_experts_global = -5; }
static void global_zero_with_map(fixture *f)
{
    f->r.expert_map = f->map;
    f->r.n_experts_global = 0;
}
static void ids_null(fixture *f) { f->r.ids = NULL; }
static void ids_dtype_float(fixture *f) { f->r.ids_dtype = MOES_DTYPE_FP32; }
static void ids_dtype_unknown(fixture *f) { f->r.ids_dtype = 42; }
static void ids_stride_small(fixture *f) { f->r.ids_stride = 1; }
static void ids_stride_negative(fixture *f) { f->r.ids_stride = -2; }
static void ids_bytes_overflow(fixture *f)
{
    f->r.ids_stride = INT64_MAX / 8;
    f->r.ids_dtype = MOES_DTYPE_INT64;
}
static void id_too_big(fixture *f) { set_id(f, 3, 1, 300); }
static void id_equal_e(fixture *f) { set_id(f, 1, 0, E); }
static void id_below_minus_one(fixture *f) { set_id(f, 2, 1, -2); }
static void id_int_min(fixture *f) { set_id(f, 0, 0, INT32_MIN); }
static void id_too_big_with_map(fixture *f)
{
    set_map(f, 0, 0);
    set_id(f, 2, 0, EG);
}
static void map_too_big(fixture *f) { set_map(f, 2, E); }
static void map_below_minus_one(fixture *f) { set_map(f, 5, -7); }
/* Both a map and an id are wrong: the map error is the one reported. */
static void map_and_id(fixture *f)
{
    set_id(f, 0, 1, 99);
    set_map(f, 4, 100);
}
/* Two ids are wrong: the smaller flat index is the one reported. */
static void two_ids(fixture *f)
{
    int32_t ids[N * K];
    memcpy(ids, ids_ok, sizeof ids);
    ids[2 * K + 1] = 77;
    ids[1 * K + 0] = -3;
    put(f, f->ids, ids, sizeof ids);
}

/* ---- count -------------------------------------------------------- */

static void counts_null(fixture *f) { f->counts = NULL; }
static void counts_dtype_bad(fixture *f) { f->counts_dtype = MOES_DTYPE_BF16; }

static const bad_case count_cases[] = {
    BAD(routing_null, MOES_ERR_NULL_POINTER, "routing"),
    BAD(routing_struct_size, MOES_ERR_INVALID_ARGUMENT, "struct_size"),
    BAD(tokens_negative, MOES_ERR_INVALID_SIZE, "n_tokens"),
    BAD(top_k_zero, MOES_ERR_INVALID_SIZE, "top_k"),
    BAD(experts_zero, MOES_ERR_INVALID_SIZE, "n_experts"),
    BAD(experts_negative, MOES_ERR_INVALID_SIZE, "n_experts"),
    BAD(global_without_map, MOES_ERR_INVALID_ARGUMENT, "n_experts_global"),
    BAD(global_negative, MOES_ERR_INVALID_SIZE, "n_experts_global"),
    BAD(global_zero_with_map, MOES_ERR_INVALID_SIZE, "n_experts_global"),
    BAD(ids_null, MOES_ERR_NULL_POINTER, "ids"),
    BAD(ids_dtype_float, MOES_ERR_INVALID_DTYPE, "ids_dtype"),
    BAD(ids_dtype_unknown, MOES_ERR_INVALID_DTYPE, "ids_dtype"),
    BAD(ids_stride_small, MOES_ERR_INVALID_STRIDE, "ids_stride"),
    BAD(ids_stride_negative, MOES_ERR_INVALID_STRIDE, "ids_stride"),
    BAD(ids_bytes_overflow, MOES_ERR_OVERFLOW, "ids"),
    BAD(id_too_big, MOES_ERR_INVALID_ID, "ids[3][1] = 300 is outside [-1, 4)"),
    BAD(id_equal_e, MOES_ERR_INVALID_ID, "ids[1][0] = 4 is outside [-1, 4)"),
    BAD(id_below_minus_one, MOES_ERR_INVALID_ID,
        "ids[2][1] = -2 is outside [-1, 4)"),
    BAD(id_int_min, MOES_ERR_INVALID_ID,
        "ids[0][0] = -2147483648 is outside [-1, 4)"),
    BAD(id_too_big_with_map, MOES_ERR_INVALID_ID,
        "ids[2][0] = 6 is outside [-1, 6)"),
    BAD(map_too_big, MOES_ERR_INVALID_MAP,
        "expert_map[2] = 4 is outside [-1, 4)"),
    BAD(map_below_minus_one, MOES_ERR_INVALID_MAP,
        "expert_map[5] = -7 is outside [-1, 4)"),
    BAD(map_and_id, MOES_ERR_INVALID_MAP,
        "expert_map[4] = 100 is outside [-1, 4)"),
    BAD(two_ids, MOES_ERR_INVALID_ID, "ids[1][0] = -3 is outside [-1, 4)"),
    BAD(counts_null, MOES_ERR_NULL_POINTER, "counts"),
    BAD(counts_dtype_bad, MOES_ERR_INVALID_DTYPE, "counts_dtype"),
};

#define COUNT_OF(a) (sizeof(a) / sizeof((a)[0]))

static size_t *indices(size_t n)
{
    static size_t idx[256];
    for (size_t i = 0; i < n; i++)
        idx[i] = i;
    return idx;
}

static void expect_message(fixture *f, const bad_case *bc, int st)
{
    cr_expect_eq(st, bc->status, "%s: status %d (%s), expected %d (%s)",
                 bc->name, st, moes_strerror(st), bc->status,
                 moes_strerror(bc->status));
    cr_expect(strstr(moes_last_error(f->ctx), bc->message) != NULL,
              "%s: message \"%s\" does not contain \"%s\"", bc->name,
              moes_last_error(f->ctx), bc->message);
}

ParameterizedTestParameters(bad_input, count)
{
    return cr_make_param_array(size_t, indices(COUNT_OF(count_cases)),
                               COUNT_OF(count_cases));
}

ParameterizedTest(size_t *i, bad_input, count)
{
    const bad_case *bc = &count_cases[*i];
    fixture f;
    void *counts;
    int st;
    setup(&f);
    counts = f.counts;
    bc->breaks(&f);
    st = settle(&f, moes_count(f.ctx, bc->breaks == routing_null ? NULL
                                                                 : &f.r,
                               f.counts, f.counts_dtype));
    expect_message(&f, bc, st);
    cr_expect(dev_is_canary(f.ctx, counts, E * 8), "%s: counts changed",
              bc->name);
    f.counts = counts;
    teardown(&f);
}

/* ---- scatter ------------------------------------------------------ */

static void args_null(fixture *f) { (void)f; }
static void args_struct_size(fixture *f) { f->s.struct_size += 8; }
static void layout_zero(fixture *f) { f->s.layout = 0; }
static void layout_unknown(fixture *f) { f->s.layout = 4; }
static void flags_unknown(fixture *f) { f->s.flags = 0x10; }
static void flags_high_bit(fixture *f) { f->s.flags = 0x80000001u; }
static void alignment_zero(fixture *f) { f->s.alignment = 0; }
static void alignment_negative(fixture *f) { f->s.alignment = -128; }
static void capacity_negative(fixture *f) { f->s.capacity = -1; }
static void capacity_small(fixture *f) { f->s.capacity = 9; }
static void capacity_small_grouped(fixture *f)
{
    f->s.layout = MOES_LAYOUT_GROUPED;
    f->s.alignment = 128;
    f->s.capacity = 63;
}
static void masked_capacity_overflow(fixture *f)
{
    f->s.layout = MOES_LAYOUT_MASKED;
    f->s.masked_m = f->outs[7];
    f->s.capacity = INT64_MAX / 2;
}
static void x_dtype_int(fixture *f) { f->s.x_dtype = MOES_DTYPE_INT32; }
static void x_dtype_zero(fixture *f) { f->s.x_dtype = 0; }
static void x_dtype_unknown(fixture *f) { f->s.x_dtype = 99; }
static void hidden_zero(fixture *f) { f->s.hidden = 0; }
static void hidden_negative(fixture *f) { f->s.hidden = -3; }
static void x_stride_small(fixture *f) { f->s.x_stride = 2; }
static void out_stride_small(fixture *f) { f->s.out_stride = 1; }
static void out_stride_negative(fixture *f) { f->s.out_stride = -1; }
static void x_bytes_overflow(fixture *f) { f->s.x_stride = INT64_MAX / 3; }
static void out_bytes_overflow(fixture *f)
{
    f->s.out_stride = (int64_t)1 << 62;
}
static void x_null(fixture *f) { f->s.x = NULL; }
static void out_null(fixture *f) { f->s.out = NULL; }
/* A caller who meant index-only but left out given: the NULL x is what
 * is named, not the hidden size it did not set either. */
static void x_null_hidden_unset(fixture *f)
{
    f->s.x = NULL;
    f->s.x_scales = NULL;
    f->s.out_scales = NULL;
    f->s.out_scales_format = MOES_SCALES_NONE;
    f->s.hidden = 0;
}
static void out_index_null(fixture *f) { f->s.out_index = NULL; }
static void m_indices_null(fixture *f) { f->s.m_indices = NULL; }
static void expert_end_null(fixture *f)
{
    f->s.layout = MOES_LAYOUT_GROUPED;
    f->s.expert_end = NULL;
}
static void masked_m_null(fixture *f) { f->s.layout = MOES_LAYOUT_MASKED; }
static void masked_m_not_masked(fixture *f) { f->s.masked_m = f->outs[7]; }
static void n_dropped_not_masked(fixture *f)
{
    f->s.n_dropped = (int64_t *)f->outs[7];
}
static void scale_block_zero(fixture *f) { f->s.scale_block = 0; }
static void x_scales_stride_small(fixture *f) { f->s.x_scales_stride = 1; }
static void scales_format_none(fixture *f)
{
    f->s.out_scales_format = MOES_SCALES_NONE;
}
static void scales_format_unknown(fixture *f) { f->s.out_scales_format = 3; }
static void out_scales_null(fixture *f) { f->s.out_scales = NULL; }
static void out_scales_without_x_scales(fixture *f) { f->s.x_scales = NULL; }
static void scale_format_without_x_scales(fixture *f)
{
    f->s.x_scales = NULL;
    f->s.out_scales = NULL;
}
static void scale_rows_overlap(fixture *f)
{
    f->s.out_scales_row_stride = 1;
    f->s.out_scales_col_stride = 1;
}
static void scale_stride_negative(fixture *f)
{
    f->s.out_scales_row_stride = -2;
}
static void scale_bytes_overflow(fixture *f)
{
    f->s.out_scales_row_stride = INT64_MAX / 16;
    f->s.out_scales_col_stride = 1;
}
static void scale_row_stride_alone_zero(fixture *f)
{
    f->s.out_scales_row_stride = 0;
    f->s.out_scales_col_stride = 64;
}
static void scale_col_stride_alone_zero(fixture *f)
{
    f->s.out_scales_row_stride = S;
    f->s.out_scales_col_stride = 0;
}
static void index_dtype_float(fixture *f)
{
    f->s.index_dtype = MOES_DTYPE_FP16;
}
static void out_index_stride_small(fixture *f) { f->s.out_index_stride = 1; }
static void int32_rows_overflow(fixture *f)
{
    f->s.capacity = (int64_t)INT32_MAX + 1;
}
static void int32_masked_rows_overflow(fixture *f)
{
    f->s.layout = MOES_LAYOUT_MASKED;
    f->s.masked_m = f->outs[7];
    f->s.m_indices = NULL;
    f->s.capacity = (int64_t)1 << 30; /* 4 experts: 2^32 rows */
}
/* m_indices holds expert ids: int32 cannot label expert 2^31. */
static void int32_expert_ids_overflow(fixture *f)
{
    f->r.n_experts = (int64_t)INT32_MAX + 2;
    if (!f->r.expert_map)
        f->r.n_experts_global = f->r.n_experts;
}

/* Index-only (no rows): the same checks, and no rows to zero. */
static void index_only(fixture *f)
{
    f->s.x = NULL;
    f->s.x_scales = NULL;
    f->s.out = NULL;
    f->s.out_scales = NULL;
    f->s.out_scales_format = MOES_SCALES_NONE;
}
static void index_only_zero_padding(fixture *f)
{
    index_only(f);
    f->s.flags = MOES_SCATTER_ZERO_PADDING;
}
static void index_only_bad_id(fixture *f)
{
    index_only(f);
    set_id(f, 3, 1, 300);
}
static void index_only_bad_map(fixture *f)
{
    index_only(f);
    set_map(f, 2, E);
}
static void index_only_capacity_small(fixture *f)
{
    index_only(f);
    f->s.capacity = 9;
}
/* Rows half given: x and out NULL with scales is not index-only. */
static void rows_scales_only(fixture *f)
{
    f->s.x = NULL;
    f->s.out = NULL;
}
static void row_source_pad_int32(fixture *f)
{
    f->s.row_source_pad = (int64_t)INT32_MAX + 1;
}
static void row_source_over_out_index(fixture *f)
{
    f->s.row_source = f->outs[2];
}
static void row_source_over_ids(fixture *f) { f->s.row_source = f->ids; }
static void row_source_misaligned(fixture *f)
{
    f->s.row_source = (char *)f->outs[8] + 2;
}

static const bad_case scatter_cases[] = {
    BAD(routing_null, MOES_ERR_NULL_POINTER, "routing"),
    BAD(routing_struct_size, MOES_ERR_INVALID_ARGUMENT, "struct_size"),
    BAD(tokens_negative, MOES_ERR_INVALID_SIZE, "n_tokens"),
    BAD(top_k_zero, MOES_ERR_INVALID_SIZE, "top_k"),
    BAD(experts_zero, MOES_ERR_INVALID_SIZE, "n_experts"),
    BAD(global_without_map, MOES_ERR_INVALID_ARGUMENT, "n_experts_global"),
    BAD(global_negative, MOES_ERR_INVALID_SIZE, "n_experts_global"),
    BAD(ids_null, MOES_ERR_NULL_POINTER, "ids"),
    BAD(ids_dtype_unknown, MOES_ERR_INVALID_DTYPE, "ids_dtype"),
    BAD(ids_stride_small, MOES_ERR_INVALID_STRIDE, "ids_stride"),
    BAD(ids_bytes_overflow, MOES_ERR_OVERFLOW, "ids"),
    BAD(id_too_big, MOES_ERR_INVALID_ID, "ids[3][1] = 300 is outside [-1, 4)"),
    BAD(id_below_minus_one, MOES_ERR_INVALID_ID,
        "ids[2][1] = -2 is outside [-1, 4)"),
    BAD(id_too_big_with_map, MOES_ERR_INVALID_ID,
        "ids[2][0] = 6 is outside [-1, 6)"),
    BAD(map_too_big, MOES_ERR_INVALID_MAP,
        "expert_map[2] = 4 is outside [-1, 4)"),
    BAD(map_below_minus_one, MOES_ERR_INVALID_MAP,
        "expert_map[5] = -7 is outside [-1, 4)"),
    BAD(map_and_id, MOES_ERR_INVALID_MAP,
        "expert_map[4] = 100 is outside [-1, 4)"),
    BAD(two_ids, MOES_ERR_INVALID_ID, "ids[1][0] = -3 is outside [-1, 4)"),
    BAD(args_null, MOES_ERR_NULL_POINTER, "args"),
    BAD(args_struct_size, MOES_ERR_INVALID_ARGUMENT, "struct_size"),
    BAD(layout_zero, MOES_ERR_INVALID_ARGUMENT, "layout"),
    BAD(layout_unknown, MOES_ERR_INVALID_ARGUMENT, "layout"),
    BAD(flags_unknown, MOES_ERR_INVALID_FLAGS, "flags"),
    BAD(flags_high_bit, MOES_ERR_INVALID_FLAGS, "flags"),
    BAD(alignment_zero, MOES_ERR_INVALID_ALIGNMENT, "alignment"),
    BAD(alignment_negative, MOES_ERR_INVALID_ALIGNMENT, "alignment"),
    BAD(capacity_negative, MOES_ERR_INVALID_SIZE, "capacity"),
    BAD(capacity_small, MOES_ERR_CAPACITY,
        "capacity = 9 is smaller than the 10 rows this routing needs"),
    BAD(capacity_small_grouped, MOES_ERR_CAPACITY,
        "capacity = 63 is smaller than the 512 rows this routing needs"),
    BAD(masked_capacity_overflow, MOES_ERR_OVERFLOW, "capacity"),
    BAD(x_dtype_int, MOES_ERR_INVALID_DTYPE, "x_dtype"),
    BAD(x_dtype_zero, MOES_ERR_INVALID_DTYPE, "x_dtype"),
    BAD(x_dtype_unknown, MOES_ERR_INVALID_DTYPE, "x_dtype"),
    BAD(hidden_zero, MOES_ERR_INVALID_SIZE, "hidden"),
    BAD(hidden_negative, MOES_ERR_INVALID_SIZE, "hidden"),
    BAD(x_stride_small, MOES_ERR_INVALID_STRIDE, "x_stride"),
    BAD(out_stride_small, MOES_ERR_INVALID_STRIDE, "out_stride"),
    BAD(out_stride_negative, MOES_ERR_INVALID_STRIDE, "out_stride"),
    BAD(x_bytes_overflow, MOES_ERR_OVERFLOW, "x"),
    BAD(out_bytes_overflow, MOES_ERR_OVERFLOW, "out"),
    BAD(x_null, MOES_ERR_NULL_POINTER, "args->x"),
    BAD(out_null, MOES_ERR_NULL_POINTER, "args->out"),
    BAD(x_null_hidden_unset, MOES_ERR_NULL_POINTER,
        "args->x is NULL, but out is given"),
    BAD(out_index_null, MOES_ERR_NULL_POINTER, "out_index"),
    BAD(m_indices_null, MOES_ERR_NULL_POINTER, "m_indices"),
    BAD(expert_end_null, MOES_ERR_NULL_POINTER, "expert_end"),
    BAD(masked_m_null, MOES_ERR_NULL_POINTER, "masked_m"),
    BAD(masked_m_not_masked, MOES_ERR_INVALID_ARGUMENT, "masked_m"),
    BAD(n_dropped_not_masked, MOES_ERR_INVALID_ARGUMENT, "n_dropped"),
    BAD(scale_block_zero, MOES_ERR_INVALID_SIZE, "scale_block"),
    BAD(x_scales_stride_small, MOES_ERR_INVALID_STRIDE, "x_scales_stride"),
    BAD(scales_format_none, MOES_ERR_INVALID_ARGUMENT, "out_scales_format"),
    BAD(scales_format_unknown, MOES_ERR_INVALID_ARGUMENT,
        "out_scales_format"),
    BAD(out_scales_null, MOES_ERR_NULL_POINTER, "out_scales"),
    BAD(out_scales_without_x_scales, MOES_ERR_INVALID_ARGUMENT,
        "out_scales"),
    BAD(scale_format_without_x_scales, MOES_ERR_INVALID_ARGUMENT,
        "out_scales_format"),
    BAD(scale_rows_overlap, MOES_ERR_INVALID_STRIDE, "overlap"),
    BAD(scale_stride_negative, MOES_ERR_INVALID_STRIDE, "out_scales"),
    BAD(scale_bytes_overflow, MOES_ERR_OVERFLOW, "out_scales"),
    BAD(scale_row_stride_alone_zero, MOES_ERR_INVALID_STRIDE,
        "out_scales_row_stride"),
    BAD(scale_col_stride_alone_zero, MOES_ERR_INVALID_STRIDE,
        "out_scales_col_stride"),
    BAD(index_dtype_float, MOES_ERR_INVALID_DTYPE, "index_dtype"),
    BAD(out_index_stride_small, MOES_ERR_INVALID_STRIDE, "out_index_stride"),
    BAD(int32_rows_overflow, MOES_ERR_OVERFLOW, "INT32"),
    BAD(int32_masked_rows_overflow, MOES_ERR_OVERFLOW, "INT32"),
    BAD(int32_expert_ids_overflow, MOES_ERR_OVERFLOW, "m_indices"),
    BAD(index_only_zero_padding, MOES_ERR_INVALID_FLAGS, "ZERO_PADDING"),
    BAD(index_only_bad_id, MOES_ERR_INVALID_ID,
        "ids[3][1] = 300 is outside [-1, 4)"),
    BAD(index_only_bad_map, MOES_ERR_INVALID_MAP,
        "expert_map[2] = 4 is outside [-1, 4)"),
    BAD(index_only_capacity_small, MOES_ERR_CAPACITY,
        "capacity = 9 is smaller than the 10 rows this routing needs"),
    BAD(rows_scales_only, MOES_ERR_NULL_POINTER, "args->x is NULL"),
    BAD(row_source_pad_int32, MOES_ERR_OVERFLOW, "row_source_pad"),
    BAD(row_source_over_out_index, MOES_ERR_OVERLAP, "row_source"),
    BAD(row_source_over_ids, MOES_ERR_OVERLAP, "row_source"),
    BAD(row_source_misaligned, MOES_ERR_MISALIGNED, "row_source"),
};

ParameterizedTestParameters(bad_input, scatter)
{
    return cr_make_param_array(size_t, indices(COUNT_OF(scatter_cases)),
                               COUNT_OF(scatter_cases));
}

ParameterizedTest(size_t *i, bad_input, scatter)
{
    const bad_case *bc = &scatter_cases[*i];
    fixture f;
    int st;
    setup(&f);
    bc->breaks(&f);
    st = settle(&f, moes_scatter(f.ctx,
                                 bc->breaks == routing_null ? NULL : &f.r,
                                 bc->breaks == args_null ? NULL : &f.s));
    expect_message(&f, bc, st);
    for (int b = 0; b < 9; b++)
        cr_expect(dev_is_canary(f.ctx, f.outs[b], f.out_bytes[b]),
                  "%s: output %d changed", bc->name, b);
    teardown(&f);
}

/* ---- gather ------------------------------------------------------- */

static void g_args_null(fixture *f) { (void)f; }
static void g_struct_size(fixture *f) { f->g.struct_size = 0; }
static void g_flags(fixture *f) { f->g.flags = 0x4; }
static void g_tokens_negative(fixture *f) { f->g.n_tokens = -4; }
static void g_top_k_zero(fixture *f) { f->g.top_k = 0; }
static void g_hidden_zero(fixture *f) { f->g.hidden = 0; }
static void g_y_rows_negative(fixture *f) { f->g.y_rows = -1; }
static void g_y_dtype_fp8(fixture *f) { f->g.y_dtype = MOES_DTYPE_FP8_E4M3; }
static void g_out_dtype_int(fixture *f) { f->g.out_dtype = MOES_DTYPE_INT32; }
static void g_index_dtype(fixture *f) { f->g.index_dtype = MOES_DTYPE_FP32; }
static void g_y_stride(fixture *f) { f->g.y_stride = 2; }
static void g_index_stride(fixture *f) { f->g.out_index_stride = 1; }
static void g_weights_stride(fixture *f) { f->g.weights_stride = 1; }
static void g_out_stride(fixture *f) { f->g.out_stride = -3; }
static void g_y_overflow(fixture *f) { f->g.y_stride = INT64_MAX / 32; }
static void g_out_overflow(fixture *f) { f->g.out_stride = INT64_MAX / 4; }
static void g_y_null(fixture *f) { f->g.y = NULL; }
static void g_index_null(fixture *f) { f->g.out_index = NULL; }
static void g_out_null(fixture *f) { f->g.out = NULL; }
static void g_index_too_big(fixture *f) { set_gather_index(f, 1, 1, CAP); }
static void g_index_below(fixture *f) { set_gather_index(f, 3, 0, -2); }
static void g_index_min(fixture *f) { set_gather_index(f, 0, 1, INT32_MIN); }
static void g_index_rows_shrunk(fixture *f) { f->g.y_rows = 7; }
static void g_index_accumulate(fixture *f)
{
    f->g.flags = MOES_GATHER_ACCUMULATE;
    set_gather_index(f, 2, 0, 1000);
}

static const bad_case gather_cases[] = {
    BAD(g_args_null, MOES_ERR_NULL_POINTER, "args"),
    BAD(g_struct_size, MOES_ERR_INVALID_ARGUMENT, "struct_size"),
    BAD(g_flags, MOES_ERR_INVALID_FLAGS, "flags"),
    BAD(g_tokens_negative, MOES_ERR_INVALID_SIZE, "n_tokens"),
    BAD(g_top_k_zero, MOES_ERR_INVALID_SIZE, "top_k"),
    BAD(g_hidden_zero, MOES_ERR_INVALID_SIZE, "hidden"),
    BAD(g_y_rows_negative, MOES_ERR_INVALID_SIZE, "y_rows"),
    BAD(g_y_dtype_fp8, MOES_ERR_INVALID_DTYPE, "y_dtype"),
    BAD(g_out_dtype_int, MOES_ERR_INVALID_DTYPE, "out_dtype"),
    BAD(g_index_dtype, MOES_ERR_INVALID_DTYPE, "index_dtype"),
    BAD(g_y_stride, MOES_ERR_INVALID_STRIDE, "y_stride"),
    BAD(g_index_stride, MOES_ERR_INVALID_STRIDE, "out_index_stride"),
    BAD(g_weights_stride, MOES_ERR_INVALID_STRIDE, "weights_stride"),
    BAD(g_out_stride, MOES_ERR_INVALID_STRIDE, "out_stride"),
    BAD(g_y_overflow, MOES_ERR_OVERFLOW, "args->y"),
    BAD(g_out_overflow, MOES_ERR_OVERFLOW, "args->out"),
    BAD(g_y_null, MOES_ERR_NULL_POINTER, "args->y"),
    BAD(g_index_null, MOES_ERR_NULL_POINTER, "out_index"),
    BAD(g_out_null, MOES_ERR_NULL_POINTER, "args->out"),
    BAD(g_index_too_big, MOES_ERR_INVALID_OUT_INDEX,
        "out_index[1][1] = 64 is outside [-1, 64)"),
    BAD(g_index_below, MOES_ERR_INVALID_OUT_INDEX,
        "out_index[3][0] = -2 is outside [-1, 64)"),
    BAD(g_index_min, MOES_ERR_INVALID_OUT_INDEX,
        "out_index[0][1] = -2147483648 is outside [-1, 64)"),
    BAD(g_index_rows_shrunk, MOES_ERR_INVALID_OUT_INDEX,
        "out_index[1][0] = 63 is outside [-1, 7)"),
    BAD(g_index_accumulate, MOES_ERR_INVALID_OUT_INDEX,
        "out_index[2][0] = 1000 is outside [-1, 64)"),
};

ParameterizedTestParameters(bad_input, gather)
{
    return cr_make_param_array(size_t, indices(COUNT_OF(gather_cases)),
                               COUNT_OF(gather_cases));
}

ParameterizedTest(size_t *i, bad_input, gather)
{
    const bad_case *bc = &gather_cases[*i];
    fixture f;
    int st;
    setup(&f);
    bc->breaks(&f);
    st = settle(&f, moes_gather(f.ctx, bc->breaks == g_args_null ? NULL
                                                                 : &f.g));
    expect_message(&f, bc, st);
    cr_expect(dev_is_canary(f.ctx, f.gout, N * H * 4), "%s: out changed",
              bc->name);
    teardown(&f);
}

/* The library's entry points with no context at all. */
Test(bad_input, null_context)
{
    moes_routing r;
    moes_scatter_args s;
    moes_gather_args g;
    int32_t counts[1];
    moes_routing_init(&r);
    moes_scatter_args_init(&s);
    moes_gather_args_init(&g);
    cr_expect_eq(moes_count(NULL, &r, counts, MOES_DTYPE_INT32),
                 MOES_ERR_NULL_POINTER);
    cr_expect_eq(moes_scatter(NULL, &r, &s), MOES_ERR_NULL_POINTER);
    cr_expect_eq(moes_gather(NULL, &g), MOES_ERR_NULL_POINTER);
    cr_expect_eq(moes_synchronize(NULL), MOES_ERR_NULL_POINTER);
    cr_expect_eq(moes_get_error(NULL), MOES_ERR_NULL_POINTER);
    cr_expect_eq(moes_set_stream(NULL, NULL), MOES_ERR_NULL_POINTER);
    cr_expect_eq(moes_reserve_workspace(NULL, 1, 1, 1),
                 MOES_ERR_NULL_POINTER);
}
