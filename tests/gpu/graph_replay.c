/* SPDX-License-Identifier: MIT */
/*
 * graph_replay.c - a call of the CUDA backend can be captured in a CUDA
 * graph and replayed.
 *
 * After moes_reserve_workspace, count + scatter + gather on the context's
 * stream are captured once (cudaStreamBeginCapture), then the graph is
 * replayed several times, each time with new routing, rows and weights
 * copied into the same device buffers, and every output is compared bit
 * for bit with the CPU backend on the same inputs. One replay carries a
 * bad id: moes_synchronize must report it and the outputs must stay as
 * they were poisoned; the next replay must work again.
 *
 * GPU-only: links the CUDA runtime for the capture API.
 *
 *   graph_replay    prints "graph_replay: <n> replays, <n> failed"
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_check.h"
#include "test_random.h"

#include "moescatter.h"

/* Two token counts: the first takes the one-launch routing of small calls,
 * the second the multi-kernel one. */
enum { N_SMALL = 300, N_LARGE = 2000, N_MAX = N_LARGE, K = 8, E = 256,
       E_GLOBAL = 320, H = 7168, A = 128, REPLAYS = 6, BAD_REPLAY = 3 };

static int N;

static uint64_t rng = 0x243F6A8885A308D3ull;

static uint64_t rnd(void)
{
    return test_xorshift(&rng);
}

/* The buffers of one call sequence; the same layout on host and device. */
enum { IN_IDS, IN_MAP, IN_X, IN_W, OUT_COUNT, OUT_ROWS, OUT_INDEX,
       OUT_M_INDICES, OUT_START, OUT_GATHER, BUF_N };
#define FIRST_OUT OUT_COUNT

static const char *const names[BUF_N] = {"ids", "map", "x", "weights",
    "count counts", "out", "out_index", "m_indices", "expert_start",
    "gather out"};

static int64_t sizes[BUF_N];

/* Queues count, scatter and gather on ctx over the buffers b. */
static int queue_calls(moes_context *ctx, void *const b[BUF_N],
                       int64_t capacity)
{
    moes_routing r;
    moes_scatter_args a;
    moes_gather_args g;
    int st;
    moes_routing_init(&r);
    r.n_tokens = N;
    r.top_k = K;
    r.ids = b[IN_IDS];
    r.expert_map = b[IN_MAP];
    r.n_experts_global = E_GLOBAL;
    r.n_experts = E;
    if ((st = moes_count(ctx, &r, b[OUT_COUNT], MOES_DTYPE_INT32)) != MOES_OK)
        return st;
    moes_scatter_args_init(&a);
    a.layout = MOES_LAYOUT_CONTIGUOUS;
    a.alignment = A;
    a.capacity = capacity;
    a.flags = MOES_SCATTER_ZERO_PADDING;
    a.x = b[IN_X];
    a.x_dtype = MOES_DTYPE_BF16;
    a.hidden = H;
    a.out = b[OUT_ROWS];
    a.out_index = b[OUT_INDEX];
    a.m_indices = b[OUT_M_INDICES];
    a.expert_start = b[OUT_START];
    if ((st = moes_scatter(ctx, &r, &a)) != MOES_OK)
        return st;
    /* The expert outputs are the scattered rows themselves. */
    moes_gather_args_init(&g);
    g.n_tokens = N;
    g.top_k = K;
    g.hidden = H;
    g.y = b[OUT_ROWS];
    g.y_dtype = MOES_DTYPE_BF16;
    g.y_rows = capacity;
    g.out_index = b[OUT_INDEX];
    g.weights = b[IN_W];
    g.out = b[OUT_GATHER];
    g.out_dtype = MOES_DTYPE_BF16;
    return moes_gather(ctx, &g);
}

static void new_inputs(void *const h[BUF_N], int bad)
{
    int32_t *ids = h[IN_IDS], *map = h[IN_MAP];
    uint16_t *x = h[IN_X];
    float *w = h[IN_W];
    for (int i = 0; i < E_GLOBAL; i++)
        map[i] = rnd() % 5 == 0 ? -1 : (int32_t)(rnd() % E);
    for (int i = 0; i < N * K; i++) {
        ids[i] = rnd() % 16 == 0 ? -1 : (int32_t)(rnd() % E_GLOBAL);
        w[i] = (float)(rnd() % 4001) / 2000.0f - 1.0f;
    }
    for (int64_t i = 0; i < (int64_t)N * H; i++) {
        /* Finite bf16 values of moderate size, some subnormal. */
        x[i] = (uint16_t)((rnd() & 0x807F) | ((rnd() % 0x7F) << 7));
    }
    if (bad)
        ids[N * K / 2 + 1] = E_GLOBAL + 9;
}

/* Captures the calls for n tokens once and replays them; returns the
 * number of failed replays. */
static int capture_and_replay(moes_context *cpu, moes_context *cuda,
                              cudaStream_t stream, int n)
{
    cudaGraph_t graph;
    cudaGraphExec_t exec;
    void *dev[BUF_N], *host[BUF_N], *ref[BUF_N];
    int64_t capacity;
    int failed = 0;

    N = n;
    moes_scatter_capacity(NULL, MOES_LAYOUT_CONTIGUOUS, N, K, E, A, &capacity);
    sizes[IN_IDS] = N * K * 4;
    sizes[IN_MAP] = E_GLOBAL * 4;
    sizes[IN_X] = (int64_t)N * H * 2;
    sizes[IN_W] = N * K * 4;
    sizes[OUT_COUNT] = E * 4;
    sizes[OUT_ROWS] = capacity * H * 2;
    sizes[OUT_INDEX] = N * K * 4;
    sizes[OUT_M_INDICES] = capacity * 4;
    sizes[OUT_START] = E * 4;
    sizes[OUT_GATHER] = (int64_t)N * H * 2;
    for (int i = 0; i < BUF_N; i++) {
        CUDA_OK(cudaMalloc(&dev[i], (size_t)sizes[i]));
        host[i] = malloc((size_t)sizes[i]);
        ref[i] = malloc((size_t)sizes[i]);
        if (!host[i] || !ref[i])
            exit(2);
    }

    /* Captured once: no allocation, no host wait inside the calls. */
    CUDA_OK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
    if (queue_calls(cuda, dev, capacity) != MOES_OK) {
        fprintf(stderr, "a call failed under capture: %s\n",
                moes_last_error(cuda));
        exit(2);
    }
    CUDA_OK(cudaStreamEndCapture(stream, &graph));
    CUDA_OK(cudaGraphInstantiate(&exec, graph, 0));

    for (int rep = 0; rep < REPLAYS; rep++) {
        const int bad = rep == BAD_REPLAY;
        int st, want_st;
        new_inputs(host, bad);
        for (int i = 0; i < BUF_N; i++) {
            if (i >= FIRST_OUT)
                memset(host[i], 0xA5, (size_t)sizes[i]);
            memcpy(ref[i], host[i], (size_t)sizes[i]);
            CUDA_OK(cudaMemcpy(dev[i], host[i], (size_t)sizes[i],
                               cudaMemcpyHostToDevice));
        }
        CUDA_OK(cudaGraphLaunch(exec, stream));
        CUDA_OK(cudaStreamSynchronize(stream));
        st = moes_synchronize(cuda);
        want_st = queue_calls(cpu, ref, capacity);
        if (st != want_st) {
            printf("FAIL N=%d replay %d: CUDA %s (%s), CPU %s\n", N, rep,
                   moes_strerror(st), moes_last_error(cuda),
                   moes_strerror(want_st));
            failed++;
            continue;
        }
        if (bad && strcmp(moes_last_error(cuda), moes_last_error(cpu)) != 0) {
            printf("FAIL N=%d replay %d: CUDA \"%s\", CPU \"%s\"\n", N, rep,
                   moes_last_error(cuda), moes_last_error(cpu));
            failed++;
            continue;
        }
        for (int i = FIRST_OUT; i < BUF_N; i++) {
            CUDA_OK(cudaMemcpy(host[i], dev[i], (size_t)sizes[i],
                               cudaMemcpyDeviceToHost));
            if (memcmp(host[i], ref[i], (size_t)sizes[i]) != 0) {
                printf("FAIL N=%d replay %d: %s differs from the CPU\n", N,
                       rep, names[i]);
                failed++;
                break;
            }
        }
        printf("N=%d replay %d: %s\n", N, rep,
               bad ? moes_last_error(cuda) : "same bits");
    }
    cudaGraphExecDestroy(exec);
    cudaGraphDestroy(graph);
    for (int i = 0; i < BUF_N; i++) {
        cudaFree(dev[i]);
        free(host[i]);
        free(ref[i]);
    }
    return failed;
}

int main(void)
{
    moes_context_options opts;
    moes_context *cpu = NULL, *cuda = NULL;
    cudaStream_t stream;
    int failed = 0;

    unsetenv("MOES_BACKEND");
    CUDA_OK(cudaSetDevice(0));
    CUDA_OK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
    moes_context_options_init(&opts);
    opts.backend = MOES_BACKEND_CPU;
    if (moes_context_create(&cpu, &opts) != MOES_OK)
        return 2;
    opts.backend = MOES_BACKEND_CUDA;
    if (moes_context_create(&cuda, &opts) != MOES_OK) {
        fprintf(stderr, "graph_replay: %s\n", moes_last_error(NULL));
        return 2;
    }
    moes_set_stream(cuda, stream);
    /* The largest of the two: the smaller must then fit as well. */
    if (moes_reserve_workspace(cuda, N_MAX, K, E) != MOES_OK) {
        fprintf(stderr, "reserve: %s\n", moes_last_error(cuda));
        return 2;
    }
    failed += capture_and_replay(cpu, cuda, stream, N_SMALL);
    failed += capture_and_replay(cpu, cuda, stream, N_LARGE);
    printf("graph_replay: %d replays, %d failed\n", 2 * REPLAYS, failed);
    moes_context_destroy(cuda);
    moes_context_destroy(cpu);
    cudaStreamDestroy(stream);
    return failed ? 1 : 0;
}
