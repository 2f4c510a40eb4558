/* SPDX-License-Identifier: MIT */
/*
 * caller_memory.c - on a GPU: memory the caller owns.
 *
 *   1. Pointer kinds. The scatter's x in device memory (cudaMalloc),
 *      managed memory, mapped page-locked memory (cudaHostAlloc) and
 *      registered host memory (cudaHostRegister) gives the same rows as
 *      from device memory; from plain malloc it is MOES_ERR_INVALID_ARGUMENT
 *      naming args->x, with nothing written (unless the GPU reads
 *      pageable memory, which is then checked to work too). A malloc'd
 *      out_index is refused by name as well.
 *   2. The memory calls given host memory where device memory belongs:
 *      moes_fill, moes_copy_to_backend (dst), moes_copy_to_host (src) and
 *      moes_copy_within (dst, then src) given a malloc'd pointer return
 *      MOES_ERR_INVALID_ARGUMENT naming the argument and leave the host
 *      memory as it was (unless the GPU reads pageable memory); moes_free
 *      refuses malloc'd memory, page-locked memory, device memory it
 *      freed already and an address inside an allocation, naming ptr, on
 *      any GPU.
 *   3. The cost of the check: host time per call of a repeated gather
 *      (pointers cached), against the same call right after the cache was
 *      emptied (moes_free), and one cudaPointerGetAttributes.
 *   4. The caller's workspace: a fresh context given a cudaMalloc'd
 *      workspace of moes_workspace_size scatters inside a CUDA graph
 *      capture (global mode: any allocation or wait would break it) and
 *      the replay gives the rows of an ordinary call; a fresh context
 *      without it must refuse the capture's call with MOES_ERR_WORKSPACE
 *      (its workspace would have to grow).
 *
 * Prints "caller_memory: N checks, N failed" last; exits 0, 1 on a
 * failure, 77 where no CUDA device is usable.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cuda_check.h"
#include "moescatter.h"

enum { N = 256, K = 4, E = 32, H = 64, A = 16 };

static int checks, failed;

#define EXPECT(cond, ...)                                                   \
    do {                                                                    \
        checks++;                                                           \
        if (!(cond)) {                                                      \
            failed++;                                                       \
            printf("FAIL %s:%d: ", __FILE__, __LINE__);                     \
            printf(__VA_ARGS__);                                            \
            printf("\n");                                                   \
        }                                                                   \
    } while (0)

static double now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec * 1e-3;
}

typedef struct buffers {
    int32_t *ids, *out_index, *m_indices;
    uint16_t *out;
    int64_t capacity;
} buffers;

static int32_t h_ids[N * K];
static uint16_t h_x[N * H];

static void make_buffers(buffers *b)
{
    moes_scatter_capacity(NULL, MOES_LAYOUT_CONTIGUOUS, N, K, E, A,
                          &b->capacity);
    CUDA_OK(cudaMalloc((void **)&b->ids, sizeof h_ids));
    CUDA_OK(cudaMemcpy(b->ids, h_ids, sizeof h_ids, cudaMemcpyHostToDevice));
    CUDA_OK(cudaMalloc((void **)&b->out, (size_t)b->capacity * H * 2));
    CUDA_OK(cudaMalloc((void **)&b->out_index, N * K * 4));
    CUDA_OK(cudaMalloc((void **)&b->m_indices, (size_t)b->capacity * 4));
    CUDA_OK(cudaMemset(b->out, 0, (size_t)b->capacity * H * 2));
    CUDA_OK(cudaMemset(b->out_index, 0xA5, N * K * 4));
}

static void free_buffers(buffers *b)
{
    cudaFree(b->ids);
    cudaFree(b->out);
    cudaFree(b->out_index);
    cudaFree(b->m_indices);
}

static void args_for(const buffers *b, const void *x, moes_routing *r,
                     moes_scatter_args *s)
{
    moes_routing_init(r);
    r->n_tokens = N;
    r->top_k = K;
    r->ids = b->ids;
    r->n_experts = E;
    moes_scatter_args_init(s);
    s->alignment = A;
    s->capacity = b->capacity;
    s->x = x;
    s->hidden = H;
    s->out = b->out;
    s->out_index = b->out_index;
    s->m_indices = b->m_indices;
}

/* The scatter's rows, copied to the host (free() them). */
static uint16_t *rows_of(const buffers *b)
{
    uint16_t *h = malloc((size_t)b->capacity * H * 2);
    CUDA_OK(cudaDeviceSynchronize());
    CUDA_OK(cudaMemcpy(h, b->out, (size_t)b->capacity * H * 2,
                       cudaMemcpyDeviceToHost));
    return h;
}

static int scatter_from(moes_context *ctx, const buffers *b, const void *x)
{
    moes_routing r;
    moes_scatter_args s;
    args_for(b, x, &r, &s);
    return moes_scatter(ctx, &r, &s);
}

static void pointer_kinds(moes_context *ctx, int pageable)
{
    buffers b;
    uint16_t *want, *got, *x_dev, *x_managed, *x_hostalloc, *x_registered,
        *x_malloc;
    const size_t bytes = sizeof h_x;
    struct { const char *name; const void *x; } kinds[4];
    int st;

    make_buffers(&b);
    CUDA_OK(cudaMalloc((void **)&x_dev, bytes));
    CUDA_OK(cudaMemcpy(x_dev, h_x, bytes, cudaMemcpyHostToDevice));
    CUDA_OK(cudaMallocManaged((void **)&x_managed, bytes,
                              cudaMemAttachGlobal));
    memcpy(x_managed, h_x, bytes);
    CUDA_OK(cudaHostAlloc((void **)&x_hostalloc, bytes, cudaHostAllocMapped));
    memcpy(x_hostalloc, h_x, bytes);
    x_registered = aligned_alloc(4096, 4096 * ((bytes + 4095) / 4096));
    memcpy(x_registered, h_x, bytes);
    CUDA_OK(cudaHostRegister(x_registered, 4096 * ((bytes + 4095) / 4096),
                             cudaHostRegisterMapped));
    x_malloc = malloc(bytes);
    memcpy(x_malloc, h_x, bytes);

    EXPECT(scatter_from(ctx, &b, x_dev) == MOES_OK, "device x: %s",
           moes_last_error(ctx));
    EXPECT(moes_synchronize(ctx) == MOES_OK, "%s", moes_last_error(ctx));
    want = rows_of(&b);

    kinds[0].name = "managed"; kinds[0].x = x_managed;
    kinds[1].name = "cudaHostAlloc (mapped)"; kinds[1].x = x_hostalloc;
    kinds[2].name = "cudaHostRegister (mapped)"; kinds[2].x = x_registered;
    kinds[3].name = "malloc"; kinds[3].x = x_malloc;
    for (int i = 0; i < 4; i++) {
        int refuse = i == 3 && !pageable;
        CUDA_OK(cudaMemset(b.out, 0, (size_t)b.capacity * H * 2));
        CUDA_OK(cudaMemset(b.out_index, 0xA5, N * K * 4));
        CUDA_OK(cudaDeviceSynchronize());
        st = scatter_from(ctx, &b, kinds[i].x);
        if (refuse) {
            int32_t idx[N * K];
            EXPECT(st == MOES_ERR_INVALID_ARGUMENT, "%s x: status %d",
                   kinds[i].name, st);
            EXPECT(strstr(moes_last_error(ctx), "args->x") != NULL,
                   "%s x: the message does not name args->x: %s",
                   kinds[i].name, moes_last_error(ctx));
            printf("malloc'd x refused: %s\n", moes_last_error(ctx));
            CUDA_OK(cudaMemcpy(idx, b.out_index, sizeof idx,
                               cudaMemcpyDeviceToHost));
            EXPECT(idx[0] == (int32_t)0xA5A5A5A5, "a refused call wrote");
            continue;
        }
        EXPECT(st == MOES_OK, "%s x: %s", kinds[i].name, moes_last_error(ctx));
        EXPECT(moes_synchronize(ctx) == MOES_OK, "%s", moes_last_error(ctx));
        got = rows_of(&b);
        EXPECT(memcmp(got, want, (size_t)b.capacity * H * 2) == 0,
               "%s x: rows differ from device x", kinds[i].name);
        free(got);
        printf("%s x: accepted, same rows\n", kinds[i].name);
    }
    if (!pageable) {
        moes_routing r;
        moes_scatter_args s;
        int32_t *host_index = malloc(N * K * 4);
        args_for(&b, x_dev, &r, &s);
        s.out_index = host_index;
        EXPECT(moes_scatter(ctx, &r, &s) == MOES_ERR_INVALID_ARGUMENT,
               "malloc'd out_index accepted");
        EXPECT(strstr(moes_last_error(ctx), "args->out_index") != NULL,
               "the message does not name args->out_index: %s",
               moes_last_error(ctx));
        free(host_index);
    }
    free(want);
    cudaHostUnregister(x_registered);
    free(x_registered);
    free(x_malloc);
    cudaFreeHost(x_hostalloc);
    cudaFree(x_managed);
    cudaFree(x_dev);
    free_buffers(&b);
}

/* expect_refused: st is MOES_ERR_INVALID_ARGUMENT and the message names
 * the argument. */
static void expect_refused(moes_context *ctx, int st, const char *call,
                           const char *arg)
{
    char named[32];
    snprintf(named, sizeof named, "%s = ", arg);
    EXPECT(st == MOES_ERR_INVALID_ARGUMENT, "%s: status %d (%s), expected "
           "MOES_ERR_INVALID_ARGUMENT", call, st, moes_last_error(ctx));
    EXPECT(strstr(moes_last_error(ctx), named) != NULL,
           "%s: the message does not name %s: %s", call, arg,
           moes_last_error(ctx));
}

static void host_pointers(moes_context *ctx, int pageable)
{
    enum { BYTES = 4096 };
    unsigned char *host = malloc(BYTES), *pinned, *dev, *freed;
    unsigned char poison[BYTES];

    memset(poison, 0xA5, sizeof poison);
    memcpy(host, poison, BYTES);
    CUDA_OK(cudaHostAlloc((void **)&pinned, BYTES, cudaHostAllocDefault));
    EXPECT(moes_malloc(ctx, (void **)&dev, BYTES) == MOES_OK, "%s",
           moes_last_error(ctx));
    EXPECT(moes_malloc(ctx, (void **)&freed, BYTES) == MOES_OK, "%s",
           moes_last_error(ctx));
    EXPECT(moes_free(ctx, freed) == MOES_OK, "%s", moes_last_error(ctx));

    if (!pageable) {
        expect_refused(ctx, moes_fill(ctx, host, 0, BYTES), "moes_fill",
                       "ptr");
        expect_refused(ctx, moes_copy_to_backend(ctx, host, dev, BYTES),
                       "moes_copy_to_backend", "dst");
        expect_refused(ctx, moes_copy_to_host(ctx, poison, host, BYTES),
                       "moes_copy_to_host", "src");
        expect_refused(ctx, moes_copy_within(ctx, host, dev, BYTES),
                       "moes_copy_within", "dst");
        expect_refused(ctx, moes_copy_within(ctx, dev, host, BYTES),
                       "moes_copy_within", "src");
        EXPECT(memcmp(host, poison, BYTES) == 0,
               "a refused call wrote the host memory");
    }
    expect_refused(ctx, moes_free(ctx, host), "moes_free (malloc'd)", "ptr");
    expect_refused(ctx, moes_free(ctx, pinned), "moes_free (page-locked)",
                   "ptr");
    expect_refused(ctx, moes_free(ctx, freed), "moes_free (freed already)",
                   "ptr");
    expect_refused(ctx, moes_free(ctx, dev + 64),
                   "moes_free (inside an allocation)", "ptr");
    /* The refused frees freed nothing: the memory is still usable. */
    memset(pinned, 0x5A, BYTES);
    EXPECT(moes_copy_to_backend(ctx, dev, pinned, BYTES) == MOES_OK, "%s",
           moes_last_error(ctx));
    EXPECT(moes_copy_to_host(ctx, host, dev, BYTES) == MOES_OK, "%s",
           moes_last_error(ctx));
    EXPECT(memcmp(host, pinned, BYTES) == 0,
           "device memory round trip after the refused frees differs");
    EXPECT(moes_free(ctx, dev) == MOES_OK, "%s", moes_last_error(ctx));
    printf("memory calls given host pointers: %s\n",
           pageable ? "frees refused (the GPU reads pageable memory: "
                      "fill and copies not checked)"
                    : "refused by name");
    CUDA_OK(cudaFreeHost(pinned));
    free(host);
}

static void check_cost(moes_context *ctx)
{
    enum { CALLS = 20000 };
    float *y, *out, *w;
    int32_t *idx;
    moes_gather_args g;
    void *scratch;
    double t0, cached, emptied, attr;
    struct cudaPointerAttributes pa;

    CUDA_OK(cudaMalloc((void **)&y, N * K * H * 4));
    CUDA_OK(cudaMalloc((void **)&out, N * H * 4));
    CUDA_OK(cudaMalloc((void **)&w, N * K * 4));
    CUDA_OK(cudaMalloc((void **)&idx, N * K * 4));
    CUDA_OK(cudaMemset(y, 0, N * K * H * 4));
    CUDA_OK(cudaMemset(w, 0, N * K * 4));
    CUDA_OK(cudaMemset(idx, 0xFF, N * K * 4)); /* -1: nothing to sum */
    moes_gather_args_init(&g);
    g.n_tokens = N;
    g.top_k = K;
    g.hidden = H;
    g.y = y;
    g.y_dtype = MOES_DTYPE_FP32;
    g.y_rows = N * K;
    g.out_index = idx;
    g.weights = w;
    g.out = out;
    g.out_dtype = MOES_DTYPE_FP32;
    EXPECT(moes_gather(ctx, &g) == MOES_OK, "%s", moes_last_error(ctx));
    CUDA_OK(cudaDeviceSynchronize());

    /* Only the call itself is timed, each on an idle stream: the host's
     * part of it, launch included, with the pointers cached, then right
     * after moes_free has emptied the cache, when the call asks the
     * driver about each pointer again. */
    cached = emptied = 0;
    for (int i = 0; i < CALLS / 10; i++) {
        moes_synchronize(ctx);
        t0 = now_us();
        moes_gather(ctx, &g);
        cached += now_us() - t0;
        moes_synchronize(ctx);
        moes_malloc(ctx, &scratch, 256);
        moes_free(ctx, scratch);
        t0 = now_us();
        moes_gather(ctx, &g);
        emptied += now_us() - t0;
    }
    moes_synchronize(ctx);
    cached /= CALLS / 10;
    emptied /= CALLS / 10;
    t0 = now_us();
    for (int i = 0; i < CALLS; i++)
        cudaPointerGetAttributes(&pa, y);
    attr = (now_us() - t0) / CALLS;
    printf("host time per gather call: %.3f us with the pointers cached, "
           "%.3f us with the cache emptied before it; one "
           "cudaPointerGetAttributes: %.3f us\n", cached, emptied, attr);
    cudaFree(y);
    cudaFree(out);
    cudaFree(w);
    cudaFree(idx);
}

/* A fresh context captures a scatter in a graph; with_workspace gives it
 * the caller's workspace first. Returns the capture's status. */
static int capture(int with_workspace, const buffers *b, const void *x,
                   uint16_t **rows)
{
    moes_context_options o;
    moes_context *ctx;
    cudaStream_t stream;
    cudaGraph_t graph;
    cudaGraphExec_t exec;
    void *ws = NULL;
    int64_t bytes = 0;
    int st;
    cudaError_t e;

    moes_context_options_init(&o);
    o.backend = MOES_BACKEND_CUDA;
    if (moes_context_create(&ctx, &o) != MOES_OK)
        return -1;
    CUDA_OK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
    moes_set_stream(ctx, stream);
    if (with_workspace) {
        moes_workspace_size(ctx, N, K, E, &bytes);
        CUDA_OK(cudaMalloc(&ws, (size_t)bytes));
        EXPECT(moes_set_workspace(ctx, ws, bytes) == MOES_OK, "%s",
               moes_last_error(ctx));
    }
    CUDA_OK(cudaMemset(b->out, 0, (size_t)b->capacity * H * 2));
    CUDA_OK(cudaDeviceSynchronize());
    CUDA_OK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal));
    st = scatter_from(ctx, b, x);
    e = cudaStreamEndCapture(stream, &graph);
    if (st == MOES_OK && e == cudaSuccess) {
        CUDA_OK(cudaGraphInstantiate(&exec, graph, 0));
        CUDA_OK(cudaGraphLaunch(exec, stream));
        CUDA_OK(cudaStreamSynchronize(stream));
        *rows = rows_of(b);
        cudaGraphExecDestroy(exec);
        cudaGraphDestroy(graph);
    } else {
        if (e == cudaSuccess)
            cudaGraphDestroy(graph);
        cudaGetLastError();
        if (st == MOES_OK)
            st = MOES_ERR_DEVICE;
        printf("capture without the caller's workspace: %s\n",
               moes_last_error(ctx));
    }
    if (with_workspace) {
        moes_context_info info;
        memset(&info, 0, sizeof info);
        info.struct_size = sizeof info;
        moes_context_get_info(ctx, &info);
        EXPECT(info.workspace_from_caller == 1 &&
                   info.workspace_bytes == bytes,
               "info: workspace %lld bytes, from caller %d",
               (long long)info.workspace_bytes, info.workspace_from_caller);
    }
    moes_context_destroy(ctx);
    cudaStreamDestroy(stream);
    if (ws)
        cudaFree(ws);
    return st;
}

static void caller_workspace(moes_context *ctx)
{
    buffers b;
    uint16_t *x, *want, *got = NULL;
    make_buffers(&b);
    CUDA_OK(cudaMalloc((void **)&x, sizeof h_x));
    CUDA_OK(cudaMemcpy(x, h_x, sizeof h_x, cudaMemcpyHostToDevice));
    EXPECT(scatter_from(ctx, &b, x) == MOES_OK, "%s", moes_last_error(ctx));
    EXPECT(moes_synchronize(ctx) == MOES_OK, "%s", moes_last_error(ctx));
    want = rows_of(&b);
    EXPECT(capture(1, &b, x, &got) == MOES_OK,
           "capture with the caller's workspace failed");
    if (got) {
        EXPECT(memcmp(got, want, (size_t)b.capacity * H * 2) == 0,
               "the replayed graph's rows differ");
        free(got);
        printf("captured with the caller's workspace: same rows\n");
    }
    /* Without the caller's workspace or a reservation the first call
     * would have to allocate during the capture: it must say so with
     * MOES_ERR_WORKSPACE (and launch nothing) rather than try. */
    got = NULL;
    EXPECT(capture(0, &b, x, &got) == MOES_ERR_WORKSPACE,
           "a fresh context's capture without a workspace: expected "
           "MOES_ERR_WORKSPACE");
    free(got);
    free(want);
    cudaFree(x);
    free_buffers(&b);
}

int main(void)
{
    moes_context_options o;
    moes_context *ctx;
    int pageable = 0, dev = 0;

    for (int i = 0; i < N * K; i++)
        h_ids[i] = (int32_t)((i * 5 + i / K) % E);
    for (int i = 0; i < N * H; i++)
        h_x[i] = (uint16_t)(i * 2654435761u >> 16);
    moes_context_options_init(&o);
    o.backend = MOES_BACKEND_CUDA;
    if (moes_context_create(&ctx, &o) != MOES_OK) {
        printf("caller_memory: skipped: %s\n", moes_last_error(NULL));
        return 77;
    }
    CUDA_OK(cudaGetDevice(&dev));
    CUDA_OK(cudaDeviceGetAttribute(&pageable, cudaDevAttrPageableMemoryAccess,
                                   dev));
    printf("pageable memory access: %d\n", pageable);
    pointer_kinds(ctx, pageable);
    host_pointers(ctx, pageable);
    check_cost(ctx);
    caller_workspace(ctx);
    moes_context_destroy(ctx);
    printf("caller_memory: %d checks, %d failed\n", checks, failed);
    return failed ? 1 : 0;
}
