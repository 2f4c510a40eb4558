/* SPDX-License-Identifier: MIT */
/*
 * cpu_ceilings - what this machine's memory does for the access patterns
 * of the CPU scatter and gather, beside the copy that `moescatter bench`
 * takes as its yardstick.
 *
 *     bench/cpu_ceilings [TOKENS [THREADS]]
 *
 * DeepSeek-V3's shapes (hidden 7168, top-8), TOKENS tokens (default 1024),
 * OpenMP's threads unless THREADS is given. Each line is the median of
 * 15 timed passes and its fraction of the copy measured in the same run:
 *
 *   copy     moes_copy_within of 64 MiB on a CPU context: the bench's
 *            yardstick (streaming stores, split over the threads)
 *   fill     moes_fill of 256 MiB: writes only
 *   rows     the gather's reads and nothing else: each token's 8 random
 *            bf16 rows of y, 64 bytes of each in turn, 2 KiB ahead asked
 *            for, summed as integers
 *   gather   the gather's bytes (rows read, output written) over the
 *            rows' time plus the output's at the fill's rate: the
 *            fraction a gather would show if its arithmetic and stores
 *            cost nothing
 *   scatter  the scatter's bytes (each token's fp8 row read once and
 *            written to 8 rows) over its writes' time at the fill's
 *            rate: the fraction a scatter would show if its reads, its
 *            routing and its scales cost nothing
 *
 * Inputs rotate among sets larger than the last-level cache, as in the
 * bench. The gather line counts the bytes `moescatter bench` counts, so
 * its fraction compares with the bench's, and so does the scatter line's
 * (the scatter writes eight bytes of every nine it moves). A target above
 * these lines asks for more than this machine gives the pattern.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <time.h>

#ifdef _OPENMP
#include <omp.h>
#define OMP(directive) _Pragma(#directive)
#else
#define OMP(directive)
#endif

#include "median.h"
#include "moescatter.h"
#include "rng.h"

enum { HIDDEN = 7168, TOP_K = 8, PASSES = 15 };
#define COPY_BYTES ((int64_t)64 << 20)
#define STREAM_BYTES ((int64_t)256 << 20)
#define SETS_BYTES ((int64_t)256 << 20) /* per pattern, over all its sets */

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec * 1e-6;
}

/* A failed library call ends the program with the library's message. */
#define CHECK(call)                                                         \
    do {                                                                    \
        if ((call) != MOES_OK) {                                            \
            fprintf(stderr, "cpu_ceilings: %s: %s\n", #call,                \
                    moes_last_error(ctx));                                  \
            exit(1);                                                        \
        }                                                                   \
    } while (0)

/* rows of a set in a random order: token t's k-th row is perm[t*K + k]. */
static int64_t *random_rows(tool_rng *rng, int64_t n)
{
    int64_t *perm = malloc((size_t)n * sizeof *perm);
    if (!perm)
        return NULL;
    for (int64_t i = 0; i < n; i++)
        perm[i] = i;
    for (int64_t i = n - 1; i > 0; i--) {
        const int64_t j = (int64_t)tool_rng_below(rng, (uint64_t)(i + 1));
        const int64_t v = perm[i];
        perm[i] = perm[j];
        perm[j] = v;
    }
    return perm;
}

/* Built, as the library's gather is, for AVX-512 and AVX2 as well as the
 * baseline, picked at load time. */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && \
    !defined(__SANITIZE_ADDRESS__)
#define CEILING_CLONES                                                      \
    __attribute__((target_clones("arch=x86-64-v4", "avx2", "default")))
#else
#define CEILING_CLONES
#endif

/* 64-bit words in a bf16 row of y. */
enum { ROW_WORDS = HIDDEN * 2 / 8 };

/* One token's rows read and nothing else: 64 bytes of each of its 8
 * rows in turn, 2 KiB ahead asked for (the best of the orders and
 * distances tried on a 2-core AMD EPYC), summed as integers so that the
 * loads stay. */
CEILING_CLONES
static uint64_t read_token(const uint64_t *y, const int64_t *rows)
{
    enum { WORDS = ROW_WORDS, LINE = 8, AHEAD = 2048 / 8 };
    const uint64_t *r[TOP_K];
    uint64_t s = 0;
    for (int k = 0; k < TOP_K; k++)
        r[k] = y + rows[k] * ROW_WORDS;
    for (int64_t i = 0; i < WORDS; i += LINE) {
        for (int k = 0; k < TOP_K; k++) {
#if defined(__GNUC__)
            if (i + AHEAD < WORDS)
                __builtin_prefetch(r[k] + i + AHEAD);
#endif
#pragma GCC unroll 8
            for (int j = 0; j < LINE; j++)
                s += r[k][i + j];
        }
    }
    return s;
}

int main(int argc, char **argv)
{
    const int64_t tokens = argc > 1 ? atoll(argv[1]) : 1024;
    const int threads = argc > 2 ? atoi(argv[2]) : 0;
    const int64_t rows = tokens * TOP_K;
    const int64_t y_bytes = rows * HIDDEN * 2, out_bytes = tokens * HIDDEN * 2;
    const int64_t g_sets = SETS_BYTES / y_bytes > 1 ? SETS_BYTES / y_bytes : 1;
    moes_context_options opts;
    moes_context *ctx = NULL;
    double ms[PASSES], copy_ms, fill_ms, rows_ms, t;
    uint64_t sink = 0;
    tool_rng rng;
    char *a, *b;
    uint64_t *y;
    int64_t **perm;

    if (tokens < 1 || threads < 0) {
        fprintf(stderr, "usage: cpu_ceilings [TOKENS >= 1 [THREADS]]\n");
        return 2;
    }
#ifdef _OPENMP
    if (threads > 0)
        omp_set_num_threads(threads);
#endif
    tool_rng_seed(&rng, 1);
    moes_context_options_init(&opts);
    opts.backend = MOES_BACKEND_CPU;
    opts.cpu_threads = threads;
    if (moes_context_create(&ctx, &opts) != MOES_OK) {
        fprintf(stderr, "cpu_ceilings: %s\n", moes_last_error(NULL));
        return 1;
    }
    a = malloc((size_t)STREAM_BYTES);
    b = malloc((size_t)STREAM_BYTES);
    y = malloc((size_t)(y_bytes * g_sets));
    perm = calloc((size_t)(g_sets), sizeof *perm);
    if (!a || !b || !y || !perm) {
        fprintf(stderr, "cpu_ceilings: out of memory\n");
        return 1;
    }
    for (int64_t i = 0; i < g_sets; i++)
        if (!(perm[i] = random_rows(&rng, rows))) {
            fprintf(stderr, "cpu_ceilings: out of memory\n");
            return 1;
        }
    memset(a, 1, (size_t)STREAM_BYTES);
    memset(b, 2, (size_t)STREAM_BYTES);
    for (int64_t i = 0; i < rows * ROW_WORDS * g_sets; i++)
        y[i] = tool_rng_next(&rng);

    printf("cpu_ceilings: %lld tokens, hidden %d, top-%d, %d threads\n",
           (long long)tokens, HIDDEN, TOP_K,
#ifdef _OPENMP
           threads > 0 ? threads : omp_get_max_threads()
#else
           1
#endif
    );
    printf("%-8s %10s %10s %8s\n", "pattern", "median ms", "GB/s", "of copy");

    CHECK(moes_copy_within(ctx, b, a, COPY_BYTES));
    for (int p = 0; p < PASSES; p++) {
        t = now_ms();
        CHECK(moes_copy_within(ctx, b, a, COPY_BYTES));
        ms[p] = now_ms() - t;
    }
    copy_ms = tool_median(ms, PASSES);
#define REPORT(name, bytes, m)                                              \
    printf("%-8s %10.4f %10.2f %8.3f\n", name, m, (bytes) / (m) / 1e6,      \
           ((bytes) / (m)) / (2.0 * COPY_BYTES / copy_ms))
    REPORT("copy", 2.0 * COPY_BYTES, copy_ms);

    for (int p = 0; p < PASSES; p++) {
        t = now_ms();
        CHECK(moes_fill(ctx, b, p & 0xFF, STREAM_BYTES));
        ms[p] = now_ms() - t;
    }
    fill_ms = tool_median(ms, PASSES);
    REPORT("fill", (double)STREAM_BYTES, fill_ms);

    for (int p = 0; p < PASSES; p++) {
        const int64_t set = p % g_sets;
        const uint64_t *ys = y + set * rows * ROW_WORDS;
        const int64_t *pr = perm[set];
        uint64_t sum = 0;
        t = now_ms();
        OMP(omp parallel for reduction(+ : sum) schedule(static))
        for (int64_t tk = 0; tk < tokens; tk++)
            sum += read_token(ys, pr + tk * TOP_K);
        ms[p] = now_ms() - t;
        sink += sum;
    }
    rows_ms = tool_median(ms, PASSES);
    REPORT("rows", (double)y_bytes, rows_ms);
    /* The gather's bytes over the rows' time plus its output's at the
     * fill's rate: what the gather would show with no time of its own. */
    REPORT("gather", (double)(y_bytes + out_bytes),
           rows_ms + fill_ms * (double)out_bytes / (double)STREAM_BYTES);
    /* fp8 rows: a token's row is HIDDEN bytes, read once, written TOP_K
     * times; only the writes are timed. */
    REPORT("scatter", (double)(tokens * HIDDEN * (1 + TOP_K)),
           fill_ms * (double)(rows * HIDDEN) / (double)STREAM_BYTES);
    if (sink == 1)
        printf("\n"); /* keeps the sums, never true in practice */
    for (int64_t i = 0; i < g_sets; i++)
        free(perm[i]);
    free(perm);
    free(y);
    free(b);
    free(a);
    moes_context_destroy(ctx);
    return 0;
}
