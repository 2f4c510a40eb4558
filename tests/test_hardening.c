/* SPDX-License-Identifier: MIT */
/*
 * test_hardening.c - inputs an attacker would try: outputs placed over
 * inputs or over each other, misaligned pointers, UE8M0 scales that are
 * not powers of two, a lone zero scale stride, a huge unused capacity,
 * many experts for few tokens, thread counts far past the machine, and
 * messages that must name the argument at fault with a true number.
 * (fork and small stacks: host_process.c, run by host_process.test.)
 */
#include <criterion/criterion.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "helpers.h"
#include "oracle.h"
#include "oracle_args.h"
#include "rng.h"

enum { N = 4, K = 2, E = 4, H = 8 };

static const int32_t ids_ok[N * K] = {0, 1, 2, 3, 1, 1, -1, 0};

static void routing_of(moes_routing *r, const void *ids)
{
    moes_routing_init(r);
    r->n_tokens = N;
    r->top_k = K;
    r->n_experts = E;
    r->ids = ids;
}

/* A grouped scatter of bf16 rows over the given buffers, capacity 64. */
static void scatter_args_of(moes_scatter_args *a, const void *x, void *out,
                            void *out_index, void *end)
{
    moes_scatter_args_init(a);
    a->layout = MOES_LAYOUT_GROUPED;
    a->alignment = 1;
    a->capacity = 64;
    a->x = x;
    a->hidden = H;
    a->out = out;
    a->out_index = out_index;
    a->index_dtype = MOES_DTYPE_INT64;
    a->expert_end = end;
}

static void expect_message_names(moes_context *ctx, const char *a,
                                 const char *b)
{
    const char *msg = moes_last_error(ctx);
    cr_expect(strstr(msg, a) != NULL, "\"%s\" does not name %s", msg, a);
    if (b)
        cr_expect(strstr(msg, b) != NULL, "\"%s\" does not name %s", msg, b);
}

/* out_index (int64) on the very buffer of ids (int32): the scatter must
 * refuse before it writes, not place rows by ids it has overwritten. */
Test(hardening, scatter_out_index_over_ids)
{
    moes_context *ctx = test_open(2);
    void *ids = dev_new(ctx, N * K * 8);
    void *x = dev_new(ctx, N * H * 2), *out = dev_new(ctx, 64 * H * 2);
    void *end = dev_new(ctx, E * 8);
    moes_routing r;
    moes_scatter_args a;
    int32_t *back;
    cr_assert_eq(moes_copy_to_backend(ctx, ids, ids_ok, sizeof ids_ok),
                 MOES_OK);
    routing_of(&r, ids);
    scatter_args_of(&a, x, out, ids, end);
    cr_expect_eq(moes_scatter(ctx, &r, &a), MOES_ERR_OVERLAP, "%s",
                 moes_last_error(ctx));
    expect_message_names(ctx, "args->out_index", "routing->ids");
    back = dev_get(ctx, ids, sizeof ids_ok);
    cr_expect_arr_eq(back, ids_ok, sizeof ids_ok, "ids were written over");
    free(back);
    cr_expect(dev_is_canary(ctx, out, 64 * H * 2));
    cr_expect(dev_is_canary(ctx, end, E * 8));
    /* Half a row of overlap is an overlap too: out over the end of x. */
    scatter_args_of(&a, x, (char *)x + N * H * 2 - 2, dev_new(ctx, N * K * 8),
                    end);
    cr_expect_eq(moes_scatter(ctx, &r, &a), MOES_ERR_OVERLAP);
    expect_message_names(ctx, "args->out", "args->x");
    dev_free(ctx, a.out_index);
    dev_free(ctx, ids);
    dev_free(ctx, x);
    dev_free(ctx, out);
    dev_free(ctx, end);
    test_close(ctx);
}

/* Two outputs on one buffer, and an output on the map. */
Test(hardening, scatter_outputs_over_each_other_and_the_map)
{
    moes_context *ctx = test_open(1);
    const int32_t map[6] = {0, 1, 2, 3, -1, -1};
    void *ids = dev_from(ctx, ids_ok, sizeof ids_ok);
    void *d_map = dev_from(ctx, map, sizeof map);
    void *x = dev_new(ctx, N * H * 2), *out = dev_new(ctx, 64 * H * 2);
    void *index = dev_new(ctx, N * K * 8), *end = dev_new(ctx, E * 8);
    moes_routing r;
    moes_scatter_args a;
    routing_of(&r, ids);
    scatter_args_of(&a, x, out, index, end);
    a.counts = end;
    cr_expect_eq(moes_scatter(ctx, &r, &a), MOES_ERR_OVERLAP);
    expect_message_names(ctx, "args->expert_end", "args->counts");
    cr_expect(dev_is_canary(ctx, end, E * 8));
    r.expert_map = d_map;
    r.n_experts_global = 6;
    scatter_args_of(&a, x, out, index, end);
    a.expert_start = (char *)d_map + 8;
    cr_expect_eq(moes_scatter(ctx, &r, &a), MOES_ERR_OVERLAP);
    expect_message_names(ctx, "args->expert_start", "routing->expert_map");
    cr_expect(dev_is_canary(ctx, out, 64 * H * 2));
    cr_expect(dev_is_canary(ctx, index, N * K * 8));
    dev_free(ctx, ids);
    dev_free(ctx, d_map);
    dev_free(ctx, x);
    dev_free(ctx, out);
    dev_free(ctx, index);
    dev_free(ctx, end);
    test_close(ctx);
}

/* Records of several fields in one buffer: out's rows and their scales
 * interleaved with one stride share no byte, so the scatter takes them
 * and writes what it writes to separate buffers; a scale word over the
 * last element of a row, or another stride, is an overlap. The oracle's
 * argument checks (which read no data) say the same each time. */
Test(hardening, scatter_rows_and_scales_in_records)
{
    enum { ROWS = 64, P = H * 2 + 8 }; /* a record: a bf16 row, 2 words */
    moes_context *ctx = test_open(2);
    uint16_t xh[N * H];
    float sh[N];
    for (int i = 0; i < N * H; i++)
        xh[i] = (uint16_t)(0x3F00 + 37 * i);
    for (int t = 0; t < N; t++)
        sh[t] = 0.5f + (float)t;
    void *ids = dev_from(ctx, ids_ok, sizeof ids_ok);
    void *x = dev_from(ctx, xh, sizeof xh), *sc = dev_from(ctx, sh, sizeof sh);
    void *out = dev_new(ctx, ROWS * H * 2), *out_s = dev_new(ctx, ROWS * 4);
    void *rec = dev_new(ctx, ROWS * P);
    void *index = dev_new(ctx, N * K * 8), *end = dev_new(ctx, E * 8);
    moes_routing r;
    moes_scatter_args a;
    routing_of(&r, ids);
    scatter_args_of(&a, x, out, index, end);
    a.x_scales = sc;
    a.out_scales = out_s;
    a.out_scales_format = MOES_SCALES_FP32;
    cr_assert_eq(moes_scatter(ctx, &r, &a), MOES_OK, "%s",
                 moes_last_error(ctx));
    unsigned char *rows = dev_get(ctx, out, ROWS * H * 2);
    unsigned char *words = dev_get(ctx, out_s, ROWS * 4);

    a.out = rec;
    a.out_stride = P / 2;
    a.out_scales = (char *)rec + H * 2;
    a.out_scales_row_stride = P / 4;
    a.out_scales_col_stride = 1;
    cr_expect_eq(moes_scatter(ctx, &r, &a), MOES_OK, "%s",
                 moes_last_error(ctx));
    /* The oracle's argument checks take the same records. */
    oracle_scatter checked;
    cr_expect_eq(oracle_check_scatter(&r, &a, &checked), MOES_OK, "%s",
                 moes_oracle_last_error());
    unsigned char *got = dev_get(ctx, rec, ROWS * P);
    int64_t *ends = dev_get(ctx, end, E * 8);
    const int64_t used = ends[E - 1];
    cr_assert(used > 0 && used <= ROWS);
    for (int64_t i = 0; i < used; i++) {
        cr_expect(!memcmp(got + i * P, rows + i * H * 2, H * 2),
                  "record %lld: its row differs", (long long)i);
        cr_expect(!memcmp(got + i * P + H * 2, words + i * 4, 4),
                  "record %lld: its scale differs", (long long)i);
    }
    free(got);

    /* The scale word over the row's last element, then a record of
     * another length for the scales: both overlaps, nothing written. */
    void *fresh = dev_new(ctx, ROWS * P);
    a.out = fresh;
    a.out_scales = (char *)fresh + H * 2 - 4;
    cr_expect_eq(moes_scatter(ctx, &r, &a), MOES_ERR_OVERLAP);
    expect_message_names(ctx, "args->out_scales", "args->out");
    cr_expect_eq(oracle_check_scatter(&r, &a, &checked), MOES_ERR_OVERLAP);
    a.out_scales = (char *)fresh + H * 2;
    a.out_scales_row_stride = P / 4 - 1;
    cr_expect_eq(moes_scatter(ctx, &r, &a), MOES_ERR_OVERLAP);
    expect_message_names(ctx, "args->out_scales", "args->out");
    cr_expect_eq(oracle_check_scatter(&r, &a, &checked), MOES_ERR_OVERLAP);
    cr_expect(dev_is_canary(ctx, fresh, ROWS * P));
    free(rows);
    free(words);
    free(ends);
    dev_free(ctx, fresh);
    dev_free(ctx, ids);
    dev_free(ctx, x);
    dev_free(ctx, sc);
    dev_free(ctx, out);
    dev_free(ctx, out_s);
    dev_free(ctx, rec);
    dev_free(ctx, index);
    dev_free(ctx, end);
    test_close(ctx);
}

/* A single token's row as a field of the records whose other field holds
 * out's rows, one stride in bytes for both: x's one row sits between two
 * of out's rows and shares no byte with any, so the call runs (its one
 * row is placed by its stride as a row of many would be); shifted one
 * element into out's field, it is an overlap. The oracle agrees both
 * times. */
Test(hardening, scatter_one_row_among_records)
{
    enum { ROWS = 4, P = 2 * H }; /* a record: out's row, then x's */
    moes_context *ctx = test_open(2);
    const int32_t ids[K] = {2, 0};
    uint16_t rec_h[ROWS * P];
    for (int i = 0; i < ROWS * P; i++)
        rec_h[i] = (uint16_t)(0x3E00 + 29 * i);
    void *dev_ids = dev_from(ctx, ids, sizeof ids);
    void *rec = dev_from(ctx, rec_h, sizeof rec_h);
    void *index = dev_new(ctx, K * 8), *end = dev_new(ctx, E * 8);
    moes_routing r;
    moes_scatter_args a;
    routing_of(&r, dev_ids);
    r.n_tokens = 1;
    scatter_args_of(&a, (uint16_t *)rec + H, rec, index, end);
    a.capacity = ROWS;
    a.x_stride = P;
    a.out_stride = P;
    oracle_scatter checked;
    cr_expect_eq(moes_scatter(ctx, &r, &a), MOES_OK, "%s",
                 moes_last_error(ctx));
    cr_expect_eq(oracle_check_scatter(&r, &a, &checked), MOES_OK, "%s",
                 moes_oracle_last_error());
    /* Expert 0's row first, then expert 2's: both the token's row. */
    uint16_t *got = dev_get(ctx, rec, sizeof rec_h);
    for (int row = 0; row < K; row++)
        cr_expect(!memcmp(got + row * P, rec_h + H, H * 2),
                  "out's row %d is not the token's row", row);
    cr_expect(!memcmp(got + H, rec_h + H, H * 2), "x was written");
    for (int row = K; row < ROWS; row++)
        cr_expect(!memcmp(got + row * P, rec_h + row * P, P * 2),
                  "record %d past the rows placed was written", row);
    free(got);

    a.x = (uint16_t *)rec + H - 1;
    cr_expect_eq(moes_scatter(ctx, &r, &a), MOES_ERR_OVERLAP);
    expect_message_names(ctx, "args->out", "args->x");
    cr_expect_eq(oracle_check_scatter(&r, &a, &checked), MOES_ERR_OVERLAP);
    dev_free(ctx, dev_ids);
    dev_free(ctx, rec);
    dev_free(ctx, index);
    dev_free(ctx, end);
    test_close(ctx);
}

/* Rows and scales at random offsets and strides in one allocation: the
 * call must refuse every layout in which a byte of out and a byte of
 * out_scales meet (counted here byte by byte over the capacity's rows),
 * and with one stride in bytes for both take every layout in which none
 * does. (With two strides it compares first and last bytes only.) */
Test(hardening, rows_and_scales_at_random_layouts)
{
    enum { ROWS = 64, MAX_P = 48, BYTES = ROWS * MAX_P + 128 };
    moes_context *ctx = test_open(1);
    void *ids = dev_from(ctx, ids_ok, sizeof ids_ok);
    void *x = dev_new(ctx, N * H * 2), *sc = dev_new(ctx, N * 4);
    void *index = dev_new(ctx, N * K * 8), *end = dev_new(ctx, E * 8);
    char *buf = dev_new(ctx, BYTES);
    unsigned char marks[BYTES];
    moes_routing r;
    moes_scatter_args a;
    moes_rng g;
    moes_rng_seed(&g, 2027);
    routing_of(&r, ids);
    int same = 0, taken = 0;
    for (int trial = 0; trial < 600; trial++) {
        const int64_t out_elems = H + moes_rng_below(&g, MAX_P / 2 - H + 1);
        const int64_t p_out = out_elems * 2;
        /* Half the trials with the rows' stride in bytes. */
        const int64_t words = moes_rng_below(&g, 2) && p_out % 4 == 0
                                  ? p_out / 4
                                  : 1 + moes_rng_below(&g, MAX_P / 4);
        const int64_t off_out = 2 * moes_rng_below(&g, 32);
        const int64_t off_s = 4 * moes_rng_below(&g, 32);
        memset(marks, 0, sizeof marks);
        int shared = 0;
        for (int64_t i = 0; i < ROWS; i++)
            for (int64_t b = 0; b < H * 2; b++)
                marks[off_out + i * p_out + b] = 1;
        for (int64_t i = 0; i < ROWS; i++)
            for (int64_t b = 0; b < 4; b++)
                shared |= marks[off_s + i * words * 4 + b];
        scatter_args_of(&a, x, buf + off_out, index, end);
        a.out_stride = out_elems;
        a.x_scales = sc;
        a.out_scales = buf + off_s;
        a.out_scales_format = MOES_SCALES_FP32;
        a.out_scales_row_stride = words;
        a.out_scales_col_stride = 1;
        const int rc = moes_scatter(ctx, &r, &a);
        if (shared)
            cr_expect_eq(rc, MOES_ERR_OVERLAP,
                         "trial %d: rows of %lld bytes at %lld, scales of "
                         "%lld at %lld share a byte, but the call returned "
                         "%d", trial, (long long)p_out, (long long)off_out,
                         (long long)words * 4, (long long)off_s, rc);
        else if (words * 4 == p_out)
            cr_expect_eq(rc, MOES_OK,
                         "trial %d: rows of %lld bytes at %lld, scales at "
                         "%lld share no byte: %s", trial, (long long)p_out,
                         (long long)off_out, (long long)off_s,
                         moes_last_error(ctx));
        same += words * 4 == p_out;
        taken += rc == MOES_OK;
    }
    /* Both kinds of layout came up, and some were taken. */
    cr_expect(same > 100 && taken > 50, "same stride %d, taken %d", same,
              taken);
    dev_free(ctx, buf);
    dev_free(ctx, ids);
    dev_free(ctx, x);
    dev_free(ctx, sc);
    dev_free(ctx, index);
    dev_free(ctx, end);
    test_close(ctx);
}

/* The gather's out over its out_index (after the first rows of out are
 * written, out_index would be read back as garbage), over y, over the
 * weights; and counts over ids. */
Test(hardening, gather_and_count_outputs_over_inputs)
{
    moes_context *ctx = test_open(2);
    const int32_t index[N * K] = {0, 1, 2, 3, 4, 5, 6, 7};
    void *d_index = dev_new(ctx, 4096);
    void *y = dev_new(ctx, 8 * H * 4), *w = dev_new(ctx, N * K * 4);
    void *ids = dev_from(ctx, ids_ok, sizeof ids_ok);
    moes_gather_args g;
    moes_routing r;
    int32_t *back;
    cr_assert_eq(moes_copy_to_backend(ctx, d_index, index, sizeof index),
                 MOES_OK);
    moes_gather_args_init(&g);
    g.n_tokens = N;
    g.top_k = K;
    g.hidden = H;
    g.y = y;
    g.y_dtype = MOES_DTYPE_FP32;
    g.y_rows = 8;
    g.out_index = d_index;
    g.out = (char *)d_index + 16; /* token 0's row ends past out_index[2] */
    g.out_dtype = MOES_DTYPE_FP32;
    cr_expect_eq(moes_gather(ctx, &g), MOES_ERR_OVERLAP);
    expect_message_names(ctx, "args->out", "args->out_index");
    back = dev_get(ctx, d_index, sizeof index);
    cr_expect_arr_eq(back, index, sizeof index);
    free(back);
    g.out = (char *)y + 4;
    cr_expect_eq(moes_gather(ctx, &g), MOES_ERR_OVERLAP);
    expect_message_names(ctx, "args->out", "args->y");
    g.weights = w;
    g.out = w;
    cr_expect_eq(moes_gather(ctx, &g), MOES_ERR_OVERLAP);
    expect_message_names(ctx, "args->out", "args->weights");

    routing_of(&r, ids);
    cr_expect_eq(moes_count(ctx, &r, ids, MOES_DTYPE_INT32),
                 MOES_ERR_OVERLAP);
    expect_message_names(ctx, "counts", "routing->ids");
    back = dev_get(ctx, ids, sizeof ids_ok);
    cr_expect_arr_eq(back, ids_ok, sizeof ids_ok);
    free(back);
    dev_free(ctx, d_index);
    dev_free(ctx, y);
    dev_free(ctx, w);
    dev_free(ctx, ids);
    test_close(ctx);
}

/* Buffers side by side, touching but not sharing a byte, are fine. */
Test(hardening, adjacent_buffers_are_not_an_overlap)
{
    moes_context *ctx = test_open(1);
    char *arena = dev_new(ctx, 4096);
    moes_routing r;
    moes_scatter_args a;
    cr_assert_eq(moes_copy_to_backend(ctx, arena, ids_ok, sizeof ids_ok),
                 MOES_OK);
    routing_of(&r, arena);
    /* ids: 32 bytes; x: 64; out_index: 64; expert_end: 32; out: rest. */
    scatter_args_of(&a, arena + 32, arena + 224, arena + 96, arena + 160);
    a.capacity = (4096 - 224) / (H * 2);
    cr_expect_eq(moes_scatter(ctx, &r, &a), MOES_OK, "%s",
                 moes_last_error(ctx));
    cr_expect_eq(moes_synchronize(ctx), MOES_OK);
    dev_free(ctx, arena);
    test_close(ctx);
}

/* A single output row inside the gaps of an input's rows shares no
 * byte with them, whatever stride it is given (its stride places no
 * second row); one element further it does. y: 2 rows of 3 floats, 6
 * apart; out: one token's row at y + 3, between them, or at y + 4. The
 * oracle's argument checks agree each time. */
Test(hardening, one_row_in_the_gaps_of_another_buffer)
{
    static const float y_rows[2 * 6] = {1, 2, 3, -9, -9, -9,
                                        4, 5, 6, -9, -9, -9};
    static const int32_t index[2] = {1, 0};
    moes_context *ctx = test_open(1);
    float *buf = dev_from(ctx, y_rows, sizeof y_rows);
    float *dev_index = dev_from(ctx, index, sizeof index);
    const int64_t strides[3] = {3, 6, 1000};
    moes_gather_args g;
    oracle_gather checked;
    moes_gather_args_init(&g);
    g.n_tokens = 1;
    g.top_k = 2;
    g.hidden = 3;
    g.y = buf;
    g.y_rows = 2;
    g.y_stride = 6;
    g.y_dtype = MOES_DTYPE_FP32;
    g.out_index = dev_index;
    g.index_dtype = MOES_DTYPE_INT32;
    g.out_dtype = MOES_DTYPE_FP32;
    for (int s = 0; s < 3; s++) {
        g.out_stride = strides[s];
        g.out = buf + 3;
        cr_expect_eq(oracle_check_gather(&g, &checked), MOES_OK,
                     "stride %lld: %s", (long long)strides[s],
                     moes_oracle_last_error());
        cr_expect_eq(moes_gather(ctx, &g), MOES_OK, "stride %lld: %s",
                     (long long)strides[s], moes_last_error(ctx));
        cr_expect_eq(moes_synchronize(ctx), MOES_OK);
        float *got = dev_get(ctx, buf, sizeof y_rows);
        cr_expect(got[3] == 5.0f && got[4] == 7.0f && got[5] == 9.0f,
                  "stride %lld: out = {%g, %g, %g}", (long long)strides[s],
                  (double)got[3], (double)got[4], (double)got[5]);
        cr_expect(got[0] == 1.0f && got[6] == 4.0f && got[8] == 6.0f,
                  "stride %lld: y was written", (long long)strides[s]);
        free(got);
        cr_expect_eq(moes_copy_to_backend(ctx, buf, y_rows, sizeof y_rows),
                     MOES_OK);
        g.out = buf + 4;
        cr_expect_eq(moes_gather(ctx, &g), MOES_ERR_OVERLAP,
                     "stride %lld, one element into y's second row",
                     (long long)strides[s]);
        expect_message_names(ctx, "args->out", "args->y");
        cr_expect_eq(oracle_check_gather(&g, &checked), MOES_ERR_OVERLAP);
    }
    dev_free(ctx, buf);
    dev_free(ctx, dev_index);
    test_close(ctx);
}

/* The strides of buffers not given are not looked at: out_scales' with
 * no scales (INT64_MIN, whose span would overflow if it were formed) and
 * the gather's weights_stride with no weights (-1, which is no stride at
 * all). Both calls run and give what they give with valid strides. */
Test(hardening, strides_of_absent_buffers_are_not_read)
{
    moes_context *ctx = test_open(2);
    uint16_t xh[N * H];
    for (int i = 0; i < N * H; i++)
        xh[i] = (uint16_t)(0x3C00 + 41 * i);
    void *ids = dev_from(ctx, ids_ok, sizeof ids_ok);
    void *x = dev_from(ctx, xh, sizeof xh);
    void *out = dev_new(ctx, 64 * H * 2), *index = dev_new(ctx, N * K * 8);
    void *end = dev_new(ctx, E * 8);
    void *sums = dev_new(ctx, N * H * 2),
         *sums_again = dev_new(ctx, N * H * 2);
    moes_routing r;
    moes_scatter_args a;
    routing_of(&r, ids);
    scatter_args_of(&a, x, out, index, end);
    a.out_scales_row_stride = INT64_MIN;
    a.out_scales_col_stride = INT64_MIN;
    cr_expect_eq(moes_scatter(ctx, &r, &a), MOES_OK, "%s",
                 moes_last_error(ctx));

    moes_gather_args g;
    moes_gather_args_init(&g);
    g.n_tokens = N;
    g.top_k = K;
    g.hidden = H;
    g.y = out;
    g.y_rows = 64;
    g.y_dtype = MOES_DTYPE_BF16;
    g.out_index = index;
    g.index_dtype = MOES_DTYPE_INT64;
    g.out = sums;
    g.out_dtype = MOES_DTYPE_BF16;
    cr_expect_eq(moes_gather(ctx, &g), MOES_OK, "%s", moes_last_error(ctx));
    g.weights_stride = -1;
    g.out = sums_again;
    cr_expect_eq(moes_gather(ctx, &g), MOES_OK, "%s", moes_last_error(ctx));
    cr_expect_eq(moes_synchronize(ctx), MOES_OK);
    unsigned char *first = dev_get(ctx, sums, N * H * 2);
    unsigned char *again = dev_get(ctx, sums_again, N * H * 2);
    cr_expect(!memcmp(first, again, N * H * 2),
              "weights_stride changed a gather without weights");
    free(first);
    free(again);
    dev_free(ctx, ids);
    dev_free(ctx, x);
    dev_free(ctx, out);
    dev_free(ctx, index);
    dev_free(ctx, end);
    dev_free(ctx, sums);
    dev_free(ctx, sums_again);
    test_close(ctx);
}

Test(hardening, misaligned_pointers)
{
    moes_context *ctx = test_open(1);
    char *buf = dev_new(ctx, 1024);
    void *x = dev_new(ctx, N * H * 2), *out = dev_new(ctx, 64 * H * 2);
    void *index = dev_new(ctx, N * K * 8), *end = dev_new(ctx, E * 8);
    moes_routing r;
    moes_scatter_args a;
    moes_gather_args g;
    cr_assert_eq(moes_copy_to_backend(ctx, buf + 2, ids_ok, sizeof ids_ok),
                 MOES_OK);
    routing_of(&r, buf + 2);
    scatter_args_of(&a, x, out, index, end);
    cr_expect_eq(moes_scatter(ctx, &r, &a), MOES_ERR_MISALIGNED);
    expect_message_names(ctx, "routing->ids", "4-byte");
    routing_of(&r, buf + 4); /* int32 ids at 4 bytes: aligned */
    scatter_args_of(&a, x, out, (char *)index + 4, end);
    cr_expect_eq(moes_scatter(ctx, &r, &a), MOES_ERR_MISALIGNED);
    expect_message_names(ctx, "args->out_index", "8-byte");
    cr_expect(dev_is_canary(ctx, out, 64 * H * 2));
    moes_gather_args_init(&g);
    g.n_tokens = 1;
    g.hidden = 1;
    g.y = buf + 512;
    g.y_dtype = MOES_DTYPE_FP32;
    g.y_rows = 1;
    g.out_index = buf + 600;
    g.weights = (const float *)(buf + 701);
    g.out = out;
    g.out_dtype = MOES_DTYPE_FP32;
    cr_expect_eq(moes_gather(ctx, &g), MOES_ERR_MISALIGNED);
    expect_message_names(ctx, "args->weights", NULL);
    dev_free(ctx, buf);
    dev_free(ctx, x);
    dev_free(ctx, out);
    dev_free(ctx, index);
    dev_free(ctx, end);
    test_close(ctx);
}

/* One token per row of scales; bad is put at scales[1][2] of S = 4. */
static int ue8m0_case(uint32_t bad, char *msg, size_t msg_len)
{
    moes_context *ctx = test_open(2);
    uint32_t scales[N * 4];
    void *ids = dev_from(ctx, ids_ok, sizeof ids_ok);
    void *x = dev_new(ctx, N * H * 2), *out = dev_new(ctx, 64 * H * 2);
    void *index = dev_new(ctx, N * K * 8), *end = dev_new(ctx, E * 8);
    void *os = dev_new(ctx, 64 * 4), *xs;
    moes_routing r;
    moes_scatter_args a;
    int st;
    for (int i = 0; i < N * 4; i++)
        scales[i] = (uint32_t)(120 + i) << 23;
    scales[1 * 4 + 2] = bad;
    xs = dev_from(ctx, scales, sizeof scales);
    routing_of(&r, ids);
    scatter_args_of(&a, x, out, index, end);
    a.x_scales = xs;
    a.scale_block = 2;
    a.out_scales = os;
    a.out_scales_format = MOES_SCALES_UE8M0;
    st = moes_scatter(ctx, &r, &a);
    if (st == MOES_OK)
        st = moes_synchronize(ctx);
    snprintf(msg, msg_len, "%s", moes_last_error(ctx));
    if (st != MOES_OK) {
        cr_expect(dev_is_canary(ctx, out, 64 * H * 2), "out written");
        cr_expect(dev_is_canary(ctx, os, 64 * 4), "out_scales written");
        cr_expect(dev_is_canary(ctx, index, N * K * 8), "out_index written");
        cr_expect(dev_is_canary(ctx, end, E * 8), "expert_end written");
    }
    dev_free(ctx, ids);
    dev_free(ctx, x);
    dev_free(ctx, out);
    dev_free(ctx, index);
    dev_free(ctx, end);
    dev_free(ctx, os);
    dev_free(ctx, xs);
    test_close(ctx);
    return st;
}

/* Packing takes the exponent byte only: 1.5 would become 1.0, 3.0 2.0,
 * 0.75 0.5. Such scales, and negative, zero, subnormal, infinite or NaN
 * ones, are bad input, named, with nothing written. */
Test(hardening, ue8m0_rejects_what_it_cannot_hold)
{
    static const uint32_t bad[] = {
        0x3FC00000u /* 1.5 */, 0x40400000u /* 3 */, 0x3F400000u /* 0.75 */,
        0xBF800000u /* -1 */, 0x00000000u, 0x80000000u, 0x00400000u,
        0x7F800000u, 0x7FC00000u, 0xFFC00001u};
    char msg[512];
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char bits[32];
        cr_expect_eq(ue8m0_case(bad[i], msg, sizeof msg),
                     MOES_ERR_INVALID_SCALE, "0x%08x: %s", bad[i], msg);
        snprintf(bits, sizeof bits, "0x%08x", bad[i]);
        cr_expect(strstr(msg, "x_scales[1][2]") != NULL, "%s", msg);
        cr_expect(strstr(msg, bits) != NULL, "%s", msg);
    }
    cr_expect_eq(ue8m0_case(0x3F000000u, msg, sizeof msg), MOES_OK, "%s",
                 msg);
    cr_expect_str_eq(moes_strerror(MOES_ERR_INVALID_SCALE), "invalid scale");
}

/* A grouped scatter with no m_indices and no zero padding writes nothing
 * past the rows it uses: an unused capacity of 2^60 - 1 rows must cost
 * nothing (it used to be a loop over every row). */
Test(hardening, unused_capacity_costs_nothing)
{
    test_deadline(30);
    moes_context *ctx = test_open(2);
    /* out is the highest buffer in memory (on the stack, above the heap),
     * so that its claimed extent overlaps no other buffer. */
    uint8_t out[4 * H];
    const int32_t ids[2] = {1, 1};
    void *d_ids, *x, *index, *end;
    moes_routing r;
    moes_scatter_args a;
    int64_t *got_end;
    if (!test_is_cpu(ctx)) {
        test_close(ctx);
        cr_skip_test("host buffers: CPU only");
    }
    d_ids = dev_from(ctx, ids, sizeof ids);
    x = dev_new(ctx, 2 * H);
    index = dev_new(ctx, 2 * 8);
    end = dev_new(ctx, 2 * 8);
    cr_assert((uintptr_t)out > (uintptr_t)end);
    moes_routing_init(&r);
    r.n_tokens = 2;
    r.top_k = 1;
    r.n_experts = 2;
    r.ids = d_ids;
    scatter_args_of(&a, x, out, index, end);
    a.x_dtype = MOES_DTYPE_FP8_E4M3;
    a.capacity = ((int64_t)1 << 60) - 1;
    cr_expect_eq(moes_scatter(ctx, &r, &a), MOES_OK, "%s",
                 moes_last_error(ctx));
    got_end = dev_get(ctx, end, 2 * 8);
    cr_expect_eq(got_end[0], 0);
    cr_expect_eq(got_end[1], 2);
    free(got_end);
    dev_free(ctx, d_ids);
    dev_free(ctx, x);
    dev_free(ctx, index);
    dev_free(ctx, end);
    test_close(ctx);
}

/* 16 tokens of top-8 over a million experts, in each layout, with every
 * output: the same bytes as the oracle's (the sparse routing). */
Test(hardening, many_experts_few_tokens)
{
    enum { T = 16, KK = 8, HH = 3 };
    const int64_t e = 1000000;
    moes_context *ctx = test_open(3);
    int32_t ids[T * KK];
    uint16_t x[T * HH];
    for (int i = 0; i < T * KK; i++)
        ids[i] = i % 11 == 3 ? -1 : (int32_t)((i * 7919L) % e);
    ids[5] = ids[4]; /* a token naming one expert twice */
    for (int i = 0; i < T * HH; i++)
        x[i] = (uint16_t)(0x3F80 + i);
    for (int layout = MOES_LAYOUT_CONTIGUOUS; layout <= MOES_LAYOUT_MASKED;
         layout++) {
        const int64_t cap = layout == MOES_LAYOUT_MASKED ? 2 : 64 * T * KK;
        const int64_t rows = layout == MOES_LAYOUT_MASKED ? e * cap : cap;
        const int64_t sizes[7] = {rows * HH * 2, T * KK * 8, e * 8, e * 8,
                                  e * 8, rows * 8, e * 8};
        void *d_ids = dev_from(ctx, ids, sizeof ids);
        void *d_x = dev_from(ctx, x, sizeof x);
        void *dev[7], *want[7];
        int64_t dropped = -1;
        moes_routing r;
        moes_scatter_args a, o;
        for (int i = 0; i < 7; i++) {
            dev[i] = dev_new(ctx, sizes[i]);
            want[i] = malloc((size_t)sizes[i]);
            cr_assert(want[i] != NULL);
            memset(want[i], CANARY, (size_t)sizes[i]);
        }
        moes_routing_init(&r);
        r.n_tokens = T;
        r.top_k = KK;
        r.n_experts = e;
        r.ids = d_ids;
        moes_scatter_args_init(&a);
        a.layout = layout;
        a.alignment = 4;
        a.capacity = cap;
        a.flags = MOES_SCATTER_ZERO_PADDING | MOES_SCATTER_LABEL_PADDING;
        a.x = d_x;
        a.hidden = HH;
        a.index_dtype = MOES_DTYPE_INT64;
        a.out = dev[0];
        a.out_index = dev[1];
        a.counts = dev[2];
        a.expert_start = dev[3];
        a.expert_end = dev[4];
        a.m_indices = dev[5];
        a.masked_m = layout == MOES_LAYOUT_MASKED ? dev[6] : NULL;
        cr_assert_eq(moes_scatter(ctx, &r, &a), MOES_OK, "%s",
                     moes_last_error(ctx));
        cr_assert_eq(moes_synchronize(ctx), MOES_OK);
        r.ids = ids;
        o = a;
        o.x = x;
        o.out = want[0];
        o.out_index = want[1];
        o.counts = want[2];
        o.expert_start = want[3];
        o.expert_end = want[4];
        o.m_indices = want[5];
        o.masked_m = a.masked_m ? want[6] : NULL;
        o.n_dropped = layout == MOES_LAYOUT_MASKED ? &dropped : NULL;
        cr_assert_eq(moes_oracle_scatter(&r, &o), MOES_OK, "%s",
                     moes_oracle_last_error());
        for (int i = 0; i < 7; i++) {
            uint8_t *got = dev_get(ctx, dev[i], sizes[i]);
            cr_expect(memcmp(got, want[i], (size_t)sizes[i]) == 0,
                      "layout %d: output %d differs from the oracle", layout,
                      i);
            free(got);
            dev_free(ctx, dev[i]);
            free(want[i]);
        }
        dev_free(ctx, d_ids);
        dev_free(ctx, d_x);
    }
    test_close(ctx);
}

/* Thread counts far past the machine are capped, not a crash. */
Test(hardening, huge_thread_counts)
{
    const int counts[2] = {100000, INT_MAX};
    for (int i = 0; i < 2; i++) {
        moes_context *ctx = NULL;
        moes_context_options o;
        moes_context_info info;
        moes_routing r;
        int32_t counts_out[E];
        moes_context_options_init(&o);
        o.backend = MOES_BACKEND_CPU;
        o.cpu_threads = counts[i];
        cr_assert_eq(moes_context_create(&ctx, &o), MOES_OK, "%s",
                     moes_last_error(NULL));
        if (!test_is_cpu(ctx)) {
            /* MOES_BACKEND in the environment chose another backend. */
            moes_context_destroy(ctx);
            cr_skip_test("thread counts and host buffers: CPU only");
        }
        info.struct_size = sizeof info;
        cr_assert_eq(moes_context_get_info(ctx, &info), MOES_OK);
        cr_expect(info.cpu_threads >= 1 && info.cpu_threads < counts[i],
                  "%d threads kept", info.cpu_threads);
        routing_of(&r, ids_ok);
        cr_expect_eq(moes_count(ctx, &r, counts_out, MOES_DTYPE_INT32),
                     MOES_OK, "%s", moes_last_error(ctx));
        cr_expect_eq(counts_out[1], 3);
        moes_context_destroy(ctx);
    }
}

/* Messages name the argument at fault, with a number that is true. */
Test(hardening, messages_name_the_argument_at_fault)
{
    moes_context *ctx = test_open(1);
    int32_t ids[2] = {0, 1};
    void *d_ids = dev_from(ctx, ids, sizeof ids);
    void *x = dev_new(ctx, 64), *out = dev_new(ctx, 64);
    void *index = dev_new(ctx, 16), *end = dev_new(ctx, 16);
    moes_routing r;
    moes_scatter_args a;
    const char *msg;
    int st;
    moes_routing_init(&r);
    r.n_tokens = 2;
    r.top_k = 1;
    r.n_experts = 2;
    r.ids = d_ids;

    /* Rows beyond int64 with no m_indices: the capacity is at fault. */
    scatter_args_of(&a, x, out, index, end);
    a.x_dtype = MOES_DTYPE_FP8_E4M3;
    a.hidden = 1;
    a.capacity = INT64_MAX / 4;
    cr_expect_eq(moes_scatter(ctx, &r, &a), MOES_ERR_OVERFLOW);
    msg = moes_last_error(ctx);
    cr_expect(strncmp(msg, "args->capacity", 14) == 0, "%s", msg);

    /* Rows that do not fit int32 indices: the capacity, and the true
     * largest row index (expert_end may be the capacity itself). */
    scatter_args_of(&a, x, out, index, end);
    a.index_dtype = MOES_DTYPE_INT32;
    a.capacity = (int64_t)INT32_MAX + 2;
    cr_expect_eq(moes_scatter(ctx, &r, &a), MOES_ERR_OVERFLOW);
    msg = moes_last_error(ctx);
    cr_expect(strncmp(msg, "args->capacity", 14) == 0, "%s", msg);
    cr_expect(strstr(msg, "up to 2147483649,") != NULL, "%s", msg);

    /* The rows needed do not fit int64: no saturated count printed. */
    scatter_args_of(&a, x, out, index, end);
    a.alignment = INT64_MAX / 2 + 1;
    a.capacity = 4;
    /* A data error: on CUDA the call succeeds and the next synchronize
     * reports it. */
    st = moes_scatter(ctx, &r, &a);
    if (st == MOES_OK)
        st = moes_synchronize(ctx);
    cr_expect_eq(st, MOES_ERR_CAPACITY);
    msg = moes_last_error(ctx);
    cr_expect(strstr(msg, "9223372036854775807") == NULL, "%s", msg);
    cr_expect(strstr(msg, "capacity = 4") != NULL, "%s", msg);

    /* A workspace whose byte count does not fit 64 bits: said so, not
     * computed with a signed overflow into "0 bytes" or a negative. */
    {
        moes_context *two = test_open(2);
        int st = moes_reserve_workspace(two, 2, 1, (int64_t)1 << 59);
        cr_expect(st == MOES_ERR_OVERFLOW || st == MOES_ERR_OUT_OF_MEMORY,
                  "%d", st);
        msg = moes_last_error(two);
        cr_expect(strstr(msg, " 0 bytes") == NULL, "%s", msg);
        cr_expect(strstr(msg, " -") == NULL, "%s", msg);
        test_close(two);
    }

    /* No expert map: it is not the map that is too large. */
    r.n_experts = INT64_MAX / 2;
    cr_expect_eq(moes_count(ctx, &r, out, MOES_DTYPE_INT32),
                 MOES_ERR_OVERFLOW);
    msg = moes_last_error(ctx);
    cr_expect(strstr(msg, "expert_map") == NULL, "%s", msg);
    cr_expect(strstr(msg, "routing->n_experts") != NULL, "%s", msg);
    dev_free(ctx, d_ids);
    dev_free(ctx, x);
    dev_free(ctx, out);
    dev_free(ctx, index);
    dev_free(ctx, end);
    test_close(ctx);
}
