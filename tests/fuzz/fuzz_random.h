/* SPDX-License-Identifier: MIT */
/*
 * fuzz_random.h - bulk data for the fuzzers: a small generator seeded from
 * the input, and element values that favour the numbers conversions get
 * wrong (zeros of both signs, infinities, NaNs with payloads, subnormals,
 * the largest finite values, rounding ties).
 */
#ifndef FUZZ_RANDOM_H
#define FUZZ_RANDOM_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "fuzz_input.h" /* FZ_NO_COVERAGE */

static inline uint64_t fz_next(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static inline uint32_t fz_f32_bits(uint64_t *s)
{
    static const uint32_t special[] = {
        0x00000000u, 0x80000000u, 0x7F800000u, 0xFF800000u, 0x7FC00000u,
        0xFFC00000u, 0x7F800001u, 0xFFBFFFFFu, 0x00000001u, 0x807FFFFFu,
        0x7F7FFFFFu, 0xFF7FFFFFu, 0x3F800000u, 0xBF800000u, 0x477FF000u,
        0x477FEFFFu, 0x33000000u, 0x33000001u, 0x38800000u, 0x387FC000u,
        0x3F808000u, 0x3F818000u, 0x7F7F8000u, 0x00008000u,
    };
    uint64_t r = fz_next(s);
    switch (r & 7) {
    case 0:
        return special[(r >> 3) % (sizeof special / sizeof special[0])];
    case 1: /* a modest number: sums stay finite and differ in low bits */
        return 0x3C000000u + (uint32_t)((r >> 8) % 0x06000000u) +
               (uint32_t)(r >> 63 << 31);
    default:
        return (uint32_t)(r >> 16);
    }
}

static inline uint16_t fz_f16_bits(uint64_t *s)
{
    static const uint16_t special[] = {
        0x0000, 0x8000, 0x7C00, 0xFC00, 0x7E00, 0xFE00, 0x7C01, 0x0001,
        0x83FF, 0x7BFF, 0xFBFF, 0x3C00, 0x0400, 0x7F80, 0xFF81, 0x0080,
    };
    uint64_t r = fz_next(s);
    if ((r & 3) == 0)
        return special[(r >> 2) % (sizeof special / sizeof special[0])];
    return (uint16_t)(r >> 20);
}

/* Fills n elements of elem bytes: floats of that width for 2 and 4 bytes,
 * noise for any other width. */
FZ_NO_COVERAGE static inline void fz_fill_elems(void *dst, size_t elem,
                                                size_t n, uint64_t *s)
{
    uint8_t *d = dst;
    for (size_t i = 0; i < n; i++) {
        if (elem == 4) {
            uint32_t v = fz_f32_bits(s);
            memcpy(d + 4 * i, &v, 4);
        } else if (elem == 2) {
            uint16_t v = fz_f16_bits(s);
            memcpy(d + 2 * i, &v, 2);
        } else {
            for (size_t j = 0; j < elem; j++)
                d[elem * i + j] = (uint8_t)fz_next(s);
        }
    }
}

/* Fills bytes with noise (for input padding between rows). */
FZ_NO_COVERAGE static inline void fz_fill_bytes(void *dst, size_t n,
                                                uint64_t *s)
{
    uint8_t *d = dst;
    for (size_t i = 0; i < n; i++)
        d[i] = (uint8_t)(fz_next(s) >> 24);
}

#endif /* FUZZ_RANDOM_H */
