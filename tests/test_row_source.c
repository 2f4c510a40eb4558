/* SPDX-License-Identifier: MIT */
/*
 * test_row_source.c - the index outputs for GEMMs that read the token
 * rows in place: row_source (row -> t*K + k, a pad value elsewhere), the
 * index-only scatter (no x, no out), and expert_end at the end of the
 * real rows (MOES_SCATTER_UNPADDED_END). Every expected value is written
 * out by hand.
 *
 * The routing: N = 3 tokens, K = 2, E = 3 experts,
 *     ids = {{0, 2}, {2, 2}, {-1, 0}}
 * so expert 0 gets choices 0 = (0,0) and 5 = (2,1), expert 1 none, and
 * expert 2 gets 1 = (0,1), 2 = (1,0) and 3 = (1,1).
 */
#include <criterion/criterion.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "helpers.h"

#define N 3
#define K 2
#define E 3
#define H 2

static const int32_t ids3[N * K] = {0, 2, 2, 2, -1, 0};
static const float x3[N * H] = {1, -1, 2, -2, 3, -3};

enum { OUT_INDEX, COUNTS, START, END, M_INDICES, MASKED_M, ROW_SOURCE,
       INDEX_OUTPUTS };

typedef struct run {
    moes_context *ctx;
    void *ids, *x, *out;
    void *index[INDEX_OUTPUTS]; /* int32 each                           */
    int64_t index_len[INDEX_OUTPUTS];
    int64_t rows;
} run;

/* A scatter of ids3 with every index output and row_source; x and out
 * only when with_rows. */
static int run_scatter(run *s, int layout, int64_t alignment,
                       int64_t capacity, unsigned flags, int64_t pad,
                       int with_rows)
{
    moes_routing r;
    moes_scatter_args a;
    int st;
    memset(s, 0, sizeof *s);
    s->ctx = test_open(0);
    s->rows = layout == MOES_LAYOUT_MASKED ? capacity * E : capacity;
    s->ids = dev_from(s->ctx, ids3, sizeof ids3);
    if (with_rows) {
        s->x = dev_from(s->ctx, x3, sizeof x3);
        s->out = dev_new(s->ctx, s->rows * H * 4);
    }
    s->index_len[OUT_INDEX] = N * K;
    s->index_len[COUNTS] = s->index_len[START] = s->index_len[END] = E;
    s->index_len[M_INDICES] = s->index_len[ROW_SOURCE] = s->rows;
    s->index_len[MASKED_M] = layout == MOES_LAYOUT_MASKED ? E : 0;
    for (int i = 0; i < INDEX_OUTPUTS; i++)
        if (s->index_len[i] > 0)
            s->index[i] = dev_new(s->ctx, s->index_len[i] * 4);
    moes_routing_init(&r);
    r.n_tokens = N;
    r.top_k = K;
    r.n_experts = E;
    r.ids = s->ids;
    moes_scatter_args_init(&a);
    a.layout = layout;
    a.alignment = alignment;
    a.capacity = capacity;
    a.flags = flags;
    a.x = s->x;
    a.x_dtype = MOES_DTYPE_FP32;
    a.hidden = with_rows ? H : 0; /* not read when index-only */
    a.out = s->out;
    a.out_index = s->index[OUT_INDEX];
    a.counts = s->index[COUNTS];
    a.expert_start = s->index[START];
    a.expert_end = s->index[END];
    a.m_indices = s->index[M_INDICES];
    a.masked_m = s->index[MASKED_M];
    a.row_source = s->index[ROW_SOURCE];
    a.row_source_pad = pad;
    st = moes_scatter(s->ctx, &r, &a);
    if (st == MOES_OK)
        st = moes_synchronize(s->ctx);
    return st;
}

static void expect_i32(run *s, int which, const int32_t *want,
                       const char *name)
{
    const int64_t n = s->index_len[which];
    int32_t *got = dev_get(s->ctx, s->index[which], n * 4);
    for (int64_t i = 0; i < n; i++)
        cr_expect_eq(got[i], want[i], "%s[%lld] = %d, expected %d", name,
                     (long long)i, got[i], want[i]);
    free(got);
}

static void finish(run *s)
{
    dev_free(s->ctx, s->ids);
    dev_free(s->ctx, s->x);
    dev_free(s->ctx, s->out);
    for (int i = 0; i < INDEX_OUTPUTS; i++)
        dev_free(s->ctx, s->index[i]);
    test_close(s->ctx);
}

#define P (-1)

Test(row_source, contiguous)
{
    run s;
    /* start = {0, 4, 4}, M = 8, capacity 10: rows 8, 9 are the tail. */
    const int32_t row_source[] = {0, 5, P, P, 1, 2, 3, P, P, P};
    cr_assert_eq(run_scatter(&s, MOES_LAYOUT_CONTIGUOUS, 4, 10, 0, -1, 1),
                 MOES_OK, "%s", moes_last_error(s.ctx));
    expect_i32(&s, ROW_SOURCE, row_source, "row_source");
    expect_i32(&s, END, (int32_t[]){4, 4, 8}, "expert_end");
    finish(&s);
}

/* vLLM's sorted_token_ids: the pad is N*K, and the first row of every
 * aligned block names its expert. */
Test(row_source, vllm_pad_and_block_experts)
{
    run s;
    const int32_t row_source[] = {0, 5, 6, 6, 1, 2, 3, 6, 6, 6, 6, 6};
    const int32_t m_indices[] = {0, 0, 0, 0, 2, 2, 2, 2, -1, -1, -1, -1};
    cr_assert_eq(run_scatter(&s, MOES_LAYOUT_CONTIGUOUS, 4, 12,
                             MOES_SCATTER_LABEL_PADDING, N * K, 0),
                 MOES_OK, "%s", moes_last_error(s.ctx));
    expect_i32(&s, ROW_SOURCE, row_source, "row_source");
    expect_i32(&s, M_INDICES, m_indices, "m_indices");
    finish(&s);
}

Test(row_source, grouped_unpadded_end)
{
    run s;
    /* A = 3: start = {0, 3, 3}; the real rows end at {2, 3, 6}. */
    const int32_t row_source[] = {0, 5, -7, 1, 2, 3, -7};
    cr_assert_eq(run_scatter(&s, MOES_LAYOUT_GROUPED, 3, 7,
                             MOES_SCATTER_UNPADDED_END, -7, 1),
                 MOES_OK, "%s", moes_last_error(s.ctx));
    expect_i32(&s, ROW_SOURCE, row_source, "row_source");
    expect_i32(&s, START, (int32_t[]){0, 3, 3}, "expert_start");
    expect_i32(&s, END, (int32_t[]){2, 3, 6}, "expert_end");
    expect_i32(&s, COUNTS, (int32_t[]){2, 0, 3}, "counts");
    finish(&s);
}

Test(row_source, masked_drops_and_unpadded_end)
{
    run s;
    /* C = 2: expert 2 keeps choices 1 and 2, drops 3; expert 1's block
     * is padding. */
    const int32_t row_source[] = {0, 5, P, P, 1, 2};
    cr_assert_eq(run_scatter(&s, MOES_LAYOUT_MASKED, 1, 2,
                             MOES_SCATTER_UNPADDED_END, -1, 1),
                 MOES_OK, "%s", moes_last_error(s.ctx));
    expect_i32(&s, ROW_SOURCE, row_source, "row_source");
    expect_i32(&s, MASKED_M, (int32_t[]){2, 0, 2}, "masked_m");
    expect_i32(&s, END, (int32_t[]){2, 2, 6}, "expert_end");
    finish(&s);
}

/* Index-only gives every index output of the scatter with rows. */
Test(row_source, index_only_matches_rows)
{
    static const struct { int layout; int64_t a, cap; unsigned flags; }
        cases[] = {
            {MOES_LAYOUT_CONTIGUOUS, 4, 10, 0},
            {MOES_LAYOUT_CONTIGUOUS, 1, 5, MOES_SCATTER_LABEL_PADDING},
            {MOES_LAYOUT_GROUPED, 3, 9, MOES_SCATTER_UNPADDED_END},
            {MOES_LAYOUT_MASKED, 1, 2, MOES_SCATTER_LABEL_PADDING},
        };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        run rows, bare;
        cr_assert_eq(run_scatter(&rows, cases[c].layout, cases[c].a,
                                 cases[c].cap, cases[c].flags, 9, 1),
                     MOES_OK, "%s", moes_last_error(rows.ctx));
        cr_assert_eq(run_scatter(&bare, cases[c].layout, cases[c].a,
                                 cases[c].cap, cases[c].flags, 9, 0),
                     MOES_OK, "%s", moes_last_error(bare.ctx));
        for (int i = 0; i < INDEX_OUTPUTS; i++) {
            int64_t n = rows.index_len[i] * 4;
            unsigned char *want, *got;
            if (n == 0)
                continue;
            want = dev_get(rows.ctx, rows.index[i], n);
            got = dev_get(bare.ctx, bare.index[i], n);
            cr_expect_arr_eq(got, want, (size_t)n, "case %zu output %d",
                             c, i);
            free(want);
            free(got);
        }
        finish(&rows);
        finish(&bare);
    }
}

/* A bad id in an index-only call: an error, nothing written. */
Test(row_source, index_only_bad_id_writes_nothing)
{
    static const int32_t bad[N * K] = {0, 2, 2, 3, -1, 0};
    run s;
    moes_routing r;
    moes_scatter_args a;
    int st;
    memset(&s, 0, sizeof s);
    s.ctx = test_open(0);
    s.ids = dev_from(s.ctx, bad, sizeof bad);
    s.index[OUT_INDEX] = dev_new(s.ctx, N * K * 4);
    s.index[ROW_SOURCE] = dev_new(s.ctx, 8 * 4);
    s.index[M_INDICES] = dev_new(s.ctx, 8 * 4);
    moes_routing_init(&r);
    r.n_tokens = N;
    r.top_k = K;
    r.n_experts = E;
    r.ids = s.ids;
    moes_scatter_args_init(&a);
    a.alignment = 2;
    a.capacity = 8;
    a.out_index = s.index[OUT_INDEX];
    a.m_indices = s.index[M_INDICES];
    a.row_source = s.index[ROW_SOURCE];
    st = moes_scatter(s.ctx, &r, &a);
    if (st == MOES_OK)
        st = moes_synchronize(s.ctx);
    cr_expect_eq(st, MOES_ERR_INVALID_ID);
    cr_expect_str_eq(moes_last_error(s.ctx),
                     "ids[1][1] = 3 is outside [-1, 3)");
    cr_expect(dev_is_canary(s.ctx, s.index[OUT_INDEX], N * K * 4));
    cr_expect(dev_is_canary(s.ctx, s.index[ROW_SOURCE], 8 * 4));
    cr_expect(dev_is_canary(s.ctx, s.index[M_INDICES], 8 * 4));
    finish(&s);
}

/* A caller compiled against 0.2 passes the smaller struct: the fields
 * after n_dropped are not read, whatever lies there. */
Test(row_source, older_struct_ignores_the_new_fields)
{
    union {
        moes_scatter_args a;
        unsigned char bytes[sizeof(moes_scatter_args)];
    } u;
    const size_t old_size = offsetof(moes_scatter_args, row_source);
    moes_context *ctx = test_open(0);
    moes_routing r;
    void *ids = dev_from(ctx, ids3, sizeof ids3);
    void *oi = dev_new(ctx, N * K * 4), *mi = dev_new(ctx, 8 * 4);
    moes_routing_init(&r);
    r.n_tokens = N;
    r.top_k = K;
    r.n_experts = E;
    r.ids = ids;
    moes_scatter_args_init(&u.a);
    memset(u.bytes + old_size, 0x5A, sizeof u.bytes - old_size);
    u.a.struct_size = old_size;
    u.a.alignment = 2;
    u.a.capacity = 8;
    u.a.out_index = oi;
    u.a.m_indices = mi;
    cr_assert_eq(moes_scatter(ctx, &r, &u.a), MOES_OK, "%s",
                 moes_last_error(ctx));
    cr_assert_eq(moes_synchronize(ctx), MOES_OK);
    {
        int32_t *got = dev_get(ctx, mi, 8 * 4);
        const int32_t want[] = {0, 0, 2, 2, 2, -1, -1, -1};
        for (int i = 0; i < 8; i++)
            cr_expect_eq(got[i], want[i], "m_indices[%d]", i);
        free(got);
    }
    dev_free(ctx, ids);
    dev_free(ctx, oi);
    dev_free(ctx, mi);
    test_close(ctx);
}

/* The init entry point of 0.1 and 0.2 (what their programs call) fills
 * the struct of those versions and not one byte past it. */
Test(row_source, old_init_writes_the_old_struct_only)
{
    union {
        moes_scatter_args a;
        unsigned char bytes[sizeof(moes_scatter_args)];
    } u;
    const size_t old_size = offsetof(moes_scatter_args, row_source);
    memset(u.bytes, 0x5A, sizeof u.bytes);
    cr_assert_eq((moes_scatter_args_init)(&u.a), MOES_OK);
    cr_expect_eq(u.a.struct_size, old_size);
    cr_expect_eq(u.a.alignment, 128);
    cr_expect_eq(u.a.layout, MOES_LAYOUT_CONTIGUOUS);
    for (size_t i = old_size; i < sizeof u.bytes; i++)
        cr_expect_eq(u.bytes[i], 0x5A, "byte %zu past the 0.2 struct", i);
    cr_expect_eq((moes_scatter_args_init)(NULL), MOES_ERR_NULL_POINTER);
}

/* Through the header's macro: this version's struct, whole. */
Test(row_source, sized_init)
{
    moes_scatter_args a, b;
    memset(&a, 0x5A, sizeof a);
    cr_assert_eq(moes_scatter_args_init(&a), MOES_OK);
    cr_expect_eq(a.struct_size, sizeof a);
    cr_expect_eq(a.row_source, NULL);
    cr_expect_eq(a.row_source_pad, -1);
    /* A size no version had: refused, nothing written. */
    memset(&b, 0x5A, sizeof b);
    cr_expect_eq(moes_scatter_args_init_sized(&b, sizeof b + 8),
                 MOES_ERR_INVALID_ARGUMENT);
    cr_expect_eq(moes_scatter_args_init_sized(&b, 7),
                 MOES_ERR_INVALID_ARGUMENT);
    cr_expect_eq(b.alignment, (int64_t)0x5A5A5A5A5A5A5A5All);
    cr_expect_eq(moes_scatter_args_init_sized(NULL, sizeof b),
                 MOES_ERR_NULL_POINTER);
}

/* An index-only call's capacity is bounded by no buffer: with nothing
 * written per row (no m_indices, no row_source), 2^40 rows per expert
 * must cost what the choices cost, on every layout that allows it. */
Test(row_source, index_only_huge_capacity_costs_nothing)
{
    test_deadline(60);
    static const int layouts[] = {MOES_LAYOUT_GROUPED, MOES_LAYOUT_MASKED};
    for (size_t l = 0; l < sizeof layouts / sizeof layouts[0]; l++) {
        const int masked = layouts[l] == MOES_LAYOUT_MASKED;
        moes_context *ctx = test_open(0);
        void *ids = dev_from(ctx, ids3, sizeof ids3);
        void *oi = dev_new(ctx, N * K * 8), *end = dev_new(ctx, E * 8);
        void *mm = dev_new(ctx, E * 8);
        moes_routing r;
        moes_scatter_args a;
        int64_t *got;
        moes_routing_init(&r);
        r.n_tokens = N;
        r.top_k = K;
        r.n_experts = E;
        r.ids = ids;
        moes_scatter_args_init(&a);
        a.layout = layouts[l];
        a.alignment = 2;
        a.capacity = (int64_t)1 << 40;
        a.index_dtype = MOES_DTYPE_INT64;
        a.flags = MOES_SCATTER_UNPADDED_END;
        a.out_index = oi;
        a.expert_end = end;
        a.masked_m = masked ? mm : NULL;
        cr_assert_eq(moes_scatter(ctx, &r, &a), MOES_OK, "%s",
                     moes_last_error(ctx));
        cr_assert_eq(moes_synchronize(ctx), MOES_OK, "%s",
                     moes_last_error(ctx));
        got = dev_get(ctx, end, E * 8);
        /* The real rows' ends: expert 0 has 2, expert 1 none, expert 2
         * has 3 (grouped: from row 2, as expert 1 is empty; masked: from
         * e * 2^40). */
        if (masked) {
            cr_expect_eq(got[0], 2);
            cr_expect_eq(got[1], ((int64_t)1 << 40));
            cr_expect_eq(got[2], ((int64_t)2 << 40) + 3);
        } else {
            cr_expect_eq(got[0], 2);
            cr_expect_eq(got[1], 2);
            cr_expect_eq(got[2], 2 + 3);
        }
        free(got);
        dev_free(ctx, ids);
        dev_free(ctx, oi);
        dev_free(ctx, end);
        dev_free(ctx, mm);
        test_close(ctx);
    }
}
