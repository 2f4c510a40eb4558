/* SPDX-License-Identifier: MIT */
/*
 * time_bounded.c - the bounded mode over NCCL on one GPU (a one-rank
 * communicator), timed as CUDA graph replays: dispatch alone, combine
 * alone, and both, at decode sizes (DeepSeek-V3: hidden 7168, top-8,
 * fp8 rows with fp32 scales per 128, bf16 expert outputs and result, a
 * masked local layout). One rank moves nothing over a link, so this is
 * the layer's own cost: the routing, packing, markers, local scatter and
 * the two gathers, around NCCL's self-exchange.
 *
 *     time_bounded [tokens [experts [replays]]]
 *
 * Built by ep/nccl-one-gpu.sh beside the suite; the ids are drawn per
 * token without repeats, y is finite (no NaN takes the slow path).
 */
#include "config.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "device_harness.h"
#include "moescatter_ep.h"

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

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static uint64_t next_random(void)
{
    uint64_t z = (rng_state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

enum { STEP_DISPATCH, STEP_COMBINE, STEP_BOTH };

/* Graph replays of one step: us per replay. */
static double time_step(graph_api *cu, void *stream, moes_ep *ep,
                        const moes_ep_dispatch_args *d,
                        const moes_ep_combine_args *c, int step, int replays)
{
    void *graph = NULL, *exec = NULL, *start = NULL, *end = NULL;
    if (cu->begin_capture(stream, CU_CAPTURE_THREAD_LOCAL_))
        check(MOES_ERR_DEVICE, "cuStreamBeginCapture", NULL);
    int rc = MOES_OK;
    if (step != STEP_COMBINE)
        rc = moes_ep_dispatch(ep, d);
    if (rc == MOES_OK && step != STEP_DISPATCH)
        rc = moes_ep_combine(ep, c);
    if (cu->end_capture(stream, &graph) || rc != MOES_OK)
        check(rc != MOES_OK ? rc : MOES_ERR_DEVICE, "capture", ep);
    if (cu->instantiate(&exec, graph, 0) || cu->event_create(&start, 0) ||
        cu->event_create(&end, 0))
        check(MOES_ERR_DEVICE, "cuGraphInstantiate", NULL);
    for (int i = 0; i < 10; i++)
        cu->launch(exec, stream);
    cu->event_record(start, stream);
    for (int i = 0; i < replays; i++)
        cu->launch(exec, stream);
    cu->event_record(end, stream);
    float ms = 0;
    cu->event_sync(end);
    cu->event_elapsed(&ms, start, end);
    check(moes_ep_synchronize(ep), "moes_ep_synchronize", ep);
    cu->exec_destroy(exec);
    cu->graph_destroy(graph);
    return (double)ms * 1e3 / replays;
}

int main(int argc, char **argv)
{
    const int64_t N = argc > 1 ? atol(argv[1]) : 128;
    const int64_t E = argc > 2 ? atol(argv[2]) : 256;
    const int replays = argc > 3 ? atoi(argv[3]) : 200;
    const int64_t H = 7168, K = 8, S = H / 128;
    if (N < 1 || E < K || replays < 1) {
        fprintf(stderr, "usage: time_bounded [tokens [experts [replays]]]\n");
        return 2;
    }
    graph_api cu;
    open_graph_api(&cu, 0);
    moes_context_options o;
    moes_context_options_init(&o);
    o.backend = MOES_BACKEND_CUDA;
    moes_context *ctx = NULL;
    if (moes_context_create(&ctx, &o) != MOES_OK) {
        printf("no usable GPU (%s): skipped\n", moes_last_error(NULL));
        return 77;
    }
    void *comm = open_nccl_one_rank();
    void *stream = NULL;
    if (cu.stream_create(&stream, CU_STREAM_NON_BLOCKING_))
        check(MOES_ERR_DEVICE, "cuStreamCreate", NULL);

    moes_ep_options opts;
    moes_ep_options_init(&opts);
    opts.n_ranks = 1;
    opts.experts_per_rank = E;
    opts.hidden = H;
    opts.top_k = K;
    opts.max_tokens = N;
    opts.x_dtype = MOES_DTYPE_FP8_E4M3;
    opts.scale_block = 128;
    opts.ids_dtype = MOES_DTYPE_INT32;
    opts.y_dtype = MOES_DTYPE_BF16;
    opts.out_dtype = MOES_DTYPE_BF16;
    opts.mode = MOES_EP_MODE_BOUNDED;
    opts.tokens_per_pair = N;
    moes_ep *ep = NULL;
    check(moes_ep_create_nccl(&ep, ctx, &opts, comm, stream),
          "moes_ep_create_nccl", NULL);

    /* Inputs: K distinct experts a token, fp8 rows of small values,
     * scales of 1, weights in (0, 1). */
    int32_t *ids = malloc((size_t)(N * K) * sizeof *ids);
    uint8_t *x = malloc((size_t)(N * H));
    float *scales = malloc((size_t)(N * S) * sizeof *scales);
    float *weights = malloc((size_t)(N * K) * sizeof *weights);
    for (int64_t t = 0; t < N; t++) {
        for (int64_t k = 0; k < K; k++) {
            int32_t e;
            int again;
            do {
                e = (int32_t)(next_random() % (uint64_t)E);
                again = 0;
                for (int64_t j = 0; j < k; j++)
                    again |= ids[t * K + j] == e;
            } while (again);
            ids[t * K + k] = e;
            weights[t * K + k] = (float)(next_random() % 1000) / 1000.0f;
        }
        for (int64_t h = 0; h < H; h++)
            x[t * H + h] = (uint8_t)(0x30 + next_random() % 16);
        for (int64_t s = 0; s < S; s++)
            scales[t * S + s] = 1.0f;
    }
    /* Masked local layout: E experts of C rows each. */
    const int64_t C = N;
    const int64_t rows = E * C;
    uint16_t *y = malloc((size_t)(rows * H) * sizeof *y);
    for (int64_t i = 0; i < rows * H; i++)
        y[i] = (uint16_t)(0x3C00 + next_random() % 256); /* finite bf16 */
    void *d_ids = device_copy(ctx, ids, N * K * 4);
    void *d_x = device_copy(ctx, x, N * H);
    void *d_scales = device_copy(ctx, scales, N * S * 4);
    void *d_weights = device_copy(ctx, weights, N * K * 4);
    void *d_y = device_copy(ctx, y, rows * H * 2);
    void *d_out = NULL, *d_rows = NULL, *d_rscales = NULL, *d_masked = NULL,
         *d_dropped = NULL, *d_local_dropped = NULL;
    check(moes_malloc(ctx, &d_out, N * H * 2), "moes_malloc", NULL);
    check(moes_malloc(ctx, &d_rows, rows * H), "moes_malloc", NULL);
    check(moes_malloc(ctx, &d_rscales, rows * S * 4), "moes_malloc", NULL);
    check(moes_malloc(ctx, &d_masked, E * 4), "moes_malloc", NULL);
    check(moes_malloc(ctx, &d_dropped, 8), "moes_malloc", NULL);
    check(moes_malloc(ctx, &d_local_dropped, 8), "moes_malloc", NULL);

    moes_scatter_args local;
    moes_scatter_args_init(&local);
    local.layout = MOES_LAYOUT_MASKED;
    local.alignment = 1;
    local.capacity = C;
    local.out = d_rows;
    local.out_scales = d_rscales;
    local.out_scales_format = MOES_SCALES_FP32;
    local.index_dtype = MOES_DTYPE_INT32;
    local.masked_m = d_masked;
    local.n_dropped = d_local_dropped;
    moes_ep_dispatch_args d;
    moes_ep_dispatch_args_init(&d);
    d.n_tokens = N;
    d.x = d_x;
    d.x_scales = d_scales;
    d.ids = d_ids;
    d.weights = d_weights;
    d.local = &local;
    d.n_dropped_device = d_dropped;
    moes_ep_combine_args c;
    moes_ep_combine_args_init(&c);
    c.y = d_y;
    c.y_rows = rows;
    c.out = d_out;

    /* Warm-up: the context's workspace grows here, not in a capture. */
    check(moes_ep_dispatch(ep, &d), "moes_ep_dispatch", ep);
    check(moes_ep_combine(ep, &c), "moes_ep_combine", ep);
    check(moes_ep_synchronize(ep), "moes_ep_synchronize", ep);

    double t_dispatch = time_step(&cu, stream, ep, &d, &c, STEP_DISPATCH,
                                  replays);
    double t_combine = time_step(&cu, stream, ep, &d, &c, STEP_COMBINE,
                                 replays);
    double t_both = time_step(&cu, stream, ep, &d, &c, STEP_BOTH, replays);
    printf("time_bounded: %lld tokens, top-%lld of %lld experts, hidden %lld, "
           "one rank: dispatch %.2f us, combine %.2f us, both %.2f us a "
           "graph replay\n",
           (long long)N, (long long)K, (long long)E, (long long)H, t_dispatch,
           t_combine, t_both);

    void *bufs[] = {d_ids, d_x, d_scales, d_weights, d_y, d_out, d_rows,
                    d_rscales, d_masked, d_dropped, d_local_dropped};
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
    free(y);
    return 0;
}
