/* SPDX-License-Identifier: MIT */
/*
 * cuda_stream.c - libmoescatter inside a CUDA program: the caller's own
 * stream and cudaMalloc buffers.
 *
 * The scatter and the gather are queued on the caller's stream, between
 * the caller's own copies, and the host waits once at the end. Here the
 * "experts" are the identity (the gather reads the scattered rows back),
 * so each token's output is the sum of its weights times its own row.
 * The second part shows a deferred error: a bad id is found by the
 * kernels, nothing is written, and moes_synchronize() reports it.
 *
 * Exits with 77 (skipped) when there is no GPU.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include <cuda_runtime.h>

#include "moescatter.h"

enum { N_TOKENS = 300, HIDDEN = 200, N_EXPERTS = 16, TOP_K = 4 };
#define EXIT_SKIP 77

static int cuda_ok(cudaError_t e, const char *what)
{
    if (e != cudaSuccess) {
        fprintf(stderr, "cuda_stream: %s: %s\n", what, cudaGetErrorString(e));
        return 0;
    }
    return 1;
}

static int moes_ok(moes_context *ctx, int status, const char *what)
{
    if (status != MOES_OK) {
        fprintf(stderr, "cuda_stream: %s: %s: %s\n", what,
                moes_strerror(status), moes_last_error(ctx));
        return 0;
    }
    return 1;
}

int main(void)
{
    static float x[N_TOKENS * HIDDEN], w[N_TOKENS * TOP_K];
    static float out[N_TOKENS * HIDDEN], poisoned[N_TOKENS * HIDDEN];
    static int32_t ids[N_TOKENS * TOP_K];
    moes_context_options opts;
    moes_context *ctx;
    moes_routing routing;
    moes_scatter_args scatter;
    moes_gather_args gather;
    cudaStream_t stream;
    int64_t capacity;
    int devices = 0, st, wrong = 0;
    float *d_x, *d_w, *d_rows, *d_out;
    int32_t *d_ids, *d_index, *d_m;
    unsigned seed = 7;

    if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
        printf("cuda_stream: no CUDA device: skipped\n");
        return EXIT_SKIP;
    }

    /* Routing: distinct experts per token, some choices -1 (dropped). */
    for (int t = 0; t < N_TOKENS; t++) {
        for (int k = 0; k < TOP_K; k++) {
            seed = seed * 1103515245u + 12345u;
            ids[t * TOP_K + k] = (int32_t)((t * 5 + k * 3) % N_EXPERTS);
            if ((seed >> 16) % 10 == 0)
                ids[t * TOP_K + k] = -1;
            w[t * TOP_K + k] = (float)((seed >> 8) % 1000) / 1000.0f;
        }
        for (int h = 0; h < HIDDEN; h++) {
            seed = seed * 1103515245u + 12345u;
            x[t * HIDDEN + h] =
                (float)((int)(seed >> 16) % 2001 - 1000) / 64.0f;
        }
    }

    if (!cuda_ok(cudaStreamCreate(&stream), "cudaStreamCreate"))
        return 1;
    moes_context_options_init(&opts);
    opts.backend = MOES_BACKEND_CUDA;
    st = moes_context_create(&ctx, &opts);
    if (st != MOES_OK) {
        fprintf(stderr, "cuda_stream: %s\n", moes_last_error(NULL));
        return 1;
    }
    moes_set_stream(ctx, stream);
    moes_scatter_capacity(ctx, MOES_LAYOUT_CONTIGUOUS, N_TOKENS, TOP_K,
                          N_EXPERTS, 128, &capacity);

    /* The caller's own buffers. */
    if (!cuda_ok(cudaMalloc((void **)&d_x, sizeof x), "cudaMalloc") ||
        !cuda_ok(cudaMalloc((void **)&d_w, sizeof w), "cudaMalloc") ||
        !cuda_ok(cudaMalloc((void **)&d_ids, sizeof ids), "cudaMalloc") ||
        !cuda_ok(cudaMalloc((void **)&d_index, sizeof ids), "cudaMalloc") ||
        !cuda_ok(cudaMalloc((void **)&d_out, sizeof out), "cudaMalloc") ||
        !cuda_ok(cudaMalloc((void **)&d_m, (size_t)capacity * 4),
                 "cudaMalloc") ||
        !cuda_ok(cudaMalloc((void **)&d_rows,
                            (size_t)capacity * HIDDEN * sizeof(float)),
                 "cudaMalloc"))
        return 1;

    /* Everything below is queued on the stream; nothing waits. */
    cudaMemcpyAsync(d_x, x, sizeof x, cudaMemcpyHostToDevice, stream);
    cudaMemcpyAsync(d_w, w, sizeof w, cudaMemcpyHostToDevice, stream);
    cudaMemcpyAsync(d_ids, ids, sizeof ids, cudaMemcpyHostToDevice, stream);

    moes_routing_init(&routing);
    routing.n_tokens = N_TOKENS;
    routing.top_k = TOP_K;
    routing.ids = d_ids;
    routing.n_experts = N_EXPERTS;
    moes_scatter_args_init(&scatter);
    scatter.capacity = capacity;
    scatter.x = d_x;
    scatter.x_dtype = MOES_DTYPE_FP32;
    scatter.hidden = HIDDEN;
    scatter.out = d_rows;
    scatter.out_index = d_index;
    scatter.m_indices = d_m;
    if (!moes_ok(ctx, moes_scatter(ctx, &routing, &scatter), "moes_scatter"))
        return 1;

    moes_gather_args_init(&gather);
    gather.n_tokens = N_TOKENS;
    gather.top_k = TOP_K;
    gather.hidden = HIDDEN;
    gather.y = d_rows;
    gather.y_dtype = MOES_DTYPE_FP32;
    gather.y_rows = capacity;
    gather.out_index = d_index;
    gather.weights = d_w;
    gather.out = d_out;
    gather.out_dtype = MOES_DTYPE_FP32;
    if (!moes_ok(ctx, moes_gather(ctx, &gather), "moes_gather"))
        return 1;
    cudaMemcpyAsync(out, d_out, sizeof out, cudaMemcpyDeviceToHost, stream);

    /* One wait for the whole sequence, then the deferred errors. */
    if (!cuda_ok(cudaStreamSynchronize(stream), "cudaStreamSynchronize") ||
        !moes_ok(ctx, moes_synchronize(ctx), "moes_synchronize"))
        return 1;
    for (int t = 0; t < N_TOKENS; t++) {
        for (int h = 0; h < HIDDEN; h++) {
            float want = 0.0f;
            for (int k = 0; k < TOP_K; k++)
                if (ids[t * TOP_K + k] >= 0)
                    want += w[t * TOP_K + k] * x[t * HIDDEN + h];
            if (fabsf(out[t * HIDDEN + h] - want) >
                1e-6f * (1.0f + fabsf(want)) && wrong++ < 5)
                fprintf(stderr, "out[%d][%d] = %g, expected %g\n", t, h,
                        (double)out[t * HIDDEN + h], (double)want);
        }
    }

    /* A deferred error: an id of 99 with 16 experts. The scatter returns
     * MOES_OK (the kernels run later); they write nothing, and
     * moes_synchronize() names the element. */
    for (int i = 0; i < N_TOKENS * HIDDEN; i++)
        poisoned[i] = -7.0f;
    cudaMemcpyAsync(d_rows, poisoned, sizeof poisoned, cudaMemcpyHostToDevice,
                    stream);
    ids[17 * TOP_K + 2] = 99;
    cudaMemcpyAsync(d_ids, ids, sizeof ids, cudaMemcpyHostToDevice, stream);
    if (!moes_ok(ctx, moes_scatter(ctx, &routing, &scatter), "moes_scatter"))
        return 1;
    st = moes_synchronize(ctx);
    printf("cuda_stream: deferred error: %s (%s)\n", moes_strerror(st),
           moes_last_error(ctx));
    if (st != MOES_ERR_INVALID_ID)
        wrong++;
    cudaMemcpy(out, d_rows, sizeof poisoned, cudaMemcpyDeviceToHost);
    for (int i = 0; i < N_TOKENS * HIDDEN; i++)
        if (out[i] != -7.0f && wrong++ < 5)
            fprintf(stderr, "rows[%d] was written after the error\n", i);

    printf("cuda_stream: %d tokens on the caller's stream: %s\n", N_TOKENS,
           wrong ? "WRONG" : "results match");
    cudaFree(d_x);
    cudaFree(d_w);
    cudaFree(d_ids);
    cudaFree(d_index);
    cudaFree(d_out);
    cudaFree(d_m);
    cudaFree(d_rows);
    moes_context_destroy(ctx);
    cudaStreamDestroy(stream);
    return wrong ? 1 : 0;
}
