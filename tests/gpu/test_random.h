/* SPDX-License-Identifier: MIT */
/*
 * test_random.h - the random draws of the GPU-only test programs: one
 * xorshift64 generator (each program keeps its own state and seed, so
 * its inputs do not depend on another's draws) and an expert that a
 * token has not chosen yet.
 */
#ifndef MOES_TESTS_TEST_RANDOM_H
#define MOES_TESTS_TEST_RANDOM_H

#include <stdint.h>

static inline uint64_t test_xorshift(uint64_t *state)
{
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    return *state;
}

/* An expert below n_experts that none of row[0 .. k - 1] holds, drawn
 * from state (k < n_experts): the next of a token's distinct experts. */
static inline int32_t test_new_expert(const int32_t *row, int k,
                                      int32_t n_experts, uint64_t *state)
{
    int32_t e;
    int repeat;
    do {
        e = (int32_t)(test_xorshift(state) % (uint64_t)n_experts);
        repeat = 0;
        for (int j = 0; j < k; j++)
            repeat |= row[j] == e;
    } while (repeat);
    return e;
}

#endif /* MOES_TESTS_TEST_RANDOM_H */
