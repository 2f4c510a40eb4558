/* SPDX-License-Identifier: MIT */
/*
 * test_scatter_literal.c - small scatters whose every output is written
 * out by hand in the test, for each layout, with padding labels, zero
 * padding, masked drops, an expert map, and UE8M0 packing.
 *
 * The routing used by most tests: N = 3 tokens, K = 2, E = 3 experts,
 *     ids = {{0, 2}, {2, 2}, {-1, 0}}
 * so expert 0 gets (0,0) and (2,1), expert 1 nothing, expert 2 gets
 * (0,1), (1,0) and (1,1) (a duplicate inside token 1's top-k).
 * Token t's row is x[t] = {t + 1, -(t + 1)} (fp32, H = 2).
 */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "helpers.h"

#define N 3
#define K 2
#define E 3
#define H 2

static const int32_t ids3[N * K] = {0, 2, 2, 2, -1, 0};
static const float x3[N * H] = {1, -1, 2, -2, 3, -3};

/* Canary as an int32 / float, for expected arrays. */
#define CI ((int32_t)0xA5A5A5A5u)

typedef struct scatter_run {
    moes_context *ctx;
    void *ids, *x, *out, *out_index, *counts, *start, *end, *m_indices,
        *masked_m, *x_scales, *out_scales;
    int64_t *n_dropped;
    int64_t rows;
} scatter_run;

/* Runs a scatter of ids3/x3 with the given layout, alignment, capacity and
 * flags, every output present; returns the status. */
static int run_scatter(scatter_run *s, int layout, int64_t alignment,
                       int64_t capacity, unsigned flags)
{
    moes_routing r;
    moes_scatter_args a;
    int st;
    memset(s, 0, sizeof *s);
    s->ctx = test_open(0);
    s->rows = layout == MOES_LAYOUT_MASKED ? capacity * E : capacity;
    s->ids = dev_from(s->ctx, ids3, sizeof ids3);
    s->x = dev_from(s->ctx, x3, sizeof x3);
    s->out = dev_new(s->ctx, s->rows * H * 4);
    s->out_index = dev_new(s->ctx, N * K * 4);
    s->counts = dev_new(s->ctx, E * 4);
    s->start = dev_new(s->ctx, E * 4);
    s->end = dev_new(s->ctx, E * 4);
    s->m_indices = dev_new(s->ctx, s->rows * 4);
    s->masked_m = layout == MOES_LAYOUT_MASKED ? dev_new(s->ctx, E * 4) : NULL;
    s->n_dropped = layout == MOES_LAYOUT_MASKED ? dev_new(s->ctx, 8) : NULL;
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
    a.hidden = H;
    a.out = s->out;
    a.out_index = s->out_index;
    a.counts = s->counts;
    a.expert_start = s->start;
    a.expert_end = s->end;
    a.m_indices = s->m_indices;
    a.masked_m = s->masked_m;
    a.n_dropped = s->n_dropped;
    st = moes_scatter(s->ctx, &r, &a);
    if (st == MOES_OK)
        st = moes_synchronize(s->ctx);
    return st;
}

static void expect_i32(scatter_run *s, const void *dev, const int32_t *want,
                       int64_t n, const char *name)
{
    int32_t *got = dev_get(s->ctx, dev, n * 4);
    for (int64_t i = 0; i < n; i++)
        cr_expect_eq(got[i], want[i], "%s[%lld] = %d, expected %d", name,
                     (long long)i, got[i], want[i]);
    free(got);
}

/* Row r of out: x[t] when t >= 0, the canary (t == -1) or zeros (-2). */
static void expect_rows(scatter_run *s, const int *token_of_row)
{
    unsigned char *got = dev_get(s->ctx, s->out, s->rows * H * 4);
    for (int64_t r = 0; r < s->rows; r++) {
        unsigned char want[H * 4];
        if (token_of_row[r] >= 0)
            memcpy(want, &x3[token_of_row[r] * H], sizeof want);
        else
            memset(want, token_of_row[r] == -1 ? CANARY : 0, sizeof want);
        cr_expect_arr_eq(got + r * H * 4, want, sizeof want,
                         "out row %lld (token %d)", (long long)r,
                         token_of_row[r]);
    }
    free(got);
}

static void finish(scatter_run *s)
{
    void *bufs[] = {s->ids, s->x, s->out, s->out_index, s->counts,
                    s->start, s->end, s->m_indices, s->masked_m,
                    s->n_dropped, s->x_scales, s->out_scales};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
        dev_free(s->ctx, bufs[i]);
    test_close(s->ctx);
}

Test(scatter_literal, contiguous)
{
    scatter_run s;
    /* start = {0, 4, 4}, M = 8, capacity 10: rows 8, 9 are the tail. */
    const int32_t out_index[] = {0, 4, 5, 6, -1, 1};
    const int32_t m_indices[] = {0, 0, -1, -1, 2, 2, 2, -1, -1, -1};
    const int rows[] = {0, 2, -1, -1, 0, 1, 1, -1, -1, -1};
    cr_assert_eq(run_scatter(&s, MOES_LAYOUT_CONTIGUOUS, 4, 10, 0), MOES_OK,
                 "%s", moes_last_error(s.ctx));
    expect_i32(&s, s.out_index, out_index, N * K, "out_index");
    expect_i32(&s, s.m_indices, m_indices, 10, "m_indices");
    expect_i32(&s, s.counts, (int32_t[]){2, 0, 3}, E, "counts");
    expect_i32(&s, s.start, (int32_t[]){0, 4, 4}, E, "expert_start");
    expect_i32(&s, s.end, (int32_t[]){4, 4, 8}, E, "expert_end");
    expect_rows(&s, rows);
    finish(&s);
}

Test(scatter_literal, contiguous_labels_and_zero_padding)
{
    scatter_run s;
    const int32_t m_indices[] = {0, 0, 0, 0, 2, 2, 2, 2, -1, -1};
    const int rows[] = {0, 2, -2, -2, 0, 1, 1, -2, -2, -2};
    cr_assert_eq(run_scatter(&s, MOES_LAYOUT_CONTIGUOUS, 4, 10,
                             MOES_SCATTER_LABEL_PADDING |
                                 MOES_SCATTER_ZERO_PADDING),
                 MOES_OK, "%s", moes_last_error(s.ctx));
    expect_i32(&s, s.m_indices, m_indices, 10, "m_indices");
    expect_rows(&s, rows);
    finish(&s);
}

Test(scatter_literal, contiguous_alignment_one_exact_capacity)
{
    scatter_run s;
    const int32_t out_index[] = {0, 2, 3, 4, -1, 1};
    const int32_t m_indices[] = {0, 0, 2, 2, 2};
    const int rows[] = {0, 2, 0, 1, 1};
    cr_assert_eq(run_scatter(&s, MOES_LAYOUT_CONTIGUOUS, 1, 5, 0), MOES_OK,
                 "%s", moes_last_error(s.ctx));
    expect_i32(&s, s.out_index, out_index, N * K, "out_index");
    expect_i32(&s, s.m_indices, m_indices, 5, "m_indices");
    expect_i32(&s, s.start, (int32_t[]){0, 2, 2}, E, "expert_start");
    expect_i32(&s, s.end, (int32_t[]){2, 2, 5}, E, "expert_end");
    expect_rows(&s, rows);
    finish(&s);
}

Test(scatter_literal, grouped_odd_alignment)
{
    scatter_run s;
    /* A = 3: start = {0, 3, 3}, end = {3, 3, 6}, capacity 7. */
    const int32_t out_index[] = {0, 3, 4, 5, -1, 1};
    const int32_t m_indices[] = {0, 0, -1, 2, 2, 2, -1};
    const int rows[] = {0, 2, -1, 0, 1, 1, -1};
    cr_assert_eq(run_scatter(&s, MOES_LAYOUT_GROUPED, 3, 7, 0), MOES_OK,
                 "%s", moes_last_error(s.ctx));
    expect_i32(&s, s.out_index, out_index, N * K, "out_index");
    expect_i32(&s, s.start, (int32_t[]){0, 3, 3}, E, "expert_start");
    expect_i32(&s, s.end, (int32_t[]){3, 3, 6}, E, "expert_end");
    expect_i32(&s, s.m_indices, m_indices, 7, "m_indices");
    expect_rows(&s, rows);
    finish(&s);
}

Test(scatter_literal, masked_drops)
{
    scatter_run s;
    /* C = 2: expert 2 keeps (0,1) and (1,0); (1,1) is dropped. */
    const int32_t out_index[] = {0, 4, 5, -1, -1, 1};
    const int32_t m_indices[] = {0, 0, -1, -1, 2, 2};
    const int rows[] = {0, 2, -1, -1, 0, 1};
    int64_t *dropped;
    cr_assert_eq(run_scatter(&s, MOES_LAYOUT_MASKED, 128, 2, 0), MOES_OK,
                 "%s", moes_last_error(s.ctx));
    expect_i32(&s, s.out_index, out_index, N * K, "out_index");
    expect_i32(&s, s.masked_m, (int32_t[]){2, 0, 2}, E, "masked_m");
    expect_i32(&s, s.counts, (int32_t[]){2, 0, 3}, E, "counts");
    expect_i32(&s, s.start, (int32_t[]){0, 2, 4}, E, "expert_start");
    expect_i32(&s, s.end, (int32_t[]){2, 4, 6}, E, "expert_end");
    expect_i32(&s, s.m_indices, m_indices, 6, "m_indices");
    expect_rows(&s, rows);
    dropped = dev_get(s.ctx, s.n_dropped, 8);
    cr_expect_eq(*dropped, 1);
    free(dropped);
    finish(&s);
}

Test(scatter_literal, masked_labels_and_zero_padding)
{
    scatter_run s;
    /* C = 3: expert 1's block is all padding, labelled 1 and zeroed. */
    const int32_t m_indices[] = {0, 0, 0, 1, 1, 1, 2, 2, 2};
    const int rows[] = {0, 2, -2, -2, -2, -2, 0, 1, 1};
    int64_t *dropped;
    cr_assert_eq(run_scatter(&s, MOES_LAYOUT_MASKED, 1, 3,
                             MOES_SCATTER_LABEL_PADDING |
                                 MOES_SCATTER_ZERO_PADDING),
                 MOES_OK, "%s", moes_last_error(s.ctx));
    expect_i32(&s, s.masked_m, (int32_t[]){2, 0, 3}, E, "masked_m");
    expect_i32(&s, s.m_indices, m_indices, 9, "m_indices");
    expect_rows(&s, rows);
    dropped = dev_get(s.ctx, s.n_dropped, 8);
    cr_expect_eq(*dropped, 0);
    free(dropped);
    finish(&s);
}

Test(scatter_literal, capacity_too_small_writes_nothing)
{
    scatter_run s;
    cr_assert_eq(run_scatter(&s, MOES_LAYOUT_CONTIGUOUS, 4, 7, 0),
                 MOES_ERR_CAPACITY);
    cr_expect_str_eq(moes_last_error(s.ctx),
                     "capacity = 7 is smaller than the 8 rows this routing "
                     "needs");
    cr_expect(dev_is_canary(s.ctx, s.out, 7 * H * 4));
    cr_expect(dev_is_canary(s.ctx, s.out_index, N * K * 4));
    cr_expect(dev_is_canary(s.ctx, s.m_indices, 7 * 4));
    cr_expect(dev_is_canary(s.ctx, s.counts, E * 4));
    finish(&s);
}

/* An expert map: E_global = 5 global experts, 2 here. int64 ids and
 * int64 index outputs. */
Test(scatter_literal, expert_map_int64)
{
    const int32_t map[5] = {-1, 1, 0, -1, 1};
    const int64_t ids[6] = {1, 2, 4, 3, 0, 2};
    /* local: t0 -> {1, 0}, t1 -> {1, -1}, t2 -> {-1, 0} */
    const int64_t want_index[6] = {2, 0, 3, -1, -1, 1};
    const int64_t want_m[4] = {0, 0, 1, 1};
    const uint16_t x[3] = {0x3F80, 0x4000, 0xC040}; /* bf16, H = 1 */
    const uint16_t want_out[4] = {0x3F80, 0xC040, 0x3F80, 0x4000};
    moes_context *ctx = test_open(0);
    void *d_map = dev_from(ctx, map, sizeof map);
    void *d_ids = dev_from(ctx, ids, sizeof ids);
    void *d_x = dev_from(ctx, x, sizeof x);
    void *d_out = dev_new(ctx, 8), *d_index = dev_new(ctx, 48);
    void *d_m = dev_new(ctx, 32), *d_counts = dev_new(ctx, 16);
    int64_t *h_index, *h_m, *h_counts;
    uint16_t *h_out;
    moes_routing r;
    moes_scatter_args a;
    moes_routing_init(&r);
    r.n_tokens = 3;
    r.top_k = 2;
    r.ids = d_ids;
    r.ids_dtype = MOES_DTYPE_INT64;
    r.expert_map = d_map;
    r.n_experts_global = 5;
    r.n_experts = 2;
    moes_scatter_args_init(&a);
    a.alignment = 1;
    a.capacity = 4;
    a.x = d_x;
    a.x_dtype = MOES_DTYPE_BF16;
    a.hidden = 1;
    a.out = d_out;
    a.index_dtype = MOES_DTYPE_INT64;
    a.out_index = d_index;
    a.m_indices = d_m;
    cr_assert_eq(moes_scatter(ctx, &r, &a), MOES_OK, "%s",
                 moes_last_error(ctx));
    cr_assert_eq(moes_synchronize(ctx), MOES_OK);
    cr_assert_eq(moes_count(ctx, &r, d_counts, MOES_DTYPE_INT64), MOES_OK);
    cr_assert_eq(moes_synchronize(ctx), MOES_OK);
    h_index = dev_get(ctx, d_index, 48);
    h_m = dev_get(ctx, d_m, 32);
    h_out = dev_get(ctx, d_out, 8);
    h_counts = dev_get(ctx, d_counts, 16);
    cr_expect_arr_eq(h_index, want_index, sizeof want_index);
    cr_expect_arr_eq(h_m, want_m, sizeof want_m);
    cr_expect_arr_eq(h_out, want_out, sizeof want_out);
    cr_expect_eq(h_counts[0], 2);
    cr_expect_eq(h_counts[1], 2);
    free(h_index);
    free(h_m);
    free(h_out);
    free(h_counts);
    dev_free(ctx, d_map);
    dev_free(ctx, d_ids);
    dev_free(ctx, d_x);
    dev_free(ctx, d_out);
    dev_free(ctx, d_index);
    dev_free(ctx, d_m);
    dev_free(ctx, d_counts);
    test_close(ctx);
}

/* Scales: H = 5, block 1 so S = 5; two tokens, both to expert 0, A = 1,
 * capacity 3 (one tail row). fp32 scales are copied bit for bit, any
 * value; UE8M0 packs 4 exponent bytes per word, low byte first, zero
 * bytes past S, of scales that are powers of two (the smallest normal
 * one, 2^-126, included). */
static void scales_case(int format, int mn_major, unsigned flags,
                        const uint32_t *want, int64_t n_words)
{
    const float any[2 * 5] = {1.0f, 2.0f, 0.5f, -8.0f, 1024.0f,
                              3.0f, 1e-40f, -0.75f, 1.5f, 65536.0f};
    const float powers_of_two[2 * 5] = {1.0f, 2.0f, 0.5f, 8.0f, 1024.0f,
                                        2.0f, 0x1p-126f, 0.5f, 1.0f,
                                        65536.0f};
    const float *xs = format == MOES_SCALES_UE8M0 ? powers_of_two : any;
    const int32_t ids[2] = {0, 0};
    const uint16_t x[2 * 5] = {0};
    const int64_t rows = 3;
    const int64_t cols = format == MOES_SCALES_UE8M0 ? 2 : 5;
    moes_context *ctx = test_open(0);
    void *d_ids = dev_from(ctx, ids, sizeof ids);
    void *d_x = dev_from(ctx, x, sizeof x);
    void *d_xs = dev_from(ctx, xs, sizeof any);
    void *d_out = dev_new(ctx, rows * 5 * 2), *d_index = dev_new(ctx, 8);
    void *d_m = dev_new(ctx, rows * 4);
    void *d_os = dev_new(ctx, rows * cols * 4);
    uint32_t *got;
    moes_routing r;
    moes_scatter_args a;
    moes_routing_init(&r);
    r.n_tokens = 2;
    r.top_k = 1;
    r.ids = d_ids;
    r.n_experts = 1;
    moes_scatter_args_init(&a);
    a.alignment = 1;
    a.capacity = rows;
    a.flags = flags;
    a.x = d_x;
    a.hidden = 5;
    a.out = d_out;
    a.x_scales = d_xs;
    a.scale_block = 1;
    a.out_scales = d_os;
    a.out_scales_format = format;
    if (mn_major) {
        a.out_scales_row_stride = 1;
        a.out_scales_col_stride = rows;
    }
    a.out_index = d_index;
    a.m_indices = d_m;
    cr_assert_eq(moes_scatter(ctx, &r, &a), MOES_OK, "%s",
                 moes_last_error(ctx));
    cr_assert_eq(moes_synchronize(ctx), MOES_OK);
    got = dev_get(ctx, d_os, rows * cols * 4);
    for (int64_t i = 0; i < n_words; i++)
        cr_expect_eq(got[i], want[i], "out_scales word %lld = 0x%08x, "
                     "expected 0x%08x", (long long)i, got[i], want[i]);
    free(got);
    dev_free(ctx, d_ids);
    dev_free(ctx, d_x);
    dev_free(ctx, d_xs);
    dev_free(ctx, d_out);
    dev_free(ctx, d_index);
    dev_free(ctx, d_m);
    dev_free(ctx, d_os);
    test_close(ctx);
}

#define CW 0xA5A5A5A5u

Test(scatter_literal, ue8m0_row_major)
{
    /* Row 0: exponents 7F 80 7E 82 | 89; row 1: 80 01 7E 7F | 8F. */
    const uint32_t want[6] = {0x827E807Fu, 0x00000089u, 0x7F7E0180u,
                              0x0000008Fu, CW, CW};
    scales_case(MOES_SCALES_UE8M0, 0, 0, want, 6);
}

Test(scatter_literal, ue8m0_mn_major_zero_padding)
{
    /* Column-major: word w of row r at r + 3 w; the tail row is zeroed. */
    const uint32_t want[6] = {0x827E807Fu, 0x7F7E0180u, 0,
                              0x00000089u, 0x0000008Fu, 0};
    scales_case(MOES_SCALES_UE8M0, 1, MOES_SCATTER_ZERO_PADDING, want, 6);
}

Test(scatter_literal, fp32_scales_mn_major)
{
    const uint32_t want[15] = {
        0x3F800000u, 0x40400000u, CW, /* scale 0 of rows 0, 1, 2 */
        0x40000000u, 0x000116C2u, CW, 0x3F000000u, 0xBF400000u, CW,
        0xC1000000u, 0x3FC00000u, CW, 0x44800000u, 0x47800000u, CW};
    scales_case(MOES_SCALES_FP32, 1, 0, want, 15);
}

/* No tokens: nothing placed, every row of the capacity is tail. */
Test(scatter_literal, no_tokens)
{
    moes_context *ctx = test_open(0);
    void *d_m = dev_new(ctx, 4 * 8), *d_counts = dev_new(ctx, 2 * 8);
    void *d_end = dev_new(ctx, 2 * 8), *d_out = dev_new(ctx, 4 * 3);
    int64_t *m, *counts, *end;
    moes_routing r;
    moes_scatter_args a;
    moes_routing_init(&r);
    r.n_experts = 2;
    moes_scatter_args_init(&a);
    a.layout = MOES_LAYOUT_GROUPED;
    a.capacity = 4;
    a.hidden = 3;
    a.x_dtype = MOES_DTYPE_FP8_E4M3;
    a.out = d_out;
    a.index_dtype = MOES_DTYPE_INT64;
    a.m_indices = d_m;
    a.counts = d_counts;
    a.expert_end = d_end;
    cr_assert_eq(moes_scatter(ctx, &r, &a), MOES_OK, "%s",
                 moes_last_error(ctx));
    cr_assert_eq(moes_synchronize(ctx), MOES_OK);
    m = dev_get(ctx, d_m, 32);
    counts = dev_get(ctx, d_counts, 16);
    end = dev_get(ctx, d_end, 16);
    for (int i = 0; i < 4; i++)
        cr_expect_eq(m[i], -1);
    cr_expect_eq(counts[0], 0);
    cr_expect_eq(counts[1], 0);
    cr_expect_eq(end[0], 0);
    cr_expect_eq(end[1], 0);
    cr_expect(dev_is_canary(ctx, d_out, 12));
    free(m);
    free(counts);
    free(end);
    dev_free(ctx, d_m);
    dev_free(ctx, d_counts);
    dev_free(ctx, d_end);
    dev_free(ctx, d_out);
    test_close(ctx);
}

/* CPU only, by nature: the CPU backend takes plain host pointers from
 * malloc() (docs/design-rules.md: on the CPU, buffers are host
 * pointers). Skipped on any other backend, where host pointers are not
 * valid buffers. */
Test(scatter_literal, cpu_takes_host_pointers)
{
    moes_context *ctx = test_open(2);
    int32_t *out_index = malloc(N * K * 4), *m = malloc(8 * 4);
    float *out = malloc(8 * H * 4);
    const int32_t want_index[N * K] = {0, 2, 3, 4, -1, 1};
    const int32_t want_m[8] = {0, 0, 2, 2, 2, -1, -1, -1};
    moes_routing r;
    moes_scatter_args a;
    if (!test_is_cpu(ctx)) {
        free(out_index);
        free(m);
        free(out);
        test_close(ctx);
        cr_skip("host pointers are buffers only on the CPU backend");
    }
    moes_routing_init(&r);
    r.n_tokens = N;
    r.top_k = K;
    r.n_experts = E;
    r.ids = ids3;
    moes_scatter_args_init(&a);
    a.alignment = 1;
    a.capacity = 8;
    a.x = x3;
    a.x_dtype = MOES_DTYPE_FP32;
    a.hidden = H;
    a.out = out;
    a.out_index = out_index;
    a.m_indices = m;
    cr_assert_eq(moes_scatter(ctx, &r, &a), MOES_OK, "%s",
                 moes_last_error(ctx));
    cr_expect_arr_eq(out_index, want_index, sizeof want_index);
    cr_expect_arr_eq(m, want_m, sizeof want_m);
    cr_expect_arr_eq(out + 4 * H, x3 + 1 * H, H * 4);
    free(out_index);
    free(m);
    free(out);
    test_close(ctx);
}
