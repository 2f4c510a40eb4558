/* SPDX-License-Identifier: MIT */
/*
 * ep_bench.c - dispatch and combine across ranks, timed.
 *
 *     mpirun -np 4 ep/ep_bench [--tokens N] [--hidden H] [--top-k K]
 *                              [--experts-per-rank E] [--iterations I]
 *                              [--bounded TOKENS_PER_PAIR]
 *
 * Each rank routes its N bf16 tokens to K experts drawn uniformly from all
 * ranks' experts, and the whole layer (dispatch, a copy standing for the
 * experts, combine) is run I times after one warm-up. Every rank reports
 * the bytes it sent to and received from other ranks per step, the median
 * time of each step, and GB/s: (bytes sent + bytes received) / time.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mpi.h>

#include "moescatter_ep.h"

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static uint64_t next(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    int rank, size;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    int64_t N = 4096, H = 7168, K = 8, El = 8, bound = 0;
    int iters = 10;
    for (int i = 1; i + 1 < argc; i += 2) {
        long long v = atoll(argv[i + 1]);
        if (!strcmp(argv[i], "--tokens")) N = v;
        else if (!strcmp(argv[i], "--hidden")) H = v;
        else if (!strcmp(argv[i], "--top-k")) K = v;
        else if (!strcmp(argv[i], "--experts-per-rank")) El = v;
        else if (!strcmp(argv[i], "--iterations")) iters = (int)v;
        else if (!strcmp(argv[i], "--bounded")) bound = v;
        else {
            if (rank == 0)
                fprintf(stderr, "unknown option %s\n", argv[i]);
            MPI_Abort(MPI_COMM_WORLD, 2);
        }
    }
    if (iters < 1)
        iters = 1;

    moes_context_options co;
    moes_context_options_init(&co);
    co.backend = MOES_BACKEND_CPU;
    moes_context *ctx;
    if (moes_context_create(&ctx, &co) != MOES_OK) {
        fprintf(stderr, "%s\n", moes_last_error(NULL));
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
    moes_ep_options o;
    moes_ep_options_init(&o);
    o.n_ranks = size;
    o.experts_per_rank = El;
    o.hidden = H;
    o.top_k = K;
    o.max_tokens = N;
    if (bound > 0) {
        o.mode = MOES_EP_MODE_BOUNDED;
        o.tokens_per_pair = bound;
    }
    moes_ep *ep;
    if (moes_ep_create_mpi(&ep, ctx, &o, MPI_COMM_WORLD) != MOES_OK) {
        fprintf(stderr, "rank %d: %s\n", rank, moes_ep_last_error(NULL));
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
    int64_t cap;
    moes_ep_capacity(ep, MOES_LAYOUT_CONTIGUOUS, 128, &cap);
    uint16_t *x = calloc((size_t)(N * H), 2);
    int32_t *ids = malloc((size_t)(N * K) * 4);
    float *w = malloc((size_t)(N * K) * 4);
    uint16_t *xs = malloc((size_t)(cap * H) * 2);
    uint16_t *ys = malloc((size_t)(cap * H) * 2);
    int32_t *m_indices = malloc((size_t)cap * 4);
    uint16_t *out = malloc((size_t)(N * H) * 2);
    if (!x || !ids || !w || !xs || !ys || !m_indices || !out) {
        fprintf(stderr, "rank %d: out of memory\n", rank);
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
    uint64_t s = 0x9E3779B97F4A7C15ull ^ (uint64_t)(rank + 1) * 1000003u;
    for (int64_t i = 0; i < N * H; i++)
        x[i] = (uint16_t)(0x3F80 + (next(&s) & 0x7F));
    for (int64_t i = 0; i < N * K; i++) {
        ids[i] = (int32_t)(next(&s) % (uint64_t)(El * size));
        w[i] = 1.0f / (float)K;
    }

    moes_scatter_args local;
    moes_scatter_args_init(&local);
    local.capacity = cap;
    local.out = xs;
    local.m_indices = m_indices;
    int64_t n_received = 0, n_dropped = 0;
    moes_ep_dispatch_args d;
    moes_ep_dispatch_args_init(&d);
    d.n_tokens = N;
    d.x = x;
    d.ids = ids;
    d.weights = w;
    d.local = &local;
    d.n_received = &n_received;
    d.n_dropped = &n_dropped;
    moes_ep_combine_args c;
    moes_ep_combine_args_init(&c);
    c.y = ys;
    c.y_rows = cap;
    c.out = out;

    double *td = malloc(sizeof(double) * (size_t)iters);
    double *tc = malloc(sizeof(double) * (size_t)iters);
    moes_ep_stats sd = {.struct_size = sizeof sd}, sc = {.struct_size = sizeof sc};
    for (int it = -1; it < iters; it++) {
        MPI_Barrier(MPI_COMM_WORLD);
        double t0 = MPI_Wtime();
        int rc = moes_ep_dispatch(ep, &d);
        double t1 = MPI_Wtime();
        moes_ep_get_stats(ep, &sd);
        /* The experts: the identity, a copy of the dispatched rows. */
        memcpy(ys, xs, (size_t)(cap * H) * 2);
        MPI_Barrier(MPI_COMM_WORLD);
        double t2 = MPI_Wtime();
        if (rc == MOES_OK)
            rc = moes_ep_combine(ep, &c);
        double t3 = MPI_Wtime();
        moes_ep_get_stats(ep, &sc);
        if (rc != MOES_OK) {
            fprintf(stderr, "rank %d: %s\n", rank, moes_ep_last_error(ep));
            MPI_Abort(MPI_COMM_WORLD, 1);
        }
        if (it >= 0) {
            td[it] = t1 - t0;
            tc[it] = t3 - t2;
        }
    }
    double dm = median(td, iters), cm = median(tc, iters);
    char line[512];
    snprintf(line, sizeof line,
             "rank %d: received %lld tokens, dropped %lld | dispatch: sent "
             "%.2f MB, received %.2f MB, %.3f ms, %.2f GB/s | combine: sent "
             "%.2f MB, received %.2f MB, %.3f ms, %.2f GB/s",
             rank, (long long)n_received, (long long)n_dropped,
             sd.bytes_sent / 1e6, sd.bytes_received / 1e6, dm * 1e3,
             (double)(sd.bytes_sent + sd.bytes_received) / dm / 1e9,
             sc.bytes_sent / 1e6, sc.bytes_received / 1e6, cm * 1e3,
             (double)(sc.bytes_sent + sc.bytes_received) / cm / 1e9);
    char *all = rank == 0 ? malloc(sizeof line * (size_t)size) : NULL;
    MPI_Gather(line, sizeof line, MPI_CHAR, all, sizeof line, MPI_CHAR, 0,
               MPI_COMM_WORLD);
    if (rank == 0) {
        printf("ep bench: %d ranks, %lld tokens per rank, hidden %lld, top-%lld, "
               "%lld experts per rank, bf16, %s, median of %d\n",
               size, (long long)N, (long long)H, (long long)K, (long long)El,
               bound > 0 ? "bounded" : "exact", iters);
        for (int r = 0; r < size; r++)
            printf("%s\n", all + (size_t)r * sizeof line);
        free(all);
    }
    free(td);
    free(tc);
    free(x);
    free(ids);
    free(w);
    free(xs);
    free(ys);
    free(m_indices);
    free(out);
    moes_ep_destroy(ep);
    moes_context_destroy(ctx);
    MPI_Finalize();
    return 0;
}
