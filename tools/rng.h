/* SPDX-License-Identifier: MIT */
/*
 * rng.h - the tool's random numbers: splitmix64, small, fast and the same
 * sequence on every machine for a given seed.
 */
#ifndef MOES_TOOL_RNG_H
#define MOES_TOOL_RNG_H

#include <stdint.h>

typedef struct tool_rng {
    uint64_t state;
} tool_rng;

static inline void tool_rng_seed(tool_rng *r, uint64_t seed)
{
    r->state = seed;
}

static inline uint64_t tool_rng_next(tool_rng *r)
{
    uint64_t z = (r->state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* Uniform in [0, n) for n >= 1 (the modulo bias is below 2^-32 for the
 * sizes the tool draws). */
static inline uint64_t tool_rng_below(tool_rng *r, uint64_t n)
{
    return tool_rng_next(r) % n;
}

#endif /* MOES_TOOL_RNG_H */
