/* SPDX-License-Identifier: MIT */
/*
 * fuzz_input.h - reading the fuzzer's bytes as numbers.
 *
 * Past the end of the input every read gives zero, so any byte string is a
 * complete description and a shorter one is a simpler one (libFuzzer's
 * reduction then shrinks towards small, valid calls).
 */
#ifndef FUZZ_INPUT_H
#define FUZZ_INPUT_H

#include <stddef.h>
#include <stdint.h>

/* For the harness's loops over every element of a buffer (filling,
 * decoding, canaries): no coverage instrumentation, which would trace
 * each loop test and cost more than the library's call itself. Their
 * branches are not what the fuzzer is after; the library's are. */
#if defined(__clang__)
#define FZ_NO_COVERAGE __attribute__((no_sanitize("coverage"), noinline))
#else
#define FZ_NO_COVERAGE
#endif

typedef struct fz_input {
    const uint8_t *p;
    size_t n;
} fz_input;

static inline uint8_t fz_u8(fz_input *in)
{
    if (!in->n)
        return 0;
    in->n--;
    return *in->p++;
}

static inline uint64_t fz_u64(fz_input *in)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v |= (uint64_t)fz_u8(in) << (8 * i);
    return v;
}

/* lo .. hi (hi - lo < 65536), from one or two bytes. */
static inline int64_t fz_range(fz_input *in, int64_t lo, int64_t hi)
{
    uint64_t span = (uint64_t)(hi - lo) + 1;
    uint64_t v = fz_u8(in);
    if (span > 256)
        v |= (uint64_t)fz_u8(in) << 8;
    return lo + (int64_t)(v % span);
}

/* Sizes that break things: zero, negatives, the edges of int32 and int64,
 * and values whose products with small element sizes overflow. */
static inline int64_t fz_wild(fz_input *in)
{
    static const int64_t table[] = {
        0, -1, -2, 1, INT64_MIN, INT64_MAX, INT64_MAX / 2 + 1,
        INT32_MAX, (int64_t)INT32_MAX + 1, (int64_t)UINT32_MAX,
        (int64_t)UINT32_MAX + 1, INT64_MAX / 4 + 1, INT64_MAX / 8 + 1,
        INT64_MAX / 3 + 1, (int64_t)1 << 40, INT32_MIN,
    };
    uint8_t b = fz_u8(in);
    if (b < 2 * sizeof table / sizeof table[0])
        return table[b % (sizeof table / sizeof table[0])];
    return (int64_t)fz_u64(in);
}

/* Mostly lo .. hi, sometimes a wild value (one byte in sixteen). */
static inline int64_t fz_size(fz_input *in, int64_t lo, int64_t hi)
{
    uint8_t mode = fz_u8(in);
    if (mode >= 240)
        return fz_wild(in);
    return fz_range(in, lo, hi);
}

#endif /* FUZZ_INPUT_H */
