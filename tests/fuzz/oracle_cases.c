/* SPDX-License-Identifier: MIT */
/*
 * oracle_cases.c - the kit's random cases (valid and faulty, small sizes)
 * on the CPU backend with 1 and 3 threads, and on CUDA when a device is
 * usable, each compared with the oracle bit for bit. Small enough to run
 * under Valgrind (valgrind-oracle.sh).
 *
 * Usage: oracle_cases [CASES [FIRST_SEED]]   (default 300 cases from 1)
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "moescatter.h"
#include "testkit.h"

int main(int argc, char **argv)
{
    const moes_case_limits limits = {48, 300, 40, 0, 0, 0, 0};
    long cases = argc > 1 ? atol(argv[1]) : 300;
    uint64_t first = argc > 2 ? strtoull(argv[2], NULL, 10) : 1;
    moes_context *ctx[3];
    const char *names[3] = {"cpu, 1 thread", "cpu, 3 threads", "cuda"};
    int n_ctx = 0, threads[2] = {1, 3};
    long compared = 0, different = 0, errors = 0;
    char msg[2048];

    for (int i = 0; i < 2; i++) {
        moes_context_options o;
        moes_context_options_init(&o);
        o.backend = MOES_BACKEND_CPU;
        o.cpu_threads = threads[i];
        if (moes_context_create(&ctx[n_ctx], &o) != MOES_OK) {
            fprintf(stderr, "cannot open a CPU context: %s\n",
                    moes_last_error(NULL));
            return 1;
        }
        n_ctx++;
    }
    {
        moes_context_options o;
        moes_context_options_init(&o);
        o.backend = MOES_BACKEND_CUDA;
        if (moes_context_create(&ctx[n_ctx], &o) == MOES_OK)
            n_ctx++;
    }

    for (long i = 0; i < cases; i++) {
        uint64_t seed = first + (uint64_t)i;
        for (int p = 0; p < n_ctx; p++) {
            int r = moes_case_check(ctx[p], NULL, seed, -1, &limits, msg,
                                    sizeof msg);
            compared++;
            if (r == MOES_CHECK_SAME)
                continue;
            if (r == MOES_CHECK_DIFFERENT)
                different++;
            else
                errors++;
            fprintf(stderr, "seed %llu on %s: %s\n",
                    (unsigned long long)seed, names[p], msg);
        }
    }
    for (int p = 0; p < n_ctx; p++)
        moes_context_destroy(ctx[p]);
    printf("oracle_cases: %ld cases on %d backend paths: %ld comparisons, "
           "%ld different, %ld could not run\n",
           cases, n_ctx, compared, different, errors);
    return different || errors ? 1 : 0;
}
