/* SPDX-License-Identifier: MIT */
/*
 * late_blocks.c - failing calls whose blocks do not all start at once.
 *
 * The one-launch scatter of decode-size calls (fp32 or UE8M0 scales),
 * the distinct rows of small calls and the gather of at most 2048
 * out_index entries check the whole call in every block, and block 0
 * writes the error record. When other work holds multiprocessors, some
 * of their blocks start only as it leaves, possibly while block 0 of
 * their own launch is writing the record: such a block must still write
 * nothing. Here a second context keeps the GPU busy on a stream of its
 * own with large gathers (blocks that take a multiprocessor's
 * registers), while this context, on another stream, runs failing calls
 * over outputs filled with a pattern: decode-size scatters (the
 * expert-parallel shape: 1024 tokens, 32 of 256 experts local, one
 * block a multiprocessor) and distinct-experts calls, each with one bad
 * id at a random place; the same scatter packing UE8M0 scales, with one
 * scale that UE8M0 cannot hold; a 256-token gather with one bad
 * out_index entry. The scatters' rows alternate by round between 512
 * bytes, which each block holds in registers, and DeepSeek-V3's 7168,
 * which the copy engine stages in the block's shared memory (a kernel of
 * their own): a block that leaves must first wait for those copies. Each
 * call must fail with its error (MOES_ERR_INVALID_ID, _SCALE,
 * _OUT_INDEX), and every output byte must still hold the pattern.
 *
 *     late_blocks [ROUNDS [CALLS]]
 *
 * ROUNDS defaults to 1500. CALLS picks the failing calls of a round
 * (default all four): i the scatter with a bad id, d the distinct rows,
 * s the UE8M0 scatter, g the gather; one letter alone tells which call
 * is at fault.
 *
 * The race it looks for is a matter of timing: a pass says that none was
 * seen in ROUNDS rounds, not that none can happen. Before each block took
 * one answer from the record (moes_block_failed), the scatter stored out
 * of bounds (an illegal address) within 22 rounds on an H100, twice in
 * two runs, and at round 0 on an H200 with fp32 scales and with UE8M0
 * alone; after, 33,000 rounds passed on the H100 and 8,000 on the H200.
 * The distinct rows (8 blocks here) and the gather, which agreed on the
 * record from the start, passed 3,000 rounds each before and after.
 *
 * GPU-only: links the CUDA runtime for the streams.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_check.h"
#include "test_random.h"

#include "moescatter.h"

enum { N = 1024, K = 8, E_GLOBAL = 256, E_LOCAL = 32,
       /* the scatters' rows, fp8: preloaded, staged; buffers are sized
        * for the wider */
       H_NARROW = 512, H = 7168, SCALE_BLOCK = 128, S = H / SCALE_BLOCK,
       PATTERN = 0xA5,
       /* the failing gather: 2048 entries, the most a gather checks in
        * every block (GPU_GATHER_SELF_CHECK_ENTRIES) */
       GATHER_TOKENS = 256, GATHER_H = 7168,
       GATHER_ROWS = GATHER_TOKENS * K,
       /* the busy context's gather: 8192 tokens of 8 rows of 4096 bf16 */
       BUSY_TOKENS = 8192, BUSY_H = 4096, BUSY_IN_FLIGHT = 4 };

static uint64_t rng = 0x2545F4914F6CDD1Dull;

static uint64_t rnd(void)
{
    return test_xorshift(&rng);
}

static moes_context *open_cuda(cudaStream_t stream)
{
    moes_context_options opts;
    moes_context *ctx = NULL;
    moes_context_options_init(&opts);
    opts.backend = MOES_BACKEND_CUDA;
    MOES_OK_OR_DIE(NULL, moes_context_create(&ctx, &opts));
    MOES_OK_OR_DIE(ctx, moes_set_stream(ctx, stream));
    return ctx;
}

/* g: a bf16 gather of n_tokens tokens of K entries (index, from the
 * host) over y_rows rows of hidden finite values (0x3F3F, about 0.75,
 * as a layer's are), with random weights: its buffers are allocated
 * here. */
static void gather_setup(moes_gather_args *g, int64_t n_tokens,
                         int64_t hidden, int64_t y_rows, const int32_t *index)
{
    const size_t entries = (size_t)n_tokens * K;
    const size_t y_bytes = (size_t)y_rows * (size_t)hidden * 2;
    float *w = host_alloc(entries * 4);
    void *y = dev_alloc(y_bytes);
    for (size_t i = 0; i < entries; i++)
        w[i] = (float)(rnd() % 1000) / 1000.0f;
    CUDA_OK(cudaMemset(y, 0x3F, y_bytes));
    moes_gather_args_init(g);
    g->n_tokens = n_tokens;
    g->top_k = K;
    g->hidden = hidden;
    g->y = y;
    g->y_rows = y_rows;
    g->out_index = dev_alloc(entries * 4);
    g->weights = dev_alloc(entries * 4);
    g->out = dev_alloc((size_t)n_tokens * (size_t)hidden * 2);
    CUDA_OK(cudaMemcpy((void *)g->out_index, index, entries * 4,
                       cudaMemcpyHostToDevice));
    CUDA_OK(cudaMemcpy((void *)g->weights, w, entries * 4,
                       cudaMemcpyHostToDevice));
    free(w);
}

/* The busy context's work: a gather of BUSY_TOKENS tokens, every entry a
 * valid row. */
typedef struct busy_work {
    moes_context *ctx;
    cudaStream_t stream;
    cudaEvent_t done[BUSY_IN_FLIGHT];
    moes_gather_args g;
    long queued;
} busy_work;

static void busy_setup(busy_work *b)
{
    const size_t entries = (size_t)BUSY_TOKENS * K;
    int32_t *index = host_alloc(entries * 4);
    memset(b, 0, sizeof *b);
    CUDA_OK(cudaStreamCreateWithFlags(&b->stream, cudaStreamNonBlocking));
    b->ctx = open_cuda(b->stream);
    for (int i = 0; i < BUSY_IN_FLIGHT; i++)
        CUDA_OK(cudaEventCreateWithFlags(&b->done[i],
                                         cudaEventDisableTiming));
    for (size_t i = 0; i < entries; i++)
        index[i] = (int32_t)(rnd() % entries);
    gather_setup(&b->g, BUSY_TOKENS, BUSY_H, (int64_t)entries, index);
    free(index);
}

/* Keeps BUSY_IN_FLIGHT gathers queued: waits for the oldest, queues one. */
static void busy_feed(busy_work *b)
{
    cudaEvent_t *slot = &b->done[b->queued % BUSY_IN_FLIGHT];
    if (b->queued >= BUSY_IN_FLIGHT)
        CUDA_OK(cudaEventSynchronize(*slot));
    MOES_OK_OR_DIE(b->ctx, moes_gather(b->ctx, &b->g));
    CUDA_OK(cudaEventRecord(*slot, b->stream));
    b->queued++;
}

/* The failing calls' buffers: inputs, and outputs that must keep
 * PATTERN. */
typedef struct victim {
    moes_context *ctx;
    cudaStream_t stream;
    int32_t *ids_host;  /* the good ids */
    float *pow2_host;   /* the good power-of-two scales of pow2 */
    int32_t *gather_index_host; /* the good entries of gather.out_index */
    void *ids, *map, *x, *scales, *pow2;
    void *out, *out_scales, *out_index, *m_indices, *distinct;
    size_t out_bytes, out_scales_bytes, index_bytes, labels_bytes;
    moes_gather_args gather;
    size_t gather_out_bytes;
    int64_t capacity;
    unsigned char *check;
} victim;

/* The failing gather's entries: spread over its rows, one in ten -1. */
static void victim_gather_setup(victim *v)
{
    const size_t entries = (size_t)GATHER_TOKENS * K;
    v->gather_index_host = host_alloc(entries * 4);
    for (size_t i = 0; i < entries; i++)
        v->gather_index_host[i] =
            rnd() % 10 ? (int32_t)(rnd() % GATHER_ROWS) : -1;
    gather_setup(&v->gather, GATHER_TOKENS, GATHER_H, GATHER_ROWS,
                 v->gather_index_host);
    v->gather_out_bytes = (size_t)GATHER_TOKENS * GATHER_H * 2;
}

static void victim_setup(victim *v)
{
    int32_t map[E_GLOBAL];
    unsigned char *h;
    memset(v, 0, sizeof *v);
    CUDA_OK(cudaStreamCreateWithFlags(&v->stream, cudaStreamNonBlocking));
    v->ctx = open_cuda(v->stream);
    MOES_OK_OR_DIE(v->ctx, moes_scatter_capacity(v->ctx,
                                                 MOES_LAYOUT_CONTIGUOUS, N, K,
                                                 E_LOCAL, 1, &v->capacity));
    v->ids_host = host_alloc((size_t)N * K * 4);
    for (int t = 0; t < N; t++)
        for (int k = 0; k < K; k++)
            v->ids_host[t * K + k] =
                test_new_expert(&v->ids_host[t * K], k, E_GLOBAL, &rng);
    for (int g = 0; g < E_GLOBAL; g++)
        map[g] = g < E_LOCAL ? g : -1;
    v->ids = dev_alloc((size_t)N * K * 4);
    v->map = dev_alloc(sizeof map);
    CUDA_OK(cudaMemcpy(v->ids, v->ids_host, (size_t)N * K * 4,
                       cudaMemcpyHostToDevice));
    CUDA_OK(cudaMemcpy(v->map, map, sizeof map, cudaMemcpyHostToDevice));
    h = host_alloc((size_t)N * H);
    for (size_t i = 0; i < (size_t)N * H; i++)
        h[i] = (unsigned char)(rnd() >> 24);
    v->x = dev_alloc((size_t)N * H);
    CUDA_OK(cudaMemcpy(v->x, h, (size_t)N * H, cudaMemcpyHostToDevice));
    free(h);
    {
        float *s = host_alloc((size_t)N * S * 4);
        for (size_t i = 0; i < (size_t)N * S; i++)
            s[i] = (float)(rnd() % 1000 + 1) / 4096.0f;
        v->scales = dev_alloc((size_t)N * S * 4);
        CUDA_OK(cudaMemcpy(v->scales, s, (size_t)N * S * 4,
                           cudaMemcpyHostToDevice));
        free(s);
    }
    /* Scales UE8M0 holds: 2^-20 .. 2^0. */
    v->pow2_host = host_alloc((size_t)N * S * 4);
    for (size_t i = 0; i < (size_t)N * S; i++)
        v->pow2_host[i] = 1.0f / (float)(1u << (rnd() % 21));
    v->pow2 = dev_alloc((size_t)N * S * 4);
    CUDA_OK(cudaMemcpy(v->pow2, v->pow2_host, (size_t)N * S * 4,
                       cudaMemcpyHostToDevice));
    v->out_bytes = (size_t)v->capacity * H;
    v->out_scales_bytes = (size_t)v->capacity * S * 4;
    v->index_bytes = (size_t)N * K * 4;
    v->labels_bytes = (size_t)v->capacity * 4;
    v->out = dev_alloc(v->out_bytes);
    v->out_scales = dev_alloc(v->out_scales_bytes);
    v->out_index = dev_alloc(v->index_bytes);
    v->m_indices = dev_alloc(v->labels_bytes);
    v->distinct = dev_alloc(v->index_bytes);
    victim_gather_setup(v);
    v->check = host_alloc(v->out_bytes > v->gather_out_bytes
                              ? v->out_bytes
                              : v->gather_out_bytes);
}

static void victim_routing(const victim *v, moes_routing *r)
{
    moes_routing_init(r);
    r->n_tokens = N;
    r->top_k = K;
    r->ids = v->ids;
    r->expert_map = v->map;
    r->n_experts_global = E_GLOBAL;
    r->n_experts = E_LOCAL;
}

/* Whether the device buffer p of `bytes` still holds PATTERN; prints the
 * first byte that does not. */
static int untouched(victim *v, const char *what, const void *p, size_t bytes,
                     long round, int t, int k)
{
    unsigned char pattern[4096];
    size_t i = 0;
    memset(pattern, PATTERN, sizeof pattern);
    CUDA_OK(cudaMemcpy(v->check, p, bytes, cudaMemcpyDeviceToHost));
    /* Whole blocks by memcmp: the wide scatter's out is 58 MB. */
    while (i + sizeof pattern <= bytes &&
           memcmp(v->check + i, pattern, sizeof pattern) == 0)
        i += sizeof pattern;
    for (; i < bytes; i++)
        if (v->check[i] != PATTERN) {
            printf("late_blocks: round %ld (bad value at [%d][%d]): %s byte "
                   "%zu written (0x%02x) by a call that failed\n",
                   round, t, k, what, i, v->check[i]);
            return 0;
        }
    return 1;
}

/* Whether a call that returned st failed as it should: with expected,
 * at once or at the synchronize, which also waits for its kernels
 * before the outputs are read. */
static int failed_as_expected(victim *v, const char *call, int st,
                              int expected, long round)
{
    const int sync = moes_synchronize(v->ctx);
    if (st == MOES_OK)
        st = sync;
    if (st == expected)
        return 1;
    printf("late_blocks: round %ld: %s gave %s (%s), not %s\n", round, call,
           moes_strerror(st), moes_last_error(v->ctx),
           moes_strerror(expected));
    return 0;
}

/* Copies the 4 bytes at host into element i of the int32 or float
 * device array p, on the victim's stream. */
static void put4(victim *v, void *p, size_t i, const void *host)
{
    CUDA_OK(cudaMemcpyAsync((char *)p + 4 * i, host, 4,
                            cudaMemcpyHostToDevice, v->stream));
}

/* Fills the scatter's outputs with PATTERN; the patterns are in place
 * before the busy gathers go on. */
static void poison_scatter_outputs(victim *v)
{
    CUDA_OK(cudaMemsetAsync(v->out, PATTERN, v->out_bytes, v->stream));
    CUDA_OK(cudaMemsetAsync(v->out_scales, PATTERN, v->out_scales_bytes,
                            v->stream));
    CUDA_OK(cudaMemsetAsync(v->out_index, PATTERN, v->index_bytes,
                            v->stream));
    CUDA_OK(cudaMemsetAsync(v->m_indices, PATTERN, v->labels_bytes,
                            v->stream));
    CUDA_OK(cudaStreamSynchronize(v->stream));
}

/* One failing scatter of rows `hidden` bytes wide (fp32 scales from
 * x_scales, or UE8M0 from the power-of-two ones, hidden / SCALE_BLOCK a
 * token) and its checks; 1 when it failed as expected and wrote
 * nothing. */
static int scatter_fails_clean(victim *v, int64_t hidden, int ue8m0,
                               int expected, long round, int t, int k)
{
    moes_routing r;
    moes_scatter_args a;
    victim_routing(v, &r);
    moes_scatter_args_init(&a);
    a.layout = MOES_LAYOUT_CONTIGUOUS;
    a.alignment = 1;
    a.capacity = v->capacity;
    a.x = v->x;
    a.x_dtype = MOES_DTYPE_FP8_E4M3;
    a.hidden = hidden;
    a.x_scales = ue8m0 ? v->pow2 : v->scales;
    a.scale_block = SCALE_BLOCK;
    a.out = v->out;
    a.out_scales = v->out_scales;
    a.out_scales_format = ue8m0 ? MOES_SCALES_UE8M0 : MOES_SCALES_FP32;
    a.out_index = v->out_index;
    a.m_indices = v->m_indices;
    return failed_as_expected(v, ue8m0 ? "moes_scatter (UE8M0)"
                                       : "moes_scatter",
                              moes_scatter(v->ctx, &r, &a), expected,
                              round) &&
           untouched(v, "out", v->out, v->out_bytes, round, t, k) &&
           untouched(v, "out_scales", v->out_scales, v->out_scales_bytes,
                     round, t, k) &&
           untouched(v, "out_index", v->out_index, v->index_bytes, round, t,
                     k) &&
           untouched(v, "m_indices", v->m_indices, v->labels_bytes, round,
                     t, k);
}

int main(int argc, char **argv)
{
    const long rounds = argc > 1 ? strtol(argv[1], NULL, 10) : 1500;
    const char *calls = argc > 2 ? argv[2] : "idsg";
    long failed = 0;
    busy_work busy;
    victim v;
    if (rounds < 1 || calls[strspn(calls, "idsg")] != '\0') {
        fprintf(stderr, "usage: late_blocks [ROUNDS >= 1 [CALLS of idsg]]\n");
        return 2;
    }
    busy_setup(&busy);
    victim_setup(&v);
    for (long round = 0; round < rounds && failed < 10; round++) {
        /* Odd rounds: rows the scatter stages in shared memory. */
        const int64_t hidden = round % 2 ? H : H_NARROW;
        const int n_scales = (int)(hidden / SCALE_BLOCK);
        int t = (int)(rnd() % N), k = (int)(rnd() % K);
        const int32_t bad = rnd() % 2 ? E_GLOBAL + (int32_t)(rnd() % 100)
                                      : -2 - (int32_t)(rnd() % 5);
        /* Scales UE8M0 cannot hold: a mantissa, zero, a sign, infinity. */
        static const float bad_scales[] = {0.75f, 0.0f, -0.5f, INFINITY};
        const float bad_scale = bad_scales[rnd() % 4];
        const int s = (int)(rnd() % (unsigned)n_scales);
        const int32_t bad_entry = rnd() % 2
                                      ? GATHER_ROWS + (int32_t)(rnd() % 100)
                                      : -2 - (int32_t)(rnd() % 5);
        moes_routing r;

        /* A bad id: the scatter and the distinct rows. */
        busy_feed(&busy);
        put4(&v, v.ids, (size_t)t * K + k, &bad);
        CUDA_OK(cudaMemsetAsync(v.distinct, PATTERN, v.index_bytes,
                                v.stream));
        poison_scatter_outputs(&v);
        busy_feed(&busy);
        if (strchr(calls, 'i') &&
            !scatter_fails_clean(&v, hidden, 0, MOES_ERR_INVALID_ID, round, t,
                                 k))
            failed++;
        busy_feed(&busy);
        victim_routing(&v, &r);
        if (strchr(calls, 'd') &&
            (!failed_as_expected(&v, "moes_distinct_experts",
                                 moes_distinct_experts(v.ctx, &r, v.distinct,
                                                       MOES_DTYPE_INT32, 0),
                                 MOES_ERR_INVALID_ID, round) ||
             !untouched(&v, "distinct", v.distinct, v.index_bytes, round, t,
                        k)))
            failed++;
        put4(&v, v.ids, (size_t)t * K + k, &v.ids_host[t * K + k]);

        /* A bad scale: the scatter packing UE8M0. t, k name the token
         * and scale here. */
        k = s;
        put4(&v, v.pow2, (size_t)t * n_scales + s, &bad_scale);
        poison_scatter_outputs(&v);
        busy_feed(&busy);
        if (strchr(calls, 's') &&
            !scatter_fails_clean(&v, hidden, 1, MOES_ERR_INVALID_SCALE, round,
                                 t, k))
            failed++;
        put4(&v, v.pow2, (size_t)t * n_scales + s,
             &v.pow2_host[t * n_scales + s]);

        /* A bad out_index entry: the gather. */
        t = (int)(rnd() % GATHER_TOKENS);
        k = (int)(rnd() % K);
        put4(&v, (void *)v.gather.out_index, (size_t)t * K + k, &bad_entry);
        CUDA_OK(cudaMemsetAsync(v.gather.out, PATTERN, v.gather_out_bytes,
                                v.stream));
        CUDA_OK(cudaStreamSynchronize(v.stream));
        busy_feed(&busy);
        if (strchr(calls, 'g') &&
            (!failed_as_expected(&v, "moes_gather",
                                 moes_gather(v.ctx, &v.gather),
                                 MOES_ERR_INVALID_OUT_INDEX, round) ||
             !untouched(&v, "gather out", v.gather.out, v.gather_out_bytes,
                        round, t, k)))
            failed++;
        put4(&v, (void *)v.gather.out_index, (size_t)t * K + k,
             &v.gather_index_host[t * K + k]);
    }
    MOES_OK_OR_DIE(busy.ctx, moes_synchronize(busy.ctx));
    CUDA_OK(cudaStreamSynchronize(v.stream));
    printf("late_blocks: %ld rounds, %ld failed\n", rounds, failed);
    moes_context_destroy(v.ctx);
    moes_context_destroy(busy.ctx);
    return failed ? 1 : 0;
}
