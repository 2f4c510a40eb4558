/* SPDX-License-Identifier: MIT */
/*
 * test_large.c - row offsets past 2^31 elements, where 32-bit offset
 * arithmetic wraps (a bug that has shipped in MoE kernels before).
 *
 * The buffers are a few GiB of address space, but only the rows the calls
 * touch are ever written, so the memory actually used stays small (the
 * rest is never faulted in). Only the region around the last rows is
 * filled with the canary and checked, gaps included.
 */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "helpers.h"

/* 2100 rows of (2^20 + 7) elements: the last rows start past 2^31. */
enum { ROWS = 2100, CHECKED = 6 };

Test(large, scatter_offsets_past_2_31)
{
    test_deadline(120);
    const int64_t h = 3, stride = ((int64_t)1 << 20) + 7;
    const int64_t out_bytes = (ROWS - 1) * stride + h; /* fp8: 1 byte each */
    const int64_t first = ROWS - CHECKED;
    moes_context *ctx = test_open(0);
    int32_t *ids = malloc(ROWS * 4), *index;
    uint8_t *x = malloc(ROWS * h), *tail;
    void *d_ids, *d_x, *d_out, *d_index, *d_m;
    moes_routing r;
    moes_scatter_args a;

    cr_assert((ROWS - 1) * stride > ((int64_t)1 << 31));
    for (int64_t t = 0; t < ROWS; t++) {
        ids[t] = (int32_t)(t % 2); /* expert 1's rows are the odd tokens */
        x[t * h] = (uint8_t)t;
        x[t * h + 1] = (uint8_t)(t >> 8);
        x[t * h + 2] = 0x5A;
    }
    d_ids = dev_from(ctx, ids, ROWS * 4);
    d_x = dev_from(ctx, x, ROWS * h);
    d_index = dev_new(ctx, ROWS * 4);
    d_m = dev_new(ctx, ROWS * 4);
    cr_assert_eq(moes_malloc(ctx, &d_out, out_bytes), MOES_OK, "%s",
                 moes_last_error(ctx));
    cr_assert_eq(moes_fill(ctx, (char *)d_out + first * stride, CANARY,
                           out_bytes - first * stride), MOES_OK);

    moes_routing_init(&r);
    r.n_tokens = ROWS;
    r.top_k = 1;
    r.n_experts = 2;
    r.ids = d_ids;
    moes_scatter_args_init(&a);
    a.alignment = 1;
    a.capacity = ROWS;
    a.x = d_x;
    a.x_dtype = MOES_DTYPE_FP8_E4M3;
    a.hidden = h;
    a.out = d_out;
    a.out_stride = stride;
    a.out_index = d_index;
    a.m_indices = d_m;
    cr_assert_eq(moes_scatter(ctx, &r, &a), MOES_OK, "%s",
                 moes_last_error(ctx));
    cr_assert_eq(moes_synchronize(ctx), MOES_OK);

    tail = dev_get(ctx, (char *)d_out + first * stride,
                   out_bytes - first * stride);
    for (int64_t row = first; row < ROWS; row++) {
        /* Row 1050 + j of expert 1 holds token 2j + 1. */
        int64_t t = 2 * (row - ROWS / 2) + 1;
        const uint8_t *got = tail + (row - first) * stride;
        cr_expect_arr_eq(got, x + t * h, h, "row %lld (token %lld)",
                         (long long)row, (long long)t);
        for (int64_t b = h; row < ROWS - 1 && b < stride; b += 4099)
            cr_expect_eq(got[b], CANARY, "gap of row %lld changed",
                         (long long)row);
    }
    index = dev_get(ctx, d_index, ROWS * 4);
    cr_expect_eq(index[ROWS - 1], ROWS - 1);
    cr_expect_eq(index[ROWS - 2], ROWS / 2 - 1);
    free(index);
    free(tail);
    free(ids);
    free(x);
    dev_free(ctx, d_ids);
    dev_free(ctx, d_x);
    dev_free(ctx, d_index);
    dev_free(ctx, d_m);
    dev_free(ctx, d_out);
    test_close(ctx);
}

Test(large, gather_offsets_past_2_31)
{
    test_deadline(120);
    const int64_t h = 5, k = 2;
    const int64_t y_stride = ((int64_t)1 << 20) + 1;
    const int64_t out_stride = ((int64_t)1 << 20) + 3;
    const int64_t y_bytes = ((ROWS - 1) * y_stride + h) * 2;
    const int64_t out_bytes = ((ROWS - 1) * out_stride + h) * 2;
    const int64_t first = ROWS - CHECKED;
    moes_context *ctx = test_open(0);
    int32_t *index = malloc(ROWS * k * 4);
    uint16_t *tail;
    void *d_y, *d_out, *d_index;
    moes_gather_args a;

    /* Token t sums y rows t and (7 t) mod ROWS. */
    for (int64_t t = 0; t < ROWS; t++) {
        index[t * k] = (int32_t)t;
        index[t * k + 1] = (int32_t)(7 * t % ROWS);
    }
    d_index = dev_from(ctx, index, ROWS * k * 4);
    cr_assert_eq(moes_malloc(ctx, &d_y, y_bytes), MOES_OK, "%s",
                 moes_last_error(ctx));
    cr_assert_eq(moes_malloc(ctx, &d_out, out_bytes), MOES_OK, "%s",
                 moes_last_error(ctx));
    /* Known values (small integers, exact in bf16) in the rows the
     * checked tokens read; on CUDA other rows hold whatever was there. */
    for (int64_t t = first; t < ROWS; t++) {
        int64_t rows[2] = {t, 7 * t % ROWS};
        for (int j = 0; j < 2; j++) {
            uint16_t v[5];
            for (int64_t e = 0; e < h; e++) {
                float f = (float)(rows[j] % 97 + e);
                uint32_t bits;
                memcpy(&bits, &f, 4);
                v[e] = (uint16_t)(bits >> 16);
            }
            cr_assert_eq(moes_copy_to_backend(ctx,
                             (char *)d_y + rows[j] * y_stride * 2, v,
                             sizeof v), MOES_OK);
        }
    }
    cr_assert_eq(moes_fill(ctx, (char *)d_out + first * out_stride * 2,
                           CANARY, out_bytes - first * out_stride * 2),
                 MOES_OK);

    moes_gather_args_init(&a);
    a.n_tokens = ROWS;
    a.top_k = k;
    a.hidden = h;
    a.y = d_y;
    a.y_dtype = MOES_DTYPE_BF16;
    a.y_rows = ROWS;
    a.y_stride = y_stride;
    a.out_index = d_index;
    a.out = d_out;
    a.out_dtype = MOES_DTYPE_BF16;
    a.out_stride = out_stride;
    cr_assert_eq(moes_gather(ctx, &a), MOES_OK, "%s", moes_last_error(ctx));
    cr_assert_eq(moes_synchronize(ctx), MOES_OK);

    tail = dev_get(ctx, (char *)d_out + first * out_stride * 2,
                   out_bytes - first * out_stride * 2);
    for (int64_t t = first; t < ROWS; t++) {
        const uint16_t *got = tail + (t - first) * out_stride;
        for (int64_t e = 0; e < h; e++) {
            float want = (float)(t % 97 + e) + (float)(7 * t % ROWS % 97 + e);
            uint32_t bits;
            memcpy(&bits, &want, 4);
            cr_expect_eq(got[e], bits >> 16, "out[%lld][%lld] = 0x%04x, "
                         "expected 0x%04x", (long long)t, (long long)e,
                         got[e], bits >> 16);
        }
        if (t < ROWS - 1)
            cr_expect_eq(got[h], CANARY | CANARY << 8,
                         "gap after row %lld changed", (long long)t);
    }
    free(tail);
    free(index);
    dev_free(ctx, d_index);
    dev_free(ctx, d_y);
    dev_free(ctx, d_out);
    test_close(ctx);
}
