/* SPDX-License-Identifier: MIT */
/*
 * test_kit.c - the test kit checks itself: the same seed makes the same
 * case, the comparison finds a single changed byte in any output, faults
 * give the status they promise, and the generator reaches the inputs the
 * differential tests claim to cover. A kit that can never report a
 * difference would make every other randomized test pass for nothing.
 */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "elements.h"
#include "helpers.h"
#include "testkit.h"

static int same_buffer(const moes_case_buffer *a, const moes_case_buffer *b)
{
    return a->bytes == b->bytes &&
           (a->bytes == 0 || memcmp(a->data, b->data, (size_t)a->bytes) == 0);
}

Test(kit, same_seed_same_case)
{
    for (uint64_t seed = 1; seed < 60; seed++) {
        moes_case a, b;
        char da[1024], db[1024];
        cr_assert_eq(moes_case_generate(&a, seed * 7919, -1, NULL), MOES_OK);
        cr_assert_eq(moes_case_generate(&b, seed * 7919, -1, NULL), MOES_OK);
        moes_case_describe(&a, da, sizeof da);
        moes_case_describe(&b, db, sizeof db);
        cr_expect_str_eq(da, db);
        cr_expect(same_buffer(&a.ids, &b.ids));
        cr_expect(same_buffer(&a.x, &b.x));
        cr_expect(same_buffer(&a.y, &b.y));
        cr_expect(same_buffer(&a.map, &b.map));
        cr_expect(same_buffer(&a.gather_index, &b.gather_index));
        moes_case_free(&a);
        moes_case_free(&b);
    }
}

/* Flips one byte of each output of a valid case in turn: the comparison
 * must notice every time, and name the buffer. */
Test(kit, compare_finds_one_byte)
{
    int flipped = 0;
    for (uint64_t seed = 100; seed < 140; seed++) {
        moes_case c;
        moes_case_result a, b;
        char msg[1024];
        cr_assert_eq(moes_case_generate(&c, seed, MOES_CASE_VALID, NULL),
                     MOES_OK);
        cr_assert_eq(moes_case_run(NULL, &c, &a, msg, sizeof msg), MOES_OK);
        cr_assert_eq(moes_case_run(NULL, &c, &b, msg, sizeof msg), MOES_OK);
        cr_assert_eq(moes_case_compare(&c, &a, &b, msg, sizeof msg), 0, "%s",
                     msg);
        for (int i = 0; i < MOES_OUT_COUNT_OF; i++) {
            unsigned char *p = b.out[i].data;
            int64_t at;
            if (b.out[i].bytes == 0)
                continue;
            at = (int64_t)((seed * 2654435761u) % (uint64_t)b.out[i].bytes);
            p[at] ^= 0x10;
            cr_expect_eq(moes_case_compare(&c, &a, &b, msg, sizeof msg), 1);
            cr_expect(strstr(msg, moes_case_output_name(i)) != NULL,
                      "\"%s\" does not name %s", msg,
                      moes_case_output_name(i));
            p[at] ^= 0x10;
            flipped++;
        }
        b.status[MOES_CALL_GATHER] = MOES_ERR_DEVICE;
        cr_expect_eq(moes_case_compare(&c, &a, &b, msg, sizeof msg), 1);
        cr_expect(strstr(msg, "gather: status") != NULL, "%s", msg);
        moes_case_result_free(&a);
        moes_case_result_free(&b);
        moes_case_free(&c);
    }
    cr_expect_gt(flipped, 200);
}

/* A data error's message names the element; a different element is a
 * difference even with the same status. */
Test(kit, compare_checks_the_element)
{
    moes_case c;
    moes_case_result a, b;
    char msg[1024];
    cr_assert_eq(moes_case_generate(&c, 77, MOES_CASE_BAD_ID, NULL), MOES_OK);
    cr_assert_eq(moes_case_run(NULL, &c, &a, msg, sizeof msg), MOES_OK);
    cr_assert_eq(moes_case_run(NULL, &c, &b, msg, sizeof msg), MOES_OK);
    cr_assert_eq(a.status[MOES_CALL_SCATTER], MOES_ERR_INVALID_ID);
    snprintf(b.message[MOES_CALL_SCATTER], sizeof b.message[0],
             "ids[0][0] = 123456789 is outside [-1, 1)");
    cr_expect_eq(moes_case_compare(&c, &a, &b, msg, sizeof msg), 1);
    cr_expect(strstr(msg, "message") != NULL, "%s", msg);
    moes_case_result_free(&a);
    moes_case_result_free(&b);
    moes_case_free(&c);
}

/* Each fault gives its status, from the call it concerns. */
Test(kit, faults_give_their_status)
{
    static const int want[MOES_CASE_FAULT_COUNT][3] = {
        {MOES_OK, MOES_OK, MOES_OK},
        {MOES_ERR_INVALID_ID, MOES_ERR_INVALID_ID, -1},
        {MOES_ERR_INVALID_MAP, MOES_ERR_INVALID_MAP, -1},
        {MOES_OK, MOES_ERR_CAPACITY, -1},
        {MOES_OK, MOES_OK, MOES_ERR_INVALID_OUT_INDEX},
        {MOES_OK, MOES_ERR_INVALID_SCALE, -1}};
    for (int f = 0; f < MOES_CASE_FAULT_COUNT; f++) {
        for (uint64_t seed = 0; seed < 40; seed++) {
            moes_case c;
            moes_case_result r;
            char msg[1024], desc[1024];
            cr_assert_eq(moes_case_generate(&c, seed, f, NULL), MOES_OK);
            cr_assert_eq(moes_case_run(NULL, &c, &r, msg, sizeof msg),
                         MOES_OK);
            moes_case_describe(&c, desc, sizeof desc);
            for (int call = 0; call < 3; call++)
                if (want[f][call] >= 0)
                    cr_expect_eq(r.status[call], want[f][call],
                                 "call %d: %d (%s) %s", call, r.status[call],
                                 r.message[call], desc);
            moes_case_result_free(&r);
            moes_case_free(&c);
        }
    }
}

/* After an error the outputs hold nothing but the canary. */
Test(kit, errors_leave_canaries)
{
    for (uint64_t seed = 0; seed < 60; seed++) {
        moes_case c;
        moes_case_result r;
        char msg[1024];
        cr_assert_eq(moes_case_generate(&c, seed, MOES_CASE_BAD_MAP, NULL),
                     MOES_OK);
        cr_assert_eq(moes_case_run(NULL, &c, &r, msg, sizeof msg), MOES_OK);
        for (int i = MOES_OUT_COUNT_COUNTS; i <= MOES_OUT_ROW_SOURCE; i++) {
            const unsigned char *p = r.out[i].data;
            for (int64_t b = 0; b < r.out[i].bytes; b++)
                cr_assert_eq(p[b], MOES_CANARY, "seed %llu %s byte %lld",
                             (unsigned long long)seed,
                             moes_case_output_name(i), (long long)b);
        }
        moes_case_result_free(&r);
        moes_case_free(&c);
    }
}

/* Where map (eg entries) holds experts 0..e-1 as one run and -1 around
 * it, as an expert-parallel rank's slice does: the run's first entry;
 * else -1. */
static int64_t slice_first(const int32_t *map, int64_t eg, int64_t e)
{
    int64_t first = -1;
    for (int64_t i = 0; i < eg; i++) {
        if (map[i] == 0 && first < 0 && i + e <= eg)
            first = i;
        const int inside = first >= 0 && i >= first && i - first < e;
        if (map[i] != (inside ? (int32_t)(i - first) : -1))
            return -1;
    }
    return first;
}

/* Over the seeds the differential tests use, the generator reaches every
 * feature docs/design-rules.md names. */
Test(kit, generator_coverage)
{
    enum { SEEDS = 3000 };
    int n0 = 0, n1 = 0, nbig = 0, k[10] = {0}, e1 = 0, ebig = 0, map = 0;
    int map_neg = 0, ids_neg = 0, dup = 0, h1 = 0, hodd = 0, hbig = 0;
    int x[6] = {0}, ids64 = 0, idx64 = 0, align_odd = 0, layout[4] = {0};
    int drops = 0, tail = 0, scales[3] = {0}, mn_major = 0, flags[4] = {0};
    int acc = 0, no_w = 0, y[6] = {0}, out[6] = {0}, gaps = 0, faults = 0;
    int index_only[4] = {0}, row_source = 0, pads[3] = {0}, unpadded = 0;
    int slice_front = 0, slice_back = 0, slice_mid = 0;
    for (uint64_t s = 0; s < SEEDS; s++) {
        moes_case c;
        const moes_routing *r = &c.routing;
        const moes_scatter_args *a = &c.scatter;
        size_t ie;
        int64_t stride;
        cr_assert_eq(moes_case_generate(&c, 0x5EED0000ull + s, -1, NULL),
                     MOES_OK);
        n0 += r->n_tokens == 0;
        n1 += r->n_tokens == 1;
        nbig += r->n_tokens >= 200;
        k[r->top_k]++;
        e1 += r->n_experts == 1;
        ebig += r->n_experts >= 1000;
        map += c.map.data != NULL;
        for (int64_t i = 0; c.map.data && i < r->n_experts_global; i++)
            if (((int32_t *)c.map.data)[i] == -1) {
                map_neg++;
                break;
            }
        /* Slices that random maps do not make by chance: several
         * experts, several entries outside them. */
        if (c.map.data && r->n_experts >= 4 &&
            r->n_experts_global >= r->n_experts + 4) {
            const int64_t eg = r->n_experts_global, e = r->n_experts;
            const int64_t first = slice_first(c.map.data, eg, e);
            slice_front += first == 0;
            slice_back += first == eg - e;
            slice_mid += first > 0 && first < eg - e;
        }
        ie = moes_case_dtype_bytes(r->ids_dtype);
        stride = r->ids_stride ? r->ids_stride : r->top_k;
        for (int64_t t = 0; t < r->n_tokens; t++) {
            int64_t prev = -5;
            for (int64_t j = 0; j < r->top_k; j++) {
                int64_t id = load_index(c.ids.data, ie, t * stride + j);
                ids_neg += id == -1;
                dup += id == prev && id >= 0;
                prev = id;
            }
        }
        h1 += a->hidden == 1;
        hodd += a->hidden % 2 == 1 && a->hidden > 1;
        hbig += a->hidden > 700;
        x[a->x_dtype]++;
        ids64 += r->ids_dtype == MOES_DTYPE_INT64;
        idx64 += a->index_dtype == MOES_DTYPE_INT64;
        align_odd += a->alignment == 3 || a->alignment == 7 ||
                     a->alignment == 48 || a->alignment == 96;
        layout[a->layout]++;
        drops += a->layout == MOES_LAYOUT_MASKED && c.fault == 0 &&
                 c.out_rows < r->n_tokens * r->top_k;
        tail += a->layout != MOES_LAYOUT_MASKED && a->capacity > c.rows_needed;
        scales[a->out_scales_format]++;
        mn_major += a->out_scales_row_stride == 1 &&
                    a->out_scales_col_stride > 1;
        flags[a->flags & 3]++;
        acc += (c.gather.flags & MOES_GATHER_ACCUMULATE) != 0;
        no_w += c.weights.data == NULL;
        y[c.gather.y_dtype]++;
        out[c.gather.out_dtype]++;
        gaps += a->x_stride > a->hidden && a->out_stride > a->hidden;
        faults += c.fault != MOES_CASE_VALID;
        if (c.index_only)
            index_only[a->layout]++;
        row_source += c.want_row_source;
        if (c.want_row_source)
            pads[a->row_source_pad == -1 ? 0
                 : a->row_source_pad == r->n_tokens * r->top_k ? 1 : 2]++;
        unpadded += (a->flags & MOES_SCATTER_UNPADDED_END) && c.want_end;
        moes_case_free(&c);
    }
    for (int l = MOES_LAYOUT_CONTIGUOUS; l <= MOES_LAYOUT_MASKED; l++)
        cr_expect_gt(index_only[l], 0, "no index-only case of layout %d", l);
    cr_expect_gt(row_source, 0);
    for (int p = 0; p < 3; p++)
        cr_expect_gt(pads[p], 0, "row_source pad kind %d never drawn", p);
    cr_expect_gt(unpadded, 0);
    cr_expect_gt(n0, 0);
    cr_expect_gt(n1, 0);
    cr_expect_gt(nbig, 0);
    for (int i = 1; i <= 9; i++)
        cr_expect_gt(k[i], 0, "K = %d never drawn", i);
    cr_expect_gt(e1, 0);
    cr_expect_gt(ebig, 0);
    cr_expect_gt(map, 0);
    cr_expect_gt(map_neg, 0);
    cr_expect_gt(slice_front, 0, "no first rank's slice of a map");
    cr_expect_gt(slice_back, 0, "no last rank's slice of a map");
    cr_expect_gt(slice_mid, 0, "no middle rank's slice of a map");
    cr_expect_gt(ids_neg, 0);
    cr_expect_gt(dup, 0);
    cr_expect_gt(h1, 0);
    cr_expect_gt(hodd, 0);
    cr_expect_gt(hbig, 0);
    for (int d = MOES_DTYPE_FP8_E4M3; d <= MOES_DTYPE_FP32; d++)
        cr_expect_gt(x[d], 0, "x dtype %d never drawn", d);
    for (int d = MOES_DTYPE_BF16; d <= MOES_DTYPE_FP32; d++) {
        cr_expect_gt(y[d], 0);
        cr_expect_gt(out[d], 0);
    }
    cr_expect_gt(ids64, 0);
    cr_expect_gt(idx64, 0);
    cr_expect_gt(align_odd, 0);
    for (int l = 1; l <= 3; l++)
        cr_expect_gt(layout[l], 0);
    cr_expect_gt(drops, 0);
    cr_expect_gt(tail, 0);
    for (int f = 0; f < 3; f++)
        cr_expect_gt(scales[f], 0);
    cr_expect_gt(mn_major, 0);
    for (int f = 0; f < 4; f++)
        cr_expect_gt(flags[f], 0);
    cr_expect_gt(acc, 0);
    cr_expect_gt(no_w, 0);
    cr_expect_gt(gaps, 0);
    cr_expect_gt(faults, SEEDS / 3);
}

/* diff_cuda's expert-parallel class (sparse_gather) gives what it is
 * there for: the gather's large shape (the tokens and vector rows of the
 * vector class), K <= 16, about one valid out_index entry in eight, so
 * that most tokens have one row or none, and y finite but for a few rows,
 * so that most items are summed without the NaN rule, though some are
 * not. */
Test(kit, ep_rank_class_coverage)
{
    enum { SEEDS = 40 };
    const moes_case_limits *lim = moes_case_class_limits(7);
    cr_assert(lim && lim->sparse_gather && lim->vector_rows);
    int64_t entries = 0, valid = 0, tokens = 0, one_or_none = 0, outside = 0;
    int64_t y_values = 0, y_nans = 0;
    for (uint64_t s = 0; s < SEEDS; s++) {
        const unsigned long long seed = 10 * s + 7;
        moes_case c;
        const moes_gather_args *g = &c.gather;
        cr_assert_eq(moes_case_generate(&c, seed, MOES_CASE_VALID, lim),
                     MOES_OK);
        cr_expect(g->n_tokens >= lim->min_tokens &&
                      g->n_tokens <= lim->max_tokens,
                  "seed %llu: %lld tokens", seed, (long long)g->n_tokens);
        cr_expect(g->top_k >= 1 && g->top_k <= lim->max_top_k,
                  "seed %llu: K %lld", seed, (long long)g->top_k);
        const size_t index_elem = moes_case_dtype_bytes(g->index_dtype);
        for (int64_t t = 0; t < g->n_tokens; t++) {
            int rows = 0;
            for (int64_t k = 0; k < g->top_k; k++) {
                const int64_t e =
                    load_index(c.gather_index.data, index_elem,
                               t * g->out_index_stride + k);
                outside += e < -1 || e >= g->y_rows;
                rows += e >= 0;
            }
            entries += g->top_k;
            valid += rows;
            tokens++;
            one_or_none += rows <= 1;
        }
        const int64_t ye = (int64_t)moes_case_dtype_bytes(g->y_dtype);
        for (int64_t i = 0; i < c.y.bytes / ye; i++)
            y_nans += isnan(load_float(c.y.data, g->y_dtype, i));
        y_values += c.y.bytes / ye;
        moes_case_free(&c);
    }
    cr_expect_eq(outside, 0, "%lld entries outside [-1, y_rows)",
                 (long long)outside);
    /* One in eight, less the few that were -1 anyway. */
    cr_expect(valid * 10 > entries && valid * 7 < entries,
              "%lld valid entries of %lld", (long long)valid,
              (long long)entries);
    cr_expect(one_or_none * 2 > tokens, "%lld of %lld tokens with <= 1 row",
              (long long)one_or_none, (long long)tokens);
    cr_expect(y_nans > 0 && y_nans * 200 < y_values,
              "%lld NaNs in %lld values of y", (long long)y_nans,
              (long long)y_values);
}

/* The limits that steer cases to the GPU gather's large shape (diff_cuda's
 * vector class) do: every case has the minimum of tokens, rows of 16-byte
 * vectors wherever the hidden size is a multiple of 8 (y and out strides
 * too), and among them calls of 16-bit y with fewer rows than half their
 * entries (as on an expert-parallel rank) and calls of K past 32. A change
 * to the generator that lost them would leave those kernels uncompared. */
Test(kit, vector_class_coverage)
{
    enum { SEEDS = 60 };
    const moes_case_limits *lim = moes_case_class_limits(3);
    cr_assert(lim && lim->vector_rows && lim->max_top_k > 32);
    int vector = 0, sparse = 0, wide = 0;
    for (uint64_t s = 0; s < SEEDS; s++) {
        const unsigned long long seed = 10 * s + 3;
        moes_case c;
        const moes_gather_args *g = &c.gather;
        cr_assert_eq(moes_case_generate(&c, seed, -1, lim), MOES_OK);
        cr_expect(g->n_tokens >= lim->min_tokens &&
                      g->n_tokens <= lim->max_tokens,
                  "seed %llu: %lld tokens", seed, (long long)g->n_tokens);
        if (g->hidden % 8 == 0) {
            cr_expect(g->y_stride % 8 == 0 && g->out_stride % 8 == 0,
                      "seed %llu: hidden %lld, strides %lld and %lld",
                      seed, (long long)g->hidden,
                      (long long)g->y_stride, (long long)g->out_stride);
            vector++;
            sparse += g->y_dtype != MOES_DTYPE_FP32 &&
                      g->y_rows < g->n_tokens * g->top_k / 2;
            wide += g->top_k > 32;
        }
        moes_case_free(&c);
    }
    cr_expect_gt(vector, SEEDS / 2);
    cr_expect_gt(sparse, 0);
    cr_expect_gt(wide, 0);
}

/* The oracle's overlap rule is the library's: rows of one stride in bytes
 * that interleave without sharing a byte (a gather's output rows and its
 * out_index rows as fields of one record) are no overlap; a field that
 * reaches one byte into the next, or rows of another stride, are. Both
 * give the same status on each arrangement, and the same bytes where the
 * call runs. The library's buffers are the backend's (MOES_BACKEND may
 * choose CUDA), the oracle's host copies laid out alike. */
Test(kit, oracle_and_library_agree_on_interleaved_records)
{
    enum { N = 6, K = 3, H = 5, M = 12, P = H * 4 + K * 4 + 8 };
    moes_context *ctx = test_open(2);
    float y[M * H], weights[N * K];
    for (int i = 0; i < M * H; i++)
        y[i] = 0.25f * (float)(i % 17) - 1.5f;
    for (int i = 0; i < N * K; i++)
        weights[i] = 0.125f * (float)(i % 5 + 1);
    void *dev_y = dev_from(ctx, y, sizeof y);
    void *dev_weights = dev_from(ctx, weights, sizeof weights);
    /* A record more than the rows use, so the shifted layouts fit. */
    _Alignas(8) unsigned char oracle_rec[(N + 1) * P];
    unsigned char *dev_rec = dev_new(ctx, sizeof oracle_rec);
    struct {
        int64_t out_off, index_off, index_stride;
        int want;
    } layouts[] = {
        {0, H * 4, P / 4, MOES_OK},              /* row, then its ids  */
        {K * 4, 0, P / 4, MOES_OK},              /* ids, then the row  */
        {K * 4 + 8, 0, P / 4, MOES_OK},          /* the row ends at P  */
        {0, H * 4 - 4, P / 4, MOES_ERR_OVERLAP}, /* ids over its end   */
        {K * 4 + 12, 0, P / 4, MOES_ERR_OVERLAP}, /* into the next ids */
        {0, H * 4, P / 4 + 1, MOES_ERR_OVERLAP}, /* another stride     */
    };
    for (size_t l = 0; l < sizeof layouts / sizeof layouts[0]; l++) {
        memset(oracle_rec, 0xA5, sizeof oracle_rec);
        for (int t = 0; t < N; t++)
            for (int k = 0; k < K; k++) {
                int32_t row = (t * 5 + k * 7) % (M + 1) - 1; /* some -1 */
                memcpy(oracle_rec + layouts[l].index_off +
                           (t * layouts[l].index_stride + k) * 4,
                       &row, 4);
            }
        cr_assert_eq(moes_copy_to_backend(ctx, dev_rec, oracle_rec,
                                          sizeof oracle_rec),
                     MOES_OK);
        moes_gather_args a;
        moes_gather_args_init(&a);
        a.n_tokens = N;
        a.top_k = K;
        a.hidden = H;
        a.y = dev_y;
        a.y_rows = M;
        a.y_dtype = MOES_DTYPE_FP32;
        a.weights = dev_weights;
        a.out_dtype = MOES_DTYPE_FP32;
        a.index_dtype = MOES_DTYPE_INT32;
        a.out_stride = P / 4;
        a.out_index_stride = layouts[l].index_stride;
        a.out = dev_rec + layouts[l].out_off;
        a.out_index = dev_rec + layouts[l].index_off;
        const int got = moes_gather(ctx, &a);
        a.y = y;
        a.weights = weights;
        a.out = oracle_rec + layouts[l].out_off;
        a.out_index = oracle_rec + layouts[l].index_off;
        const int want = moes_oracle_gather(&a);
        cr_expect_eq(got, layouts[l].want, "layout %zu: library %d (%s)", l,
                     got, moes_last_error(ctx));
        cr_expect_eq(want, layouts[l].want, "layout %zu: oracle %d (%s)", l,
                     want, moes_oracle_last_error());
        unsigned char *lib_rec = dev_get(ctx, dev_rec, sizeof oracle_rec);
        cr_expect(!memcmp(lib_rec, oracle_rec, sizeof oracle_rec),
                  "layout %zu: the records differ", l);
        free(lib_rec);
    }
    dev_free(ctx, dev_rec);
    dev_free(ctx, dev_y);
    dev_free(ctx, dev_weights);
    test_close(ctx);
}
