/* SPDX-License-Identifier: MIT */
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
#include <criterion/hooks.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "helpers.h"
#include "testkit.h"

typedef struct block {
    int threads;
    int fault;         /* moes_case_fault, or -1 for drawn from the seed */
    uint64_t first_seed;
    int n_cases;
    int64_t max_tokens, max_hidden, max_experts, max_top_k;
    /* Every parallel region on all the threads: the CPU backend gives a
     * region only the threads its work is worth, which for these small
     * cases is one, so half the blocks of each thread count set
     * MOES_CPU_WORK_PER_THREAD=1 to run its threaded paths too. */
    int full_teams;
    int sparse_gather; /* moes_case_limits.sparse_gather */
} block;

/* For each thread count: 11 blocks of 250 small cases (faults drawn from
 * the seed; in the ninth and tenth, K up to 40, past a warp's 32; the
 * eleventh, an expert-parallel rank's gather: most out_index entries -1,
 * finite data but for a few rows), and for each fault kind one block of
 * 25 cases of full size; past one thread, every other block with full
 * teams, and the eleventh too. 4 x (2750 + 150) = 11,600 cases per run. */
enum { SMALL_BLOCK = 250, LARGE_BLOCK = 25 };

static const int thread_counts[] = {1, 2, 3, 7};

ParameterizedTestParameters(differential, random_cases)
{
    static block b[4 * (11 + MOES_CASE_FAULT_COUNT)];
    int n = 0;
    for (int t = 0; t < 4; t++) {
        for (int r = 0; r < 10; r++)
            b[n++] = (block){thread_counts[t], -1,
                             0x5EED0000ull + (uint64_t)(t * 10 + r) * 1000,
                             SMALL_BLOCK, 48, 96, 64, r >= 8 ? 40 : 0,
                             thread_counts[t] > 1 && r % 2 == 1, 0};
        b[n++] = (block){thread_counts[t], -1,
                         0x5BA50000ull + (uint64_t)t * 1000, SMALL_BLOCK,
                         48, 96, 64, 0, thread_counts[t] > 1, 1};
        for (int f = 0; f < MOES_CASE_FAULT_COUNT; f++)
            b[n++] = (block){thread_counts[t], f,
                             0xFA170000ull + (uint64_t)(t * 8 + f) * 1000,
                             LARGE_BLOCK, 0, 0, 0, 0,
                             thread_counts[t] > 1 && f % 2 == 1, 0};
    }
    return cr_make_param_array(block, b, (size_t)n);
}

/* The context is opened and closed without assertions, so that the
 * suite's assertion count is exactly the number of cases compared. It
 * still goes through MOES_BACKEND_AUTO, like test_open(). */
static moes_context *open_quietly(int threads)
{
    moes_context_options opts;
    moes_context *ctx = NULL;
    moes_context_options_init(&opts);
    opts.backend = MOES_BACKEND_AUTO;
    opts.cpu_threads = threads;
    if (moes_context_create(&ctx, &opts) != MOES_OK)
        cr_assert_fail("moes_context_create: %s", moes_last_error(NULL));
    return ctx;
}

ParameterizedTest(block *b, differential, random_cases)
{
    moes_context *ctx;
    /* Each test runs in a process of its own: the setting is the block's. */
    if (b->full_teams)
        setenv("MOES_CPU_WORK_PER_THREAD", "1", 1);
    ctx = open_quietly(b->threads);
    moes_case_limits lim = {b->max_tokens, b->max_hidden, b->max_experts,
                            b->max_top_k, 0, 0, b->sparse_gather};
    char msg[4096];
    int differ = 0;
    for (int i = 0; i < b->n_cases; i++) {
        int v = moes_case_check(ctx, NULL, b->first_seed + (uint64_t)i,
                                b->fault, &lim, msg, sizeof msg);
        /* One assertion per case: the totals below count them. */
        cr_expect_eq(v, MOES_CHECK_SAME, "threads %d: %s", b->threads, msg);
        differ += v != MOES_CHECK_SAME;
    }
    cr_log_info("%d threads%s, seeds 0x%llx..+%d: %d differences",
                b->threads, b->full_teams ? " (full teams)" : "",
                (unsigned long long)b->first_seed, b->n_cases, differ);
    moes_context_destroy(ctx);
}

/* The totals of the run, for the log: every case is one assertion of the
 * suite, every difference a failed one. */
ReportHook(POST_ALL)(struct criterion_global_stats *stats)
{
    for (struct criterion_suite_stats *s = stats->suites; s; s = s->next) {
        if (strcmp(s->suite->name, "differential") != 0 ||
            s->tests_passed + s->tests_failed + s->tests_crashed == 0)
            continue;
        fprintf(stderr, "differential: %zu random cases compared bit for "
                "bit with the oracle, %zu differences\n",
                s->asserts_passed + s->asserts_failed, s->asserts_failed);
    }
}
