/* SPDX-License-Identifier: MIT */
/*
 * time_nccl.c - dispatch and combine over NCCL, timed on the GPUs of one
 * host: one rank per GPU and per thread (MOES_EP_GPUS of them, default
 * 1), DeepSeek-V3 shapes (hidden 7168, top-8, fp8 rows with fp32 scales
 * per 128, bf16 expert outputs and result), the experts spread evenly
 * over the ranks.
 *
 *     time_nccl bounded|exact TOKENS_PER_RANK [EXPERTS [CALLS]]
 *
 * bounded: tokens_per_pair = TOKENS_PER_RANK (nothing is dropped), a
 * masked local layout, each step captured in a CUDA graph and replayed
 * (decode). exact: a contiguous local layout of 128-row blocks, each call
 * timed on the host as the caller waits for it (prefill: the exact mode
 * brings the counts back to the host). Per rank: the median us of each
 * step and the payload bytes it sent and received; then the mean over
 * the ranks. With one rank nothing crosses a link: the layer's own cost.
 */
#include "config.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "device_harness.h"
#include "moescatter_ep.h"
#include "mpi_threads.h"

typedef struct settings {
    int bounded;
    int64_t tokens, experts;
    int calls;
    void *comms[8];
} settings;

static graph_api cu;

static void check(int rc, const char *what, moes_ep *ep)
{
    if (rc != MOES_OK) {
        fprintf(stderr, "%s: %s\n", what,
                ep ? moes_ep_last_error(ep) : moes_last_error(NULL));
        exit(1);
    }
}

static void *device_copy(moes_context *ctx, const void *host, int64_t bytes)
{
    void *d = NULL;
    check(moes_malloc(ctx, &d, bytes), "moes_malloc", NULL);
    check(moes_copy_to_backend(ctx, d, host, bytes), "copy", NULL);
    return d;
}

static uint64_t next_random(uint64_t *state)
{
    uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static double now_us(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1e6 + (double)t.tv_nsec * 1e-3;
}

static int by_value(const void *a, const void *b)
{
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Every rank waits for every other (an all-reduce of nothing). */
static void barrier(void)
{
    long v[1] = {0};
    MPI_Allreduce(MPI_IN_PLACE, v, 1, MPI_LONG, MPI_SUM, MPI_COMM_WORLD);
}

enum { STEP_DISPATCH, STEP_COMBINE };

/* us of one step: graph replays (bounded) or host-timed calls (exact),
 * the median of `calls`. */
static double time_step(const settings *st, void *stream, moes_ep *ep,
                        const moes_ep_dispatch_args *d,
                        const moes_ep_combine_args *c, int step)
{
    double *t = malloc((size_t)st->calls * sizeof *t);
    if (!t)
        exit(1);
    if (st->bounded) {
        void *graph = NULL, *exec = NULL, *start = NULL, *end = NULL;
        if (cu.begin_capture(stream, CU_CAPTURE_THREAD_LOCAL_))
            check(MOES_ERR_DEVICE, "cuStreamBeginCapture", NULL);
        int rc = step == STEP_DISPATCH ? moes_ep_dispatch(ep, d)
                                       : moes_ep_combine(ep, c);
        if (cu.end_capture(stream, &graph) || rc != MOES_OK)
            check(rc != MOES_OK ? rc : MOES_ERR_DEVICE, "capture", ep);
        if (cu.instantiate(&exec, graph, 0) || cu.event_create(&start, 0) ||
            cu.event_create(&end, 0))
            check(MOES_ERR_DEVICE, "cuGraphInstantiate", NULL);
        for (int i = 0; i < st->calls; i++) {
            float ms = 0;
            cu.event_record(start, stream);
            cu.launch(exec, stream);
            cu.event_record(end, stream);
            cu.event_sync(end);
            cu.event_elapsed(&ms, start, end);
            t[i] = (double)ms * 1e3;
        }
        check(moes_ep_synchronize(ep), "moes_ep_synchronize", ep);
        cu.exec_destroy(exec);
        cu.graph_destroy(graph);
    } else {
        for (int i = 0; i < st->calls; i++) {
            barrier();
            const double t0 = now_us();
            int rc = step == STEP_DISPATCH ? moes_ep_dispatch(ep, d)
                                           : moes_ep_combine(ep, c);
            if (rc == MOES_OK)
                rc = moes_ep_synchronize(ep);
            check(rc, step == STEP_DISPATCH ? "dispatch" : "combine", ep);
            cu.stream_sync(stream);
            t[i] = now_us() - t0;
        }
    }
    qsort(t, (size_t)st->calls, sizeof *t, by_value);
    const double median = t[st->calls / 2];
    free(t);
    return median;
}

static int run_rank(void *p)
{
    const settings *st = p;
    int rank, n_ranks;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &n_ranks);
    const int64_t N = st->tokens, E = st->experts, K = 8, H = 7168;
    const int64_t S = H / 128, El = E / n_ranks;
    open_graph_api(&cu, rank);
    moes_context_options o;
    moes_context_options_init(&o);
    o.backend = MOES_BACKEND_CUDA;
    o.cuda_device = rank;
    moes_context *ctx = NULL;
    if (moes_context_create(&ctx, &o) != MOES_OK) {
        printf("no usable GPU %d (%s): skipped\n", rank,
               moes_last_error(NULL));
        exit(77);
    }
    void *stream = NULL;
    if (cu.stream_create(&stream, CU_STREAM_NON_BLOCKING_))
        check(MOES_ERR_DEVICE, "cuStreamCreate", NULL);
    moes_ep_options opts;
    moes_ep_options_init(&opts);
    opts.n_ranks = n_ranks;
    opts.experts_per_rank = El;
    opts.hidden = H;
    opts.top_k = K;
    opts.max_tokens = N;
    opts.x_dtype = MOES_DTYPE_FP8_E4M3;
    opts.scale_block = 128;
    opts.ids_dtype = MOES_DTYPE_INT32;
    opts.y_dtype = MOES_DTYPE_BF16;
    opts.out_dtype = MOES_DTYPE_BF16;
    opts.mode = st->bounded ? MOES_EP_MODE_BOUNDED : MOES_EP_MODE_EXACT;
    opts.tokens_per_pair = N;
    moes_ep *ep = NULL;
    check(moes_ep_create_nccl(&ep, ctx, &opts, st->comms[rank], stream),
          "moes_ep_create_nccl", NULL);

    /* K distinct experts a token, fp8 rows of small values, unit scales,
     * weights in [0, 1); each rank its own draw. */
    uint64_t g = 0x5EED0000ull + (uint64_t)rank;
    int32_t *ids = malloc((size_t)(N * K) * sizeof *ids);
    uint8_t *x = malloc((size_t)(N * H));
    float *scales = malloc((size_t)(N * S) * sizeof *scales);
    float *weights = malloc((size_t)(N * K) * sizeof *weights);
    if (!ids || !x || !scales || !weights)
        exit(1);
    for (int64_t t = 0; t < N; t++) {
        for (int64_t k = 0; k < K; k++) {
            int32_t e;
            int again;
            do {
                e = (int32_t)(next_random(&g) % (uint64_t)E);
                again = 0;
                for (int64_t j = 0; j < k; j++)
                    again |= ids[t * K + j] == e;
            } while (again);
            ids[t * K + k] = e;
            weights[t * K + k] = (float)(next_random(&g) % 1000) / 1000.0f;
        }
        for (int64_t h = 0; h < H; h++)
            x[t * H + h] = (uint8_t)(0x30 + next_random(&g) % 16);
        for (int64_t s = 0; s < S; s++)
            scales[t * S + s] = 1.0f;
    }
    int64_t cap = 0;
    const int layout = st->bounded ? MOES_LAYOUT_MASKED
                                   : MOES_LAYOUT_CONTIGUOUS;
    check(moes_ep_capacity(ep, layout, st->bounded ? 1 : 128, &cap),
          "moes_ep_capacity", ep);
    const int64_t rows = st->bounded ? El * cap : cap;
    /* y: finite bf16 (no NaN takes the gather's slow path), written on
     * the device from one host row repeated. */
    uint16_t *y_row = malloc((size_t)H * sizeof *y_row);
    for (int64_t h = 0; h < H; h++)
        y_row[h] = (uint16_t)(0x3C00 + next_random(&g) % 256);
    void *d_y = NULL;
    check(moes_malloc(ctx, &d_y, rows * H * 2), "moes_malloc y", NULL);
    for (int64_t r = 0; r < rows; r++)
        check(moes_copy_to_backend(ctx, (char *)d_y + r * H * 2, y_row, H * 2),
              "copy y", NULL);
    void *d_ids = device_copy(ctx, ids, N * K * 4);
    void *d_x = device_copy(ctx, x, N * H);
    void *d_scales = device_copy(ctx, scales, N * S * 4);
    void *d_weights = device_copy(ctx, weights, N * K * 4);
    void *d_out = NULL, *d_rows = NULL, *d_rscales = NULL, *d_idx = NULL,
         *d_dropped = NULL;
    check(moes_malloc(ctx, &d_out, N * H * 2), "moes_malloc", NULL);
    check(moes_malloc(ctx, &d_rows, rows * H), "moes_malloc", NULL);
    check(moes_malloc(ctx, &d_rscales, rows * S * 4), "moes_malloc", NULL);
    check(moes_malloc(ctx, &d_idx, (rows > El ? rows : El) * 4),
          "moes_malloc", NULL);
    check(moes_malloc(ctx, &d_dropped, 8), "moes_malloc", NULL);

    moes_scatter_args local;
    moes_scatter_args_init(&local);
    local.layout = layout;
    local.alignment = st->bounded ? 1 : 128;
    local.capacity = cap;
    local.out = d_rows;
    local.out_scales = d_rscales;
    local.out_scales_format = MOES_SCALES_FP32;
    local.index_dtype = MOES_DTYPE_INT32;
    if (st->bounded)
        local.masked_m = d_idx;
    else
        local.m_indices = d_idx;
    moes_ep_dispatch_args d;
    moes_ep_dispatch_args_init(&d);
    d.n_tokens = N;
    d.x = d_x;
    d.x_scales = d_scales;
    d.ids = d_ids;
    d.weights = d_weights;
    d.local = &local;
    if (st->bounded)
        d.n_dropped_device = d_dropped;
    moes_ep_combine_args c;
    moes_ep_combine_args_init(&c);
    c.y = d_y;
    c.y_rows = rows;
    c.out = d_out;

    /* Warm-up: the context's workspace grows here, not in a capture. */
    for (int i = 0; i < 3; i++) {
        check(moes_ep_dispatch(ep, &d), "moes_ep_dispatch", ep);
        check(moes_ep_combine(ep, &c), "moes_ep_combine", ep);
    }
    check(moes_ep_synchronize(ep), "moes_ep_synchronize", ep);
    moes_ep_stats sd, sc;
    memset(&sd, 0, sizeof sd);
    memset(&sc, 0, sizeof sc);
    sd.struct_size = sc.struct_size = sizeof sd;
    check(moes_ep_dispatch(ep, &d), "moes_ep_dispatch", ep);
    check(moes_ep_get_stats(ep, &sd), "moes_ep_get_stats", ep);
    check(moes_ep_combine(ep, &c), "moes_ep_combine", ep);
    check(moes_ep_get_stats(ep, &sc), "moes_ep_get_stats", ep);
    check(moes_ep_synchronize(ep), "moes_ep_synchronize", ep);

    barrier();
    const double t_dispatch = time_step(st, stream, ep, &d, &c, STEP_DISPATCH);
    barrier();
    const double t_combine = time_step(st, stream, ep, &d, &c, STEP_COMBINE);
    printf("time_nccl: rank %d of %d, %s, %lld tokens, top-%lld of %lld "
           "experts (%lld here), hidden %lld: dispatch %.2f us (sent %lld, "
           "received %lld bytes), combine %.2f us (sent %lld, received %lld "
           "bytes)\n",
           rank, n_ranks, st->bounded ? "bounded, graph replays"
                                      : "exact, host-timed calls",
           (long long)N, (long long)K, (long long)E, (long long)El,
           (long long)H, t_dispatch, (long long)sd.bytes_sent,
           (long long)sd.bytes_received, t_combine, (long long)sc.bytes_sent,
           (long long)sc.bytes_received);
    /* The ranks' mean (the stand-in for MPI only sums); each rank's own
     * line above has its figures. */
    long sums[2] = {(long)(t_dispatch * 1000), (long)(t_combine * 1000)};
    MPI_Allreduce(MPI_IN_PLACE, sums, 2, MPI_LONG, MPI_SUM, MPI_COMM_WORLD);
    if (rank == 0)
        printf("time_nccl: mean over %d rank%s: dispatch %.2f us, combine "
               "%.2f us\n",
               n_ranks, n_ranks > 1 ? "s" : "",
               (double)sums[0] / 1000.0 / n_ranks,
               (double)sums[1] / 1000.0 / n_ranks);

    void *bufs[] = {d_ids, d_x,      d_scales, d_weights, d_y,
                    d_out, d_rows, d_rscales, d_idx,    d_dropped};
    for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++)
        moes_free(ctx, bufs[i]);
    moes_ep_destroy(ep);
    moes_set_stream(ctx, NULL);
    cu.stream_destroy(stream);
    moes_context_destroy(ctx);
    free(ids);
    free(x);
    free(scales);
    free(weights);
    free(y_row);
    return 0;
}

int main(int argc, char **argv)
{
    settings st;
    memset(&st, 0, sizeof st);
    if (argc < 3 || (strcmp(argv[1], "bounded") && strcmp(argv[1], "exact"))) {
        fprintf(stderr, "usage: time_nccl bounded|exact TOKENS_PER_RANK "
                        "[EXPERTS [CALLS]]\n");
        return 2;
    }
    st.bounded = !strcmp(argv[1], "bounded");
    st.tokens = atol(argv[2]);
    st.experts = argc > 3 ? atol(argv[3]) : 256;
    st.calls = argc > 4 ? atoi(argv[4]) : 50;
    const char *gpus = getenv("MOES_EP_GPUS");
    int n = gpus && *gpus ? atoi(gpus) : 1;
    if (st.tokens < 1 || st.calls < 1 || n < 1 || n > 8 ||
        st.experts % n != 0 || st.experts / n < 1 || st.experts < 8) {
        fprintf(stderr, "time_nccl: tokens, calls >= 1; 1 to 8 GPUs "
                        "(MOES_EP_GPUS); experts >= 8, a multiple of the "
                        "GPUs\n");
        return 2;
    }
    open_nccl(n, st.comms);
    return mpi_threads_run(n, run_rank, &st);
}
