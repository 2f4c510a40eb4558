/* SPDX-License-Identifier: MIT */
/*
 * ep_moe.c - one MoE layer with its experts spread over MPI ranks, checked
 * against the same layer run by one process.
 *
 *     mpirun -np 4 examples/ep_moe
 *
 * Each rank holds 4 experts and 64 tokens. Expert p multiplies its rows by
 * p + 1. The rows hold small integers and the weights are multiples of 1/4,
 * so every sum is exact in fp32 and the spread layer must give the very
 * bits of the single-process one, whatever the order of the additions.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mpi.h>

#include "moescatter_ep.h"

enum { TOKENS = 64, HIDDEN = 128, TOP_K = 4, EXPERTS_PER_RANK = 4 };

static void die(const char *what, const char *message)
{
    fprintf(stderr, "ep_moe: %s: %s\n", what, message);
    MPI_Abort(MPI_COMM_WORLD, 1);
}

/* The experts: expert first_expert + m_indices[row] scales row by its id
 * plus one; padding rows (m_indices -1) are left alone. */
static void run_experts(const float *x, float *y, const int32_t *m_indices,
                        int64_t rows, int first_expert)
{
    for (int64_t r = 0; r < rows; r++) {
        if (m_indices[r] < 0)
            continue;
        float scale = (float)(first_expert + m_indices[r] + 1);
        for (int h = 0; h < HIDDEN; h++)
            y[r * HIDDEN + h] = x[r * HIDDEN + h] * scale;
    }
}

/* The layer on one context: scatter, experts, gather. */
static void layer(moes_context *ctx, int64_t n, int64_t n_experts,
                  const float *x, const int32_t *ids, const float *w,
                  float *out)
{
    int64_t cap;
    moes_scatter_capacity(ctx, MOES_LAYOUT_CONTIGUOUS, n, TOP_K, n_experts, 8,
                          &cap);
    float *xs = calloc((size_t)(cap * HIDDEN), sizeof *xs);
    float *ys = calloc((size_t)(cap * HIDDEN), sizeof *ys);
    int32_t *m_indices = malloc((size_t)cap * sizeof *m_indices);
    int32_t *out_index = malloc((size_t)(n * TOP_K) * sizeof *out_index);
    moes_routing r;
    moes_routing_init(&r);
    r.n_tokens = n;
    r.top_k = TOP_K;
    r.ids = ids;
    r.n_experts_global = n_experts;
    r.n_experts = n_experts;
    moes_scatter_args s;
    moes_scatter_args_init(&s);
    s.alignment = 8;
    s.capacity = cap;
    s.x = x;
    s.x_dtype = MOES_DTYPE_FP32;
    s.hidden = HIDDEN;
    s.out = xs;
    s.out_index = out_index;
    s.m_indices = m_indices;
    if (moes_scatter(ctx, &r, &s) != MOES_OK)
        die("moes_scatter", moes_last_error(ctx));
    run_experts(xs, ys, m_indices, cap, 0);
    moes_gather_args g;
    moes_gather_args_init(&g);
    g.n_tokens = n;
    g.top_k = TOP_K;
    g.hidden = HIDDEN;
    g.y = ys;
    g.y_dtype = MOES_DTYPE_FP32;
    g.y_rows = cap;
    g.out_index = out_index;
    g.weights = w;
    g.out = out;
    g.out_dtype = MOES_DTYPE_FP32;
    if (moes_gather(ctx, &g) != MOES_OK)
        die("moes_gather", moes_last_error(ctx));
    free(xs);
    free(ys);
    free(m_indices);
    free(out_index);
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    int rank, size;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    const int64_t n_experts = (int64_t)EXPERTS_PER_RANK * size;

    /* This rank's tokens: small integers, ids anywhere (some -1). */
    float *x = malloc(sizeof(float) * TOKENS * HIDDEN);
    int32_t *ids = malloc(sizeof(int32_t) * TOKENS * TOP_K);
    float *w = malloc(sizeof(float) * TOKENS * TOP_K);
    unsigned seed = 12345u + 977u * (unsigned)rank;
    for (int i = 0; i < TOKENS * HIDDEN; i++) {
        seed = seed * 1103515245u + 12345u;
        x[i] = (float)((int)(seed >> 16) % 17 - 8);
    }
    for (int i = 0; i < TOKENS * TOP_K; i++) {
        seed = seed * 1103515245u + 12345u;
        ids[i] = (int32_t)((seed >> 16) % (unsigned)(n_experts + 1)) - 1;
        w[i] = 0.25f * (float)(i % TOP_K + 1);
    }

    moes_context_options co;
    moes_context_options_init(&co);
    co.backend = MOES_BACKEND_CPU;
    moes_context *ctx;
    if (moes_context_create(&ctx, &co) != MOES_OK)
        die("moes_context_create", moes_last_error(NULL));

    /* The ep context: every rank the same options. */
    moes_ep_options o;
    moes_ep_options_init(&o);
    o.n_ranks = size;
    o.experts_per_rank = EXPERTS_PER_RANK;
    o.hidden = HIDDEN;
    o.top_k = TOP_K;
    o.max_tokens = TOKENS;
    o.x_dtype = o.y_dtype = o.out_dtype = MOES_DTYPE_FP32;
    moes_ep *ep;
    if (moes_ep_create_mpi(&ep, ctx, &o, MPI_COMM_WORLD) != MOES_OK)
        die("moes_ep_create_mpi", moes_ep_last_error(NULL));

    /* Dispatch into a contiguous layout of this rank's experts. */
    int64_t cap;
    moes_ep_capacity(ep, MOES_LAYOUT_CONTIGUOUS, 8, &cap);
    float *xs = calloc((size_t)(cap * HIDDEN), sizeof *xs);
    float *ys = calloc((size_t)(cap * HIDDEN), sizeof *ys);
    int32_t *m_indices = malloc((size_t)cap * sizeof *m_indices);
    moes_scatter_args local;
    moes_scatter_args_init(&local);
    local.alignment = 8;
    local.capacity = cap;
    local.out = xs;
    local.m_indices = m_indices;
    int64_t n_received;
    moes_ep_dispatch_args d;
    moes_ep_dispatch_args_init(&d);
    d.n_tokens = TOKENS;
    d.x = x;
    d.ids = ids;
    d.weights = w;
    d.local = &local;
    d.n_received = &n_received;
    if (moes_ep_dispatch(ep, &d) != MOES_OK)
        die("moes_ep_dispatch", moes_ep_last_error(ep));

    run_experts(xs, ys, m_indices, cap, rank * EXPERTS_PER_RANK);

    float *out = malloc(sizeof(float) * TOKENS * HIDDEN);
    moes_ep_combine_args c;
    moes_ep_combine_args_init(&c);
    c.y = ys;
    c.y_rows = cap;
    c.out = out;
    if (moes_ep_combine(ep, &c) != MOES_OK)
        die("moes_ep_combine", moes_ep_last_error(ep));

    /* One process: rank 0 runs the whole layer on every rank's tokens. */
    float *all_x = NULL, *all_w = NULL, *all_out = NULL, *ref = NULL;
    int32_t *all_ids = NULL;
    if (rank == 0) {
        all_x = malloc(sizeof(float) * TOKENS * HIDDEN * (size_t)size);
        all_w = malloc(sizeof(float) * TOKENS * TOP_K * (size_t)size);
        all_ids = malloc(sizeof(int32_t) * TOKENS * TOP_K * (size_t)size);
        all_out = malloc(sizeof(float) * TOKENS * HIDDEN * (size_t)size);
        ref = malloc(sizeof(float) * TOKENS * HIDDEN * (size_t)size);
    }
    MPI_Gather(x, TOKENS * HIDDEN, MPI_FLOAT, all_x, TOKENS * HIDDEN,
               MPI_FLOAT, 0, MPI_COMM_WORLD);
    MPI_Gather(w, TOKENS * TOP_K, MPI_FLOAT, all_w, TOKENS * TOP_K,
               MPI_FLOAT, 0, MPI_COMM_WORLD);
    MPI_Gather(ids, TOKENS * TOP_K, MPI_INT32_T, all_ids, TOKENS * TOP_K,
               MPI_INT32_T, 0, MPI_COMM_WORLD);
    MPI_Gather(out, TOKENS * HIDDEN, MPI_FLOAT, all_out, TOKENS * HIDDEN,
               MPI_FLOAT, 0, MPI_COMM_WORLD);
    int status = 0;
    if (rank == 0) {
        layer(ctx, (int64_t)TOKENS * size, n_experts, all_x, all_ids, all_w,
              ref);
        size_t bytes = sizeof(float) * TOKENS * HIDDEN * (size_t)size;
        status = memcmp(ref, all_out, bytes) != 0;
        printf("ep_moe: %d ranks x %d tokens, %lld experts, top-%d: %s\n",
               size, TOKENS, (long long)n_experts, TOP_K,
               status ? "DIFFERS from one process"
                      : "the same bits as one process");
        free(all_x);
        free(all_w);
        free(all_ids);
        free(all_out);
        free(ref);
    }
    MPI_Bcast(&status, 1, MPI_INT, 0, MPI_COMM_WORLD);

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
    return status;
}
