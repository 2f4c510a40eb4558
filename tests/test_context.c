/* SPDX-License-Identifier: MIT */
/*
 * test_context.c - opening contexts: bad options, the MOES_BACKEND
 * override, and CUDA asked for where it cannot run. These tests change
 * environment variables, so each sets what it needs itself (Criterion
 * runs every test in its own process, so nothing leaks into other tests).
 */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "helpers.h"

static int cuda_compiled(void)
{
    unsigned mask = 0;
    cr_assert_eq(moes_backends_compiled(&mask), MOES_OK);
    return (mask & (1u << MOES_BACKEND_CUDA)) != 0;
}

static int create(int backend, moes_context **ctx)
{
    moes_context_options o;
    moes_context_options_init(&o);
    o.backend = backend;
    return moes_context_create(ctx, &o);
}

Test(context, bad_env_value)
{
    moes_context *ctx = (moes_context *)1;
    setenv("MOES_BACKEND", "gpu0", 1);
    cr_expect_eq(create(MOES_BACKEND_CPU, &ctx), MOES_ERR_INVALID_ARGUMENT);
    cr_expect_null(ctx);
    cr_expect(strstr(moes_last_error(NULL), "MOES_BACKEND") != NULL, "%s",
              moes_last_error(NULL));
    cr_expect(strstr(moes_last_error(NULL), "gpu0") != NULL);
}

/* MOES_CPU_WORK_PER_THREAD: a whole number of at least 1, or an error
 * that names the variable and its value. */
Test(context, work_per_thread_env)
{
    static const char *bad[] = {"0", "-5", "abc", "12x", " 7", "+7",
                                "99999999999999999999"};
    static const char *good[] = {"1", "16384", "9223372036854775807"};
    moes_context *ctx = (moes_context *)1;
    unsetenv("MOES_BACKEND");
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        setenv("MOES_CPU_WORK_PER_THREAD", bad[i], 1);
        cr_expect_eq(create(MOES_BACKEND_CPU, &ctx),
                     MOES_ERR_INVALID_ARGUMENT, "\"%s\"", bad[i]);
        cr_expect_null(ctx);
        cr_expect(strstr(moes_last_error(NULL), "MOES_CPU_WORK_PER_THREAD") &&
                      strstr(moes_last_error(NULL), bad[i]),
                  "%s", moes_last_error(NULL));
        ctx = (moes_context *)1;
    }
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        setenv("MOES_CPU_WORK_PER_THREAD", good[i], 1);
        cr_expect_eq(create(MOES_BACKEND_CPU, &ctx), MOES_OK, "\"%s\": %s",
                     good[i], moes_last_error(NULL));
        moes_context_destroy(ctx);
        ctx = NULL;
    }
    setenv("MOES_CPU_WORK_PER_THREAD", "", 1); /* empty: the default */
    cr_expect_eq(create(MOES_BACKEND_CPU, &ctx), MOES_OK);
    moes_context_destroy(ctx);
    unsetenv("MOES_CPU_WORK_PER_THREAD");
}

Test(context, env_forces_cpu)
{
    moes_context *ctx = NULL;
    moes_context_info info;
    setenv("MOES_BACKEND", "CPU", 1); /* case does not matter */
    cr_assert_eq(create(MOES_BACKEND_CUDA, &ctx), MOES_OK, "%s",
                 moes_last_error(NULL));
    memset(&info, 0, sizeof info);
    info.struct_size = sizeof info;
    cr_assert_eq(moes_context_get_info(ctx, &info), MOES_OK);
    cr_expect_eq(info.backend, MOES_BACKEND_CPU);
    cr_expect(strstr(info.reason, "MOES_BACKEND") != NULL, "%s",
              info.reason);
    moes_context_destroy(ctx);
}

/* CUDA forced where it cannot run: a clear error saying why (in a build
 * without CUDA: that it was built without CUDA). Skipped where a CUDA
 * device is actually usable. */
static void expect_cuda_unavailable(int backend)
{
    moes_context *ctx = (moes_context *)1;
    int st = create(backend, &ctx);
    if (st == MOES_OK && cuda_compiled()) {
        moes_context_destroy(ctx);
        cr_skip("a CUDA device is usable here");
    }
    cr_expect_eq(st, MOES_ERR_BACKEND_UNAVAILABLE, "%d: %s", st,
                 moes_last_error(NULL));
    cr_expect_null(ctx);
    cr_expect(strstr(moes_last_error(NULL), "CUDA") != NULL, "%s",
              moes_last_error(NULL));
    if (!cuda_compiled())
        cr_expect(strstr(moes_last_error(NULL), "without CUDA") != NULL,
                  "%s", moes_last_error(NULL));
}

Test(context, cuda_forced_unavailable)
{
    setenv("MOES_BACKEND", "cuda", 1);
    expect_cuda_unavailable(MOES_BACKEND_CPU);
}

Test(context, cuda_requested_unavailable)
{
    unsetenv("MOES_BACKEND");
    expect_cuda_unavailable(MOES_BACKEND_CUDA);
}

Test(context, auto_says_why)
{
    moes_context *ctx = NULL;
    moes_context_info info;
    setenv("MOES_BACKEND", "auto", 1);
    cr_assert_eq(create(MOES_BACKEND_CPU, &ctx), MOES_OK);
    memset(&info, 0, sizeof info);
    info.struct_size = sizeof info;
    cr_assert_eq(moes_context_get_info(ctx, &info), MOES_OK);
    if (info.backend == MOES_BACKEND_CPU) {
        cr_expect(strstr(info.reason, "CPU chosen by AUTO") != NULL, "%s",
                  info.reason);
        if (!cuda_compiled())
            cr_expect(strstr(info.reason, "without CUDA") != NULL, "%s",
                      info.reason);
    } else {
        cr_expect(strstr(info.reason, "AUTO") != NULL, "%s", info.reason);
    }
    moes_context_destroy(ctx);
}

Test(context, bad_options)
{
    moes_context *ctx = (moes_context *)1;
    moes_context_options o;
    unsetenv("MOES_BACKEND");
    cr_expect_eq(moes_context_create(NULL, NULL), MOES_ERR_NULL_POINTER);
    moes_context_options_init(&o);
    o.struct_size = sizeof o - 4;
    cr_expect_eq(moes_context_create(&ctx, &o), MOES_ERR_INVALID_ARGUMENT);
    cr_expect_null(ctx);
    cr_expect(strstr(moes_last_error(NULL), "struct_size") != NULL);
    moes_context_options_init(&o);
    o.backend = 3;
    cr_expect_eq(moes_context_create(&ctx, &o), MOES_ERR_INVALID_ARGUMENT);
    cr_expect(strstr(moes_last_error(NULL), "backend") != NULL);
    o.backend = -1;
    cr_expect_eq(moes_context_create(&ctx, &o), MOES_ERR_INVALID_ARGUMENT);
    moes_context_options_init(&o);
    o.cpu_threads = -2;
    cr_expect_eq(moes_context_create(&ctx, &o), MOES_ERR_INVALID_ARGUMENT);
    cr_expect(strstr(moes_last_error(NULL), "cpu_threads") != NULL);
    moes_context_options_init(&o);
    o.cuda_device = -1;
    cr_expect_eq(moes_context_create(&ctx, &o), MOES_ERR_INVALID_ARGUMENT);
    cr_expect(strstr(moes_last_error(NULL), "cuda_device") != NULL);
}

Test(context, default_options)
{
    moes_context *ctx = NULL;
    unsetenv("MOES_BACKEND");
    cr_assert_eq(moes_context_create(&ctx, NULL), MOES_OK, "%s",
                 moes_last_error(NULL));
    cr_expect_not_null(ctx);
    cr_expect_eq(moes_context_destroy(ctx), MOES_OK);
}
