/* SPDX-License-Identifier: MIT */
/*
 * minimal_moe.c - the smallest complete MoE layer around libmoescatter.
 *
 * A toy router sends each token to its top-2 of 6 experts; the scatter
 * groups the rows by expert; toy experts scale each row by (expert + 1);
 * the gather sums each token's two results with the router weights. The
 * result is checked against the same layer computed directly, token by
 * token. The context is opened on AUTO and every buffer comes from
 * moes_malloc, so the program runs unchanged on the CPU and on CUDA.
 *
 * Build: cc minimal_moe.c $(pkg-config --cflags --libs --static moescatter)
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "moescatter.h"

enum { N_TOKENS = 64, HIDDEN = 96, N_EXPERTS = 6, TOP_K = 2, ALIGN = 8 };

/* Stops the program with the library's message when a call fails. */
static void check(moes_context *ctx, int status, const char *what)
{
    if (status != MOES_OK) {
        fprintf(stderr, "minimal_moe: %s: %s: %s\n", what,
                moes_strerror(status), moes_last_error(ctx));
        exit(1);
    }
}

/* The toy router: a score per (token, expert), the two best experts, and
 * weights proportional to their scores. */
static void route(const float *x, int32_t *ids, float *weights)
{
    for (int t = 0; t < N_TOKENS; t++) {
        float score[N_EXPERTS];
        int best = 0, second = 1;
        for (int e = 0; e < N_EXPERTS; e++) {
            score[e] = 0.0f;
            for (int h = e; h < HIDDEN; h += N_EXPERTS)
                score[e] += fabsf(x[t * HIDDEN + h]);
        }
        if (score[second] > score[best]) {
            best = 1;
            second = 0;
        }
        for (int e = 2; e < N_EXPERTS; e++) {
            if (score[e] > score[best]) {
                second = best;
                best = e;
            } else if (score[e] > score[second]) {
                second = e;
            }
        }
        ids[t * TOP_K + 0] = best;
        ids[t * TOP_K + 1] = second;
        weights[t * TOP_K + 0] = score[best] / (score[best] + score[second]);
        weights[t * TOP_K + 1] = score[second] / (score[best] + score[second]);
    }
}

int main(void)
{
    static float x[N_TOKENS * HIDDEN], weights[N_TOKENS * TOP_K];
    static float out[N_TOKENS * HIDDEN];
    static int32_t ids[N_TOKENS * TOP_K], out_index[N_TOKENS * TOP_K];
    moes_context *ctx;
    moes_context_info info;
    moes_routing routing;
    moes_scatter_args scatter;
    moes_gather_args gather;
    int64_t capacity;
    float *rows, *d_x, *d_rows, *d_weights, *d_out;
    int32_t *m_indices, *d_ids, *d_out_index, *d_m_indices;
    unsigned seed = 12345;
    int wrong = 0;

    for (int i = 0; i < N_TOKENS * HIDDEN; i++) {
        seed = seed * 1103515245u + 12345u;
        x[i] = (float)((int)(seed >> 16) % 2001 - 1000) / 1000.0f;
    }
    route(x, ids, weights);

    if (moes_context_create(&ctx, NULL) != MOES_OK) {
        fprintf(stderr, "minimal_moe: %s\n", moes_last_error(NULL));
        return 1;
    }
    info.struct_size = sizeof info;
    check(ctx, moes_context_get_info(ctx, &info), "moes_context_get_info");

    /* Rows the scatter may need, whatever the routing. */
    check(ctx, moes_scatter_capacity(ctx, MOES_LAYOUT_CONTIGUOUS, N_TOKENS,
                                     TOP_K, N_EXPERTS, ALIGN, &capacity),
          "moes_scatter_capacity");
    rows = malloc((size_t)capacity * HIDDEN * sizeof *rows);
    m_indices = malloc((size_t)capacity * sizeof *m_indices);
    if (!rows || !m_indices) {
        fprintf(stderr, "minimal_moe: out of memory\n");
        return 1;
    }

    check(ctx, moes_malloc(ctx, (void **)&d_x, sizeof x), "moes_malloc");
    check(ctx, moes_malloc(ctx, (void **)&d_ids, sizeof ids), "moes_malloc");
    check(ctx, moes_malloc(ctx, (void **)&d_weights, sizeof weights),
          "moes_malloc");
    check(ctx, moes_malloc(ctx, (void **)&d_out, sizeof out), "moes_malloc");
    check(ctx, moes_malloc(ctx, (void **)&d_out_index, sizeof out_index),
          "moes_malloc");
    check(ctx, moes_malloc(ctx, (void **)&d_rows,
                           capacity * HIDDEN * (int64_t)sizeof *rows),
          "moes_malloc");
    check(ctx, moes_malloc(ctx, (void **)&d_m_indices,
                           capacity * (int64_t)sizeof *m_indices),
          "moes_malloc");
    check(ctx, moes_copy_to_backend(ctx, d_x, x, sizeof x), "copy x");
    check(ctx, moes_copy_to_backend(ctx, d_ids, ids, sizeof ids), "copy ids");
    check(ctx, moes_copy_to_backend(ctx, d_weights, weights, sizeof weights),
          "copy weights");

    /* Scatter: each token's row once per chosen expert, grouped by
     * expert; m_indices says whose each row is (-1 for padding). */
    moes_routing_init(&routing);
    routing.n_tokens = N_TOKENS;
    routing.top_k = TOP_K;
    routing.ids = d_ids;
    routing.n_experts = N_EXPERTS;
    moes_scatter_args_init(&scatter);
    scatter.alignment = ALIGN;
    scatter.capacity = capacity;
    scatter.x = d_x;
    scatter.x_dtype = MOES_DTYPE_FP32;
    scatter.hidden = HIDDEN;
    scatter.out = d_rows;
    scatter.out_index = d_out_index;
    scatter.m_indices = d_m_indices;
    check(ctx, moes_scatter(ctx, &routing, &scatter), "moes_scatter");
    /* On CUDA a bad id would only show here. */
    check(ctx, moes_synchronize(ctx), "moes_synchronize");

    /* The toy experts, on the host: expert e scales its rows by e + 1. */
    check(ctx, moes_copy_to_host(ctx, rows, d_rows,
                                 capacity * HIDDEN * (int64_t)sizeof *rows),
          "copy rows");
    check(ctx, moes_copy_to_host(ctx, m_indices, d_m_indices,
                                 capacity * (int64_t)sizeof *m_indices),
          "copy m_indices");
    for (int64_t r = 0; r < capacity; r++)
        for (int h = 0; h < HIDDEN && m_indices[r] >= 0; h++)
            rows[r * HIDDEN + h] *= (float)(m_indices[r] + 1);
    check(ctx, moes_copy_to_backend(ctx, d_rows, rows,
                                    capacity * HIDDEN * (int64_t)sizeof *rows),
          "copy expert outputs");

    /* Gather: out[t] = sum over k of weights[t][k] * row of (t, k). */
    moes_gather_args_init(&gather);
    gather.n_tokens = N_TOKENS;
    gather.top_k = TOP_K;
    gather.hidden = HIDDEN;
    gather.y = d_rows;
    gather.y_dtype = MOES_DTYPE_FP32;
    gather.y_rows = capacity;
    gather.out_index = d_out_index;
    gather.weights = d_weights;
    gather.out = d_out;
    gather.out_dtype = MOES_DTYPE_FP32;
    check(ctx, moes_gather(ctx, &gather), "moes_gather");
    check(ctx, moes_synchronize(ctx), "moes_synchronize");
    check(ctx, moes_copy_to_host(ctx, out, d_out, sizeof out), "copy out");
    check(ctx, moes_copy_to_host(ctx, out_index, d_out_index,
                                 sizeof out_index),
          "copy out_index");

    /* The same layer, directly. The library sums in k order in fp32, so
     * the results agree to the last bit when this file is compiled
     * without contraction into fused multiply-adds; the tolerance covers
     * compilers that contract. */
    for (int t = 0; t < N_TOKENS; t++) {
        for (int h = 0; h < HIDDEN; h++) {
            float want = 0.0f;
            for (int k = 0; k < TOP_K; k++) {
                float y = x[t * HIDDEN + h] * (float)(ids[t * TOP_K + k] + 1);
                want += weights[t * TOP_K + k] * y;
            }
            if (fabsf(out[t * HIDDEN + h] - want) >
                1e-6f * (1.0f + fabsf(want))) {
                if (wrong++ < 5)
                    fprintf(stderr, "out[%d][%d] = %g, expected %g\n", t, h,
                            (double)out[t * HIDDEN + h], (double)want);
            }
        }
        for (int k = 0; k < TOP_K; k++) {
            int32_t r = out_index[t * TOP_K + k];
            if (r < 0 || r >= capacity || m_indices[r] != ids[t * TOP_K + k]) {
                if (wrong++ < 5)
                    fprintf(stderr, "out_index[%d][%d] = %d is not a row of "
                            "expert %d\n", t, k, r, ids[t * TOP_K + k]);
            }
        }
    }

    printf("minimal_moe: backend %s (%s): %d tokens, top-%d of %d experts, "
           "%lld rows: %s\n",
           info.backend == MOES_BACKEND_CUDA ? "cuda" : "cpu", info.reason,
           N_TOKENS, TOP_K, N_EXPERTS, (long long)capacity,
           wrong ? "WRONG" : "the gather matches the direct computation");

    moes_free(ctx, d_x);
    moes_free(ctx, d_ids);
    moes_free(ctx, d_weights);
    moes_free(ctx, d_out);
    moes_free(ctx, d_out_index);
    moes_free(ctx, d_rows);
    moes_free(ctx, d_m_indices);
    moes_context_destroy(ctx);
    free(rows);
    free(m_indices);
    return wrong ? 1 : 0;
}
