/* SPDX-License-Identifier: MIT */
/*
 * test_workspace.c - the caller's workspace: its size query, handing it
 * to the context, calls that fit it (same results as on the context's own
 * workspace, the buffer really used, nothing of the context's own held),
 * calls that do not (MOES_ERR_WORKSPACE with both sizes, outputs
 * untouched), giving it back; and, on CUDA, buffers the GPU cannot reach.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "helpers.h"

/* E_WIDE: more experts than the CUDA backend routes in one block, so that
 * its calls use the workspace (a one-block routing keeps its arrays in
 * shared memory), and as many as make the CPU's routing use it too. */
enum { N = 64, K = 4, E = 16, E_WIDE = 1024, H = 8, A = 8 };

typedef struct call {
    void *ids, *x, *out, *out_index, *m_indices, *counts;
    int64_t capacity;
} call;

static void call_open(moes_context *ctx, call *c, int64_t n_experts)
{
    int32_t ids[N * K];
    uint16_t x[N * H];
    for (int i = 0; i < N * K; i++)
        ids[i] = (int32_t)((i * 7 + i / K) % n_experts);
    for (int i = 0; i < N * H; i++)
        x[i] = (uint16_t)(i * 31);
    cr_assert_eq(moes_scatter_capacity(ctx, MOES_LAYOUT_CONTIGUOUS, N, K,
                                       n_experts, A, &c->capacity),
                 MOES_OK);
    c->ids = dev_from(ctx, ids, sizeof ids);
    c->x = dev_from(ctx, x, sizeof x);
    c->out = dev_new(ctx, c->capacity * H * 2);
    c->out_index = dev_new(ctx, N * K * 4);
    c->m_indices = dev_new(ctx, c->capacity * 4);
    c->counts = dev_new(ctx, n_experts * 4);
}

static void call_close(moes_context *ctx, call *c)
{
    dev_free(ctx, c->ids);
    dev_free(ctx, c->x);
    dev_free(ctx, c->out);
    dev_free(ctx, c->out_index);
    dev_free(ctx, c->m_indices);
    dev_free(ctx, c->counts);
}

static int scatter(moes_context *ctx, const call *c, int64_t n_experts)
{
    moes_routing r;
    moes_scatter_args s;
    moes_routing_init(&r);
    r.n_tokens = N;
    r.top_k = K;
    r.ids = c->ids;
    r.n_experts = n_experts;
    moes_scatter_args_init(&s);
    s.alignment = A;
    s.capacity = c->capacity;
    s.x = c->x;
    s.hidden = H;
    s.out = c->out;
    s.out_index = c->out_index;
    s.m_indices = c->m_indices;
    s.counts = c->counts;
    return moes_scatter(ctx, &r, &s);
}

static moes_context_info info_of(moes_context *ctx)
{
    moes_context_info info;
    memset(&info, 0, sizeof info);
    info.struct_size = sizeof info;
    cr_assert_eq(moes_context_get_info(ctx, &info), MOES_OK);
    return info;
}

Test(workspace, size_query)
{
    moes_context *ctx = test_open(2);
    int64_t bytes = -1, more = -1;
    cr_expect_eq(moes_workspace_size(NULL, N, K, E, &bytes),
                 MOES_ERR_NULL_POINTER);
    cr_expect_eq(moes_workspace_size(ctx, N, K, E, NULL),
                 MOES_ERR_NULL_POINTER);
    cr_expect_eq(moes_workspace_size(ctx, -1, K, E, &bytes),
                 MOES_ERR_INVALID_SIZE);
    cr_expect_eq(moes_workspace_size(ctx, N, 0, E, &bytes),
                 MOES_ERR_INVALID_SIZE);
    cr_expect_eq(moes_workspace_size(ctx, N, K, 0, &bytes),
                 MOES_ERR_INVALID_SIZE);
    cr_expect(strstr(moes_last_error(ctx), "n_experts") != NULL);
    cr_expect_eq(moes_workspace_size(ctx, INT64_MAX, 2, E, &bytes),
                 MOES_ERR_OVERFLOW);
    cr_expect_eq(bytes, -1, "bytes is only written on success");
    cr_assert_eq(moes_workspace_size(ctx, N, K, E, &bytes), MOES_OK);
    cr_expect_gt(bytes, 0);
    /* Larger calls never need less. */
    cr_assert_eq(moes_workspace_size(ctx, 4 * N, K, 4 * E, &more), MOES_OK);
    cr_expect_geq(more, bytes);
    cr_assert_eq(moes_workspace_size(ctx, 0, 1, 1, &more), MOES_OK);
    cr_expect_leq(more, bytes);
    test_close(ctx);
}

Test(workspace, bad_arguments)
{
    moes_context *ctx = test_open(2);
    char *buf = dev_new(ctx, 256);
    cr_expect_eq(moes_set_workspace(NULL, buf, 64), MOES_ERR_NULL_POINTER);
    cr_expect_eq(moes_set_workspace(ctx, NULL, 64), MOES_ERR_NULL_POINTER);
    cr_expect_eq(moes_set_workspace(ctx, buf, 0), MOES_ERR_INVALID_SIZE);
    cr_expect_eq(moes_set_workspace(ctx, buf, -16), MOES_ERR_INVALID_SIZE);
    cr_expect_eq(moes_set_workspace(ctx, buf + 8, 64),
                 MOES_ERR_INVALID_ARGUMENT);
    cr_expect(strstr(moes_last_error(ctx), "MOES_WORKSPACE_ALIGNMENT") != NULL,
              "%s", moes_last_error(ctx));
    cr_expect_eq(info_of(ctx).workspace_from_caller, 0,
                 "a refused workspace is not used");
    cr_expect_eq(moes_set_workspace(ctx, NULL, 0), MOES_OK);
    dev_free(ctx, buf);
    test_close(ctx);
}

Test(workspace, calls_that_fit_use_it)
{
    /* holder outlives the two others: on CUDA the device's memory (the
     * caller's workspace too) lives as long as some context holds it. */
    moes_context *holder = test_open(2);
    moes_context *own = test_open(2), *ctx = test_open(2);
    call a, b;
    int64_t bytes;
    void *ws, *ha, *hb;
    moes_context_info info;

    call_open(own, &a, E_WIDE);
    cr_assert_eq(scatter(own, &a, E_WIDE), MOES_OK, "%s",
                 moes_last_error(own));
    cr_assert_eq(moes_synchronize(own), MOES_OK);

    cr_assert_eq(moes_workspace_size(ctx, N, K, E_WIDE, &bytes), MOES_OK);
    ws = dev_new(ctx, bytes);
    cr_assert_eq(moes_set_workspace(ctx, ws, bytes), MOES_OK, "%s",
                 moes_last_error(ctx));
    info = info_of(ctx);
    cr_expect_eq(info.workspace_from_caller, 1);
    cr_expect_eq(info.workspace_bytes, bytes);
    call_open(ctx, &b, E_WIDE);
    cr_assert_eq(scatter(ctx, &b, E_WIDE), MOES_OK, "%s",
                 moes_last_error(ctx));
    cr_assert_eq(moes_synchronize(ctx), MOES_OK, "%s", moes_last_error(ctx));
    info = info_of(ctx);
    cr_expect_eq(info.workspace_bytes, bytes,
                 "a call that fits must not grow a workspace of its own");
    cr_expect_eq(info.workspace_from_caller, 1);
    cr_expect(!dev_is_canary(ctx, ws, bytes),
              "the caller's workspace was not used");

    /* The same results as on the context's own workspace. */
    ha = dev_get(own, a.out, a.capacity * H * 2);
    hb = dev_get(ctx, b.out, b.capacity * H * 2);
    cr_expect_arr_eq(ha, hb, (size_t)(a.capacity * H * 2));
    free(ha);
    free(hb);
    ha = dev_get(own, a.out_index, N * K * 4);
    hb = dev_get(ctx, b.out_index, N * K * 4);
    cr_expect_arr_eq(ha, hb, N * K * 4);
    free(ha);
    free(hb);

    /* A reservation within the caller's workspace allocates nothing. */
    cr_expect_eq(moes_reserve_workspace(ctx, N, K, E_WIDE), MOES_OK, "%s",
                 moes_last_error(ctx));
    cr_expect_eq(info_of(ctx).workspace_bytes, bytes);
    cr_expect_eq(moes_reserve_workspace(ctx, 1024 * N, K, 1024 * E_WIDE),
                 MOES_ERR_WORKSPACE);

    call_close(own, &a);
    call_close(ctx, &b);
    test_close(own);
    test_close(ctx);
    /* The library never frees the caller's buffer: it is still ours. */
    cr_expect_eq(moes_free(holder, ws), MOES_OK);
    test_close(holder);
}

Test(workspace, calls_that_do_not_fit)
{
    moes_context *holder = test_open(2); /* as in calls_that_fit_use_it */
    moes_context *ctx = test_open(2);
    call c;
    int64_t bytes, need;
    void *ws;
    char want[64];

    call_open(ctx, &c, 4 * E);
    cr_assert_eq(moes_workspace_size(ctx, N, K, 4 * E, &need), MOES_OK);
    /* A workspace far smaller than the call needs (what a backend needs
     * for a size is its own affair: the CPU's is bounded by its threads'
     * gather accumulators, the GPU's grows with the experts). */
    bytes = 256;
    cr_assert_gt(need, bytes);
    ws = dev_new(ctx, bytes);
    cr_assert_eq(moes_set_workspace(ctx, ws, bytes), MOES_OK);
    cr_expect_eq(scatter(ctx, &c, 4 * E), MOES_ERR_WORKSPACE);
    snprintf(want, sizeof want, "%lld", (long long)bytes);
    cr_expect(strstr(moes_last_error(ctx), want) != NULL,
              "the message names the workspace's size: %s",
              moes_last_error(ctx));
    cr_expect(strstr(moes_last_error(ctx), "moes_set_workspace") != NULL,
              "%s", moes_last_error(ctx));
    cr_expect(dev_is_canary(ctx, c.out_index, N * K * 4),
              "a call refused for its workspace wrote out_index");
    cr_expect(dev_is_canary(ctx, c.m_indices, c.capacity * 4),
              "a call refused for its workspace wrote m_indices");
    cr_expect_eq(info_of(ctx).workspace_bytes, bytes,
                 "a call must not allocate around the caller's workspace");

    /* Given back: the context's own workspace grows again. */
    cr_assert_eq(moes_set_workspace(ctx, NULL, 0), MOES_OK);
    cr_expect_eq(info_of(ctx).workspace_from_caller, 0);
    cr_expect_eq(scatter(ctx, &c, 4 * E), MOES_OK, "%s",
                 moes_last_error(ctx));
    cr_expect_eq(moes_synchronize(ctx), MOES_OK);
    cr_expect_geq(info_of(ctx).workspace_bytes, 1);

    /* A larger one replaces the context's own (which is freed). */
    dev_free(ctx, ws);
    ws = dev_new(ctx, need);
    cr_assert_eq(moes_set_workspace(ctx, ws, need), MOES_OK);
    cr_expect_eq(scatter(ctx, &c, 4 * E), MOES_OK, "%s",
                 moes_last_error(ctx));
    cr_expect_eq(moes_synchronize(ctx), MOES_OK);
    cr_expect_eq(info_of(ctx).workspace_bytes, need);
    call_close(ctx, &c);
    dev_free(holder, ws);
    test_close(ctx);
    test_close(holder);
}

/* CUDA only, by nature: on the CPU host memory is what buffers are. */
Test(workspace, cuda_refuses_host_memory_by_name)
{
    moes_context *ctx = test_open(2);
    call c;
    void *host_x, *host_ws;
    moes_routing r;
    moes_scatter_args s;
    if (test_is_cpu(ctx)) {
        test_close(ctx);
        cr_skip("host pointers are valid buffers on the CPU backend");
    }
    call_open(ctx, &c, E);
    host_x = calloc(N * H, 2);
    host_ws = aligned_alloc(64, 4096);
    cr_assert(host_x && host_ws);
    moes_routing_init(&r);
    r.n_tokens = N;
    r.top_k = K;
    r.ids = c.ids;
    r.n_experts = E;
    moes_scatter_args_init(&s);
    s.alignment = A;
    s.capacity = c.capacity;
    s.x = host_x;
    s.hidden = H;
    s.out = c.out;
    s.out_index = c.out_index;
    s.m_indices = c.m_indices;
    /* On a GPU that reads pageable host memory the call is fine. */
    {
        int st = moes_scatter(ctx, &r, &s);
        if (st == MOES_OK) {
            cr_expect_eq(moes_synchronize(ctx), MOES_OK);
        } else {
            cr_expect_eq(st, MOES_ERR_INVALID_ARGUMENT);
            cr_expect(strstr(moes_last_error(ctx), "args->x") != NULL, "%s",
                      moes_last_error(ctx));
            cr_expect(dev_is_canary(ctx, c.out_index, N * K * 4));
            cr_expect_eq(moes_set_workspace(ctx, host_ws, 4096),
                         MOES_ERR_INVALID_ARGUMENT);
        }
    }
    /* Device memory passes, and the answer is cached: a repeated call. */
    s.x = c.x;
    for (int i = 0; i < 3; i++)
        cr_expect_eq(moes_scatter(ctx, &r, &s), MOES_OK, "%s",
                     moes_last_error(ctx));
    cr_expect_eq(moes_synchronize(ctx), MOES_OK);
    free(host_x);
    free(host_ws);
    call_close(ctx, &c);
    test_close(ctx);
}
