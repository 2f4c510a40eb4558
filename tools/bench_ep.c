/* SPDX-License-Identifier: MIT */
/*
 * bench_ep.c - `moescatter bench --ep`, run under mpirun: expert-parallel
 * dispatch and combine across the job's ranks, timed.
 *
 * Each rank routes its N bf16 tokens to K experts drawn uniformly from
 * all ranks' experts, then runs the layer (dispatch; a copy of the
 * dispatched rows standing for the experts; combine) a number of times
 * after one warm-up, every step between two barriers. Each rank reports
 * the bytes the step sent to and received from other ranks, the median
 * time, and GB/s counted as (bytes sent + bytes received) / time; rank 0
 * prints every rank's line, then the slowest rank's time of each step.
 *
 * Built only where configure found MPI (the library itself never links
 * it); elsewhere --ep says so.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tool.h"

#if MOES_TOOL_EP

#include <mpi.h>

#include "median.h"
#include "moescatter_ep.h"

enum {
    OPT_EP = 1, OPT_TOKENS, OPT_HIDDEN, OPT_TOP_K, OPT_EXPERTS_PER_RANK,
    OPT_ITERS, OPT_BOUNDED, OPT_JSON, OPT_THREADS
};

static const tool_option options[] = {
    {"ep", 0, OPT_EP},
    {"tokens", 1, OPT_TOKENS},
    {"hidden", 1, OPT_HIDDEN},
    {"top-k", 1, OPT_TOP_K},
    {"experts-per-rank", 1, OPT_EXPERTS_PER_RANK},
    {"iters", 1, OPT_ITERS},
    {"bounded", 1, OPT_BOUNDED},
    {"threads", 1, OPT_THREADS},
    {"json", 0, OPT_JSON},
    {NULL, 0, 0},
};

typedef struct ep_bench_options {
    int64_t tokens, hidden, top_k, experts_per_rank, iters, bounded, threads;
    int json;
} ep_bench_options;

static void usage(void)
{
    printf(
        "Usage: mpirun -np R moescatter bench --ep [OPTIONS]\n"
        "\n"
        "Times expert-parallel dispatch and combine across the R ranks of\n"
        "an MPI job (CPU backend): each rank sends N bf16 tokens to K of\n"
        "the R * E experts, drawn uniformly. Prints per rank the bytes sent\n"
        "and received by each step, its median time and GB/s, then the\n"
        "slowest rank's time of each step.\n"
        "\n"
        "  --tokens N            tokens per rank (default 4096)\n"
        "  --hidden H            row length (default 7168)\n"
        "  --top-k K             experts per token (default 8)\n"
        "  --experts-per-rank E  (default 8)\n"
        "  --iters N             timed layers after one warm-up (default 10)\n"
        "  --bounded B           the bounded mode with B tokens per rank\n"
        "                        pair (default: the exact mode)\n"
        "  --threads N           OpenMP threads per rank\n"
        "  --json                print JSON (rank 0) instead of the table\n");
}

static int parse(int argc, char **argv, ep_bench_options *o)
{
    tool_parser p;
    const char *v;
    int id, rc = TOOL_EXIT_OK;
    *o = (ep_bench_options){4096, 7168, 8, 8, 10, 0, 0, 0};
    tool_parser_init(&p, "bench", options, argc, argv);
    while (rc == TOOL_EXIT_OK &&
           (id = tool_next_option(&p, &v)) != TOOL_OPT_END) {
        switch (id) {
        case TOOL_OPT_ERROR: return TOOL_EXIT_USAGE;
        case TOOL_OPT_HELP: usage(); return TOOL_EXIT_OK;
        case OPT_EP: break;
        case OPT_TOKENS:
            rc = tool_parse_i64("bench", "--tokens", v, 0, 1ll << 24,
                                &o->tokens);
            break;
        case OPT_HIDDEN:
            rc = tool_parse_i64("bench", "--hidden", v, 1, 1 << 20,
                                &o->hidden);
            break;
        case OPT_TOP_K:
            rc = tool_parse_i64("bench", "--top-k", v, 1, 64, &o->top_k);
            break;
        case OPT_EXPERTS_PER_RANK:
            rc = tool_parse_i64("bench", "--experts-per-rank", v, 1, 1 << 16,
                                &o->experts_per_rank);
            break;
        case OPT_ITERS:
            rc = tool_parse_i64("bench", "--iters", v, 1, 100000, &o->iters);
            break;
        case OPT_BOUNDED:
            rc = tool_parse_i64("bench", "--bounded", v, 1, 1ll << 24,
                                &o->bounded);
            break;
        case OPT_THREADS:
            rc = tool_parse_i64("bench", "--threads", v, 0, 1 << 16,
                                &o->threads);
            break;
        case OPT_JSON: o->json = 1; break;
        }
    }
    return rc == TOOL_EXIT_OK ? -1 : rc;
}

static uint64_t next(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

/* One rank's figures: bytes sent and received and the median time of
 * dispatch, then of combine; tokens received and dropped. */
enum { F_D_SENT, F_D_RECV, F_D_TIME, F_C_SENT, F_C_RECV, F_C_TIME,
       F_RECEIVED, F_DROPPED, F_COUNT };

static double gbps(double sent, double received, double seconds)
{
    return seconds > 0 ? (sent + received) / seconds / 1e9 : 0.0;
}

static void print_results(const ep_bench_options *o, int size,
                          const double *all)
{
    double worst_d = 0, worst_c = 0;
    for (int r = 0; r < size; r++) {
        const double *f = all + (size_t)r * F_COUNT;
        if (f[F_D_TIME] > worst_d)
            worst_d = f[F_D_TIME];
        if (f[F_C_TIME] > worst_c)
            worst_c = f[F_C_TIME];
    }
    if (o->json) {
        printf("{\"ranks\": %d, \"tokens_per_rank\": %lld, \"hidden\": %lld, "
               "\"top_k\": %lld, \"experts_per_rank\": %lld, \"dtype\": "
               "\"bf16\", \"mode\": \"%s\", \"tokens_per_pair\": %lld, "
               "\"iters\": %lld, \"per_rank\": [",
               size, (long long)o->tokens, (long long)o->hidden,
               (long long)o->top_k, (long long)o->experts_per_rank,
               o->bounded ? "bounded" : "exact", (long long)o->bounded,
               (long long)o->iters);
        for (int r = 0; r < size; r++) {
            const double *f = all + (size_t)r * F_COUNT;
            printf("%s{\"rank\": %d, \"received\": %.0f, \"dropped\": %.0f, "
                   "\"dispatch\": {\"bytes_sent\": %.0f, \"bytes_received\": "
                   "%.0f, \"median_ms\": %.4f, \"gbps\": %.3f}, \"combine\": "
                   "{\"bytes_sent\": %.0f, \"bytes_received\": %.0f, "
                   "\"median_ms\": %.4f, \"gbps\": %.3f}}",
                   r ? ", " : "", r, f[F_RECEIVED], f[F_DROPPED],
                   f[F_D_SENT], f[F_D_RECV], f[F_D_TIME] * 1e3,
                   gbps(f[F_D_SENT], f[F_D_RECV], f[F_D_TIME]), f[F_C_SENT],
                   f[F_C_RECV], f[F_C_TIME] * 1e3,
                   gbps(f[F_C_SENT], f[F_C_RECV], f[F_C_TIME]));
        }
        printf("], \"slowest_dispatch_ms\": %.4f, \"slowest_combine_ms\": "
               "%.4f}\n", worst_d * 1e3, worst_c * 1e3);
        return;
    }
    printf("ep bench: %d ranks, %lld tokens per rank, hidden %lld, top-%lld, "
           "%lld experts per rank, bf16, %s, median of %lld (CPU backend, "
           "MPI)\n",
           size, (long long)o->tokens, (long long)o->hidden,
           (long long)o->top_k, (long long)o->experts_per_rank,
           o->bounded ? "bounded" : "exact", (long long)o->iters);
    printf("%-5s %9s %8s | %-35s | %-35s\n", "rank", "received", "dropped",
           "dispatch: sent MB, recv MB, ms, GB/s",
           "combine: sent MB, recv MB, ms, GB/s");
    for (int r = 0; r < size; r++) {
        const double *f = all + (size_t)r * F_COUNT;
        printf("%-5d %9.0f %8.0f | %8.2f %8.2f %8.3f %8.2f | %8.2f %8.2f "
               "%8.3f %8.2f\n",
               r, f[F_RECEIVED], f[F_DROPPED], f[F_D_SENT] / 1e6,
               f[F_D_RECV] / 1e6, f[F_D_TIME] * 1e3,
               gbps(f[F_D_SENT], f[F_D_RECV], f[F_D_TIME]),
               f[F_C_SENT] / 1e6, f[F_C_RECV] / 1e6, f[F_C_TIME] * 1e3,
               gbps(f[F_C_SENT], f[F_C_RECV], f[F_C_TIME]));
    }
    printf("slowest rank: dispatch %.3f ms, combine %.3f ms\n", worst_d * 1e3,
           worst_c * 1e3);
}

/* A failure on this rank: said on its standard error, and the job ended
 * (the other ranks would wait for it in the next collective). */
static void die(int rank, const char *what, const char *why)
{
    fprintf(stderr, "moescatter bench --ep: rank %d: %s: %s\n", rank, what,
            why);
    MPI_Abort(MPI_COMM_WORLD, TOOL_EXIT_FAILURE);
}

int tool_bench_ep(int argc, char **argv)
{
    ep_bench_options o;
    int rc = parse(argc, argv, &o), rank, size, inited = 0;
    if (rc >= 0)
        return rc;
    MPI_Initialized(&inited);
    if (!inited)
        MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    const int64_t N = o.tokens, H = o.hidden, K = o.top_k;
    const int64_t El = o.experts_per_rank;

    moes_context *ctx;
    if (tool_open_context("bench", MOES_BACKEND_CPU, (int)o.threads, &ctx) !=
        TOOL_EXIT_OK)
        MPI_Abort(MPI_COMM_WORLD, TOOL_EXIT_FAILURE);
    moes_ep_options eo;
    moes_ep_options_init(&eo);
    eo.n_ranks = size;
    eo.experts_per_rank = El;
    eo.hidden = H;
    eo.top_k = K;
    eo.max_tokens = N;
    if (o.bounded > 0) {
        eo.mode = MOES_EP_MODE_BOUNDED;
        eo.tokens_per_pair = o.bounded;
    }
    moes_ep *ep;
    if (moes_ep_create_mpi(&ep, ctx, &eo, MPI_COMM_WORLD) != MOES_OK)
        die(rank, "moes_ep_create_mpi", moes_ep_last_error(NULL));
    int64_t cap;
    if (moes_ep_capacity(ep, MOES_LAYOUT_CONTIGUOUS, 128, &cap) != MOES_OK)
        die(rank, "moes_ep_capacity", moes_ep_last_error(ep));
    uint16_t *x = malloc((size_t)(N * H + 1) * 2);
    int32_t *ids = malloc((size_t)(N * K + 1) * 4);
    float *w = malloc((size_t)(N * K + 1) * 4);
    uint16_t *rows = malloc((size_t)(cap * H + 1) * 2);
    uint16_t *expert_out = malloc((size_t)(cap * H + 1) * 2);
    int32_t *m_indices = malloc((size_t)(cap + 1) * 4);
    uint16_t *out = malloc((size_t)(N * H + 1) * 2);
    double *td = malloc(sizeof(double) * (size_t)o.iters);
    double *tc = malloc(sizeof(double) * (size_t)o.iters);
    if (!x || !ids || !w || !rows || !expert_out || !m_indices || !out ||
        !td || !tc)
        die(rank, "buffers", "out of memory");
    /* Random rows of modest bf16 values and uniform routings, never
     * zeros; each rank its own. */
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
    local.out = rows;
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
    c.y = expert_out;
    c.y_rows = cap;
    c.out = out;

    moes_ep_stats sd = {.struct_size = sizeof sd};
    moes_ep_stats sc = {.struct_size = sizeof sc};
    for (int64_t it = -1; it < o.iters; it++) {
        MPI_Barrier(MPI_COMM_WORLD);
        double t0 = MPI_Wtime();
        if (moes_ep_dispatch(ep, &d) != MOES_OK)
            die(rank, "moes_ep_dispatch", moes_ep_last_error(ep));
        double t1 = MPI_Wtime();
        moes_ep_get_stats(ep, &sd);
        /* The experts: the identity, a copy of the dispatched rows. */
        memcpy(expert_out, rows, (size_t)(cap * H) * 2);
        MPI_Barrier(MPI_COMM_WORLD);
        double t2 = MPI_Wtime();
        if (moes_ep_combine(ep, &c) != MOES_OK)
            die(rank, "moes_ep_combine", moes_ep_last_error(ep));
        double t3 = MPI_Wtime();
        moes_ep_get_stats(ep, &sc);
        if (it >= 0) {
            td[it] = t1 - t0;
            tc[it] = t3 - t2;
        }
    }
    double mine[F_COUNT];
    mine[F_D_SENT] = (double)sd.bytes_sent;
    mine[F_D_RECV] = (double)sd.bytes_received;
    mine[F_D_TIME] = tool_median(td, o.iters);
    mine[F_C_SENT] = (double)sc.bytes_sent;
    mine[F_C_RECV] = (double)sc.bytes_received;
    mine[F_C_TIME] = tool_median(tc, o.iters);
    mine[F_RECEIVED] = (double)n_received;
    mine[F_DROPPED] = (double)n_dropped;
    double *all = rank == 0 ? malloc(sizeof mine * (size_t)size) : NULL;
    if (rank == 0 && !all)
        die(rank, "results", "out of memory");
    MPI_Gather(mine, F_COUNT, MPI_DOUBLE, all, F_COUNT, MPI_DOUBLE, 0,
               MPI_COMM_WORLD);
    if (rank == 0)
        print_results(&o, size, all);
    free(all);
    free(td);
    free(tc);
    free(x);
    free(ids);
    free(w);
    free(rows);
    free(expert_out);
    free(m_indices);
    free(out);
    /* A failure to free is this rank's to report; the others finish. */
    rc = TOOL_EXIT_OK;
    int st = moes_ep_destroy(ep);
    if (st != MOES_OK)
        rc = tool_fail("bench --ep", "moes_ep_destroy: %s",
                       moes_strerror(st));
    if (tool_close_context("bench --ep", ctx) != TOOL_EXIT_OK)
        rc = TOOL_EXIT_FAILURE;
    MPI_Finalize();
    return rc;
}

#else /* !MOES_TOOL_EP */

int tool_bench_ep(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    return tool_usage_error("bench", "--ep: this moescatter was built "
                            "without MPI (configure did not find it, or "
                            "--without-mpi), so it has no expert-parallel "
                            "benchmark");
}

#endif
