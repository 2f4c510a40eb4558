/* SPDX-License-Identifier: MIT */
/*
 * graph_bench.c - decode-size scatter and gather, timed back to back on
 * one stream and replayed from a CUDA graph.
 *
 * The DeepSeek-V3 layer (H 7168, fp8 e4m3 rows with fp32 scales per 128,
 * top-8, bf16 expert outputs and gather output, contiguous layout,
 * alignment 128, capacity from moes_scatter_capacity), for two cases:
 * 128 tokens over 256 experts, and 1024 received tokens of which this
 * rank holds experts 0..31 of 256 (an expert map, as with 8-way expert
 * parallelism). SETS input sets with their own outputs are used in turn,
 * so that a call does not find the last call's data in L2.
 *
 * For each case and operation it prints the time per call:
 *   back-to-back  CALLS calls queued between two events, no graph;
 *   graph         the same CALLS calls captured once (after
 *                 moes_reserve_workspace) and the graph replayed REPLAYS
 *                 times, median replay over CALLS;
 *   single call   an event, one call, an event, and a wait for it, CALLS
 *                 times: the median (moescatter bench times its calls
 *                 so), the host's work for the call and its launch
 *                 included.
 *   copy          a device copy (cudaMemcpyAsync) of half the bytes
 *                 the call moves at the fewest (every input read once,
 *                 every output written once, as moescatter bench counts
 *                 them), so it reads and writes what the call does, timed
 *                 the same three ways from input sets of their own: the
 *                 yardstick of a decode call's time, launch included.
 *   floor         the same scatter with no rows (its routing and index
 *                 outputs), a memset of the bytes of its placed rows and
 *                 scales (their stores), and a memset of 16 bytes (an
 *                 empty call), from a graph: a row cannot be stored
 *                 before the routing has placed it, so routing + stores
 *                 - empty is the floor of a call with this routing; only
 *                 a faster routing, or stores that overlap it, go below.
 * Then the index-only scatter (no x, no out: out_index, m_indices and
 * row_source with vLLM's pad N*K, alignment IDX_A) for those two cases
 * and for 4096 tokens over 256 experts and 32768 over 32 of 256.
 * The last synchronize must report no error. Correctness of captured
 * calls is graph_replay's job; this program only times them.
 *
 *     graph_bench [SETS_USED]
 *
 * SETS_USED (1 to SETS, default SETS) input sets are made and taken in
 * turn. With 1, every call finds its inputs (and the last call's outputs)
 * in L2, as a call does in an engine when the kernel that wrote its
 * inputs ran just before it; the default times calls whose inputs come
 * from DRAM.
 *
 * GPU-only: links the CUDA runtime for the capture API.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_check.h"
#include "test_random.h"

#include "moescatter.h"

enum { H = 7168, K = 8, E_GLOBAL = 256, A = 128, SCALE_BLOCK = 128,
       SETS = 16, CALLS = 64, REPLAYS = 21, WARMUP = 32, IDX_A = 64 };
#define S ((H + SCALE_BLOCK - 1) / SCALE_BLOCK)

static uint64_t rng = 0x9E3779B97F4A7C15ull;

/* Input sets taken in turn (graph_bench's argument). */
static int sets_used = SETS;

static uint64_t rnd(void)
{
    return test_xorshift(&rng);
}

typedef struct bench_case {
    const char *name;
    int64_t tokens;
    int64_t n_experts;          /* local; < E_GLOBAL: with a map */
    int index_only;             /* only ids in, only indices out  */
} bench_case;

typedef struct set_buffers {
    void *ids, *x, *scales, *weights;
    void *out, *out_scales, *out_index, *m_indices, *y, *gather_out;
    void *row_source;
    void *copy_src, *copy_dst;  /* the yardstick's, copy_bytes each */
} set_buffers;

typedef struct case_state {
    const bench_case *c;
    int64_t capacity;
    int32_t *map;               /* device, NULL without */
    /* Bytes each call moves at the fewest (set 0's routing), and the
     * yardstick copy's current length: half of one of them. */
    int64_t scatter_bytes, gather_bytes, copy_bytes;
    /* The bytes a scatter stores into out and out_scales (its placed
     * rows), and the current length of store_call's memset. */
    int64_t placed_bytes, store_bytes;
    set_buffers sets[SETS];
} case_state;

/* A device copy of the host buffer h (taken and freed). */
static void *dev_from_host(void *h, int64_t bytes)
{
    void *d = dev_alloc(bytes);
    CUDA_OK(cudaMemcpy(d, h, (size_t)bytes, cudaMemcpyHostToDevice));
    free(h);
    return d;
}

/* Random bytes of every buffer a call reads: never zeros. */
static void *dev_random(int64_t bytes)
{
    unsigned char *h = host_alloc(bytes);
    for (int64_t i = 0; i < bytes; i++)
        h[i] = (unsigned char)(rnd() >> 24);
    return dev_from_host(h, bytes);
}

/* bf16 expert outputs: finite numbers of modest size, as a layer's are.
 * (A NaN in a token's rows sends the gather down its slower path, which
 * applies the NaN sign rule; random bytes would hold NaNs everywhere.) */
static void *dev_finite_bf16(int64_t bytes)
{
    uint16_t *h = host_alloc(bytes);
    for (int64_t i = 0; i < bytes / 2; i++) {
        const uint64_t r = rnd();
        /* sign, exponent 2^-8 .. 2^7, seven random mantissa bits */
        h[i] = (uint16_t)(((r >> 40) & 0x8000u) | ((119u + r % 16u) << 7) |
                          ((r >> 20) & 0x7Fu));
    }
    return dev_from_host(h, bytes);
}

/* The bytes a scatter and a gather of these ids move at the fewest
 * (moescatter(1), BYTES MOVED; index-only calls are not compared). */
static void count_bytes(case_state *s, const int32_t *ids)
{
    const int64_t n = s->c->tokens;
    int64_t placed = 0, touched = 0;
    for (int64_t t = 0; t < n; t++) {
        int64_t local = 0;
        for (int k = 0; k < K; k++)
            local += ids[t * K + k] < s->c->n_experts;
        placed += local;
        touched += local > 0;
    }
    s->scatter_bytes = n * K * 4 + (s->map ? E_GLOBAL * 4 : 0) +
                       (touched + placed) * (H + S * 4) + n * K * 4 +
                       s->capacity * 4;
    s->gather_bytes = placed * H * 2 + n * K * 8 + n * H * 2;
    s->placed_bytes = placed * (H + S * 4);
}

static void setup_case(moes_context *ctx, const bench_case *c, case_state *s)
{
    const int64_t n = c->tokens;
    memset(s, 0, sizeof *s);
    s->c = c;
    MOES_OK_OR_DIE(ctx, moes_scatter_capacity(ctx, MOES_LAYOUT_CONTIGUOUS, n,
                                              K, c->n_experts,
                                              c->index_only ? IDX_A : A,
                                              &s->capacity));
    if (c->n_experts < E_GLOBAL) {
        int32_t map[E_GLOBAL];
        for (int g = 0; g < E_GLOBAL; g++)
            map[g] = g < c->n_experts ? g : -1;
        s->map = dev_alloc(sizeof map);
        CUDA_OK(cudaMemcpy(s->map, map, sizeof map, cudaMemcpyHostToDevice));
    }
    for (int i = 0; i < sets_used; i++) {
        set_buffers *b = &s->sets[i];
        int32_t *ids = malloc((size_t)(n * K) * sizeof *ids);
        float *w = malloc((size_t)(n * K) * sizeof *w);
        float *scales = malloc((size_t)(n * S) * sizeof *scales);
        /* y: one random block repeated over the capacity's rows. */
        const int64_t y_bytes = s->capacity * H * 2;
        const int64_t y_block = (int64_t)16 << 20;
        if (!ids || !w || !scales) {
            fprintf(stderr, "out of host memory\n");
            exit(2);
        }
        for (int64_t t = 0; t < n; t++)
            for (int k = 0; k < K; k++) {
                ids[t * K + k] =
                    test_new_expert(&ids[t * K], k, E_GLOBAL, &rng);
                w[t * K + k] = (float)(rnd() % 1000) / 1000.0f;
            }
        for (int64_t j = 0; j < n * S; j++)
            scales[j] = (float)(rnd() % 1000 + 1) / 4096.0f;
        if (i == 0)
            count_bytes(s, ids);
        b->ids = dev_alloc(n * K * 4);
        b->weights = dev_alloc(n * K * 4);
        b->scales = dev_alloc(n * S * 4);
        CUDA_OK(cudaMemcpy(b->ids, ids, (size_t)(n * K * 4),
                           cudaMemcpyHostToDevice));
        CUDA_OK(cudaMemcpy(b->weights, w, (size_t)(n * K * 4),
                           cudaMemcpyHostToDevice));
        CUDA_OK(cudaMemcpy(b->scales, scales, (size_t)(n * S * 4),
                           cudaMemcpyHostToDevice));
        free(ids);
        free(w);
        free(scales);
        b->out_index = dev_alloc(n * K * 4);
        b->m_indices = dev_alloc(s->capacity * 4);
        if (c->index_only) {
            b->row_source = dev_alloc(s->capacity * 4);
            continue;
        }
        { /* the yardstick's */
            const int64_t most = s->scatter_bytes > s->gather_bytes
                                     ? s->scatter_bytes
                                     : s->gather_bytes;
            b->copy_src = dev_random(most / 2);
            b->copy_dst = dev_alloc(most / 2);
        }
        /* fp8 e4m3 rows: any bytes (the scatter copies them). */
        b->x = dev_random(n * H);
        b->out = dev_alloc(s->capacity * H);
        b->out_scales = dev_alloc(s->capacity * S * 4);
        b->gather_out = dev_alloc(n * H * 2);
        b->y = dev_alloc(y_bytes);
        {
            void *block =
                dev_finite_bf16(y_bytes < y_block ? y_bytes : y_block);
            for (int64_t off = 0; off < y_bytes; off += y_block) {
                int64_t len =
                    y_bytes - off < y_block ? y_bytes - off : y_block;
                CUDA_OK(cudaMemcpy((char *)b->y + off, block, (size_t)len,
                                   cudaMemcpyDeviceToDevice));
            }
            CUDA_OK(cudaFree(block));
        }
    }
}

static void free_case(case_state *s)
{
    for (int i = 0; i < sets_used; i++) {
        set_buffers *b = &s->sets[i];
        void *all[] = {b->ids, b->x, b->scales, b->weights, b->out,
                       b->out_scales, b->out_index, b->m_indices, b->y,
                       b->gather_out, b->row_source, b->copy_src,
                       b->copy_dst};
        for (size_t j = 0; j < sizeof all / sizeof all[0]; j++)
            cudaFree(all[j]);
    }
    cudaFree(s->map);
}

/* The routing of set i, and the contiguous-layout arguments both
 * scatters share: every index output of the set, its capacity. */
static void scatter_common(const case_state *s, const set_buffers *b,
                           int64_t alignment, moes_routing *r,
                           moes_scatter_args *a)
{
    moes_routing_init(r);
    r->n_tokens = s->c->tokens;
    r->top_k = K;
    r->ids = b->ids;
    r->expert_map = s->map;
    r->n_experts_global = E_GLOBAL;
    r->n_experts = s->c->n_experts;
    moes_scatter_args_init(a);
    a->layout = MOES_LAYOUT_CONTIGUOUS;
    a->alignment = alignment;
    a->capacity = s->capacity;
    a->out_index = b->out_index;
    a->m_indices = b->m_indices;
}

static void scatter_call(moes_context *ctx, const case_state *s, int i)
{
    const set_buffers *b = &s->sets[i % sets_used];
    moes_routing r;
    moes_scatter_args a;
    scatter_common(s, b, A, &r, &a);
    a.x = b->x;
    a.x_dtype = MOES_DTYPE_FP8_E4M3;
    a.hidden = H;
    a.x_scales = b->scales;
    a.scale_block = SCALE_BLOCK;
    a.out = b->out;
    a.out_scales = b->out_scales;
    a.out_scales_format = MOES_SCALES_FP32;
    MOES_OK_OR_DIE(ctx, moes_scatter(ctx, &r, &a));
}

/* The same scatter without rows: its routing and index outputs alone. */
static void routing_call(moes_context *ctx, const case_state *s, int i)
{
    const set_buffers *b = &s->sets[i % sets_used];
    moes_routing r;
    moes_scatter_args a;
    scatter_common(s, b, A, &r, &a);
    MOES_OK_OR_DIE(ctx, moes_scatter(ctx, &r, &a));
}

/* vLLM's moe_align_block_size: sorted_token_ids (row_source, padded with
 * N*K), the expert of each block (m_indices[b * IDX_A]). */
static void index_only_call(moes_context *ctx, const case_state *s, int i)
{
    const set_buffers *b = &s->sets[i % sets_used];
    moes_routing r;
    moes_scatter_args a;
    scatter_common(s, b, IDX_A, &r, &a);
    a.flags = MOES_SCATTER_LABEL_PADDING;
    a.row_source = b->row_source;
    a.row_source_pad = s->c->tokens * K;
    MOES_OK_OR_DIE(ctx, moes_scatter(ctx, &r, &a));
}

static void gather_call(moes_context *ctx, const case_state *s, int i)
{
    const set_buffers *b = &s->sets[i % sets_used];
    moes_gather_args g;
    moes_gather_args_init(&g);
    g.n_tokens = s->c->tokens;
    g.top_k = K;
    g.hidden = H;
    g.y = b->y;
    g.y_dtype = MOES_DTYPE_BF16;
    g.y_rows = s->capacity;
    g.out_index = b->out_index;
    g.weights = b->weights;
    g.out = b->gather_out;
    g.out_dtype = MOES_DTYPE_BF16;
    MOES_OK_OR_DIE(ctx, moes_gather(ctx, &g));
}

/* The stream every call is queued on. */
static cudaStream_t bench_stream;

/* The yardstick: the runtime's device copy of s->copy_bytes, queued on
 * the stream (moes_copy_within waits for its copy, so no graph can hold
 * it). */
static void copy_call(moes_context *ctx, const case_state *s, int i)
{
    const set_buffers *b = &s->sets[i % sets_used];
    (void)ctx;
    CUDA_OK(cudaMemcpyAsync(b->copy_dst, b->copy_src, (size_t)s->copy_bytes,
                            cudaMemcpyDeviceToDevice, bench_stream));
}

/* The floor of a scatter's stores: the runtime's memset of
 * s->store_bytes at the start of the set's out (the scatter's rows land
 * in the same buffer, at the places its routing gives them). With 16
 * bytes it is the cost of one call's node and nothing else. */
static void store_call(moes_context *ctx, const case_state *s, int i)
{
    const set_buffers *b = &s->sets[i % sets_used];
    (void)ctx;
    CUDA_OK(cudaMemsetAsync(b->out, 0x5A, (size_t)s->store_bytes,
                            bench_stream));
}

typedef void (*call_fn)(moes_context *, const case_state *, int);

static int compare_float(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return x < y ? -1 : x > y;
}

/* Microseconds per call of the three timings (graph_bench's header),
 * in this order. */
enum { BACK_TO_BACK, GRAPH, SINGLE, TIMINGS };

static void time_op(moes_context *ctx, cudaStream_t stream,
                    const case_state *s, call_fn call, double us[TIMINGS])
{
    cudaEvent_t e0, e1;
    cudaGraph_t graph;
    cudaGraphExec_t exec;
    float ms, replay_ms[REPLAYS], single_ms[CALLS];
    CUDA_OK(cudaEventCreate(&e0));
    CUDA_OK(cudaEventCreate(&e1));
    for (int i = 0; i < WARMUP; i++)
        call(ctx, s, i);
    CUDA_OK(cudaEventRecord(e0, stream));
    for (int i = 0; i < CALLS; i++)
        call(ctx, s, i);
    CUDA_OK(cudaEventRecord(e1, stream));
    CUDA_OK(cudaEventSynchronize(e1));
    CUDA_OK(cudaEventElapsedTime(&ms, e0, e1));
    us[BACK_TO_BACK] = 1000.0 * ms / CALLS;

    CUDA_OK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal));
    for (int i = 0; i < CALLS; i++)
        call(ctx, s, i);
    CUDA_OK(cudaStreamEndCapture(stream, &graph));
    CUDA_OK(cudaGraphInstantiate(&exec, graph, 0));
    CUDA_OK(cudaGraphLaunch(exec, stream)); /* warm-up */
    for (int r = 0; r < REPLAYS; r++) {
        CUDA_OK(cudaEventRecord(e0, stream));
        CUDA_OK(cudaGraphLaunch(exec, stream));
        CUDA_OK(cudaEventRecord(e1, stream));
        CUDA_OK(cudaEventSynchronize(e1));
        CUDA_OK(cudaEventElapsedTime(&replay_ms[r], e0, e1));
    }
    qsort(replay_ms, REPLAYS, sizeof replay_ms[0], compare_float);
    us[GRAPH] = 1000.0 * replay_ms[REPLAYS / 2] / CALLS;
    CUDA_OK(cudaGraphExecDestroy(exec));
    CUDA_OK(cudaGraphDestroy(graph));

    /* Each call alone, after the last one has finished. */
    for (int i = 0; i < CALLS; i++) {
        CUDA_OK(cudaEventRecord(e0, stream));
        call(ctx, s, i);
        CUDA_OK(cudaEventRecord(e1, stream));
        CUDA_OK(cudaEventSynchronize(e1));
        CUDA_OK(cudaEventElapsedTime(&single_ms[i], e0, e1));
    }
    qsort(single_ms, CALLS, sizeof single_ms[0], compare_float);
    us[SINGLE] = 1000.0 * single_ms[CALLS / 2];
    CUDA_OK(cudaEventDestroy(e0));
    CUDA_OK(cudaEventDestroy(e1));
    MOES_OK_OR_DIE(ctx, moes_synchronize(ctx));
}

int main(int argc, char **argv)
{
    static const bench_case cases[] = {
        {"decode 128 tokens, 256 experts", 128, 256, 0},
        {"EP8 decode 1024 tokens, 32 of 256 experts", 1024, 32, 0},
    };
    static const bench_case index_cases[] = {
        {"decode 128 tokens, 256 experts", 128, 256, 1},
        {"EP8 decode 1024 tokens, 32 of 256 experts", 1024, 32, 1},
        {"prefill 4096 tokens, 256 experts", 4096, 256, 1},
        {"EP8 prefill 32768 tokens, 32 of 256 experts", 32768, 32, 1},
    };
    moes_context_options opts;
    moes_context *ctx;
    cudaStream_t stream;
    double us[2][2][TIMINGS], copy_us[2][TIMINGS];

    if (argc > 1) {
        char *end;
        const long v = strtol(argv[1], &end, 10);
        if (argc > 2 || *end || v < 1 || v > SETS) {
            fprintf(stderr, "usage: graph_bench [SETS_USED, 1 to %d]\n", SETS);
            return 2;
        }
        sets_used = (int)v;
    }
    printf("graph_bench: %d input set%s in turn\n", sets_used,
           sets_used == 1 ? "" : "s");
    CUDA_OK(cudaSetDevice(0));
    CUDA_OK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
    bench_stream = stream;
    moes_context_options_init(&opts);
    opts.backend = MOES_BACKEND_CUDA;
    if (moes_context_create(&ctx, &opts) != MOES_OK) {
        fprintf(stderr, "CUDA context: %s\n", moes_last_error(NULL));
        return 2;
    }
    MOES_OK_OR_DIE(ctx, moes_set_stream(ctx, stream));
    MOES_OK_OR_DIE(ctx, moes_reserve_workspace(ctx, 32768, K, E_GLOBAL));
    for (int c = 0; c < 2; c++) {
        case_state s;
        setup_case(ctx, &cases[c], &s);
        CUDA_OK(cudaDeviceSynchronize());
        /* The scatter first: its out_index feeds the gather. */
        time_op(ctx, stream, &s, scatter_call, us[c][0]);
        time_op(ctx, stream, &s, gather_call, us[c][1]);
        printf("graph_bench: %s (capacity %lld): scatter %.2f us back to "
               "back, %.2f us from a graph, %.2f us a single call; gather "
               "%.2f us back to back, %.2f us from a graph, %.2f us a "
               "single call\n",
               cases[c].name, (long long)s.capacity, us[c][0][BACK_TO_BACK],
               us[c][0][GRAPH], us[c][0][SINGLE], us[c][1][BACK_TO_BACK],
               us[c][1][GRAPH], us[c][1][SINGLE]);
        /* The same bytes through a plain device copy. */
        s.copy_bytes = s.scatter_bytes / 2;
        time_op(ctx, stream, &s, copy_call, copy_us[0]);
        s.copy_bytes = s.gather_bytes / 2;
        time_op(ctx, stream, &s, copy_call, copy_us[1]);
        printf("graph_bench: %s: copies of the same bytes: scatter's "
               "(%.2f MB) %.2f us back to back, %.2f us from a graph, "
               "%.2f us a single call; gather's (%.2f MB) %.2f us back to "
               "back, %.2f us from a graph, %.2f us a single call\n",
               cases[c].name, s.scatter_bytes / 1e6,
               copy_us[0][BACK_TO_BACK], copy_us[0][GRAPH],
               copy_us[0][SINGLE], s.gather_bytes / 1e6,
               copy_us[1][BACK_TO_BACK], copy_us[1][GRAPH],
               copy_us[1][SINGLE]);
        /* The scatter's floor: a row's store cannot start before the
         * routing has placed it, so with this routing a scatter of these
         * ids takes at least its routing plus its stores, less the one
         * call's cost that both of those carry. */
        {
            double route[TIMINGS], stores[TIMINGS], empty[TIMINGS];
            time_op(ctx, stream, &s, routing_call, route);
            s.store_bytes = s.placed_bytes;
            time_op(ctx, stream, &s, store_call, stores);
            s.store_bytes = 16;
            time_op(ctx, stream, &s, store_call, empty);
            printf("graph_bench: %s: the scatter's parts: its routing alone "
                   "%.2f us from a graph; its stores alone (a memset of its "
                   "%.2f MB of placed rows) %.2f; an empty call (a memset of "
                   "16 bytes) %.2f; so a floor of %.2f us from a graph\n",
                   cases[c].name, route[GRAPH], s.placed_bytes / 1e6,
                   stores[GRAPH], empty[GRAPH],
                   route[GRAPH] + stores[GRAPH] - empty[GRAPH]);
        }
        free_case(&s);
    }
    for (size_t c = 0; c < sizeof index_cases / sizeof index_cases[0]; c++) {
        case_state s;
        double t[TIMINGS];
        setup_case(ctx, &index_cases[c], &s);
        CUDA_OK(cudaDeviceSynchronize());
        time_op(ctx, stream, &s, index_only_call, t);
        printf("graph_bench: index-only %s (capacity %lld, alignment %d): "
               "%.2f us back to back, %.2f us from a graph, %.2f us a "
               "single call\n",
               index_cases[c].name, (long long)s.capacity, IDX_A,
               t[BACK_TO_BACK], t[GRAPH], t[SINGLE]);
        free_case(&s);
    }
    moes_context_destroy(ctx);
    CUDA_OK(cudaStreamDestroy(stream));
    return 0;
}
