/* SPDX-License-Identifier: MIT */
/*
 * diff_cuda.c - the CPU and CUDA backends, compared bit for bit on random
 * cases of the test kit: every status, every data-error message, every
 * output byte (canary-filled gaps and untouched padding included).
 *
 *   diff_cuda [cases [first_seed]]     default 10000 cases from seed 1
 *
 * Every tenth seed (seed % 10 == 0) draws up to 4000 tokens instead of
 * 400 and up to 20000 experts instead of 3000, so that calls past 8192
 * choices, which take the grid routing or the cooperative scatter, and
 * calls of many experts, which the sort places, are compared too; and
 * every tenth from 5 up to 2000 tokens with K up to 48, past a warp's
 * 32 entries a fetch; and every tenth from 3 from 2200 up to 4000 tokens
 * with K up to 40 and rows of 16-byte vectors where they fit, so that the
 * gather takes its large shape (more items than the warps that fit),
 * some from a y of fewer rows than half the entries; a random case
 * seldom does: of seeds 1-20,000, 7 cases did before this class, 1,625
 * with it, 212 of them with K past 32 (on a GPU of 132 multiprocessors).
 * Every tenth from 7 is the same with K up to 16 and the gather of an
 * expert-parallel rank (moes_case_limits.sparse_gather): most out_index
 * entries -1, so that many items have one row or none, and finite data
 * but for a few rows and weights, so that the items are mostly summed
 * without the NaN sign rule, as a layer's are; in the other classes
 * nearly every item of a large row meets a NaN or an infinity somewhere.
 * The seed alone still says which class a case is of: the kit holds the
 * classes' limits (moes_case_class_limits), which its own tests check.
 *
 * Prints one line per difference (the seed replays it) and a last line
 * "diff_cuda: <cases> cases, <n> different, <n> errors". Exit status 0
 * only when nothing differed.
 */
#include <stdio.h>
#include <stdlib.h>

#include "testkit.h"

static moes_context *open_context(int backend)
{
    moes_context_options opts;
    moes_context *ctx = NULL;
    int st;
    moes_context_options_init(&opts);
    opts.backend = backend;
    st = moes_context_create(&ctx, &opts);
    if (st != MOES_OK) {
        fprintf(stderr, "diff_cuda: cannot open the %s backend: %s\n",
                backend == MOES_BACKEND_CUDA ? "CUDA" : "CPU",
                moes_last_error(NULL));
        return NULL;
    }
    return ctx;
}

int main(int argc, char **argv)
{
    long long cases = argc > 1 ? atoll(argv[1]) : 10000;
    unsigned long long first = argc > 2 ? strtoull(argv[2], NULL, 0) : 1;
    long long different = 0, errors = 0, printed = 0;
    moes_context *cpu, *cuda;
    static char msg[4096];

    /* MOES_BACKEND would turn both contexts into the same backend. */
    unsetenv("MOES_BACKEND");
    cpu = open_context(MOES_BACKEND_CPU);
    cuda = open_context(MOES_BACKEND_CUDA);
    if (!cpu || !cuda)
        return 2;
    for (long long i = 0; i < cases; i++) {
        uint64_t seed = first + (uint64_t)i;
        int v = moes_case_check(cuda, cpu, seed, -1,
                                moes_case_class_limits(seed),
                                msg, sizeof msg);
        if ((i + 1) % 1000 == 0) {
            printf("progress: %lld cases, %lld different, %lld errors\n",
                   i + 1, different, errors);
            fflush(stdout);
        }
        if (v == MOES_CHECK_SAME)
            continue;
        if (v == MOES_CHECK_DIFFERENT)
            different++;
        else
            errors++;
        if (printed++ < 50)
            printf("%s seed %llu: %s\n",
                   v == MOES_CHECK_DIFFERENT ? "DIFFERENT" : "ERROR",
                   (unsigned long long)seed, msg);
    }
    printf("diff_cuda: %lld cases, %lld different, %lld errors\n", cases,
           different, errors);
    moes_context_destroy(cuda);
    moes_context_destroy(cpu);
    return different || errors ? 1 : 0;
}
