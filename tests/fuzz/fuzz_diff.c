/* SPDX-License-Identifier: MIT */
/*
 * fuzz_diff.c - one valid case (or one with a single deliberate fault)
 * run on every path: the oracle, the OpenMP backend with 1 thread and
 * with 2, 3 or 4 (the input picks), and the CUDA backend when a device is
 * usable. All must agree
 * bit for bit: statuses, data-error messages, and every output byte
 * (padding and gaps included).
 *
 * The input is the seed and size limits of the test kit's case generator,
 * the thread count, then pairs of bytes that overwrite ids entries (kept
 * in range), so that libFuzzer can steer the routing: duplicates, empty
 * experts, -1.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_check.h"
#include "fuzz_context.h"
#include "fuzz_input.h"
#include "moescatter.h"
#include "testkit.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

enum { CPU_PATHS = 4, MAX_PATHS = CPU_PATHS + 1 };

typedef struct diff_path {
    moes_context *ctx;
    char name[32];
} diff_path;

static diff_path paths[MAX_PATHS];
static int n_paths;

/* CPU contexts of 1 to 4 threads (so the tokens are cut into 1 to 4
 * parts), and a CUDA one when it opens. */
static void open_paths(void)
{
    moes_context_options o;
    if (n_paths)
        return;
    for (int t = 1; t <= CPU_PATHS; t++) {
        paths[n_paths].ctx = fz_cpu_context(t);
        snprintf(paths[n_paths].name, sizeof paths[n_paths].name,
                 "cpu, %d thread%s", t, t > 1 ? "s" : "");
        n_paths++;
    }
    moes_context_options_init(&o);
    o.backend = MOES_BACKEND_CUDA;
    if (moes_context_create(&paths[n_paths].ctx, &o) == MOES_OK) {
        moes_context_info info;
        info.struct_size = sizeof info;
        snprintf(paths[n_paths].name, sizeof paths[n_paths].name, "cuda");
        if (moes_context_get_info(paths[n_paths].ctx, &info) == MOES_OK)
            fprintf(stderr, "fuzz_diff: paths: oracle, cpu (1 to %d threads), "
                            "cuda on %s (sm %d)\n",
                    CPU_PATHS, info.device_name,
                    info.device_compute_capability);
        n_paths++;
    } else {
        /* A run meant to compare the GPU must not pass without it. */
        const char *need = getenv("MOES_FUZZ_REQUIRE_CUDA");
        if (need && *need && strcmp(need, "0") != 0)
            fz_fail("MOES_FUZZ_REQUIRE_CUDA is set but the CUDA path does "
                    "not open: %s", moes_last_error(NULL));
        fprintf(stderr, "fuzz_diff: paths: oracle, cpu (1 to %d threads); "
                        "no cuda: %s\n",
                CPU_PATHS, moes_last_error(NULL));
    }
}

static int64_t load_id(const moes_case *c, int64_t i)
{
    if (c->routing.ids_dtype == MOES_DTYPE_INT32) {
        int32_t v;
        memcpy(&v, (const char *)c->ids.data + 4 * i, 4);
        return v;
    }
    {
        int64_t v;
        memcpy(&v, (const char *)c->ids.data + 8 * i, 8);
        return v;
    }
}

static void store_id(moes_case *c, int64_t i, int64_t v)
{
    if (c->routing.ids_dtype == MOES_DTYPE_INT32) {
        int32_t w = (int32_t)v;
        memcpy((char *)c->ids.data + 4 * i, &w, 4);
    } else {
        memcpy((char *)c->ids.data + 8 * i, &v, 8);
    }
}

/* Each pair of remaining bytes sets one used ids entry to a value in
 * [-1, E_global). A case with a bad id keeps its first bad entry. */
static void steer_ids(fz_input *in, moes_case *c)
{
    const moes_routing *r = &c->routing;
    int64_t choices = r->n_tokens * r->top_k;
    int64_t stride = r->ids_stride ? r->ids_stride : r->top_k;
    int64_t limit = r->expert_map ? r->n_experts_global : r->n_experts;
    int64_t keep = -1;
    if (!c->ids.data || choices <= 0)
        return;
    if (c->fault == MOES_CASE_BAD_ID)
        for (int64_t i = 0; i < choices && keep < 0; i++) {
            int64_t v = load_id(c, i / r->top_k * stride + i % r->top_k);
            if (v < -1 || v >= limit)
                keep = i;
        }
    while (in->n >= 2) {
        int64_t i = fz_range(in, 0, 255) % choices;
        int64_t v = (int64_t)fz_u8(in) % (limit + 1) - 1;
        if (i == keep)
            continue;
        store_id(c, i / r->top_k * stride + i % r->top_k, v);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fz_input in = {data, size};
    moes_case c;
    moes_case_limits lim;
    moes_case_result expected, got;
    char msg[1024];
    uint64_t seed;
    uint8_t fault_byte;
    int fault, threads;

    open_paths();
    seed = fz_u64(&in);
    fault_byte = fz_u8(&in);
    /* Half valid; each fault one byte value in eight. */
    fault = fault_byte % 8 >= MOES_CASE_BAD_ID &&
                    fault_byte % 8 < MOES_CASE_FAULT_COUNT
                ? fault_byte % 8
                : MOES_CASE_VALID;
    memset(&lim, 0, sizeof lim);
    lim.max_tokens = fz_range(&in, 1, 96);
    lim.max_hidden = fz_u8(&in) < 32 ? fz_range(&in, 1, 1100)
                                     : fz_range(&in, 1, 160);
    lim.max_experts = fz_u8(&in) < 32 ? fz_range(&in, 1, 300)
                                      : fz_range(&in, 1, 40);
    /* The other limits stay 0: the kit's K up to 9 and no steering, so
     * that the corpus keeps its cases. */
    if (moes_case_generate(&c, seed, fault, &lim) != MOES_OK)
        fz_fail("cannot generate the case of seed %llu",
                (unsigned long long)seed);
    threads = (int)fz_range(&in, 2, CPU_PATHS);
    steer_ids(&in, &c);

    if (moes_case_run(NULL, &c, &expected, msg, sizeof msg) != MOES_OK)
        fz_fail("the oracle could not run the case: %s", msg);
    for (int p = 0; p < n_paths; p++) {
        /* paths[t - 1] has t threads; the CUDA path comes after them. */
        if (p > 0 && p < CPU_PATHS && p != threads - 1)
            continue;
        if (moes_case_run(paths[p].ctx, &c, &got, msg, sizeof msg) !=
            MOES_OK)
            fz_fail("%s could not run the case: %s", paths[p].name, msg);
        if (moes_case_compare(&c, &expected, &got, msg, sizeof msg) != 0) {
            char desc[512];
            moes_case_describe(&c, desc, sizeof desc);
            fz_fail("%s differs from the oracle: %s\ncase: %s",
                    paths[p].name, msg, desc);
        }
        moes_case_result_free(&got);
    }
    moes_case_result_free(&expected);
    moes_case_free(&c);
    return 0;
}
