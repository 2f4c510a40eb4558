/* SPDX-License-Identifier: MIT */
/*
 * helpers.c - contexts and backend buffers for the unit tests.
 */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "helpers.h"

moes_context *test_open(int threads)
{
    moes_context_options opts;
    moes_context *ctx = NULL;
    int st;
    moes_context_options_init(&opts);
    opts.backend = MOES_BACKEND_AUTO;
    opts.cpu_threads = threads;
    st = moes_context_create(&ctx, &opts);
    cr_assert_eq(st, MOES_OK, "moes_context_create: %s",
                 moes_last_error(NULL));
    return ctx;
}

void test_close(moes_context *ctx)
{
    cr_assert_eq(moes_context_destroy(ctx), MOES_OK);
}

int test_is_cpu(moes_context *ctx)
{
    moes_context_info info;
    memset(&info, 0, sizeof info);
    info.struct_size = sizeof info;
    cr_assert_eq(moes_context_get_info(ctx, &info), MOES_OK);
    return info.backend == MOES_BACKEND_CPU;
}

void *dev_new(moes_context *ctx, int64_t bytes)
{
    void *p = NULL;
    if (bytes == 0)
        return NULL;
    cr_assert_eq(moes_malloc(ctx, &p, bytes), MOES_OK, "%s",
                 moes_last_error(ctx));
    cr_assert_eq(moes_fill(ctx, p, CANARY, bytes), MOES_OK);
    return p;
}

void *dev_from(moes_context *ctx, const void *host, int64_t bytes)
{
    void *p = dev_new(ctx, bytes);
    if (bytes)
        cr_assert_eq(moes_copy_to_backend(ctx, p, host, bytes), MOES_OK);
    return p;
}

void *dev_get(moes_context *ctx, const void *dev, int64_t bytes)
{
    void *h = malloc(bytes > 0 ? (size_t)bytes : 1);
    cr_assert_not_null(h);
    if (bytes)
        cr_assert_eq(moes_copy_to_host(ctx, h, dev, bytes), MOES_OK);
    return h;
}

void dev_free(moes_context *ctx, void *dev)
{
    cr_assert_eq(moes_free(ctx, dev), MOES_OK);
}

int dev_is_canary(moes_context *ctx, const void *dev, int64_t bytes)
{
    unsigned char *h = dev_get(ctx, dev, bytes);
    int ok = 1;
    for (int64_t i = 0; i < bytes; i++)
        if (h[i] != CANARY) {
            ok = 0;
            break;
        }
    free(h);
    return ok;
}

/* Under AddressSanitizer an allocation larger than anything the machine
 * has must fail the way it does without it (NULL, so the library returns
 * MOES_ERR_OUT_OF_MEMORY) instead of stopping the test program. The
 * sanitizer runtime looks this function up by name: it must be visible
 * despite -fvisibility=hidden. */
const char *__asan_default_options(void);
__attribute__((visibility("default"), used))
const char *__asan_default_options(void)
{
    return "allocator_may_return_null=1";
}

void test_deadline(unsigned seconds)
{
    /* Each test runs in a process of its own: the alarm is the test's. */
    alarm(seconds);
}
