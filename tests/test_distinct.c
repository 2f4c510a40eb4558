/* SPDX-License-Identifier: MIT */
/*
 * test_distinct.c - moes_distinct_experts: each token's local experts
 * once each, ascending, then -1. Literal cases with the expected rows
 * written out by hand, the checks that leave out untouched, and random
 * routings (large K with many repeats, E far above N*K) against the
 * oracle.
 */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "helpers.h"
#include "oracle.h"
#include "rng.h"

/* Runs the call and settles its deferred status (CUDA). */
static int distinct(moes_context *ctx, const moes_routing *r, void *out,
                    int dtype)
{
    int st = moes_distinct_experts(ctx, r, out, dtype, 0);
    int sync = moes_synchronize(ctx);
    return st != MOES_OK ? st : sync;
}

static moes_routing routing_of(const void *ids, int64_t n, int64_t k,
                               int64_t e)
{
    moes_routing r;
    moes_routing_init(&r);
    r.n_tokens = n;
    r.top_k = k;
    r.ids = ids;
    r.ids_dtype = MOES_DTYPE_INT32;
    r.n_experts = e;
    return r;
}

static int64_t get_index(const void *p, int dtype, int64_t i)
{
    return dtype == MOES_DTYPE_INT32 ? ((const int32_t *)p)[i]
                                     : ((const int64_t *)p)[i];
}

Test(distinct, repeats_and_empty_tokens)
{
    /* N = 4, K = 4, E = 5. */
    static const int32_t ids[16] = {3, 1, 3, -1,  -1, -1, -1, -1,
                                    4, 0, 2, 1,   2, 2, 2, 2};
    static const int64_t want[16] = {1, 3, -1, -1,  -1, -1, -1, -1,
                                     0, 1, 2, 4,    2, -1, -1, -1};
    const int dtypes[2] = {MOES_DTYPE_INT32, MOES_DTYPE_INT64};
    for (int d = 0; d < 2; d++) {
        moes_context *ctx = test_open(2);
        void *dids = dev_from(ctx, ids, sizeof ids);
        int64_t elem = dtypes[d] == MOES_DTYPE_INT32 ? 4 : 8;
        void *out = dev_new(ctx, 16 * elem);
        moes_routing r = routing_of(dids, 4, 4, 5);
        cr_assert_eq(distinct(ctx, &r, out, dtypes[d]), MOES_OK, "%s",
                     moes_last_error(ctx));
        void *host = dev_get(ctx, out, 16 * elem);
        for (int i = 0; i < 16; i++)
            cr_expect_eq(get_index(host, dtypes[d], i), want[i],
                         "dtype %d, out[%d][%d] = %lld, expected %lld",
                         dtypes[d], i / 4, i % 4,
                         (long long)get_index(host, dtypes[d], i),
                         (long long)want[i]);
        free(host);
        dev_free(ctx, out);
        dev_free(ctx, dids);
        test_close(ctx);
    }
}

Test(distinct, strided_rows)
{
    /* N = 3, K = 3, E = 4, rows 5 entries apart: entries 3 and 4 of each
     * row are not the call's and keep the canary. */
    static const int32_t ids[9] = {2, 0, 2, -1, 3, 1, 1, 1, 1};
    static const int64_t want[9] = {0, 2, -1, 1, 3, -1, 1, -1, -1};
    const int dtypes[2] = {MOES_DTYPE_INT32, MOES_DTYPE_INT64};
    for (int d = 0; d < 2; d++) {
        moes_context *ctx = test_open(2);
        void *dids = dev_from(ctx, ids, sizeof ids);
        const int64_t elem = dtypes[d] == MOES_DTYPE_INT32 ? 4 : 8;
        void *out = dev_new(ctx, 15 * elem);
        void *canary = dev_get(ctx, out, 15 * elem);
        moes_routing r = routing_of(dids, 3, 3, 4);
        cr_assert_eq(moes_distinct_experts(ctx, &r, out, dtypes[d], 5),
                     MOES_OK, "%s", moes_last_error(ctx));
        cr_assert_eq(moes_synchronize(ctx), MOES_OK, "%s",
                     moes_last_error(ctx));
        void *host = dev_get(ctx, out, 15 * elem);
        for (int t = 0; t < 3; t++) {
            for (int j = 0; j < 3; j++)
                cr_expect_eq(get_index(host, dtypes[d], t * 5 + j),
                             want[t * 3 + j], "dtype %d, out[%d][%d] = %lld",
                             dtypes[d], t, j,
                             (long long)get_index(host, dtypes[d],
                                                  t * 5 + j));
            cr_expect(memcmp((char *)host + (t * 5 + 3) * elem,
                             (char *)canary + (t * 5 + 3) * elem,
                             (size_t)(2 * elem)) == 0,
                      "dtype %d: row %d's entries past K were written",
                      dtypes[d], t);
        }
        /* A stride below K. */
        cr_expect_eq(moes_distinct_experts(ctx, &r, out, dtypes[d], 2),
                     MOES_ERR_INVALID_STRIDE);
        cr_expect(strstr(moes_last_error(ctx), "out_stride = 2") != NULL,
                  "%s", moes_last_error(ctx));
        free(host);
        free(canary);
        dev_free(ctx, out);
        dev_free(ctx, dids);
        test_close(ctx);
    }
}

Test(distinct, through_a_map)
{
    /* Eight global experts, two per rank, the last one nowhere:
     * ids {{0, 1, 6, 7}, {7, 7, 3, 2}} are ranks {{0, 0, 3, -1},
     * {-1, -1, 1, 1}}. */
    static const int32_t ids[8] = {0, 1, 6, 7, 7, 7, 3, 2};
    static const int32_t map[8] = {0, 0, 1, 1, 2, 2, 3, -1};
    static const int32_t want[8] = {0, 3, -1, -1, 1, -1, -1, -1};
    moes_context *ctx = test_open(2);
    void *dids = dev_from(ctx, ids, sizeof ids);
    void *dmap = dev_from(ctx, map, sizeof map);
    void *out = dev_new(ctx, sizeof want);
    moes_routing r = routing_of(dids, 2, 4, 4);
    r.expert_map = dmap;
    r.n_experts_global = 8;
    cr_assert_eq(distinct(ctx, &r, out, MOES_DTYPE_INT32), MOES_OK, "%s",
                 moes_last_error(ctx));
    int32_t *host = dev_get(ctx, out, sizeof want);
    cr_expect_arr_eq(host, want, sizeof want);
    free(host);
    dev_free(ctx, out);
    dev_free(ctx, dmap);
    dev_free(ctx, dids);
    test_close(ctx);
}

Test(distinct, bad_data_writes_nothing)
{
    static const int32_t bad_id[6] = {0, 1, 2, 1, 5, 0};
    static const int32_t ok_ids[6] = {0, 1, 2, 1, 4, 0};
    static const int32_t bad_map[5] = {0, 1, 2, 3, 3};
    moes_context *ctx = test_open(2);
    void *out = dev_new(ctx, 6 * 4);
    void *dids = dev_from(ctx, bad_id, sizeof bad_id);
    moes_routing r = routing_of(dids, 2, 3, 5);
    cr_expect_eq(distinct(ctx, &r, out, MOES_DTYPE_INT32),
                 MOES_ERR_INVALID_ID);
    cr_expect(strstr(moes_last_error(ctx), "ids[1][1] = 5") != NULL, "%s",
              moes_last_error(ctx));
    cr_expect(dev_is_canary(ctx, out, 6 * 4));
    dev_free(ctx, dids);

    /* A map entry past E: reported before any id. */
    dids = dev_from(ctx, ok_ids, sizeof ok_ids);
    void *dmap = dev_from(ctx, bad_map, sizeof bad_map);
    r = routing_of(dids, 2, 3, 3);
    r.expert_map = dmap;
    r.n_experts_global = 5;
    cr_expect_eq(distinct(ctx, &r, out, MOES_DTYPE_INT32),
                 MOES_ERR_INVALID_MAP);
    cr_expect(strstr(moes_last_error(ctx), "expert_map[3] = 3") != NULL,
              "%s", moes_last_error(ctx));
    cr_expect(dev_is_canary(ctx, out, 6 * 4));
    dev_free(ctx, dmap);
    dev_free(ctx, dids);
    dev_free(ctx, out);
    test_close(ctx);
}

Test(distinct, arguments)
{
    static const int32_t ids[6] = {0, 1, 2, 1, 4, 0};
    moes_context *ctx = test_open(2);
    void *dids = dev_from(ctx, ids, sizeof ids);
    void *out = dev_new(ctx, 6 * 8);
    moes_routing r = routing_of(dids, 2, 3, 5);
    cr_expect_eq(moes_distinct_experts(NULL, &r, out, MOES_DTYPE_INT32, 0),
                 MOES_ERR_NULL_POINTER);
    cr_expect_eq(moes_distinct_experts(ctx, NULL, out, MOES_DTYPE_INT32, 0),
                 MOES_ERR_NULL_POINTER);
    cr_expect_eq(moes_distinct_experts(ctx, &r, NULL, MOES_DTYPE_INT32, 0),
                 MOES_ERR_NULL_POINTER);
    cr_expect(strstr(moes_last_error(ctx), "out is NULL") != NULL);
    cr_expect_eq(moes_distinct_experts(ctx, &r, out, MOES_DTYPE_FP32, 0),
                 MOES_ERR_INVALID_DTYPE);
    cr_expect(strstr(moes_last_error(ctx), "out_dtype") != NULL);
    /* out over the ids it reads. */
    cr_expect_eq(moes_distinct_experts(ctx, &r, dids, MOES_DTYPE_INT32, 0),
                 MOES_ERR_OVERLAP);
    cr_expect(strstr(moes_last_error(ctx), "routing->ids") != NULL, "%s",
              moes_last_error(ctx));
    /* Misaligned int64 rows. */
    cr_expect_eq(moes_distinct_experts(ctx, &r, (char *)out + 4,
                                       MOES_DTYPE_INT64, 0),
                 MOES_ERR_MISALIGNED);
    /* int32 cannot name expert 2^31. */
    r.n_experts = (int64_t)INT32_MAX + 2;
    cr_expect_eq(moes_distinct_experts(ctx, &r, out, MOES_DTYPE_INT32, 0),
                 MOES_ERR_OVERFLOW);
    cr_expect(strstr(moes_last_error(ctx), "routing->n_experts") != NULL,
              "%s", moes_last_error(ctx));
    /* No tokens: nothing to write, out may be NULL. */
    r = routing_of(dids, 0, 3, 5);
    cr_expect_eq(distinct(ctx, &r, NULL, MOES_DTYPE_INT32), MOES_OK, "%s",
                 moes_last_error(ctx));
    cr_expect(dev_is_canary(ctx, out, 6 * 8));
    dev_free(ctx, out);
    dev_free(ctx, dids);
    test_close(ctx);
}

/* Random ids (some -1) with many repeats, on the backend and the oracle. */
static void random_against_oracle(int64_t n, int64_t k, int64_t e,
                                  int dtype, uint64_t seed)
{
    moes_rng g;
    moes_rng_seed(&g, seed);
    int64_t *ids = malloc((size_t)(n * k) * sizeof *ids);
    int64_t elem = dtype == MOES_DTYPE_INT32 ? 4 : 8;
    void *want = malloc((size_t)(n * k * elem));
    cr_assert(ids && want);
    /* A few experts per token, drawn again and again. */
    for (int64_t t = 0; t < n; t++) {
        int64_t pool[4];
        for (int i = 0; i < 4; i++)
            pool[i] = moes_rng_below(&g, e);
        for (int64_t j = 0; j < k; j++)
            ids[t * k + j] = moes_rng_chance(&g, 10)
                                 ? -1
                                 : pool[moes_rng_below(&g, 4)];
    }
    moes_routing r = routing_of(ids, n, k, e);
    r.ids_dtype = MOES_DTYPE_INT64;
    cr_assert_eq(moes_oracle_distinct_experts(&r, want, dtype, 0),
                 MOES_OK);

    moes_context *ctx = test_open(2);
    void *dids = dev_from(ctx, ids, n * k * 8);
    void *out = dev_new(ctx, n * k * elem);
    r.ids = dids;
    cr_assert_eq(distinct(ctx, &r, out, dtype), MOES_OK, "%s",
                 moes_last_error(ctx));
    void *got = dev_get(ctx, out, n * k * elem);
    for (int64_t i = 0; i < n * k; i++)
        if (get_index(got, dtype, i) != get_index(want, dtype, i))
            cr_assert_fail("N %lld K %lld E %lld: out[%lld][%lld] = %lld, "
                           "the oracle has %lld", (long long)n, (long long)k,
                           (long long)e, (long long)(i / k),
                           (long long)(i % k),
                           (long long)get_index(got, dtype, i),
                           (long long)get_index(want, dtype, i));
    free(got);
    dev_free(ctx, out);
    dev_free(ctx, dids);
    test_close(ctx);
    free(want);
    free(ids);
}

Test(distinct, random_against_oracle)
{
    random_against_oracle(64, 8, 16, MOES_DTYPE_INT32, 1);
    random_against_oracle(33, 300, 50, MOES_DTYPE_INT64, 2);
    random_against_oracle(1000, 1, 7, MOES_DTYPE_INT32, 3);
    /* Rows of 9 to 16 choices (the CUDA kernel's second register form),
     * and more choices than one self-checking launch takes. */
    random_against_oracle(200, 12, 40, MOES_DTYPE_INT32, 5);
    random_against_oracle(50, 16, 9, MOES_DTYPE_INT64, 6);
    random_against_oracle(1100, 8, 64, MOES_DTYPE_INT32, 7);
    /* E far above N*K: the routing's sparse path checks the ids. */
    random_against_oracle(16, 8, (int64_t)1 << 24, MOES_DTYPE_INT64, 4);
}
