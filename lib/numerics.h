/* SPDX-License-Identifier: MIT */
/*
 * numerics.h - the element conversions and the gather step, in one place.
 *
 * This header is compiled by the C compiler (CPU backend, oracle, tests)
 * and by nvcc (CUDA kernels), so that the two backends cannot drift apart.
 * Everything is done on bit patterns with integer arithmetic: nothing here
 * depends on the floating-point environment (rounding mode, flush-to-zero,
 * contraction), except moes_gather_step, which uses the explicitly rounded
 * fp32 operations of each compiler.
 *
 * Rules (docs/design-rules.md, Numerics):
 *   fp32 -> bf16/fp16: round to nearest even, overflow to infinity,
 *   subnormals kept, NaN -> quiet NaN with the same sign (0x7FC0 / 0x7E00).
 *   Every NaN the gather writes is canonical, fp32 included (0x7FC00000
 *   with a sign): a NaN that came in keeps its sign and nothing else, a
 *   NaN made by the arithmetic (inf - inf, 0 * inf) is +NaN. No signalling
 *   NaN and no payload ever reaches an output.
 */
#ifndef MOES_NUMERICS_H
#define MOES_NUMERICS_H

#include <stdint.h>

#if defined(__CUDACC__)
#define MOES_HD __host__ __device__ __forceinline__
#else
#include <string.h>
#define MOES_HD static inline
#endif

MOES_HD uint32_t moes_f32_to_bits(float f)
{
#if defined(__CUDA_ARCH__)
    return __float_as_uint(f);
#else
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
#endif
}

MOES_HD float moes_bits_to_f32(uint32_t u)
{
#if defined(__CUDA_ARCH__)
    return __uint_as_float(u);
#else
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
#endif
}

/* bf16 is the high half of an fp32: widening is exact. */
MOES_HD float moes_bf16_to_f32(uint16_t h)
{
    return moes_bits_to_f32((uint32_t)h << 16);
}

/* The bf16 nearest to an fp32 that is not a NaN (ties to even). Adding
 * 0x7FFF plus the lowest kept bit rounds to nearest even; a carry out of
 * the mantissa bumps the exponent, up to infinity. */
MOES_HD uint16_t moes_f32_bits_to_bf16_rne(uint32_t u)
{
    u += 0x7FFFu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

MOES_HD uint16_t moes_f32_to_bf16(float f)
{
    uint32_t u = moes_f32_to_bits(f);
    if ((u & 0x7FFFFFFFu) > 0x7F800000u)
        return (uint16_t)(((u >> 16) & 0x8000u) | 0x7FC0u);
    return moes_f32_bits_to_bf16_rne(u);
}

MOES_HD float moes_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1Fu;
    uint32_t mant = h & 0x3FFu;
    /* A subnormal is mant * 2^-24: the fp32 of the integer mant (exact,
     * mant < 2^10) with 24 taken off its exponent. Written without loops or
     * branches so that the CPU loops over rows vectorize. */
    uint32_t subnormal = moes_f32_to_bits((float)mant) - (24u << 23);
    uint32_t normal = ((exp + 112u) << 23) | (mant << 13);
    uint32_t special = 0x7F800000u | (mant << 13); /* inf, NaN payload kept */
    uint32_t magnitude = exp == 0x1Fu ? special
                         : exp != 0   ? normal
                         : mant != 0  ? subnormal
                                      : 0u;
    return moes_bits_to_f32(sign | magnitude);
}

MOES_HD uint16_t moes_f32_to_f16(float f)
{
    uint32_t u = moes_f32_to_bits(f);
    uint32_t sign = (u >> 16) & 0x8000u;
    uint32_t a = u & 0x7FFFFFFFu;
    if (a > 0x7F800000u)
        return (uint16_t)(sign | 0x7E00u);
    /* 65520 is half-way between 65504 (odd mantissa) and 65536: ties and
     * above round to infinity. */
    if (a >= 0x477FF000u)
        return (uint16_t)(sign | 0x7C00u);
    if (a >= 0x38800000u) { /* a normal half: |f| >= 2^-14 */
        uint32_t v = a - (112u << 23);
        v += 0x0FFFu + ((v >> 13) & 1u);
        return (uint16_t)(sign | (v >> 13));
    }
    /* A subnormal half, round(|f| / 2^-24). 2^-25 and below go to zero
     * (2^-25 itself is a tie that goes to the even zero). */
    if (a <= 0x33000000u)
        return (uint16_t)sign;
    {
        uint32_t exp = a >> 23; /* 102 .. 112 */
        uint32_t mant = (a & 0x7FFFFFu) | 0x800000u;
        uint32_t shift = 126u - exp; /* 14 .. 24 */
        uint32_t result = mant >> shift;
        uint32_t rem = mant & ((1u << shift) - 1u);
        uint32_t half = 1u << (shift - 1u);
        if (rem > half || (rem == half && (result & 1u)))
            result++; /* may carry into the smallest normal: still right */
        return (uint16_t)(sign | result);
    }
}

/* UE8M0: the biased exponent byte of an fp32 scale. Only a positive,
 * finite, normal power of two (sign 0, mantissa 0, exponent 1 .. 254) is
 * packed: anything else would lose its mantissa (1.5 would become 1.0)
 * or have no UE8M0 value at all, and is rejected as bad input before the
 * first write (moes_ue8m0_scale_ok). */
MOES_HD uint32_t moes_f32_exponent_byte(float f)
{
    return (moes_f32_to_bits(f) >> 23) & 0xFFu;
}

/* 1 when the scale with these bits packs into UE8M0 without loss. */
MOES_HD int moes_ue8m0_scale_ok(uint32_t bits)
{
    return (bits & 0x807FFFFFu) == 0 && bits >= 0x00800000u &&
           bits <= 0x7F000000u;
}

/* Word w of a packed UE8M0 scale row: the exponent bytes of scales 4w ..
 * 4w+3, low byte first, zero bytes past n_scales. The scales were checked
 * with moes_ue8m0_scale_ok. */
MOES_HD uint32_t moes_ue8m0_word(const float *scales, int64_t n_scales,
                                 int64_t w)
{
    uint32_t word = 0;
    for (int j = 0; j < 4; j++) {
        int64_t s = 4 * w + j;
        if (s < n_scales)
            word |= moes_f32_exponent_byte(scales[s]) << (8 * j);
    }
    return word;
}

/* The canonical quiet NaN: sign bit clear, top mantissa bit set, no
 * payload. IEEE 754 leaves the sign and payload of a NaN result open (x86
 * gives 0xFFC00000 for inf - inf and keeps an operand's payload, CUDA
 * gives 0x7FFFFFFF), so the gather never lets one through as it is. */
#define MOES_F32_QNAN_BITS 0x7FC00000u

MOES_HD int moes_f32_bits_are_nan(uint32_t u)
{
    return (u & 0x7FFFFFFFu) > 0x7F800000u;
}

/* f itself, or, when f is a NaN, the canonical NaN with f's sign. The
 * fp32 output of the gather goes through this, as bf16 and fp16 outputs
 * go through their conversions: an accumulated signalling NaN or a NaN
 * payload never reaches the output. */
MOES_HD float moes_f32_canonical(float f)
{
    uint32_t u = moes_f32_to_bits(f);
    return moes_f32_bits_are_nan(u)
               ? moes_bits_to_f32((u & 0x80000000u) | MOES_F32_QNAN_BITS)
               : f;
}

/* acc + w * y with each operation rounded on its own (no fused
 * multiply-add): a gather step's result whenever it is not a NaN, since a
 * NaN operand always gives a NaN sum. */
MOES_HD float moes_gather_sum(float acc, float w, float y)
{
#if defined(__CUDA_ARCH__)
    return __fadd_rn(acc, __fmul_rn(w, y));
#else
    float p = w * y;
    return acc + p;
#endif
}

/* One gather step: acc + fp32(w * y), each operation rounded to fp32 on
 * its own (never fused), a NaN result made canonical. The C side relies
 * on -ffp-contract=off and on FLT_EVAL_METHOD == 0; CUDA uses the
 * explicitly rounded intrinsics.
 *
 * A NaN result keeps the sign of the NaN that came in, looked for in this
 * order: acc, then w, then y (the hardware's own choice differs between
 * CPUs and GPUs). A NaN that no operand carried was made by the
 * arithmetic (inf - inf, 0 * inf) and is +NaN. Written with selects, not
 * branches, so that the CPU's loops over a row still vectorize. */
MOES_HD float moes_gather_step(float acc, float w, float y)
{
    float r = moes_gather_sum(acc, w, y);
#if defined(__CUDA_ARCH__)
    /* A result that is not a NaN had no NaN operand (a NaN propagates
     * through both operations): it is the answer. A GPU thread takes
     * this test as one compare and a branch almost never taken, which
     * costs far less than the masks below on every element. */
    if (__builtin_expect(r == r, 1))
        return r;
#endif
    /* All-ones masks and bit operations rather than a chain of
     * conditionals: the CPU's loops over a row only vectorize so. */
    uint32_t ab = moes_f32_to_bits(acc), wb = moes_f32_to_bits(w);
    uint32_t yb = moes_f32_to_bits(y), rb = moes_f32_to_bits(r);
    uint32_t an = 0u - (uint32_t)moes_f32_bits_are_nan(ab);
    uint32_t wn = 0u - (uint32_t)moes_f32_bits_are_nan(wb);
    uint32_t yn = 0u - (uint32_t)moes_f32_bits_are_nan(yb);
    uint32_t rn = 0u - (uint32_t)moes_f32_bits_are_nan(rb);
    uint32_t from = (ab & an) | (wb & wn & ~an) | (yb & yn & ~an & ~wn);
    uint32_t nan = (from & 0x80000000u) | MOES_F32_QNAN_BITS;
    return moes_bits_to_f32((rb & ~rn) | (nan & rn));
}

#endif /* MOES_NUMERICS_H */
