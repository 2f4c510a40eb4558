/* SPDX-License-Identifier: MIT */
/*
 * test_gather_literal.c - gathers whose results are written out by hand:
 * known weights, no weights, ACCUMULATE, -1 rows skipped, each output
 * dtype, and the NaN rules (every NaN the arithmetic makes is the positive
 * quiet NaN; a NaN only carried through keeps its sign).
 */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "helpers.h"

/* y: 3 rows of H = 2 fp32; N = 2 tokens, K = 3. */
static const float y3[3 * 2] = {1, 2, 10, 20, 100, 200};
static const int32_t index3[2 * 3] = {0, 2, -1, 1, 1, 0};
static const float weights3[2 * 3] = {0.5f, 0.25f, 9.0f, 1.0f, 2.0f, -1.0f};

static float f32(uint32_t u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* Runs the gather with out (N*H elements of out_dtype) starting as init
 * (or the canary when init is NULL), and returns the result (free()). */
static void *run_gather(const void *y, int y_dtype, int64_t y_rows,
                        const int32_t *index, const float *weights,
                        int out_dtype, const void *init, unsigned flags,
                        int64_t n, int64_t k, int64_t h)
{
    size_t ye = 0, oe = 0;
    moes_context *ctx = test_open(0);
    moes_gather_args a;
    void *d_y, *d_index, *d_w = NULL, *d_out, *out;
    moes_dtype_size(y_dtype, &ye);
    moes_dtype_size(out_dtype, &oe);
    d_y = dev_from(ctx, y, y_rows * h * (int64_t)ye);
    d_index = dev_from(ctx, index, n * k * 4);
    if (weights)
        d_w = dev_from(ctx, weights, n * k * 4);
    d_out = init ? dev_from(ctx, init, n * h * (int64_t)oe)
                 : dev_new(ctx, n * h * (int64_t)oe);
    moes_gather_args_init(&a);
    a.flags = flags;
    a.n_tokens = n;
    a.top_k = k;
    a.hidden = h;
    a.y = d_y;
    a.y_dtype = y_dtype;
    a.y_rows = y_rows;
    a.out_index = d_index;
    a.weights = d_w;
    a.out = d_out;
    a.out_dtype = out_dtype;
    cr_assert_eq(moes_gather(ctx, &a), MOES_OK, "%s", moes_last_error(ctx));
    cr_assert_eq(moes_synchronize(ctx), MOES_OK);
    out = dev_get(ctx, d_out, n * h * (int64_t)oe);
    dev_free(ctx, d_y);
    dev_free(ctx, d_index);
    dev_free(ctx, d_w);
    dev_free(ctx, d_out);
    test_close(ctx);
    return out;
}

Test(gather_literal, weights_fp32)
{
    /* t0 = 0.5 y0 + 0.25 y2; t1 = y1 + 2 y1 - y0. */
    const float want[4] = {25.5f, 51.0f, 29.0f, 58.0f};
    float *out = run_gather(y3, MOES_DTYPE_FP32, 3, index3, weights3,
                            MOES_DTYPE_FP32, NULL, 0, 2, 3, 2);
    cr_expect_arr_eq(out, want, sizeof want);
    free(out);
}

Test(gather_literal, no_weights_bf16)
{
    /* t0 = y0 + y2 = {101, 202}; t1 = 2 y1 + y0 = {21, 42}. */
    const uint16_t want[4] = {0x42CA, 0x434A, 0x41A8, 0x4228};
    uint16_t *out = run_gather(y3, MOES_DTYPE_FP32, 3, index3, NULL,
                               MOES_DTYPE_BF16, NULL, 0, 2, 3, 2);
    cr_expect_arr_eq(out, want, sizeof want);
    free(out);
}

Test(gather_literal, accumulate_fp16)
{
    /* Start from {1, 1, -1, -1}: {26.5, 52, 28, 57}. */
    const uint16_t init[4] = {0x3C00, 0x3C00, 0xBC00, 0xBC00};
    const uint16_t want[4] = {0x4EA0, 0x5280, 0x4F00, 0x5320};
    uint16_t *out = run_gather(y3, MOES_DTYPE_FP32, 3, index3, weights3,
                               MOES_DTYPE_FP16, init,
                               MOES_GATHER_ACCUMULATE, 2, 3, 2);
    cr_expect_arr_eq(out, want, sizeof want);
    free(out);
}

Test(gather_literal, bf16_input_rounding)
{
    /* y in bf16: 1 + 2^-7 three times sums exactly in fp32 to
     * 3 + 3 * 2^-7 = 3.0234375, half-way between the bf16 values 3.015625
     * (0x4041, odd) and 3.03125 (0x4042, even): the even one wins. */
    const uint16_t y[2] = {0x3F81, 0x3B80};
    const int32_t index[4] = {0, 0, -1, 0};
    const uint16_t want[1] = {0x4042};
    uint16_t *out = run_gather(y, MOES_DTYPE_BF16, 2, index, NULL,
                               MOES_DTYPE_BF16, NULL, 0, 1, 4, 1);
    cr_expect_arr_eq(out, want, sizeof want, "got 0x%04x", out[0]);
    free(out);
}

Test(gather_literal, overflow_to_infinity)
{
    /* 60000 + 60000 overflows fp16 but not fp32. */
    const float y[1] = {60000.0f};
    const int32_t index[2] = {0, 0};
    const uint16_t want[1] = {0x7C00};
    uint16_t *out = run_gather(y, MOES_DTYPE_FP32, 1, index, NULL,
                               MOES_DTYPE_FP16, NULL, 0, 1, 2, 1);
    cr_expect_arr_eq(out, want, sizeof want);
    free(out);
}

Test(gather_literal, nan_canonical)
{
    /* Token 0: inf + -inf, a NaN made by the arithmetic: +NaN. Token 1:
     * -1 * (a negative NaN with a payload); token 2: 0 * that NaN, then
     * 1 * it: the NaN came in, so it keeps its sign and loses its payload.
     * The same canonical NaNs in each output dtype. */
    const float y[3] = {INFINITY, -INFINITY, f32(0xFFC01234u)};
    const int32_t index[3 * 2] = {0, 1, 2, -1, 2, 2};
    const float w[3 * 2] = {1, 1, -1, 1, 0, 1};
    const uint32_t want32[3] = {0x7FC00000u, 0xFFC00000u, 0xFFC00000u};
    const uint16_t want_bf[3] = {0x7FC0, 0xFFC0, 0xFFC0};
    const uint16_t want_h[3] = {0x7E00, 0xFE00, 0xFE00};
    uint32_t *o32;
    uint16_t *o16;
    o32 = run_gather(y, MOES_DTYPE_FP32, 3, index, w, MOES_DTYPE_FP32,
                     NULL, 0, 3, 2, 1);
    cr_expect_arr_eq(o32, want32, sizeof want32, "0x%08x 0x%08x 0x%08x",
                     o32[0], o32[1], o32[2]);
    free(o32);
    o16 = run_gather(y, MOES_DTYPE_FP32, 3, index, w, MOES_DTYPE_BF16,
                     NULL, 0, 3, 2, 1);
    cr_expect_arr_eq(o16, want_bf, sizeof want_bf);
    free(o16);
    o16 = run_gather(y, MOES_DTYPE_FP32, 3, index, w, MOES_DTYPE_FP16,
                     NULL, 0, 3, 2, 1);
    cr_expect_arr_eq(o16, want_h, sizeof want_h);
    free(o16);
}

Test(gather_literal, nan_carried_keeps_sign)
{
    /* ACCUMULATE with no valid k: the old value is carried, and a NaN
     * among them is made canonical in every dtype: quiet, sign kept,
     * payload dropped (a signalling fp32 NaN included). */
    const float y[1] = {1.0f};
    const int32_t index[2] = {-1, -1};
    const uint32_t init32[1] = {0xFFC01234u};
    const uint16_t init16[1] = {0xFF81};
    const uint16_t want16[1] = {0xFFC0};
    uint32_t *o32 = run_gather(y, MOES_DTYPE_FP32, 1, index, NULL,
                               MOES_DTYPE_FP32, init32,
                               MOES_GATHER_ACCUMULATE, 1, 2, 1);
    uint16_t *o16 = run_gather(y, MOES_DTYPE_FP32, 1, index, NULL,
                               MOES_DTYPE_BF16, init16,
                               MOES_GATHER_ACCUMULATE, 1, 2, 1);
    cr_expect_eq(o32[0], 0xFFC00000u, "0x%08x", o32[0]);
    cr_expect_arr_eq(o16, want16, sizeof want16, "0x%04x", o16[0]);
    free(o32);
    free(o16);
}

Test(gather_literal, fp32_signalling_nan_made_canonical)
{
    /* A signalling NaN, positive and negative, carried with no valid k
     * (ACCUMULATE), and one read from y and summed: each output is the
     * quiet NaN with the incoming sign, never the signalling one. */
    const float y[2] = {f32(0x7F800001u), f32(0xFFA00001u)};
    const int32_t carried[2] = {-1, -1}, summed[2] = {0, 1};
    const uint32_t init_pos[1] = {0x7F800001u}, init_neg[1] = {0xFF800123u};
    uint32_t *o = run_gather(y, MOES_DTYPE_FP32, 2, carried, NULL,
                             MOES_DTYPE_FP32, init_pos,
                             MOES_GATHER_ACCUMULATE, 1, 2, 1);
    cr_expect_eq(o[0], 0x7FC00000u, "0x%08x", o[0]);
    free(o);
    o = run_gather(y, MOES_DTYPE_FP32, 2, carried, NULL, MOES_DTYPE_FP32,
                   init_neg, MOES_GATHER_ACCUMULATE, 1, 2, 1);
    cr_expect_eq(o[0], 0xFFC00000u, "0x%08x", o[0]);
    free(o);
    o = run_gather(y, MOES_DTYPE_FP32, 2, summed, NULL, MOES_DTYPE_FP32,
                   NULL, 0, 1, 2, 1);
    cr_expect_eq(o[0], 0x7FC00000u, "0x%08x", o[0]);
    free(o);
    o = run_gather(y, MOES_DTYPE_FP32, 2, summed + 1, NULL, MOES_DTYPE_FP32,
                   NULL, 0, 1, 1, 1);
    cr_expect_eq(o[0], 0xFFC00000u, "0x%08x", o[0]);
    free(o);
}

Test(gather_literal, all_skipped_gives_zero)
{
    const float y[1] = {5.0f};
    const int32_t index[3] = {-1, -1, -1};
    const uint32_t want[1] = {0};
    uint32_t *out = run_gather(y, MOES_DTYPE_FP32, 1, index, NULL,
                               MOES_DTYPE_FP32, NULL, 0, 1, 3, 1);
    cr_expect_arr_eq(out, want, sizeof want, "0x%08x", out[0]);
    free(out);
}

/* The calling thread's flush-to-zero bits (x86: FTZ and DAZ in MXCSR,
 * AArch64: FZ in FPCR), as -ffast-math programs and
 * torch.set_flush_denormal(True) set them. */
#if defined(__SSE__) && (defined(__x86_64__) || defined(__i386__))
#include <xmmintrin.h>
#define FLUSH_MODES 1
static uint64_t flush_read(void) { return _mm_getcsr(); }
static void flush_write(uint64_t m) { _mm_setcsr((unsigned)m); }
static const uint64_t flush_bits = 0x8040u;
#elif defined(__aarch64__) && (defined(__GNUC__) || defined(__clang__))
#define FLUSH_MODES 1
static uint64_t flush_read(void)
{
    uint64_t m;
    __asm__ __volatile__("mrs %0, fpcr" : "=r"(m));
    return m;
}
static void flush_write(uint64_t m)
{
    __asm__ __volatile__("msr fpcr, %0" : : "r"(m));
}
static const uint64_t flush_bits = (uint64_t)1 << 24;
#else
#define FLUSH_MODES 0
#endif

Test(gather_literal, subnormals_kept_when_the_caller_flushes)
{
#if FLUSH_MODES
    /* Even tokens take 1 * 2^-140 (a subnormal input), odd ones
     * 2^-70 * 2^-70 (a subnormal product of normal inputs): 2^-140,
     * 0x00000200, every time. With the caller's flush bits set before
     * the call, the threads the library starts after it inherit them,
     * and its own thread has them throughout. */
    enum { N = 64 };
    const float y[2] = {f32(0x00000200u), f32(0x1C800000u)};
    int32_t index[N];
    float w[N];
    uint32_t *out;
    float probe;
    volatile float tiny = f32(0x1C800000u);
    const uint64_t before = flush_read();
    for (int t = 0; t < N; t++) {
        index[t] = t % 2;
        w[t] = t % 2 ? f32(0x1C800000u) : 1.0f;
    }
    flush_write(before | flush_bits);
    /* The test means something only where the bits take effect. */
    probe = tiny * tiny;
    cr_assert_eq(probe, 0.0f, "the flush bits did not take");
    out = run_gather(y, MOES_DTYPE_FP32, 2, index, w, MOES_DTYPE_FP32,
                     NULL, 0, N, 1, 1);
    cr_assert_eq(flush_read() & flush_bits, flush_bits,
                 "the caller's flush bits were not put back");
    flush_write(before);
    for (int t = 0; t < N; t++)
        cr_expect_eq(out[t], 0x00000200u, "token %d: 0x%08x", t, out[t]);
    free(out);
#else
    cr_skip_test("no flush-to-zero mode known on this CPU");
#endif
}
