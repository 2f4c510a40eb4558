/* SPDX-License-Identifier: MIT */
/*
 * cuda_fallback.c - what a program linked against the static library sees
 * about the CUDA backend on this machine.
 *
 *   cuda_fallback auto    AUTO must give a working context: CPU with the
 *                         reason when no CUDA device can be used, CUDA
 *                         otherwise.
 *   cuda_fallback forced  CUDA asked for (MOES_BACKEND=cuda, set by the
 *                         caller, or the option): must fail with
 *                         MOES_ERR_BACKEND_UNAVAILABLE naming the cause,
 *                         or work when a device is usable.
 *   cuda_fallback nodevice  CUDA on a device ordinal that cannot exist
 *                         must fail with MOES_ERR_BACKEND_UNAVAILABLE.
 *
 * The expected cause is "libcuda.so.1 not found" when the driver cannot be
 * opened, "built without CUDA" for a build without the backend.
 */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "moescatter.h"

static int failures;

#define CHECK(cond, ...)                                                    \
    do {                                                                    \
        if (!(cond)) {                                                      \
            fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);            \
            fprintf(stderr, __VA_ARGS__);                                   \
            fputc('\n', stderr);                                            \
            failures++;                                                     \
        }                                                                   \
    } while (0)

/* The cause every unusable-CUDA message must name, or NULL when a device
 * may well be usable here (then the test checks less). */
static const char *expected_cause(void)
{
    unsigned mask = 0;
    void *driver;
    moes_backends_compiled(&mask);
    if (!(mask & (1u << MOES_BACKEND_CUDA)))
        return "built without CUDA";
    driver = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
    if (!driver)
        return "libcuda.so.1 not found";
    dlclose(driver);
    return NULL;
}

/* A small count on the context, checked against a count by hand. */
static void check_count_works(moes_context *ctx)
{
    enum { N = 37, K = 3, E = 5 };
    int32_t ids[N * K], expected[E] = {0}, got[E];
    void *d_ids = NULL, *d_counts = NULL;
    moes_routing r;
    unsigned seed = 12345;
    for (int i = 0; i < N * K; i++) {
        seed = seed * 1103515245u + 12345u;
        ids[i] = (int32_t)((seed >> 16) % (E + 1)) - 1;
        if (ids[i] >= 0)
            expected[ids[i]]++;
    }
    memset(got, 0xA5, sizeof got);
    CHECK(moes_malloc(ctx, &d_ids, sizeof ids) == MOES_OK, "malloc");
    CHECK(moes_malloc(ctx, &d_counts, sizeof got) == MOES_OK, "malloc");
    if (failures)
        return;
    moes_copy_to_backend(ctx, d_ids, ids, sizeof ids);
    moes_routing_init(&r);
    r.n_tokens = N;
    r.top_k = K;
    r.ids = d_ids;
    r.n_experts = E;
    CHECK(moes_count(ctx, &r, d_counts, MOES_DTYPE_INT32) == MOES_OK,
          "count: %s", moes_last_error(ctx));
    CHECK(moes_synchronize(ctx) == MOES_OK, "synchronize: %s",
          moes_last_error(ctx));
    moes_copy_to_host(ctx, got, d_counts, sizeof got);
    CHECK(memcmp(got, expected, sizeof got) == 0, "counts differ");
    moes_free(ctx, d_ids);
    moes_free(ctx, d_counts);
}

static void run_auto(const char *cause)
{
    moes_context *ctx = NULL;
    moes_context_info info;
    int st = moes_context_create(&ctx, NULL);
    CHECK(st == MOES_OK, "AUTO context: %s (%s)", moes_strerror(st),
          moes_last_error(NULL));
    if (st != MOES_OK)
        return;
    memset(&info, 0, sizeof info);
    info.struct_size = sizeof info;
    CHECK(moes_context_get_info(ctx, &info) == MOES_OK, "get_info");
    printf("AUTO: backend %s, reason: %s\n",
           info.backend == MOES_BACKEND_CUDA ? "cuda" : "cpu", info.reason);
    if (cause) {
        CHECK(info.backend == MOES_BACKEND_CPU,
              "AUTO chose CUDA without a usable driver");
        CHECK(strstr(info.reason, cause) != NULL,
              "the reason \"%s\" does not name \"%s\"", info.reason, cause);
    }
    check_count_works(ctx);
    moes_context_destroy(ctx);
}

static void run_forced(const char *cause, int use_option, int device)
{
    moes_context_options opts;
    moes_context *ctx = NULL;
    int st;
    moes_context_options_init(&opts);
    if (use_option)
        opts.backend = MOES_BACKEND_CUDA;
    opts.cuda_device = device;
    st = moes_context_create(&ctx, &opts);
    printf("CUDA forced (%s, device %d): %s: %s\n",
           use_option ? "option" : "MOES_BACKEND", device, moes_strerror(st),
           st == MOES_OK ? "usable" : moes_last_error(NULL));
    if (cause) {
        CHECK(st == MOES_ERR_BACKEND_UNAVAILABLE,
              "expected MOES_ERR_BACKEND_UNAVAILABLE, got %s",
              moes_strerror(st));
        CHECK(strstr(moes_last_error(NULL), cause) != NULL,
              "the message \"%s\" does not name \"%s\"",
              moes_last_error(NULL), cause);
        CHECK(ctx == NULL, "a failed create left a context");
    } else if (st == MOES_OK) {
        check_count_works(ctx);
    }
    moes_context_destroy(ctx);
}

int main(int argc, char **argv)
{
    const char *mode = argc > 1 ? argv[1] : "auto";
    const char *cause = expected_cause();
    printf("expected cause: %s\n", cause ? cause : "(a driver is present)");
    if (strcmp(mode, "auto") == 0) {
        run_auto(cause);
        run_forced(cause, 1, 0);
    } else if (strcmp(mode, "forced") == 0) {
        const char *env = getenv("MOES_BACKEND");
        CHECK(env && strcmp(env, "cuda") == 0, "MOES_BACKEND=cuda not set");
        run_forced(cause, 0, 0);
    } else if (strcmp(mode, "nodevice") == 0) {
        /* No machine has this many GPUs: always unavailable. */
        run_forced(cause ? cause : "does not exist", 1, 4096);
    } else {
        fprintf(stderr, "usage: %s auto|forced|nodevice\n", argv[0]);
        return 2;
    }
    printf("%s\n", failures ? "FAILED" : "ok");
    return failures ? 1 : 0;
}
