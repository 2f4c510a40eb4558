/* SPDX-License-Identifier: MIT */
/*
 * rng.h - the kit's pseudo-random numbers: xoshiro256** seeded through
 * splitmix64. Fixed algorithms, so a seed means the same case everywhere
 * (rand() differs between C libraries).
 */
#ifndef MOES_KIT_RNG_H
#define MOES_KIT_RNG_H

#include <stdint.h>

typedef struct moes_rng {
    uint64_t s[4];
} moes_rng;

static inline uint64_t moes_splitmix64(uint64_t *state)
{
    uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static inline void moes_rng_seed(moes_rng *g, uint64_t seed)
{
    for (int i = 0; i < 4; i++)
        g->s[i] = moes_splitmix64(&seed);
}

static inline uint64_t moes_rng_next(moes_rng *g)
{
    uint64_t *s = g->s;
    uint64_t x = s[1] * 5;
    uint64_t result = ((x << 7) | (x >> 57)) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = (s[3] << 45) | (s[3] >> 19);
    return result;
}

/* Uniform in [0, n) for n >= 1 (the tiny modulo bias does not matter for
 * test inputs). */
static inline int64_t moes_rng_below(moes_rng *g, int64_t n)
{
    return (int64_t)(moes_rng_next(g) % (uint64_t)n);
}

/* Uniform in [lo, hi]. */
static inline int64_t moes_rng_range(moes_rng *g, int64_t lo, int64_t hi)
{
    return lo + moes_rng_below(g, hi - lo + 1);
}

/* True with probability percent / 100. */
static inline int moes_rng_chance(moes_rng *g, int percent)
{
    return moes_rng_below(g, 100) < percent;
}

#endif /* MOES_KIT_RNG_H */
