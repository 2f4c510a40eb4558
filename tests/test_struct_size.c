/* SPDX-License-Identifier: MIT */
/*
 * test_struct_size.c - a program compiled against 0.1: its structs, laid
 * out as 0.1's moescatter.h laid them out (copied here, so that later
 * changes to the header cannot change them), are accepted, give the same
 * results as this version's, and a struct the library only partly knows
 * is written no further than its size. Sizes no version had, larger ones
 * included, are refused.
 */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "helpers.h"

/* ---- 0.1's definitions, verbatim but for the names ---------------- */
typedef struct v01_context_options {
    size_t struct_size;
    int backend;
    int cpu_threads;
    int cuda_device;
} v01_context_options;

typedef struct v01_context_info {
    size_t struct_size;
    int backend;
    int cpu_threads;
    char reason[256];
    char device_name[256];
    int device_multiprocessors;
    int device_compute_capability;
    int64_t device_memory_bytes;
} v01_context_info;

typedef struct v01_routing {
    size_t struct_size;
    int64_t n_tokens;
    int64_t top_k;
    const void *ids;
    int ids_dtype;
    int64_t ids_stride;
    const int32_t *expert_map;
    int64_t n_experts_global;
    int64_t n_experts;
} v01_routing;

typedef struct v01_scatter_args {
    size_t struct_size;
    int layout;
    int64_t alignment;
    int64_t capacity;
    unsigned flags;
    const void *x;
    int x_dtype;
    int64_t hidden;
    int64_t x_stride;
    const float *x_scales;
    int64_t scale_block;
    int64_t x_scales_stride;
    void *out;
    int64_t out_stride;
    void *out_scales;
    int out_scales_format;
    int64_t out_scales_row_stride;
    int64_t out_scales_col_stride;
    int index_dtype;
    void *out_index;
    int64_t out_index_stride;
    void *counts;
    void *expert_start;
    void *expert_end;
    void *m_indices;
    void *masked_m;
    int64_t *n_dropped;
} v01_scatter_args;

typedef struct v01_gather_args {
    size_t struct_size;
    unsigned flags;
    int64_t n_tokens;
    int64_t top_k;
    int64_t hidden;
    const void *y;
    int y_dtype;
    int64_t y_rows;
    int64_t y_stride;
    const void *out_index;
    int index_dtype;
    int64_t out_index_stride;
    const float *weights;
    int64_t weights_stride;
    void *out;
    int out_dtype;
    int64_t out_stride;
} v01_gather_args;
/* -------------------------------------------------------------------- */

enum { N = 5, K = 2, E = 3, H = 4, CAP = 16 };
static const int32_t ids[N * K] = {0, 1, 2, 0, 1, -1, 0, 2, 2, 2};

/* The inputs on the backend, and the outputs of one scatter and gather. */
typedef struct run {
    void *ids, *x, *out, *out_index, *m_indices, *counts, *y, *g_out;
} run;

static void run_open(moes_context *ctx, run *r)
{
    float x[N * H], y[CAP * H];
    for (int i = 0; i < N * H; i++)
        x[i] = (float)i + 0.25f;
    for (int i = 0; i < CAP * H; i++)
        y[i] = (float)(i % 7) - 2.5f;
    r->ids = dev_from(ctx, ids, sizeof ids);
    r->x = dev_from(ctx, x, sizeof x);
    r->y = dev_from(ctx, y, sizeof y);
    r->out = dev_new(ctx, CAP * H * 4);
    r->out_index = dev_new(ctx, N * K * 4);
    r->m_indices = dev_new(ctx, CAP * 4);
    r->counts = dev_new(ctx, E * 4);
    r->g_out = dev_new(ctx, N * H * 4);
}

static void run_close(moes_context *ctx, run *r)
{
    void **all[] = {&r->ids, &r->x, &r->out, &r->out_index, &r->m_indices,
                    &r->counts, &r->y, &r->g_out};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        dev_free(ctx, *all[i]);
}

/* Every output of the run, copied to one host buffer. */
static void *run_outputs(moes_context *ctx, const run *r, size_t *bytes)
{
    const int64_t sizes[] = {CAP * H * 4, N * K * 4, CAP * 4, E * 4,
                             N * H * 4};
    const void *bufs[] = {r->out, r->out_index, r->m_indices, r->counts,
                          r->g_out};
    char *all = malloc(CAP * H * 4 + N * K * 4 + CAP * 4 + E * 4 + N * H * 4);
    size_t at = 0;
    cr_assert(all);
    cr_assert_eq(moes_synchronize(ctx), MOES_OK, "%s", moes_last_error(ctx));
    for (int i = 0; i < 5; i++) {
        void *h = dev_get(ctx, bufs[i], sizes[i]);
        memcpy(all + at, h, (size_t)sizes[i]);
        free(h);
        at += (size_t)sizes[i];
    }
    *bytes = at;
    return all;
}

/* The same calls through this version's structs. */
static void run_current(moes_context *ctx, run *r)
{
    moes_routing rt;
    moes_scatter_args s;
    moes_gather_args g;
    moes_routing_init(&rt);
    rt.n_tokens = N;
    rt.top_k = K;
    rt.ids = r->ids;
    rt.n_experts = E;
    moes_scatter_args_init(&s);
    s.alignment = 4;
    s.capacity = CAP;
    s.x = r->x;
    s.x_dtype = MOES_DTYPE_FP32;
    s.hidden = H;
    s.out = r->out;
    s.out_index = r->out_index;
    s.m_indices = r->m_indices;
    s.counts = r->counts;
    cr_assert_eq(moes_scatter(ctx, &rt, &s), MOES_OK, "%s",
                 moes_last_error(ctx));
    moes_gather_args_init(&g);
    g.n_tokens = N;
    g.top_k = K;
    g.hidden = H;
    g.y = r->y;
    g.y_dtype = MOES_DTYPE_FP32;
    g.y_rows = CAP;
    g.out_index = r->out_index;
    g.out = r->g_out;
    g.out_dtype = MOES_DTYPE_FP32;
    cr_assert_eq(moes_gather(ctx, &g), MOES_OK, "%s", moes_last_error(ctx));
}

/* As a 0.1 program writes them: its own sizeof, fields by name. */
static void run_v01(moes_context *ctx, run *r)
{
    v01_routing rt;
    v01_scatter_args s;
    v01_gather_args g;
    memset(&rt, 0, sizeof rt);
    rt.struct_size = sizeof rt;
    rt.n_tokens = N;
    rt.top_k = K;
    rt.ids = r->ids;
    rt.ids_dtype = MOES_DTYPE_INT32;
    rt.n_experts = E;
    memset(&s, 0, sizeof s);
    s.struct_size = sizeof s;
    s.layout = MOES_LAYOUT_CONTIGUOUS;
    s.alignment = 4;
    s.capacity = CAP;
    s.x = r->x;
    s.x_dtype = MOES_DTYPE_FP32;
    s.hidden = H;
    s.scale_block = 128;
    s.out = r->out;
    s.index_dtype = MOES_DTYPE_INT32;
    s.out_index = r->out_index;
    s.m_indices = r->m_indices;
    s.counts = r->counts;
    cr_assert_eq(moes_scatter(ctx, (const moes_routing *)(const void *)&rt,
                              (const moes_scatter_args *)(const void *)&s),
                 MOES_OK, "%s", moes_last_error(ctx));
    memset(&g, 0, sizeof g);
    g.struct_size = sizeof g;
    g.n_tokens = N;
    g.top_k = K;
    g.hidden = H;
    g.y = r->y;
    g.y_dtype = MOES_DTYPE_FP32;
    g.y_rows = CAP;
    g.out_index = r->out_index;
    g.index_dtype = MOES_DTYPE_INT32;
    g.out = r->g_out;
    g.out_dtype = MOES_DTYPE_FP32;
    cr_assert_eq(moes_gather(ctx, (const moes_gather_args *)(const void *)&g),
                 MOES_OK, "%s", moes_last_error(ctx));
    {
        int32_t counts[E] = {-1, -1, -1};
        void *d = dev_new(ctx, sizeof counts);
        cr_assert_eq(moes_count(ctx, (const moes_routing *)(const void *)&rt,
                                d, MOES_DTYPE_INT32),
                     MOES_OK, "%s", moes_last_error(ctx));
        cr_assert_eq(moes_synchronize(ctx), MOES_OK);
        void *h = dev_get(ctx, d, sizeof counts);
        memcpy(counts, h, sizeof counts);
        free(h);
        dev_free(ctx, d);
        cr_expect_eq(counts[0], 3);
        cr_expect_eq(counts[1], 2);
        cr_expect_eq(counts[2], 4);
    }
}

Test(struct_size, v01_calls_give_the_same_results)
{
    moes_context *ctx = test_open(2);
    run a, b;
    size_t na, nb;
    void *ra, *rb;
    run_open(ctx, &a);
    run_open(ctx, &b);
    run_current(ctx, &a);
    run_v01(ctx, &b);
    ra = run_outputs(ctx, &a, &na);
    rb = run_outputs(ctx, &b, &nb);
    cr_assert_eq(na, nb);
    cr_expect_arr_eq(ra, rb, na, "a 0.1 struct changed the results");
    free(ra);
    free(rb);
    run_close(ctx, &a);
    run_close(ctx, &b);
    test_close(ctx);
}

Test(struct_size, v01_context_options_and_info)
{
    v01_context_options o;
    moes_context *ctx = NULL;
    /* The 0.1 info, then bytes 0.2 has fields for: they must stay. */
    struct {
        v01_context_info info;
        unsigned char after[64];
    } buf;
    memset(&o, 0, sizeof o);
    o.struct_size = sizeof o;
    o.backend = MOES_BACKEND_AUTO;
    o.cpu_threads = 3;
    cr_assert_eq(moes_context_create(
                     &ctx, (const moes_context_options *)(const void *)&o),
                 MOES_OK, "%s", moes_last_error(NULL));
    memset(&buf, CANARY, sizeof buf);
    buf.info.struct_size = sizeof buf.info;
    cr_assert_eq(moes_context_get_info(
                     ctx, (moes_context_info *)(void *)&buf.info),
                 MOES_OK, "%s", moes_last_error(ctx));
    cr_expect_eq(buf.info.struct_size, sizeof buf.info,
                 "the caller's struct_size is kept");
    cr_expect_eq(buf.info.cpu_threads, 3);
    cr_expect(buf.info.backend == MOES_BACKEND_CPU ||
              buf.info.backend == MOES_BACKEND_CUDA);
    cr_expect(buf.info.reason[0] != '\0');
    for (size_t i = 0; i < sizeof buf.after; i++)
        cr_assert_eq(buf.after[i], CANARY,
                     "byte %zu past the 0.1 struct was written", i);
    moes_context_destroy(ctx);
}

Test(struct_size, sizes_no_version_had)
{
    moes_context *ctx = test_open(1);
    moes_routing r;
    moes_scatter_args s;
    moes_gather_args g;
    moes_context_info info;
    moes_context_options o;
    moes_context *other = (moes_context *)1;
    int32_t counts[E];

    moes_routing_init(&r);
    r.n_tokens = 0;
    r.n_experts = E;
    r.struct_size = sizeof r + 8;
    cr_expect_eq(moes_count(ctx, &r, counts, MOES_DTYPE_INT32),
                 MOES_ERR_INVALID_ARGUMENT);
    cr_expect(strstr(moes_last_error(ctx), "newer") != NULL, "%s",
              moes_last_error(ctx));
    r.struct_size = sizeof r - 8;
    cr_expect_eq(moes_count(ctx, &r, counts, MOES_DTYPE_INT32),
                 MOES_ERR_INVALID_ARGUMENT);
    cr_expect(strstr(moes_last_error(ctx), "routing->struct_size") != NULL,
              "%s", moes_last_error(ctx));

    moes_routing_init(&r);
    r.n_experts = E;
    moes_scatter_args_init(&s);
    s.struct_size = 2 * sizeof s;
    cr_expect_eq(moes_scatter(ctx, &r, &s), MOES_ERR_INVALID_ARGUMENT);
    moes_gather_args_init(&g);
    g.struct_size = sizeof(size_t);
    cr_expect_eq(moes_gather(ctx, &g), MOES_ERR_INVALID_ARGUMENT);

    /* Between 0.1's moes_context_info and this version's. */
    memset(&info, 0, sizeof info);
    info.struct_size = sizeof(v01_context_info) + 8;
    cr_assert_lt(info.struct_size, sizeof info);
    cr_expect_eq(moes_context_get_info(ctx, &info), MOES_ERR_INVALID_ARGUMENT);
    info.struct_size = sizeof info + 16;
    cr_expect_eq(moes_context_get_info(ctx, &info), MOES_ERR_INVALID_ARGUMENT);
    info.struct_size = sizeof info;
    cr_expect_eq(moes_context_get_info(ctx, &info), MOES_OK);

    moes_context_options_init(&o);
    o.struct_size = sizeof o + 8;
    cr_expect_eq(moes_context_create(&other, &o), MOES_ERR_INVALID_ARGUMENT);
    cr_expect_null(other);
    cr_expect(strstr(moes_last_error(NULL), "opts->struct_size") != NULL);
    test_close(ctx);
}
