/* SPDX-License-Identifier: MIT */
/*
 * test_api.c - the small functions: version, status names, dtype sizes,
 * the init functions, the capacity helper, context info, timestamps,
 * memory helpers and workspace reservation.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "helpers.h"
#include "rng.h"

Test(api, version)
{
    int major = -1, minor = -1, patch = -1;
    cr_assert_eq(moes_version(&major, &minor, &patch), MOES_OK);
    cr_expect_eq(major, MOES_VERSION_MAJOR);
    cr_expect_eq(minor, MOES_VERSION_MINOR);
    cr_expect_eq(patch, MOES_VERSION_PATCH);
    cr_expect_eq(MOES_VERSION_NUMBER,
                 major * 10000 + minor * 100 + patch);
    cr_expect_eq(moes_version(NULL, NULL, NULL), MOES_OK);
}

Test(api, strerror_every_code)
{
    static const char *names[] = {
        "success", "null pointer", "invalid size", "invalid stride",
        "size overflow", "invalid dtype", "invalid flags",
        "invalid alignment", "invalid expert id", "invalid expert map entry",
        "invalid out_index entry", "capacity too small", "invalid argument",
        "out of memory", "backend unavailable", "device error",
        "workspace too small", "invalid scale", "overlapping buffers",
        "misaligned pointer"};
    for (int s = 0; s <= MOES_ERR_MISALIGNED; s++)
        cr_expect_str_eq(moes_strerror(s), names[s], "status %d", s);
    cr_expect_str_eq(moes_strerror(-1), "unknown status");
    cr_expect_str_eq(moes_strerror(MOES_ERR_MISALIGNED + 1), "unknown status");
    cr_expect_str_eq(moes_strerror(1 << 30), "unknown status");
}

Test(api, dtype_size)
{
    static const int dtypes[] = {MOES_DTYPE_FP8_E4M3, MOES_DTYPE_FP8_E5M2,
                                 MOES_DTYPE_BF16, MOES_DTYPE_FP16,
                                 MOES_DTYPE_FP32, MOES_DTYPE_INT32,
                                 MOES_DTYPE_INT64};
    static const size_t sizes[] = {1, 1, 2, 2, 4, 4, 8};
    size_t s;
    for (int i = 0; i < 7; i++) {
        s = 0;
        cr_expect_eq(moes_dtype_size(dtypes[i], &s), MOES_OK);
        cr_expect_eq(s, sizes[i], "dtype %d", dtypes[i]);
    }
    s = 77;
    cr_expect_eq(moes_dtype_size(0, &s), MOES_ERR_INVALID_DTYPE);
    cr_expect_eq(moes_dtype_size(8, &s), MOES_ERR_INVALID_DTYPE);
    cr_expect_eq(moes_dtype_size(-1, &s), MOES_ERR_INVALID_DTYPE);
    cr_expect_eq(s, 77, "size must be left alone");
    cr_expect_eq(moes_dtype_size(MOES_DTYPE_FP32, NULL),
                 MOES_ERR_NULL_POINTER);
}

Test(api, init_functions)
{
    moes_routing r;
    moes_scatter_args s;
    moes_gather_args g;
    moes_context_options o;
    memset(&r, 0x5A, sizeof r);
    memset(&s, 0x5A, sizeof s);
    memset(&g, 0x5A, sizeof g);
    memset(&o, 0x5A, sizeof o);
    cr_assert_eq(moes_routing_init(&r), MOES_OK);
    cr_expect_eq(r.struct_size, sizeof r);
    cr_expect_eq(r.n_tokens, 0);
    cr_expect_eq(r.top_k, 1);
    cr_expect_null(r.ids);
    cr_expect_null(r.expert_map);
    cr_expect_eq(r.ids_dtype, MOES_DTYPE_INT32);
    cr_expect_eq(r.ids_stride, 0);

    cr_assert_eq(moes_scatter_args_init(&s), MOES_OK);
    cr_expect_eq(s.struct_size, sizeof s);
    cr_expect_eq(s.layout, MOES_LAYOUT_CONTIGUOUS);
    cr_expect_eq(s.alignment, 128);
    cr_expect_eq(s.scale_block, 128);
    cr_expect_eq(s.index_dtype, MOES_DTYPE_INT32);
    cr_expect_eq(s.out_scales_format, MOES_SCALES_NONE);
    cr_expect_eq(s.flags, 0u);
    cr_expect_null(s.x);
    cr_expect_null(s.out);
    cr_expect_null(s.n_dropped);
    cr_expect_eq(s.x_stride, 0);

    cr_assert_eq(moes_gather_args_init(&g), MOES_OK);
    cr_expect_eq(g.struct_size, sizeof g);
    cr_expect_eq(g.top_k, 1);
    cr_expect_eq(g.index_dtype, MOES_DTYPE_INT32);
    cr_expect_eq(g.flags, 0u);
    cr_expect_null(g.weights);
    cr_expect_null(g.y);

    cr_assert_eq(moes_context_options_init(&o), MOES_OK);
    cr_expect_eq(o.struct_size, sizeof o);
    cr_expect_eq(o.backend, MOES_BACKEND_AUTO);
    cr_expect_eq(o.cpu_threads, 0);
    cr_expect_eq(o.cuda_device, 0);

    cr_expect_eq(moes_routing_init(NULL), MOES_ERR_NULL_POINTER);
    cr_expect_eq(moes_scatter_args_init(NULL), MOES_ERR_NULL_POINTER);
    cr_expect_eq(moes_gather_args_init(NULL), MOES_ERR_NULL_POINTER);
    cr_expect_eq(moes_context_options_init(NULL), MOES_ERR_NULL_POINTER);
}

/* roundup(N*K + min(E, N*K) * (A - 1), A), computed here in 128 bits. */
static int64_t formula(int64_t n, int64_t k, int64_t e, int64_t a)
{
    __extension__ __int128 c = (__int128)n * k;
    __int128 blocks = e < c ? e : c;
    __int128 rows = c + blocks * (a - 1);
    return (int64_t)((rows + a - 1) / a * a);
}

Test(api, capacity_formula)
{
    static const int64_t cases[][4] = {
        {3, 2, 3, 4}, {5, 1, 100, 128}, {0, 8, 16, 128}, {1, 1, 1, 1},
        {1000, 8, 256, 128}, {7, 9, 3000, 96}, {4096, 8, 64, 7},
        {1, 9, 1, 300}, {123456, 6, 2, 1}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const int64_t *c = cases[i];
        int64_t cap = -1;
        for (int layout = MOES_LAYOUT_CONTIGUOUS;
             layout <= MOES_LAYOUT_GROUPED; layout++) {
            cr_assert_eq(moes_scatter_capacity(NULL, layout, c[0], c[1],
                                               c[2], c[3], &cap), MOES_OK);
            cr_expect_eq(cap, formula(c[0], c[1], c[2], c[3]),
                         "N=%lld K=%lld E=%lld A=%lld: %lld", (long long)c[0],
                         (long long)c[1], (long long)c[2], (long long)c[3],
                         (long long)cap);
        }
        cr_assert_eq(moes_scatter_capacity(NULL, MOES_LAYOUT_MASKED, c[0],
                                           c[1], c[2], c[3], &cap), MOES_OK);
        cr_expect_eq(cap, c[0] * c[1]);
    }
}

Test(api, capacity_errors)
{
    moes_context *ctx = test_open(0);
    int64_t cap = 99;
    cr_expect_eq(moes_scatter_capacity(ctx, 1, 1, 1, 1, 1, NULL),
                 MOES_ERR_NULL_POINTER);
    cr_expect_eq(moes_scatter_capacity(ctx, 0, 1, 1, 1, 1, &cap),
                 MOES_ERR_INVALID_ARGUMENT);
    cr_expect(strstr(moes_last_error(ctx), "layout") != NULL);
    cr_expect_eq(moes_scatter_capacity(ctx, 1, -1, 1, 1, 1, &cap),
                 MOES_ERR_INVALID_SIZE);
    cr_expect_eq(moes_scatter_capacity(ctx, 1, 1, 0, 1, 1, &cap),
                 MOES_ERR_INVALID_SIZE);
    cr_expect_eq(moes_scatter_capacity(ctx, 1, 1, 1, 0, 1, &cap),
                 MOES_ERR_INVALID_SIZE);
    cr_expect_eq(moes_scatter_capacity(ctx, 1, 1, 1, 1, 0, &cap),
                 MOES_ERR_INVALID_ALIGNMENT);
    cr_expect_eq(moes_scatter_capacity(ctx, 1, INT64_MAX / 2, 4, 1, 1, &cap),
                 MOES_ERR_OVERFLOW);
    cr_expect_eq(moes_scatter_capacity(ctx, 2, (int64_t)1 << 40, 8,
                                       (int64_t)1 << 40, (int64_t)1 << 30,
                                       &cap), MOES_ERR_OVERFLOW);
    cr_expect_eq(cap, 99, "capacity must be left alone on error");
    /* The largest that fits still works. */
    cr_expect_eq(moes_scatter_capacity(ctx, 1, INT64_MAX / 2, 2, 1, 1, &cap),
                 MOES_OK);
    cr_expect_eq(cap, INT64_MAX / 2 * 2);
    /* Up to INT64_MAX itself: one expert's padding to an alignment that
     * large, and N*K a row short of a multiple of A. */
    cr_expect_eq(moes_scatter_capacity(ctx, 1, 1, 1, 1, INT64_MAX, &cap),
                 MOES_OK, "%s", moes_last_error(ctx));
    cr_expect_eq(cap, INT64_MAX);
    cr_expect_eq(moes_scatter_capacity(ctx, 1, INT64_MAX - 3, 1, 1, 3, &cap),
                 MOES_OK, "%s", moes_last_error(ctx));
    cr_expect_eq(cap, INT64_MAX - 1);
    test_close(ctx);
}

/* The helper's capacity is never too small: scatter random routings with
 * exactly that capacity. */
Test(api, capacity_is_enough)
{
    moes_context *ctx = test_open(0);
    uint64_t state = 12345;
    for (int iter = 0; iter < 40; iter++) {
        int64_t n = 1 + (int64_t)(state % 50), k = 1 + (int64_t)(state % 7);
        int64_t e = 1 + (int64_t)((state >> 8) % 20);
        int64_t a = 1 + (int64_t)((state >> 16) % 130), cap;
        int32_t *ids = malloc((size_t)(n * k) * 4);
        void *d_ids, *d_x, *d_out, *d_index, *d_m;
        moes_routing r;
        moes_scatter_args s;
        for (int64_t i = 0; i < n * k; i++) {
            state = state * 6364136223846793005ull + 1442695040888963407ull;
            ids[i] = (int32_t)((state >> 33) % (uint64_t)e);
        }
        cr_assert_eq(moes_scatter_capacity(ctx, MOES_LAYOUT_CONTIGUOUS, n, k,
                                           e, a, &cap), MOES_OK);
        d_ids = dev_from(ctx, ids, n * k * 4);
        d_x = dev_new(ctx, n);
        d_out = dev_new(ctx, cap);
        d_index = dev_new(ctx, n * k * 4);
        d_m = dev_new(ctx, cap * 4);
        moes_routing_init(&r);
        r.n_tokens = n;
        r.top_k = k;
        r.n_experts = e;
        r.ids = d_ids;
        moes_scatter_args_init(&s);
        s.alignment = a;
        s.capacity = cap;
        s.x = d_x;
        s.x_dtype = MOES_DTYPE_FP8_E5M2;
        s.hidden = 1;
        s.out = d_out;
        s.out_index = d_index;
        s.m_indices = d_m;
        cr_expect_eq(moes_scatter(ctx, &r, &s), MOES_OK, "%s",
                     moes_last_error(ctx));
        cr_expect_eq(moes_synchronize(ctx), MOES_OK);
        free(ids);
        dev_free(ctx, d_ids);
        dev_free(ctx, d_x);
        dev_free(ctx, d_out);
        dev_free(ctx, d_index);
        dev_free(ctx, d_m);
    }
    test_close(ctx);
}

Test(api, context_info)
{
    moes_context *ctx = test_open(3);
    moes_context_info info;
    unsigned mask = 0;
    cr_expect_str_eq(moes_last_error(ctx), "",
                     "a fresh context has no message");
    memset(&info, 0, sizeof info);
    info.struct_size = sizeof info;
    cr_assert_eq(moes_context_get_info(ctx, &info), MOES_OK);
    cr_expect(info.backend == MOES_BACKEND_CPU ||
              info.backend == MOES_BACKEND_CUDA);
    cr_expect(info.reason[0] != '\0', "no reason given");
    cr_expect_eq(info.cpu_threads, 3);
    if (info.backend == MOES_BACKEND_CPU) {
        cr_expect_str_eq(info.device_name, "cpu");
        cr_expect_eq(info.device_multiprocessors, 0);
        cr_expect_eq(info.device_memory_bytes, 0);
    } else {
        cr_expect_gt(info.device_multiprocessors, 0);
        cr_expect_gt(info.device_compute_capability, 0);
    }
    info.struct_size = 1;
    cr_expect_eq(moes_context_get_info(ctx, &info),
                 MOES_ERR_INVALID_ARGUMENT);
    cr_expect_eq(moes_context_get_info(ctx, NULL), MOES_ERR_NULL_POINTER);
    cr_expect_eq(moes_context_get_info(NULL, &info), MOES_ERR_NULL_POINTER);
    cr_assert_eq(moes_backends_compiled(&mask), MOES_OK);
    cr_expect(mask & (1u << MOES_BACKEND_CPU));
    cr_expect_eq(mask & ~((1u << MOES_BACKEND_CPU) |
                          (1u << MOES_BACKEND_CUDA)),
                 0u);
    cr_expect_eq(moes_backends_compiled(NULL), MOES_ERR_NULL_POINTER);
    cr_expect_eq(moes_context_destroy(NULL), MOES_OK);
    test_close(ctx);
}

Test(api, streams_and_errors)
{
    moes_context *ctx = test_open(0);
    cr_expect_eq(moes_set_stream(ctx, NULL), MOES_OK);
    cr_expect_eq(moes_synchronize(ctx), MOES_OK);
    cr_expect_eq(moes_get_error(ctx), MOES_OK);
    test_close(ctx);
}

Test(api, timestamps)
{
    moes_context *ctx = test_open(0);
    double ms = -1.0;
    cr_expect_eq(moes_timestamp(ctx, -1), MOES_ERR_INVALID_ARGUMENT);
    cr_expect_eq(moes_timestamp(ctx, MOES_TIMESTAMP_SLOTS),
                 MOES_ERR_INVALID_ARGUMENT);
    cr_expect_eq(moes_elapsed_ms(ctx, 0, 1, &ms), MOES_ERR_INVALID_ARGUMENT,
                 "slots never recorded");
    cr_expect(strstr(moes_last_error(ctx), "never recorded") != NULL);
    cr_assert_eq(moes_timestamp(ctx, 0), MOES_OK);
    cr_expect_eq(moes_elapsed_ms(ctx, 0, 1, &ms), MOES_ERR_INVALID_ARGUMENT);
    cr_assert_eq(moes_timestamp(ctx, MOES_TIMESTAMP_SLOTS - 1), MOES_OK);
    cr_assert_eq(moes_elapsed_ms(ctx, 0, MOES_TIMESTAMP_SLOTS - 1, &ms),
                 MOES_OK);
    cr_expect_geq(ms, 0.0);
    cr_expect_lt(ms, 60000.0);
    cr_expect_eq(moes_elapsed_ms(ctx, 0, 0, NULL), MOES_ERR_NULL_POINTER);
    cr_expect_eq(moes_elapsed_ms(ctx, 0, 16, &ms), MOES_ERR_INVALID_ARGUMENT);
    cr_expect_eq(moes_elapsed_ms(ctx, -1, 0, &ms), MOES_ERR_INVALID_ARGUMENT);
    cr_expect_eq(moes_timestamp(NULL, 0), MOES_ERR_NULL_POINTER);
    test_close(ctx);
}

Test(api, memory_helpers)
{
    moes_context *ctx = test_open(0);
    unsigned char host[1000], back[1000];
    void *a = NULL, *b = NULL, *p = (void *)1;
    for (int i = 0; i < 1000; i++)
        host[i] = (unsigned char)(i * 7 + 3);
    cr_assert_eq(moes_malloc(ctx, &a, 1000), MOES_OK);
    cr_assert_eq(moes_malloc(ctx, &b, 1000), MOES_OK);
    cr_expect_eq(moes_copy_to_backend(ctx, a, host, 1000), MOES_OK);
    cr_expect_eq(moes_copy_within(ctx, b, a, 1000), MOES_OK);
    cr_expect_eq(moes_fill(ctx, (char *)b + 10, 0xEE, 5), MOES_OK);
    cr_expect_eq(moes_copy_to_host(ctx, back, b, 1000), MOES_OK);
    for (int i = 0; i < 1000; i++)
        cr_expect_eq(back[i], i >= 10 && i < 15 ? 0xEE : host[i],
                     "byte %d", i);

    cr_expect_eq(moes_malloc(ctx, &p, 0), MOES_ERR_INVALID_SIZE);
    cr_expect_null(p, "*ptr is NULL after a failed allocation");
    cr_expect_eq(moes_malloc(ctx, &p, -8), MOES_ERR_INVALID_SIZE);
    cr_expect_eq(moes_malloc(ctx, NULL, 8), MOES_ERR_NULL_POINTER);
    cr_expect_eq(moes_malloc(NULL, &p, 8), MOES_ERR_NULL_POINTER);
    cr_expect_eq(moes_copy_to_backend(ctx, a, host, -1),
                 MOES_ERR_INVALID_SIZE);
    cr_expect_eq(moes_copy_to_host(ctx, NULL, a, 4), MOES_ERR_NULL_POINTER);
    cr_expect_eq(moes_copy_within(ctx, b, NULL, 4), MOES_ERR_NULL_POINTER);
    cr_expect_eq(moes_copy_to_host(ctx, NULL, NULL, 0), MOES_OK);
    cr_expect_eq(moes_fill(ctx, a, 256, 4), MOES_ERR_INVALID_ARGUMENT);
    cr_expect_eq(moes_fill(ctx, a, -1, 4), MOES_ERR_INVALID_ARGUMENT);
    cr_expect_eq(moes_fill(ctx, a, 0, -4), MOES_ERR_INVALID_SIZE);
    cr_expect_eq(moes_fill(ctx, NULL, 0, 4), MOES_ERR_NULL_POINTER);
    cr_expect_eq(moes_fill(ctx, NULL, 0, 0), MOES_OK);
    cr_expect_eq(moes_free(ctx, NULL), MOES_OK);
    cr_expect_eq(moes_free(NULL, a), MOES_ERR_NULL_POINTER);
    cr_expect_eq(moes_free(ctx, a), MOES_OK);
    cr_expect_eq(moes_free(ctx, b), MOES_OK);
    test_close(ctx);
}

/* One moes_fill_rows call of a random shape against its definition: the
 * pattern at the start of each row, every other byte of the buffer (the
 * canary, in front of dst too) unchanged. */
static void fill_rows_case(moes_context *ctx, uint64_t *state, int64_t rows,
                           int64_t pattern_bytes, int64_t gap, int64_t offset)
{
    const int64_t stride = pattern_bytes + gap;
    const int64_t bytes = offset + (rows > 0 ? (rows - 1) * stride : 0) +
                          pattern_bytes + 37;
    unsigned char *pattern = malloc((size_t)pattern_bytes);
    unsigned char *want = malloc((size_t)bytes);
    cr_assert(pattern && want);
    for (int64_t i = 0; i < pattern_bytes; i++)
        pattern[i] = (unsigned char)(moes_splitmix64(state) >> 56);
    memset(want, CANARY, (size_t)bytes);
    for (int64_t r = 0; r < rows; r++)
        memcpy(want + offset + r * stride, pattern, (size_t)pattern_bytes);
    unsigned char *d = dev_new(ctx, bytes);
    cr_assert_eq(moes_fill_rows(ctx, d + offset, rows, stride, pattern,
                                pattern_bytes), MOES_OK,
                 "%lld rows of %lld bytes, gap %lld, offset %lld: %s",
                 (long long)rows, (long long)pattern_bytes, (long long)gap,
                 (long long)offset, moes_last_error(ctx));
    /* Taken when called: changing it now changes nothing. */
    memset(pattern, 0x3C, (size_t)pattern_bytes);
    unsigned char *got = dev_get(ctx, d, bytes);
    int64_t first = -1;
    for (int64_t i = 0; i < bytes && first < 0; i++)
        if (got[i] != want[i])
            first = i;
    cr_expect_eq(first, -1,
                 "%lld rows of %lld bytes, gap %lld, offset %lld: byte %lld "
                 "is 0x%02x, not 0x%02x", (long long)rows,
                 (long long)pattern_bytes, (long long)gap, (long long)offset,
                 (long long)first, first >= 0 ? got[first] : 0,
                 first >= 0 ? want[first] : 0);
    free(got);
    dev_free(ctx, d);
    free(want);
    free(pattern);
}

Test(api, fill_rows)
{
    moes_context *ctx = test_open(0);
    uint64_t state = 20261205;
    for (int iter = 0; iter < 300; iter++) {
        const uint64_t v = moes_splitmix64(&state);
        /* Word-sized patterns, strides and places half the time (the
         * CUDA kernel's 32-bit path), any byte count the rest. */
        const int words = v & 1;
        int64_t pattern_bytes = 1 + (int64_t)((v >> 8) % 300);
        if ((v >> 20) % 16 == 0)
            pattern_bytes = MOES_FILL_ROWS_MAX_PATTERN -
                            (int64_t)((v >> 24) % 8);
        int64_t gap = (int64_t)((v >> 32) % 70);
        int64_t offset = (int64_t)((v >> 40) % 8);
        if ((v >> 44) % 4 == 0)
            gap = 0;
        if (words) {
            pattern_bytes = (pattern_bytes + 3) / 4 * 4;
            gap = gap / 4 * 4;
            offset = offset / 4 * 4;
        }
        fill_rows_case(ctx, &state, (int64_t)((v >> 48) % 200),
                       pattern_bytes, gap, offset);
    }
    /* One row, and enough rows for the CPU to split the work (past
     * 1 MiB). */
    fill_rows_case(ctx, &state, 1, 5, 0, 3);
    fill_rows_case(ctx, &state, 40000, 32, 64, 0);
    fill_rows_case(ctx, &state, 30001, 31, 5, 1);
    test_close(ctx);
}

Test(api, fill_rows_arguments)
{
    moes_context *ctx = test_open(0);
    unsigned char pattern[MOES_FILL_ROWS_MAX_PATTERN + 1];
    unsigned char *d = dev_new(ctx, 4096);
    memset(pattern, 0x11, sizeof pattern);
    /* One row ignores its stride. */
    cr_expect_eq(moes_fill_rows(ctx, d, 1, -5, pattern, 8), MOES_OK);
    cr_expect_eq(moes_fill_rows(ctx, NULL, 0, 0, NULL, 8), MOES_OK);
    dev_free(ctx, d);
    d = dev_new(ctx, 4096);
    cr_expect_eq(moes_fill_rows(NULL, d, 1, 8, pattern, 8),
                 MOES_ERR_NULL_POINTER);
    /* Each bad call, its status and the word its message holds. */
    const struct {
        void *dst;
        int64_t rows, stride;
        const void *pattern;
        int64_t bytes;
        int want;
        const char *named;
    } bad[] = {
        {d, -1, 8, pattern, 8, MOES_ERR_INVALID_SIZE, "rows"},
        {d, 2, 8, pattern, 0, MOES_ERR_INVALID_SIZE, "pattern_bytes"},
        {d, 1, 8, pattern, MOES_FILL_ROWS_MAX_PATTERN + 1,
         MOES_ERR_INVALID_SIZE, "pattern_bytes"},
        {d, 2, 7, pattern, 8, MOES_ERR_INVALID_STRIDE, "row_stride"},
        {d, 2, -8, pattern, 8, MOES_ERR_INVALID_STRIDE, "row_stride"},
        {NULL, 1, 8, pattern, 8, MOES_ERR_NULL_POINTER, "dst"},
        {d, 1, 8, NULL, 8, MOES_ERR_NULL_POINTER, "pattern"},
        {d, INT64_MAX / 8 + 2, 8, pattern, 8, MOES_ERR_OVERFLOW, "rows"},
        {d, 2, INT64_MAX - 4, pattern, 8, MOES_ERR_OVERFLOW, "rows"},
        {d, 3, INT64_MAX / 2, pattern, 8, MOES_ERR_OVERFLOW, "rows"},
        /* Inside int64 but past the end of the address space (checked
         * before anything reads the pointer). */
        {(void *)(UINTPTR_MAX - 100), 2, 100, pattern, 8, MOES_ERR_OVERFLOW,
         "address space"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        cr_expect_eq(moes_fill_rows(ctx, bad[i].dst, bad[i].rows,
                                    bad[i].stride, bad[i].pattern,
                                    bad[i].bytes), bad[i].want,
                     "bad call %zu", i);
        cr_expect(strstr(moes_last_error(ctx), bad[i].named) != NULL,
                  "bad call %zu: \"%s\" does not name %s", i,
                  moes_last_error(ctx), bad[i].named);
    }
    cr_expect(dev_is_canary(ctx, d, 4096), "a failed call wrote");
    dev_free(ctx, d);
    if (test_is_cpu(ctx)) {
        /* The pattern inside the rows it writes: the bytes as they were
         * when called. */
        unsigned char buf[64];
        for (int i = 0; i < 64; i++)
            buf[i] = (unsigned char)i;
        cr_expect_eq(moes_fill_rows(ctx, buf, 4, 16, buf + 8, 12), MOES_OK);
        for (int i = 0; i < 64; i++)
            cr_expect_eq(buf[i], i % 16 < 12 ? 8 + i % 16 : i, "byte %d", i);
    }
    test_close(ctx);
}

/* After a reservation a call that needs more returns MOES_ERR_WORKSPACE
 * (and writes nothing); a larger reservation makes it work. */
/* n ids, each naming expert i % e: a routing whose workspace grows with
 * n (the dense way: N*K is not small next to E). */
static void *spread_ids(moes_context *ctx, int64_t n, int64_t e)
{
    int32_t *ids = malloc((size_t)n * sizeof *ids);
    void *d;
    cr_assert(ids != NULL);
    for (int64_t i = 0; i < n; i++)
        ids[i] = (int32_t)(i % e);
    d = dev_from(ctx, ids, n * (int64_t)sizeof *ids);
    free(ids);
    return d;
}

Test(api, reserve_workspace)
{
    moes_context *ctx = test_open(1);
    const int64_t e = 5000, n = 5000;
    void *d_ids = spread_ids(ctx, n, e);
    void *d_counts = dev_new(ctx, e * 4);
    moes_routing r;
    cr_expect_eq(moes_reserve_workspace(ctx, -1, 1, 1), MOES_ERR_INVALID_SIZE);
    cr_expect_eq(moes_reserve_workspace(ctx, 1, 0, 1), MOES_ERR_INVALID_SIZE);
    cr_expect_eq(moes_reserve_workspace(ctx, 1, 1, 0), MOES_ERR_INVALID_SIZE);
    cr_expect_eq(moes_reserve_workspace(ctx, INT64_MAX, 2, 1),
                 MOES_ERR_OVERFLOW);
    cr_assert_eq(moes_reserve_workspace(ctx, 2, 1, 4), MOES_OK);
    moes_routing_init(&r);
    r.n_tokens = n;
    r.top_k = 1;
    r.n_experts = e;
    r.ids = d_ids;
    cr_expect_eq(moes_count(ctx, &r, d_counts, MOES_DTYPE_INT32),
                 MOES_ERR_WORKSPACE);
    cr_expect(strstr(moes_last_error(ctx), "workspace") != NULL, "%s",
              moes_last_error(ctx));
    cr_expect(dev_is_canary(ctx, d_counts, e * 4));
    cr_assert_eq(moes_reserve_workspace(ctx, n, 1, e), MOES_OK);
    cr_expect_eq(moes_count(ctx, &r, d_counts, MOES_DTYPE_INT32), MOES_OK,
                 "%s", moes_last_error(ctx));
    cr_expect_eq(moes_synchronize(ctx), MOES_OK);
    {
        int32_t *c = dev_get(ctx, d_counts, e * 4);
        cr_expect_eq(c[0], 1);
        cr_expect_eq(c[4999], 1);
        cr_expect_eq(c[1], 1);
        free(c);
    }
    dev_free(ctx, d_ids);
    dev_free(ctx, d_counts);
    test_close(ctx);
}

/* moes_workspace_size grows with the tokens, never shrinks, so that a
 * reservation for N tokens covers every call of fewer: across the sizes
 * where a backend changes how it cuts the work (on CUDA, the sort of
 * many experts takes longer tiles past 262,144 choices). */
Test(api, workspace_size_grows_with_tokens)
{
    moes_context *ctx = test_open(4);
    static const int64_t experts[] = {256, 5000, 65536};
    static const int64_t tokens[] = {1,     100,   4096,   32767,  32768,
                                     32769, 40000, 65536,  65537,  300000,
                                     2097151, 2097152, 2097153};
    for (size_t i = 0; i < sizeof experts / sizeof *experts; i++) {
        int64_t last = 0, last_tokens = 0;
        for (size_t j = 0; j < sizeof tokens / sizeof *tokens; j++) {
            int64_t bytes = -1;
            cr_assert_eq(moes_workspace_size(ctx, tokens[j], 8, experts[i],
                                             &bytes),
                         MOES_OK, "%s", moes_last_error(ctx));
            cr_expect_geq(bytes, last, "E %lld: %lld tokens need %lld bytes, "
                          "fewer than the %lld of %lld tokens",
                          (long long)experts[i], (long long)tokens[j],
                          (long long)bytes, (long long)last,
                          (long long)last_tokens);
            last = bytes;
            last_tokens = tokens[j];
        }
    }
    test_close(ctx);
}

/* A few tokens over many experts: the workspace follows N*K, not E, so
 * a reservation for few experts is enough for any number of them. */
Test(api, workspace_does_not_grow_with_experts)
{
    moes_context *ctx = test_open(4);
    const int64_t e = 1000000;
    int32_t ids[4] = {999999, 0, 5, 999999};
    void *d_ids = dev_from(ctx, ids, sizeof ids);
    void *d_counts = dev_new(ctx, e * 4);
    moes_routing r;
    if (!test_is_cpu(ctx)) {
        /* The CUDA backend's routing keeps per-expert arrays in its
         * workspace: there it grows with the experts. */
        dev_free(ctx, d_ids);
        dev_free(ctx, d_counts);
        test_close(ctx);
        cr_skip_test("the CUDA workspace holds [E] arrays");
    }
    cr_assert_eq(moes_reserve_workspace(ctx, 4, 1, 4), MOES_OK);
    moes_routing_init(&r);
    r.n_tokens = 4;
    r.top_k = 1;
    r.n_experts = e;
    r.ids = d_ids;
    cr_expect_eq(moes_count(ctx, &r, d_counts, MOES_DTYPE_INT32), MOES_OK,
                 "%s", moes_last_error(ctx));
    cr_expect_eq(moes_synchronize(ctx), MOES_OK);
    {
        int32_t *c = dev_get(ctx, d_counts, e * 4);
        cr_expect_eq(c[0], 1);
        cr_expect_eq(c[5], 1);
        cr_expect_eq(c[999999], 2);
        cr_expect_eq(c[1], 0);
        cr_expect_eq(c[999998], 0);
        free(c);
    }
    dev_free(ctx, d_ids);
    dev_free(ctx, d_counts);
    test_close(ctx);
}

/* With ctx NULL the capacity helper keeps no message: in particular it
 * must not overwrite the message of a failed moes_context_create, which
 * moes_last_error(NULL) reports. */
Test(api, capacity_without_context_keeps_no_message)
{
    moes_context *ctx = NULL;
    moes_context_options o;
    int64_t cap;
    moes_context_options_init(&o);
    o.backend = 99;
    cr_assert_eq(moes_context_create(&ctx, &o), MOES_ERR_INVALID_ARGUMENT);
    cr_assert(strstr(moes_last_error(NULL), "backend") != NULL);
    cr_expect_eq(moes_scatter_capacity(NULL, 0, 1, 1, 1, 1, &cap),
                 MOES_ERR_INVALID_ARGUMENT);
    cr_expect_eq(moes_scatter_capacity(NULL, 1, 1, 1, 1, 0, &cap),
                 MOES_ERR_INVALID_ALIGNMENT);
    cr_expect(strstr(moes_last_error(NULL), "opts->backend") != NULL,
              "the creation message was replaced by \"%s\"",
              moes_last_error(NULL));
}

/* A reservation that fails (here: far more memory than exists) leaves the
 * earlier one in force: calls still may not grow the workspace. */
Test(api, failed_reservation_keeps_the_earlier_one)
{
    moes_context *ctx = test_open(1);
    void *d_ids = spread_ids(ctx, 8000, 2000);
    void *d_counts = dev_new(ctx, 2000 * 4);
    moes_routing r;
    int st;
    moes_routing_init(&r);
    r.n_tokens = 8000;
    r.top_k = 1;
    r.n_experts = 2000;
    r.ids = d_ids;
    cr_assert_eq(moes_reserve_workspace(ctx, 2, 1, 4), MOES_OK);
    cr_expect_eq(moes_count(ctx, &r, d_counts, MOES_DTYPE_INT32),
                 MOES_ERR_WORKSPACE);
    st = moes_reserve_workspace(ctx, 2, 1, (int64_t)1 << 40);
    cr_expect(st == MOES_ERR_OUT_OF_MEMORY || st == MOES_ERR_OVERFLOW,
              "%d: %s", st, moes_last_error(ctx));
    cr_expect_eq(moes_count(ctx, &r, d_counts, MOES_DTYPE_INT32),
                 MOES_ERR_WORKSPACE, "the first reservation was dropped");
    cr_expect(dev_is_canary(ctx, d_counts, 2000 * 4));
    dev_free(ctx, d_ids);
    dev_free(ctx, d_counts);
    test_close(ctx);
}

/* MOES_SCATTER_CHECK_ONLY and MOES_GATHER_CHECK_ONLY: the argument
 * errors of the call itself, with its message; no data error, since the
 * data are not read (a bad id, an out_index entry past y); and nothing
 * written anywhere, whatever the buffers hold. */
Test(api, check_only_checks_arguments_and_touches_nothing)
{
    enum { N = 5, K = 2, E = 3, H = 16, CAP = 32 };
    moes_context *ctx = test_open(2);
    const int32_t ids[N * K] = {0, 2, 1, 1, 2, -1, 0, 1, 7, 2}; /* 7: bad */
    uint16_t xh[N * H];
    for (int i = 0; i < N * H; i++)
        xh[i] = (uint16_t)(0x3D00 + 13 * i);
    void *dev_ids = dev_from(ctx, ids, sizeof ids);
    void *x = dev_from(ctx, xh, sizeof xh);
    void *out = dev_new(ctx, CAP * H * 2),
         *out_index = dev_new(ctx, N * K * 4);
    void *m_indices = dev_new(ctx, CAP * 4);
    moes_routing r;
    moes_routing_init(&r);
    r.n_tokens = N;
    r.top_k = K;
    r.n_experts = E;
    r.ids = dev_ids;
    moes_scatter_args s;
    moes_scatter_args_init(&s);
    s.alignment = 4;
    s.capacity = CAP;
    s.x = x;
    s.hidden = H;
    s.out = out;
    s.out_index = out_index;
    s.m_indices = m_indices;
    s.flags = MOES_SCATTER_ZERO_PADDING | MOES_SCATTER_CHECK_ONLY;
    cr_expect_eq(moes_scatter(ctx, &r, &s), MOES_OK, "%s",
                 moes_last_error(ctx));
    s.flags &= ~MOES_SCATTER_CHECK_ONLY;
    int st = moes_scatter(ctx, &r, &s);
    if (st == MOES_OK) /* CUDA: deferred */
        st = moes_synchronize(ctx);
    cr_expect_eq(st, MOES_ERR_INVALID_ID,
                 "the same call without the flag reads the bad id");
    /* An argument error: the call's own status and message. */
    char message[512];
    s.out_stride = H - 1;
    cr_expect_eq(moes_scatter(ctx, &r, &s), MOES_ERR_INVALID_STRIDE);
    snprintf(message, sizeof message, "%s", moes_last_error(ctx));
    s.flags |= MOES_SCATTER_CHECK_ONLY;
    cr_expect_eq(moes_scatter(ctx, &r, &s), MOES_ERR_INVALID_STRIDE);
    cr_expect_str_eq(moes_last_error(ctx), message);
    s.out_stride = 0;
    s.m_indices = NULL;
    cr_expect_eq(moes_scatter(ctx, &r, &s), MOES_ERR_NULL_POINTER);
    cr_expect(strstr(moes_last_error(ctx), "m_indices") != NULL, "%s",
              moes_last_error(ctx));
    /* A workspace the call cannot have: the call's own error too. */
    s.m_indices = m_indices;
    void *ws = dev_new(ctx, 64);
    cr_assert_eq(moes_set_workspace(ctx, ws, 64), MOES_OK);
    cr_expect_eq(moes_scatter(ctx, &r, &s), MOES_ERR_WORKSPACE, "%s",
                 moes_last_error(ctx));
    cr_assert_eq(moes_set_workspace(ctx, NULL, 0), MOES_OK);
    dev_free(ctx, ws);
    cr_expect(dev_is_canary(ctx, out, CAP * H * 2), "out was written");
    cr_expect(dev_is_canary(ctx, out_index, N * K * 4),
              "out_index was written");
    cr_expect(dev_is_canary(ctx, m_indices, CAP * 4), "m_indices was written");

    /* The gather: an out_index entry past y is data, not checked. */
    int32_t index[N * K];
    for (int i = 0; i < N * K; i++)
        index[i] = i % 3 == 0 ? -1 : i;
    index[3] = CAP; /* one past y's rows */
    void *dev_index = dev_from(ctx, index, sizeof index);
    void *sums = dev_new(ctx, N * H * 4 + 2);
    moes_gather_args g;
    moes_gather_args_init(&g);
    g.flags = MOES_GATHER_CHECK_ONLY | MOES_GATHER_ACCUMULATE;
    g.n_tokens = N;
    g.top_k = K;
    g.hidden = H;
    g.y = out;
    g.y_rows = CAP;
    g.out_index = dev_index;
    g.out = sums;
    g.out_dtype = MOES_DTYPE_FP32;
    cr_expect_eq(moes_gather(ctx, &g), MOES_OK, "%s", moes_last_error(ctx));
    g.out = (char *)sums + 2; /* fp32 at a 2-byte offset */
    cr_expect_eq(moes_gather(ctx, &g), MOES_ERR_MISALIGNED);
    cr_expect(strstr(moes_last_error(ctx), "args->out") != NULL, "%s",
              moes_last_error(ctx));
    cr_expect_eq(moes_synchronize(ctx), MOES_OK);
    cr_expect(dev_is_canary(ctx, sums, N * H * 4 + 2), "out was written");
    dev_free(ctx, dev_ids);
    dev_free(ctx, x);
    dev_free(ctx, out);
    dev_free(ctx, out_index);
    dev_free(ctx, m_indices);
    dev_free(ctx, dev_index);
    dev_free(ctx, sums);
    test_close(ctx);
}
