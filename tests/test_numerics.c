/* SPDX-License-Identifier: MIT */
/*
 * test_numerics.c - lib/numerics.h against references written another
 * way: widening through ldexp() in double precision, narrowing by
 * choosing the nearer of the two neighbouring bf16/fp16 values in double
 * arithmetic (ties to the even one), never by bit tricks.
 *
 * Widening is checked on all 65536 inputs. Narrowing is checked on every
 * fp32 pattern would take ~20 s per format on the CI machine (far more
 * under ASan), so instead: every high half (sign, exponent, top 7
 * mantissa bits) combined with ~50 low halves around each rounding bit,
 * every pattern of the overflow, NaN and subnormal boundary regions, and
 * 2^24 patterns spread over the whole space by an odd stride.
 */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <math.h>
#include <stdio.h>

#include "numerics.h"

static float f32(uint32_t u)
{
    return moes_bits_to_f32(u);
}

static int is_nan_bits(uint32_t u)
{
    return (u & 0x7FFFFFFFu) > 0x7F800000u;
}

/* ---- references ---------------------------------------------------- */

static uint32_t ref_widen_bf16(uint16_t h)
{
    int sign = h >> 15, e = (h >> 7) & 0xFF, m = h & 0x7F;
    double v;
    if (e == 0xFF)
        return (uint32_t)h << 16; /* inf / NaN: same bits, payload kept */
    v = e == 0 ? ldexp(m, -133) : ldexp(128 + m, e - 134);
    return moes_f32_to_bits((float)(sign ? -v : v));
}

static uint32_t ref_widen_f16(uint16_t h)
{
    int sign = h >> 15, e = (h >> 10) & 0x1F, m = h & 0x3FF;
    double v;
    if (e == 0x1F) {
        if (m == 0)
            return sign ? 0xFF800000u : 0x7F800000u;
        return (uint32_t)sign << 31 | 0x7F800000u | (uint32_t)m << 13;
    }
    v = e == 0 ? ldexp(m, -24) : ldexp(1024 + m, e - 25);
    return moes_f32_to_bits((float)(sign ? -v : v));
}

/* The value of a non-negative bf16 / fp16 pattern, in double; the pattern
 * just past the largest finite one counts as 2^128 / 2^16, the point
 * beyond which everything rounds to infinity. */
static double bf16_value(uint32_t p)
{
    if (p >= 0x7F80u)
        return ldexp(1.0, 128);
    return (double)f32(p << 16);
}

static double f16_value(uint32_t p)
{
    int e = (int)(p >> 10), m = (int)(p & 0x3FF);
    if (p >= 0x7C00u)
        return ldexp(1.0, 16);
    return e == 0 ? ldexp(m, -24) : ldexp(1024 + m, e - 25);
}

/* The nearest of the patterns lo and lo + 1 around x (ties: the even). */
static uint32_t nearest(double x, uint32_t lo, double vlo, double vhi)
{
    double dlo = x - vlo, dhi = vhi - x;
    if (dlo < dhi)
        return lo;
    if (dhi < dlo)
        return lo + 1;
    return (lo & 1) ? lo + 1 : lo;
}

static uint16_t ref_narrow_bf16(uint32_t u)
{
    uint32_t sign = (u >> 16) & 0x8000u, lo;
    double x;
    if (is_nan_bits(u))
        return (uint16_t)(sign | 0x7FC0u);
    x = fabs((double)f32(u));
    /* The bf16 at or below x: found by search, not by truncation. */
    lo = 0;
    for (uint32_t step = 0x4000; step; step >>= 1)
        if (lo + step < 0x7F80u && bf16_value(lo + step) <= x)
            lo += step;
    if (lo == 0x7F7Fu && x >= ldexp(1.0, 128))
        return (uint16_t)(sign | 0x7F80u);
    if (x == INFINITY)
        return (uint16_t)(sign | 0x7F80u);
    return (uint16_t)(sign | nearest(x, lo, bf16_value(lo),
                                     bf16_value(lo + 1)));
}

static uint16_t ref_narrow_f16(uint32_t u)
{
    uint32_t sign = (u >> 16) & 0x8000u, lo;
    double x;
    if (is_nan_bits(u))
        return (uint16_t)(sign | 0x7E00u);
    x = fabs((double)f32(u));
    if (x >= 65520.0)
        return (uint16_t)(sign | 0x7C00u);
    lo = 0;
    for (uint32_t step = 0x4000; step; step >>= 1)
        if (lo + step < 0x7C00u && f16_value(lo + step) <= x)
            lo += step;
    return (uint16_t)(sign | nearest(x, lo, f16_value(lo),
                                     f16_value(lo + 1)));
}

/* ---- widening: all 65536 inputs ----------------------------------- */

Test(numerics, widen_bf16_all)
{
    for (uint32_t h = 0; h < 0x10000u; h++) {
        uint32_t got = moes_f32_to_bits(moes_bf16_to_f32((uint16_t)h));
        cr_assert_eq(got, ref_widen_bf16((uint16_t)h),
                     "bf16 0x%04x -> 0x%08x, expected 0x%08x", h, got,
                     ref_widen_bf16((uint16_t)h));
    }
}

Test(numerics, widen_f16_all)
{
    for (uint32_t h = 0; h < 0x10000u; h++) {
        uint32_t got = moes_f32_to_bits(moes_f16_to_f32((uint16_t)h));
        cr_assert_eq(got, ref_widen_f16((uint16_t)h),
                     "fp16 0x%04x -> 0x%08x, expected 0x%08x", h, got,
                     ref_widen_f16((uint16_t)h));
    }
}

/* Every fp16 and bf16 value survives widening then narrowing (NaNs
 * become the canonical quiet NaN of their sign). */
Test(numerics, round_trip_all)
{
    for (uint32_t h = 0; h < 0x10000u; h++) {
        uint16_t b = moes_f32_to_bf16(moes_bf16_to_f32((uint16_t)h));
        uint16_t f = moes_f32_to_f16(moes_f16_to_f32((uint16_t)h));
        int bnan = (h & 0x7FFF) > 0x7F80, fnan = (h & 0x7FFF) > 0x7C00;
        cr_assert_eq(b, bnan ? (h & 0x8000) | 0x7FC0 : h, "bf16 0x%04x", h);
        cr_assert_eq(f, fnan ? (h & 0x8000) | 0x7E00 : h, "fp16 0x%04x", h);
    }
}

/* ---- narrowing ------------------------------------------------------ */

typedef struct region {
    int format;   /* 0 bf16, 1 fp16 */
    int kind;     /* 0 grid, 1 boundaries, 2 stride */
    uint32_t part; /* which slice of the work */
} region;

enum { GRID_PARTS = 8, STRIDE_PARTS = 8 };

static uint64_t checked_total;

static void check_one(int format, uint32_t u)
{
    uint16_t got, want;
    if (format == 0) {
        got = moes_f32_to_bf16(f32(u));
        want = ref_narrow_bf16(u);
    } else {
        got = moes_f32_to_f16(f32(u));
        want = ref_narrow_f16(u);
    }
    if (got != want)
        cr_assert_fail("%s(0x%08x = %.9g) = 0x%04x, expected 0x%04x",
                 format ? "f32_to_f16" : "f32_to_bf16", u, (double)f32(u),
                 got, want);
    checked_total++;
}

/* Low halves around every bit position (rounding bits of both formats,
 * including fp16 subnormals where the rounding bit is above bit 15). */
static int low_halves(uint32_t *out)
{
    int n = 0;
    out[n++] = 0;
    out[n++] = 0xFFFF;
    for (int p = 0; p < 16; p++) {
        out[n++] = 1u << p;
        out[n++] = (1u << p) - 1;
        out[n++] = ((1u << p) + 1) & 0xFFFF;
    }
    out[n++] = 0x5A5A;
    out[n++] = 0xA5A5;
    return n;
}

static void run_region(const region *r)
{
    checked_total = 0;
    if (r->kind == 0) {
        uint32_t lows[64];
        int n = low_halves(lows);
        uint32_t per = 0x10000u / GRID_PARTS;
        for (uint32_t hi = r->part * per; hi < (r->part + 1) * per; hi++)
            for (int i = 0; i < n; i++)
                check_one(r->format, hi << 16 | lows[i]);
    } else if (r->kind == 1) {
        /* Around the largest finite values, infinity and the NaNs, the
         * smallest normals and subnormals, and 1.0: every pattern. */
        static const uint32_t centers[] = {
            0x7F7F8000u, 0x7F800000u, 0x7FC00000u, 0x477FF000u,
            0x47800000u, 0x38800000u, 0x33000000u, 0x33800000u,
            0x00800000u, 0x00000000u, 0x3F800000u, 0x387FE000u};
        for (size_t c = 0; c < sizeof centers / sizeof centers[0]; c++)
            for (int32_t d = -0x8000; d < 0x8000; d++)
                for (uint32_t s = 0; s < 2; s++)
                    check_one(r->format,
                              ((centers[c] + (uint32_t)d) & 0x7FFFFFFFu) |
                                  s << 31);
    } else {
        /* 2^21 patterns per part, spread by a stride coprime to 2^32. */
        uint32_t u = r->part * 0x2000000u + 0x12345u;
        for (uint32_t i = 0; i < (1u << 21); i++, u += 0x9E3779B1u)
            check_one(r->format, u);
    }
    cr_log_info("format %d kind %d part %u: %llu patterns", r->format,
                r->kind, r->part, (unsigned long long)checked_total);
}

ParameterizedTestParameters(numerics, narrow)
{
    static region r[2 * (GRID_PARTS + 1 + STRIDE_PARTS)];
    size_t n = 0;
    for (int f = 0; f < 2; f++) {
        for (uint32_t p = 0; p < GRID_PARTS; p++)
            r[n++] = (region){f, 0, p};
        r[n++] = (region){f, 1, 0};
        for (uint32_t p = 0; p < STRIDE_PARTS; p++)
            r[n++] = (region){f, 2, p};
    }
    return cr_make_param_array(region, r, n);
}

ParameterizedTest(region *r, numerics, narrow)
{
    run_region(r);
}

/* ---- the rules, written out ---------------------------------------- */

Test(numerics, nan_rules)
{
    /* Quiet NaN of the same sign, whatever the payload. */
    cr_assert_eq(moes_f32_to_bf16(f32(0x7F800001u)), 0x7FC0);
    cr_assert_eq(moes_f32_to_bf16(f32(0xFFFFFFFFu)), 0xFFC0);
    cr_assert_eq(moes_f32_to_bf16(f32(0x7FC12345u)), 0x7FC0);
    cr_assert_eq(moes_f32_to_f16(f32(0x7F800001u)), 0x7E00);
    cr_assert_eq(moes_f32_to_f16(f32(0xFFC00000u)), 0xFE00);
    cr_assert_eq(moes_f32_to_f16(f32(0xFFA5A5A5u)), 0xFE00);
    /* A NaN must never round into infinity (0x7F7FFFFF + carry). */
    cr_assert_eq(moes_f32_to_bf16(f32(0x7FFFFFFFu)), 0x7FC0);
}

Test(numerics, overflow_to_infinity)
{
    cr_assert_eq(moes_f32_to_bf16(f32(0x7F7FFFFFu)), 0x7F80); /* FLT_MAX */
    cr_assert_eq(moes_f32_to_bf16(f32(0xFF7FFFFFu)), 0xFF80);
    cr_assert_eq(moes_f32_to_bf16(f32(0x7F7F7FFFu)), 0x7F7F);
    cr_assert_eq(moes_f32_to_bf16(f32(0x7F800000u)), 0x7F80);
    cr_assert_eq(moes_f32_to_f16(65504.0f), 0x7BFF);
    cr_assert_eq(moes_f32_to_f16(65519.996f), 0x7BFF);
    cr_assert_eq(moes_f32_to_f16(65520.0f), 0x7C00);
    cr_assert_eq(moes_f32_to_f16(-1e10f), 0xFC00);
    cr_assert_eq(moes_f32_to_f16(-INFINITY), 0xFC00);
}

Test(numerics, subnormals_and_ties)
{
    cr_assert_eq(moes_f32_to_f16(ldexpf(1.0f, -24)), 0x0001);
    cr_assert_eq(moes_f32_to_f16(ldexpf(1.0f, -25)), 0x0000); /* tie, even */
    cr_assert_eq(moes_f32_to_f16(ldexpf(3.0f, -25)), 0x0002); /* tie, even */
    cr_assert_eq(moes_f32_to_f16(-ldexpf(1.0f, -26)), 0x8000);
    cr_assert_eq(moes_f32_to_f16(ldexpf(1023.0f, -24)), 0x03FF);
    cr_assert_eq(moes_f32_to_f16(ldexpf(2047.0f, -25)), 0x0400); /* carry */
    cr_assert_eq(moes_f32_to_bf16(f32(0x00000001u)), 0x0000);
    cr_assert_eq(moes_f32_to_bf16(f32(0x00008000u)), 0x0000); /* tie */
    cr_assert_eq(moes_f32_to_bf16(f32(0x00018000u)), 0x0002); /* tie */
    cr_assert_eq(moes_f32_to_bf16(f32(0x3F808000u)), 0x3F80); /* tie */
    cr_assert_eq(moes_f32_to_bf16(f32(0x3F818000u)), 0x3F82); /* tie */
    cr_assert_eq(moes_f32_to_bf16(f32(0x80000000u)), 0x8000);
    cr_assert_eq(moes_f32_to_f16(f32(0x80000000u)), 0x8000);
}

Test(numerics, ue8m0_scale_ok)
{
    /* Only positive, finite, normal powers of two pack without loss. */
    cr_assert(moes_ue8m0_scale_ok(0x3F800000u));  /* 1.0        */
    cr_assert(moes_ue8m0_scale_ok(0x00800000u));  /* 2^-126     */
    cr_assert(moes_ue8m0_scale_ok(0x7F000000u));  /* 2^127      */
    cr_assert(!moes_ue8m0_scale_ok(0x3FC00000u)); /* 1.5        */
    cr_assert(!moes_ue8m0_scale_ok(0xBF800000u)); /* -1.0       */
    cr_assert(!moes_ue8m0_scale_ok(0x00000000u)); /* 0          */
    cr_assert(!moes_ue8m0_scale_ok(0x80000000u)); /* -0         */
    cr_assert(!moes_ue8m0_scale_ok(0x00400000u)); /* 2^-127, subnormal */
    cr_assert(!moes_ue8m0_scale_ok(0x7F800000u)); /* inf        */
    cr_assert(!moes_ue8m0_scale_ok(0x7FC00000u)); /* NaN        */
}

Test(numerics, ue8m0)
{
    float s[5] = {1.0f, 2.0f, 0.5f, -8.0f, 1e-40f};
    cr_assert_eq(moes_f32_exponent_byte(1.0f), 127);
    cr_assert_eq(moes_f32_exponent_byte(-3.0f), 128); /* no rounding */
    cr_assert_eq(moes_f32_exponent_byte(1.999f), 127);
    cr_assert_eq(moes_ue8m0_word(s, 5, 0), 0x827E807Fu);
    cr_assert_eq(moes_ue8m0_word(s, 5, 1), 0x00000000u); /* subnormal: 0 */
    cr_assert_eq(moes_ue8m0_word(s, 3, 0), 0x007E807Fu); /* past S: 0 */
}

/* The gather step rounds the product before the sum (no fused
 * multiply-add) and makes every NaN result canonical: +NaN when the
 * arithmetic made it, the incoming NaN's sign (acc, then w, then y)
 * otherwise. */
Test(numerics, gather_step)
{
    float w = 1.0f + ldexpf(1.0f, -12);
    float p = w * w; /* 1 + 2^-11 + 2^-24 rounds to 1 + 2^-11 */
    float r = moes_gather_step(-p, w, w);
    cr_assert_eq(moes_f32_to_bits(r), 0u, "fused: %a", (double)r);
    r = moes_gather_step(INFINITY, 1.0f, -INFINITY);
    cr_assert_eq(moes_f32_to_bits(r), MOES_F32_QNAN_BITS);
    r = moes_gather_step(1.0f, 1.0f, f32(0xFFC00001u));
    cr_assert_eq(moes_f32_to_bits(r), 0xFFC00000u);
    r = moes_gather_step(1.0f, f32(0x7F800001u), f32(0xFFC00001u));
    cr_assert_eq(moes_f32_to_bits(r), MOES_F32_QNAN_BITS);
    r = moes_gather_step(f32(0xFF800001u), f32(0x7F800001u), 1.0f);
    cr_assert_eq(moes_f32_to_bits(r), 0xFFC00000u);
    cr_assert_eq(moes_f32_to_bits(moes_f32_canonical(f32(0x7F800001u))),
                 MOES_F32_QNAN_BITS);
    cr_assert_eq(moes_f32_to_bits(moes_f32_canonical(-2.5f)), 0xC0200000u);
    r = moes_gather_step(0.0f, 0.0f, INFINITY);
    cr_assert_eq(moes_f32_to_bits(r), MOES_F32_QNAN_BITS);
    r = moes_gather_step(ldexpf(1.0f, -149), 1.0f, ldexpf(1.0f, -149));
    cr_assert_eq(moes_f32_to_bits(r), 2u, "subnormals are kept");
    r = moes_gather_step(-0.0f, 1.0f, -0.0f);
    cr_assert_eq(moes_f32_to_bits(r), 0x80000000u);
    r = moes_gather_step(3e38f, 1.0f, 3e38f);
    cr_assert_eq(moes_f32_to_bits(r), 0x7F800000u);
}
