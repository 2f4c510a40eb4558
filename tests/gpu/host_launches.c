/* SPDX-License-Identifier: MIT */
/*
 * host_launches.c - which kernels the CUDA backend's host code launches
 * for a gather, run against fake_cuda.c (libcuda.so.1 with no GPU; see
 * host-launches.test): no kernel runs, so no output is checked, only the
 * choice of kernels, which a GPU run does not show, and the paths a GPU
 * rarely takes (a refused cooperative launch, a driver without the
 * optional entry points).
 *
 *   - A call of at most 2048 out_index entries outside a graph capture is
 *     one launch that checks out_index itself (moes_gather_checked_*),
 *     whether its rows are 16-byte vectors or not.
 *   - The same call under a capture, or a call of more entries, is
 *     moes_check_out_index and then a gather of the small shape (fewer
 *     items than warps that fit) or the usual one; rows that are not
 *     vectors take the usual shape.
 *   - The kernel is the one of the call's (y, out) dtypes.
 *   - moes_distinct_experts of up to 8192 choices is one launch; of more,
 *     the routing's counts and scan first. moes_count of a small call
 *     is one block's routing.
 *   - A scatter of decode size is one launch (moes_scatter_small, or
 *     moes_scatter_small_staged where its blocks' rows do not fit the
 *     registers and the driver can give it the shared memory; the same
 *     with UE8M0 scales); one of prefill size one cooperative launch
 *     (moes_scatter_grid). When the device refuses the cooperative
 *     launch the call takes the grid path (counts, scan, the copy that
 *     places), and so does every later call of the context: with an
 *     expert map, or rows that are not 16-byte vectors, the placement and
 *     then a copy of its own. Every row copy walks its grid's warps (the
 *     fake driver checks the step), and no launch asks for more dynamic
 *     shared memory than its kernel was allowed (the fake driver fails
 *     it, as a driver does).
 *   - moes_set_workspace under a capture, where the context's own
 *     workspace would be freed, fails with MOES_ERR_WORKSPACE.
 *   - A call under a graph capture that would have to grow the workspace
 *     fails with MOES_ERR_WORKSPACE, launching nothing, and runs once
 *     moes_reserve_workspace has made room.
 *   - A gather given host memory from malloc fails with
 *     MOES_ERR_INVALID_ARGUMENT naming the argument, launching nothing;
 *     one whose launch fails returns MOES_ERR_DEVICE naming the kernel.
 *   - moes_fill, moes_copy_to_backend, moes_copy_to_host and
 *     moes_copy_within given host memory from malloc where device memory
 *     is needed, and moes_free given host memory, fail with
 *     MOES_ERR_INVALID_ARGUMENT naming the argument, touching nothing;
 *     on device memory they work, and a freed pointer is no longer taken
 *     for device memory.
 *   - host_launches unusable CAUSE, against the fake switched by
 *     FAKE_CUDA_NO_DEVICE or FAKE_CUDA_NO_KERNEL_IMAGE: a context that
 *     asks for CUDA fails with MOES_ERR_BACKEND_UNAVAILABLE naming CAUSE,
 *     and an AUTO context runs on the CPU with CAUSE in its reason.
 *   - host_launches old-driver, against the fake without cuLaunchKernelEx,
 *     cuFuncSetAttribute and cuStreamIsCapturing: every gather has its
 *     check kernel, no scatter is cooperative and none stages rows.
 */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "moescatter.h"

static int failures;

typedef size_t (*take_fn)(char *buf, size_t len);
typedef void (*switch_fn)(int on);
static take_fn take_launches;
static switch_fn set_capturing, refuse_cooperative, fail_launches;

/* A CUDA context on the fake driver, or NULL with the failure counted. */
static moes_context *cuda_context(void)
{
    moes_context_options o;
    moes_context *ctx = NULL;
    moes_context_options_init(&o);
    o.backend = MOES_BACKEND_CUDA;
    if (moes_context_create(&ctx, &o) != MOES_OK) {
        fprintf(stderr, "FAIL: no CUDA context on the fake driver: %s\n",
                moes_last_error(NULL));
        failures++;
        return NULL;
    }
    return ctx;
}

/* The device buffers of the current case, freed by release_buffers. */
static moes_context *buffers_ctx;
static void *buffers[16];
static int n_buffers;

/* A device buffer of `bytes` (from the fake driver), or NULL with the
 * failure counted. */
static void *device_buffer(int64_t bytes)
{
    void *p = NULL;
    if (n_buffers == (int)(sizeof buffers / sizeof buffers[0]) ||
        moes_malloc(buffers_ctx, &p, bytes) != MOES_OK) {
        fprintf(stderr, "FAIL: moes_malloc of %lld bytes: %s\n",
                (long long)bytes, moes_last_error(buffers_ctx));
        failures++;
        return NULL;
    }
    return buffers[n_buffers++] = p;
}

static void release_buffers(void)
{
    while (n_buffers > 0)
        moes_free(buffers_ctx, buffers[--n_buffers]);
}

/* The kernels launched since the last call, names only, separated by
 * spaces ("(refused)" or "(failed)" after a name the driver turned down). */
static void launched_names(char *names, size_t len)
{
    char log[1 << 14];
    size_t at = 0;
    take_launches(log, sizeof log);
    names[0] = '\0';
    for (char *line = strtok(log, "\n"); line; line = strtok(NULL, "\n")) {
        char *space = strchr(line, ' ');
        if (space)
            *space = '\0';
        at += (size_t)snprintf(names + at, len - at, "%s%s",
                               at ? " " : "", line);
        if (at >= len)
            break;
    }
}

/* The verdict on one call: its status must be `want`, the kernels it
 * launched `expected` (NULL: not looked at), and its message must hold
 * `message` (NULL: not looked at). */
static void verdict(const char *what, int rc, int want, const char *expected,
                    const char *message)
{
    char got[1024];
    const char *said = moes_last_error(buffers_ctx);
    launched_names(got, sizeof got);
    if (rc != want || (expected && strcmp(got, expected) != 0) ||
        (message && !strstr(said, message))) {
        fprintf(stderr,
                "FAIL: %s: status %d (expected %d), launched \"%s\" "
                "(expected \"%s\"), message \"%s\"\n",
                what, rc, want, got, expected ? expected : "-",
                rc ? said : "");
        failures++;
    } else if (rc) {
        printf("ok: %s: %s\n", what, said);
    } else {
        printf("ok: %s: %s\n", what, got);
    }
}

static const char *dtype_name(int d)
{
    return d == MOES_DTYPE_FP32 ? "fp32" : d == MOES_DTYPE_BF16 ? "bf16"
                                                                : "fp16";
}

static int64_t dtype_bytes(int d)
{
    return d == MOES_DTYPE_FP32 ? 4 : 2;
}

/* A gather of n tokens, top-8, hidden h, on fresh device buffers (no
 * weights); `ok` is 0 when a buffer could not be had. */
static moes_gather_args gather_args(int64_t n, int64_t h, int y_dtype,
                                    int out_dtype, int *ok)
{
    const int64_t k = 8;
    moes_gather_args g;
    moes_gather_args_init(&g);
    g.n_tokens = n;
    g.top_k = k;
    g.hidden = h;
    g.y = device_buffer(n * k * h * dtype_bytes(y_dtype));
    g.y_dtype = y_dtype;
    g.y_rows = n * k;
    g.out_index = device_buffer(n * k * 4);
    g.index_dtype = MOES_DTYPE_INT32;
    g.out = device_buffer(n * h * dtype_bytes(out_dtype));
    g.out_dtype = out_dtype;
    *ok = g.y && g.out_index && g.out;
    take_launches(NULL, 0); /* what the allocations launched */
    return g;
}

/* The gather of gather_args, under a graph capture or not; `expected`:
 * the kernels it must launch, in order, separated by spaces. */
static void expect_gather(int64_t n, int64_t h, int y_dtype, int out_dtype,
                          int capturing, const char *expected)
{
    char what[160];
    int ok;
    moes_gather_args g = gather_args(n, h, y_dtype, out_dtype, &ok);
    snprintf(what, sizeof what, "gather of %lld tokens, hidden %lld, %s to "
             "%s%s", (long long)n, (long long)h, dtype_name(y_dtype),
             dtype_name(out_dtype), capturing ? ", captured" : "");
    if (ok) {
        set_capturing(capturing);
        const int rc = moes_gather(buffers_ctx, &g);
        set_capturing(0);
        verdict(what, rc, MOES_OK, expected, NULL);
    }
    release_buffers();
}

/* A gather of 128 tokens whose weights are host memory from malloc
 * (which a GPU cannot read), then one whose launch fails: each must fail
 * with its status and a message that names the argument or `kernel`,
 * the first having launched nothing. */
static void expect_gather_errors(const char *kernel)
{
    const int64_t n = 128, k = 8;
    float *host_weights = calloc((size_t)(n * k), sizeof(float));
    int ok;
    moes_gather_args g =
        gather_args(n, 7168, MOES_DTYPE_BF16, MOES_DTYPE_BF16, &ok);
    float *weights = device_buffer(n * k * 4);
    take_launches(NULL, 0);
    if (ok && host_weights && weights) {
        g.weights = host_weights;
        verdict("weights in host memory", moes_gather(buffers_ctx, &g),
                MOES_ERR_INVALID_ARGUMENT, "", "args->weights");
        g.weights = weights;
        fail_launches(1);
        const int rc = moes_gather(buffers_ctx, &g);
        fail_launches(0);
        verdict("a launch that fails", rc, MOES_ERR_DEVICE, NULL, kernel);
    }
    free(host_weights);
    release_buffers();
}

/* A scatter of DeepSeek-V3's shape (fp8 rows of h with fp32 scales per
 * 128, top-8 of 256 experts, contiguous layout aligned at 128) over n
 * tokens, with its bound's capacity: all 256 experts local, or `local`
 * of them through an expert map (an expert-parallel rank); under a graph
 * capture or not; want, expected and message as verdict takes them. */
static void scatter_case_of(int64_t n, int64_t h, int64_t local,
                            int scales_format, int capturing, int want,
                            const char *expected, const char *message)
{
    const int64_t k = 8, e = 256, scales = (h + 127) / 128;
    int64_t capacity = 0;
    char what[128];
    snprintf(what, sizeof what, "scatter of %lld tokens, hidden %lld, %lld "
             "local experts%s%s", (long long)n, (long long)h, (long long)local,
             scales_format == MOES_SCALES_UE8M0 ? ", UE8M0 scales" : "",
             capturing ? ", captured" : "");
    if (moes_scatter_capacity(buffers_ctx, MOES_LAYOUT_CONTIGUOUS, n, k,
                              local, 128, &capacity) != MOES_OK) {
        verdict(what, MOES_ERR_INVALID_ARGUMENT, MOES_OK, NULL, NULL);
        return;
    }
    moes_routing r;
    moes_routing_init(&r);
    r.n_tokens = n;
    r.top_k = k;
    r.ids = device_buffer(n * k * 4);
    r.n_experts_global = e;
    r.n_experts = local;
    if (local < e)
        r.expert_map = device_buffer(e * 4);
    moes_scatter_args a;
    moes_scatter_args_init(&a);
    a.capacity = capacity;
    a.x = device_buffer(n * h);
    a.x_dtype = MOES_DTYPE_FP8_E4M3;
    a.hidden = h;
    a.x_scales = device_buffer(n * scales * 4);
    a.out = device_buffer(capacity * h);
    a.out_scales = device_buffer(capacity * scales * 4);
    a.out_scales_format = scales_format;
    a.out_index = device_buffer(n * k * 4);
    a.m_indices = device_buffer(capacity * 4);
    take_launches(NULL, 0);
    if (r.ids && (local == e || r.expert_map) && a.x && a.x_scales &&
        a.out && a.out_scales && a.out_index && a.m_indices) {
        set_capturing(capturing);
        const int rc = moes_scatter(buffers_ctx, &r, &a);
        set_capturing(0);
        verdict(what, rc, want, expected, message);
    }
    release_buffers();
}

static void scatter_case(int64_t n, int capturing, int want,
                         const char *expected, const char *message)
{
    scatter_case_of(n, 7168, 256, MOES_SCALES_FP32, capturing, want, expected,
                    message);
}

static void expect_scatter(int64_t n, const char *expected)
{
    scatter_case(n, 0, MOES_OK, expected, NULL);
}

static void expect_scatter_of(int64_t n, int64_t h, int64_t local,
                              const char *expected)
{
    scatter_case_of(n, h, local, MOES_SCALES_FP32, 0, MOES_OK, expected,
                    NULL);
}

static void expect_scatter_ue8m0(int64_t n, const char *expected)
{
    scatter_case_of(n, 7168, 256, MOES_SCALES_UE8M0, 0, MOES_OK, expected,
                    NULL);
}

/* On a new context, whose workspace has never grown: a scatter captured
 * into a graph must fail with MOES_ERR_WORKSPACE, launching nothing
 * (growing would wait for the stream and allocate, ending the capture),
 * and succeed once moes_reserve_workspace has made room. Where the
 * driver cannot say whether the stream is captured, the workspace grows
 * as it would outside a capture. */
static void expect_capture_needs_reserve(int old_driver)
{
    moes_context *ctx = cuda_context(), *was = buffers_ctx;
    if (!ctx)
        return;
    buffers_ctx = ctx;
    if (old_driver) {
        scatter_case(128, 1, MOES_OK, "moes_scatter_small", NULL);
    } else {
        scatter_case(128, 1, MOES_ERR_WORKSPACE, "",
                     "moes_reserve_workspace");
        set_capturing(1);
        verdict("moes_reserve_workspace in a capture",
                moes_reserve_workspace(ctx, 4096, 8, 256),
                MOES_ERR_WORKSPACE, "", "before capturing");
        set_capturing(0);
        verdict("moes_reserve_workspace for 4096 tokens",
                moes_reserve_workspace(ctx, 4096, 8, 256), MOES_OK, NULL,
                NULL);
        scatter_case(128, 1, MOES_OK, "moes_scatter_small", NULL);
        scatter_case(4096, 1, MOES_OK, "moes_scatter_grid", NULL);
        /* Handing over a buffer in a capture would free the context's
         * own workspace, which waits for the stream: refused. */
        set_capturing(1);
        verdict("moes_set_workspace in a capture",
                moes_set_workspace(ctx, device_buffer(1 << 20), 1 << 20),
                MOES_ERR_WORKSPACE, "", "before capturing");
        set_capturing(0);
    }
    moes_context_destroy(ctx);
    buffers_ctx = was;
}

/* moes_distinct_experts (distinct = 1) or moes_count over n tokens,
 * top-8 of 256 experts; `expected` as for the gather. */
static void expect_routing_op(int distinct, int64_t n, const char *expected)
{
    const int64_t k = 8, e = 256;
    char what[64];
    snprintf(what, sizeof what, "%s of %lld tokens",
             distinct ? "moes_distinct_experts" : "moes_count", (long long)n);
    moes_routing r;
    moes_routing_init(&r);
    r.n_tokens = n;
    r.top_k = k;
    r.ids = device_buffer(n * k * 4);
    r.n_experts_global = e;
    r.n_experts = e;
    void *out = device_buffer(distinct ? n * k * 4 : e * 8);
    take_launches(NULL, 0);
    if (r.ids && out)
        verdict(what,
                distinct ? moes_distinct_experts(buffers_ctx, &r, out,
                                                 MOES_DTYPE_INT32, 0)
                         : moes_count(buffers_ctx, &r, out, MOES_DTYPE_INT64),
                MOES_OK, expected, NULL);
    release_buffers();
}

/* moes_fill_rows: one kernel, the pattern in its parameter, so that a
 * capture takes it as it is; host memory is refused before any launch. */
static void expect_fill_rows(void)
{
    unsigned char pattern[288];
    char *records = device_buffer(128 * 7456);
    char *host = malloc(128 * 7456);
    memset(pattern, 0xFF, sizeof pattern);
    take_launches(NULL, 0);
    if (records && host) {
        verdict("fill_rows, 128 records",
                moes_fill_rows(buffers_ctx, records + 7168, 128, 7456,
                               pattern, sizeof pattern),
                MOES_OK, "moes_fill_pattern_rows", NULL);
        set_capturing(1);
        verdict("fill_rows under a capture",
                moes_fill_rows(buffers_ctx, records + 3, 1000, 7, pattern, 7),
                MOES_OK, "moes_fill_pattern_rows", NULL);
        set_capturing(0);
        verdict("fill_rows into host memory",
                moes_fill_rows(buffers_ctx, host, 128, 7456, pattern,
                               sizeof pattern),
                MOES_ERR_INVALID_ARGUMENT, "", "dst");
    }
    free(host);
    release_buffers();
}

/* The bytes of n at p are all `value`. */
static int all_bytes(const unsigned char *p, size_t n, int value)
{
    for (size_t i = 0; i < n; i++)
        if (p[i] != value)
            return 0;
    return 1;
}

/* Writes down a failure unless `ok`. */
static void expect_true(const char *what, int ok)
{
    if (ok) {
        printf("ok: %s\n", what);
    } else {
        fprintf(stderr, "FAIL: %s\n", what);
        failures++;
    }
}

/* The fill and the copies take device memory where the header says
 * backend memory, and moes_free only memory from moes_malloc: host memory
 * from malloc there fails before the driver is asked (which here would
 * write the host memory, the fake's device memory being host memory),
 * naming the argument; device memory works, twice over (the second time
 * from the cache of pointers found reachable). */
static void expect_memory_calls(void)
{
    enum { BYTES = 4096 };
    unsigned char *host = malloc(BYTES), *back = malloc(BYTES);
    unsigned char *d1 = device_buffer(BYTES), *d2 = device_buffer(BYTES);
    void *spare = NULL;
    take_launches(NULL, 0);
    if (!host || !back || !d1 || !d2) {
        expect_true("host and device buffers for the memory calls", 0);
        goto done;
    }
    memset(host, 0x11, BYTES);

    /* Host memory where device memory is needed. */
    verdict("fill of host memory", moes_fill(buffers_ctx, host, 0x5A, BYTES),
            MOES_ERR_INVALID_ARGUMENT, "", "ptr = ");
    expect_true("fill of host memory left it alone",
                all_bytes(host, BYTES, 0x11));
    verdict("copy_to_backend into host memory",
            moes_copy_to_backend(buffers_ctx, back, host, BYTES),
            MOES_ERR_INVALID_ARGUMENT, "", "dst = ");
    verdict("copy_to_host from host memory",
            moes_copy_to_host(buffers_ctx, back, host, BYTES),
            MOES_ERR_INVALID_ARGUMENT, "", "src = ");
    verdict("copy_within into host memory",
            moes_copy_within(buffers_ctx, host, d1, BYTES),
            MOES_ERR_INVALID_ARGUMENT, "", "dst = ");
    verdict("copy_within from host memory",
            moes_copy_within(buffers_ctx, d1, host, BYTES),
            MOES_ERR_INVALID_ARGUMENT, "", "src = ");
    verdict("free of host memory", moes_free(buffers_ctx, host),
            MOES_ERR_INVALID_ARGUMENT, "", "ptr = ");
    /* Nothing to copy is a valid copy of nothing, wherever it points. */
    verdict("copy_to_backend of 0 bytes into host memory",
            moes_copy_to_backend(buffers_ctx, host, host, 0), MOES_OK, "",
            NULL);
    verdict("free of NULL", moes_free(buffers_ctx, NULL), MOES_OK, "",
            NULL);

    /* Device memory: every call works, the second round from the cache. */
    for (int round = 0; round < 2; round++) {
        verdict("fill of device memory",
                moes_fill(buffers_ctx, d1, 0x5A, BYTES), MOES_OK, "", NULL);
        verdict("copy_to_host from device memory",
                moes_copy_to_host(buffers_ctx, back, d1, BYTES), MOES_OK, "",
                NULL);
        expect_true("the fill reached the device memory",
                    all_bytes(back, BYTES, 0x5A));
        verdict("copy_to_backend into device memory",
                moes_copy_to_backend(buffers_ctx, d1, host, BYTES), MOES_OK,
                "", NULL);
        verdict("copy_within device memory",
                moes_copy_within(buffers_ctx, d2, d1, BYTES), MOES_OK, "",
                NULL);
        memset(back, 0, BYTES);
        verdict("copy_to_host of the copy",
                moes_copy_to_host(buffers_ctx, back, d2, BYTES), MOES_OK, "",
                NULL);
        expect_true("the copies carried the bytes",
                    all_bytes(back, BYTES, 0x11));
    }

    /* Freed, a pointer the cache held is asked about again. */
    if (moes_malloc(buffers_ctx, &spare, BYTES) != MOES_OK) {
        expect_true("moes_malloc for the free", 0);
        goto done;
    }
    verdict("fill before the free", moes_fill(buffers_ctx, spare, 0, BYTES),
            MOES_OK, "", NULL);
    verdict("free of a pointer inside the allocation",
            moes_free(buffers_ctx, (unsigned char *)spare + 64),
            MOES_ERR_INVALID_ARGUMENT, "", "64 bytes inside");
    verdict("fill after the refused free",
            moes_fill(buffers_ctx, spare, 0, BYTES), MOES_OK, "", NULL);
    verdict("free of device memory", moes_free(buffers_ctx, spare), MOES_OK,
            "", NULL);
    verdict("fill after the free", moes_fill(buffers_ctx, spare, 0, BYTES),
            MOES_ERR_INVALID_ARGUMENT, "", "ptr = ");
    verdict("a second free", moes_free(buffers_ctx, spare),
            MOES_ERR_INVALID_ARGUMENT, "", "already freed");
done:
    free(host);
    free(back);
    release_buffers();
}

/* With the fake switched to a machine where CUDA cannot run (no device,
 * no kernel image for the GPU): CUDA asked for fails naming the cause,
 * and AUTO falls back to the CPU, saying why, and works. */
static int expect_unusable(const char *cause)
{
    moes_context_options o;
    moes_context_info info;
    moes_context *ctx = NULL;
    void *p = NULL;
    int rc;
    moes_context_options_init(&o);
    o.backend = MOES_BACKEND_CUDA;
    rc = moes_context_create(&ctx, &o);
    if (rc != MOES_ERR_BACKEND_UNAVAILABLE || ctx ||
        !strstr(moes_last_error(NULL), cause)) {
        fprintf(stderr, "FAIL: CUDA asked for: status %d (expected %d), "
                "message \"%s\" (expected \"%s\")\n", rc,
                MOES_ERR_BACKEND_UNAVAILABLE, moes_last_error(NULL), cause);
        failures++;
    } else {
        printf("ok: CUDA asked for: %s\n", moes_last_error(NULL));
    }
    moes_context_destroy(ctx);

    ctx = NULL;
    rc = moes_context_create(&ctx, NULL);
    if (rc != MOES_OK) {
        fprintf(stderr, "FAIL: AUTO: status %d: %s\n", rc,
                moes_last_error(NULL));
        return 1;
    }
    memset(&info, 0, sizeof info);
    info.struct_size = sizeof info;
    rc = moes_context_get_info(ctx, &info);
    if (rc != MOES_OK || info.backend != MOES_BACKEND_CPU ||
        !strstr(info.reason, "CPU chosen by AUTO") ||
        !strstr(info.reason, cause)) {
        fprintf(stderr, "FAIL: AUTO: status %d, backend %d (expected %d), "
                "reason \"%s\" (expected the CPU because \"%s\")\n", rc,
                info.backend, MOES_BACKEND_CPU, info.reason, cause);
        failures++;
    } else {
        printf("ok: AUTO: %s\n", info.reason);
    }
    /* The CPU context works. */
    if (moes_malloc(ctx, &p, 64) != MOES_OK ||
        moes_fill(ctx, p, 7, 64) != MOES_OK ||
        !all_bytes(p, 64, 7) || moes_free(ctx, p) != MOES_OK) {
        fprintf(stderr, "FAIL: AUTO's CPU context: %s\n",
                moes_last_error(ctx));
        failures++;
    }
    moes_context_destroy(ctx);
    if (failures)
        fprintf(stderr, "host_launches unusable: %d failed\n", failures);
    else
        printf("host_launches unusable: %s\n", cause);
    return failures != 0;
}

int main(int argc, char **argv)
{
    /* The fake built as a driver older than CUDA 12 (host-launches.test). */
    const int old_driver = argc > 1 && strcmp(argv[1], "old-driver") == 0;
    void *driver = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
    if (!driver) {
        fprintf(stderr, "FAIL: libcuda.so.1 (the fake) not found: %s\n",
                dlerror());
        return 1;
    }
    take_launches = (take_fn)(size_t)dlsym(driver, "fake_cuda_take_launches");
    set_capturing = (switch_fn)(size_t)dlsym(driver,
                                             "fake_cuda_set_capturing");
    refuse_cooperative = (switch_fn)(size_t)dlsym(
        driver, "fake_cuda_refuse_cooperative");
    fail_launches = (switch_fn)(size_t)dlsym(driver,
                                             "fake_cuda_fail_launches");
    if (!take_launches || !set_capturing || !refuse_cooperative ||
        !fail_launches) {
        fprintf(stderr, "FAIL: libcuda.so.1 is not the fake driver\n");
        return 1;
    }
    /* The fake switched to no device or no kernel image
     * (host-launches.test). */
    if (argc > 2 && strcmp(argv[1], "unusable") == 0)
        return expect_unusable(argv[2]);

    moes_context *ctx = cuda_context();
    if (!ctx)
        return 1;
    buffers_ctx = ctx;

    const int bf16 = MOES_DTYPE_BF16, fp16 = MOES_DTYPE_FP16,
              fp32 = MOES_DTYPE_FP32;
    /* The grid path of a scatter: counts, scan, then a copy that places
     * its choices. */
    const char *const grid_path =
        "moes_count_tiles moes_scan_routing moes_place_copy_rows";
    /* Distinct experts: up to 8192 choices one launch that checks the
     * ids in every block; past that the routing's checks first. */
    expect_routing_op(1, 128, "moes_distinct_rows");
    expect_routing_op(1, 1024, "moes_distinct_rows");
    expect_routing_op(1, 1025,
                      "moes_count_tiles moes_scan_routing moes_distinct_rows");
    /* Counts: a small call routed in one block. */
    expect_routing_op(0, 128, "moes_route_small");
    expect_routing_op(0, 4096,
                      "moes_count_tiles moes_scan_routing "
                      "moes_expert_outputs");
    /* Decode sizes: one launch in which every block routes for itself. */
    expect_scatter(128, "moes_scatter_small");
    /* Eight tokens a block, too many for the registers: their rows are
     * staged in shared memory, where the driver can allow it. */
    expect_scatter(1024, old_driver ? "moes_scatter_small"
                                    : "moes_scatter_small_staged");
    expect_scatter_ue8m0(128, "moes_scatter_small_ue8m0");
    expect_scatter_ue8m0(1024, old_driver ? "moes_scatter_small_ue8m0"
                                          : "moes_scatter_small_ue8m0_staged");
    /* Eight rows of 32 KiB a block pass the shared memory a block may
     * have (227 KiB): the copy list reads them from x. */
    expect_scatter_of(1024, 32768, 256, "moes_scatter_small");
    if (!old_driver) {
        /* Decode: 128 tokens, 1024 entries, vector rows. */
        expect_gather(128, 7168, bf16, bf16, 0,
                      "moes_gather_checked_bf16_to_bf16");
        expect_gather(128, 7168, bf16, bf16, 1,
                      "moes_check_out_index moes_gather_small_bf16_to_bf16");
        /* 2048 entries: still checked in the gather; 2056: not. */
        expect_gather(256, 7168, fp32, fp16, 0,
                      "moes_gather_checked_fp32_to_fp16");
        expect_gather(257, 7168, fp16, fp32, 0,
                      "moes_check_out_index moes_gather_small_fp16_to_fp32");
        /* Rows that are not 16-byte vectors (hidden 7167). */
        expect_gather(128, 7167, fp16, bf16, 0,
                      "moes_gather_checked_fp16_to_bf16");
        expect_gather(128, 7167, fp16, bf16, 1,
                      "moes_check_out_index moes_gather_fp16_to_bf16");
        /* Prefill: more items than warps that fit. */
        expect_gather(4096, 7168, bf16, fp32, 0,
                      "moes_check_out_index moes_gather_bf16_to_fp32");
        /* Prefill scatters: the cooperative kernel routes and copies the
         * rows it staged meanwhile. */
        expect_scatter(4096, "moes_scatter_grid");
        expect_scatter(32768, "moes_scatter_grid");
        /* An expert-parallel rank (a map, 32 of 256 experts local): the
         * cooperative kernel routes, then the copy kernel copies (497
         * tokens a block, more than eight times the 32 rows that fit
         * the fake's shared memory); at fewer tokens a block, its listed
         * form stages the rows of the first tokens that a local expert
         * takes and copies them all itself. */
        expect_scatter_of(65536, 7168, 32,
                          "moes_scatter_grid moes_copy_rows_wide");
        expect_scatter_of(8192, 7168, 32, "moes_scatter_grid_listed");
        /* With UE8M0 scales, as without a map, half a block's tokens'
         * rows must fit: 63 tokens a block take the listed form, 125
         * leave their rows to the copy kernel. */
        scatter_case_of(8192, 7168, 32, MOES_SCALES_UE8M0, 0, MOES_OK,
                        "moes_scatter_grid_listed", NULL);
        scatter_case_of(16384, 7168, 32, MOES_SCALES_UE8M0, 0, MOES_OK,
                        "moes_scatter_grid moes_copy_rows_wide", NULL);
        /* A device that cannot hold the grid at once (shared with other
         * work): the call takes the grid path, and the context no longer
         * tries the cooperative kernel. */
        refuse_cooperative(1);
        char refused[256];
        snprintf(refused, sizeof refused, "moes_scatter_grid(refused) %s",
                 grid_path);
        expect_scatter(4096, refused);
        refuse_cooperative(0);
        expect_scatter(4096, grid_path);
        /* The grid path's other two copies, on this context that no
         * longer tries the cooperative kernel: an expert-parallel rank
         * (a map, 32 of 256 experts local) copies 16-byte rows after the
         * placement, and rows of 7167 bytes are copied a byte at a time.
         * The fake driver marks a copy whose walk step is not its grid's
         * warps (fake_cuda.c). */
        expect_scatter_of(32768, 7168, 32,
                          "moes_count_tiles moes_scan_routing "
                          "moes_place_and_label moes_copy_rows_wide");
        expect_scatter_of(4096, 7167, 256,
                          "moes_count_tiles moes_scan_routing "
                          "moes_place_and_label moes_copy_rows");
    } else {
        /* No cuStreamIsCapturing: every stream counts as one being
         * captured, so the check kernel runs ahead of every gather. */
        expect_gather(128, 7168, bf16, bf16, 0,
                      "moes_check_out_index moes_gather_small_bf16_to_bf16");
        expect_gather(128, 7167, fp16, bf16, 0,
                      "moes_check_out_index moes_gather_fp16_to_bf16");
        /* No cuLaunchKernelEx: no cooperative launch. */
        expect_scatter(4096, grid_path);
    }
    expect_capture_needs_reserve(old_driver);
    expect_fill_rows();
    expect_memory_calls();
    /* Last: a failed launch may leave the context unusable. */
    expect_gather_errors(old_driver ? "launching moes_check_out_index"
                                    : "launching moes_gather_checked_");

    moes_context_destroy(ctx);
    if (failures)
        fprintf(stderr, "host_launches: %d failed\n", failures);
    else
        printf("host_launches%s: every call launched its kernels\n",
               old_driver ? " (old driver)" : "");
    return failures != 0;
}
