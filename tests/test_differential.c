/*
 * test_differential.c - the backend against the oracle on random cases,
 * bit for bit, with several thread counts. Half the cases break one kind
 * of data on purpose, so error statuses, messages and untouched outputs
 * are compared too.
 *
 * Each parameterized instance runs a block of consecutive seeds; the
 * totals are printed at the end of the run so they can be quoted.
 */
#include <criterion/criterion.h>
#include <criterion/logging.h>
#include <criterion/parameterized.h>
#include <stdio.h>

#include "helpers.h"
#include "testkit.h"

typedef struct block {
    int threads;
    int fault;         /* moes_case_fault, or -1 for drawn from the seed */
    uint64_t first_seed;
    int n_cases;
    int64_t max_tokens, max_hidden, max_experts;
} block;

/* 12 thread counts x 4 seed ranges of small cases, plus blocks of larger
 * ones: see blocks(). */
enum { SMALL_BLOCK = 250, LARGE_BLOCK = 25 };

static const int thread_counts[] = {1, 2, 3, 7};

ParameterizedTestParameters(differential, random_cases)
{
    static block b[64];
    int n = 0;
    for (int t = 0; t < 4; t++) {
        for (int r = 0; r < 10; r++)
            b[n++] = (block){thread_counts[t], -1,
                             0x5EED0000ull + (uint64_t)(t * 10 + r) * 1000,
                             SMALL_BLOCK, 48, 96, 64};
        for (int f = 0; f < MOES_CASE_FAULT_COUNT; f++)
            if (n < 64)
                b[n++] = (block){thread_counts[t], f,
                                 0xFA170000ull + (uint64_t)(t * 8 + f) * 1000,
                                 LARGE_BLOCK, 0, 0, 0};
    }
    return cr_make_param_array(block, b, (size_t)n);
}

ParameterizedTest(block *b, differential, random_cases)
{
    moes_context *ctx = test_open(b->threads);
    moes_case_limits lim = {b->max_tokens, b->max_hidden, b->max_experts};
    char msg[4096];
    int differ = 0;
    for (int i = 0; i < b->n_cases; i++) {
        int v = moes_case_check(ctx, NULL, b->first_seed + (uint64_t)i,
                                b->fault, &lim, msg, sizeof msg);
        cr_expect_eq(v, MOES_CHECK_SAME, "threads %d: %s", b->threads, msg);
        differ += v != MOES_CHECK_SAME;
    }
    fprintf(stderr, "differential: %d threads, seeds 0x%llx..+%d: %d cases "
            "compared, %d differences\n", b->threads,
            (unsigned long long)b->first_seed, b->n_cases, b->n_cases, differ);
    test_close(ctx);
}
