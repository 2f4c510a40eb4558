/* SPDX-License-Identifier: MIT */
/*
 * fuzz_args.c - any argument set for moes_count, moes_distinct_experts,
 * moes_scatter and moes_gather on the CPU backend.
 *
 * The input becomes the sizes, strides, dtypes, flags, layout, alignment,
 * capacity, struct_size, which pointers are NULL, the thread count, and
 * the values of ids, the expert map, out_index and the data. Every buffer
 * is exactly as large as the arguments claim; outputs sit between
 * canaries and start canary-filled. Then:
 *   - the library and the test kit's oracle return the same status;
 *   - on success every output byte equals the oracle's;
 *   - on failure no output byte changed and there is a message;
 *   - never a guard overwritten, a crash or a sanitizer report.
 *
 * One call in four places every buffer inside one arena instead, each at
 * an offset the input chooses: after the others (with a gap of 0 to 24
 * bytes, so sometimes touching), or inside an earlier one (an overlap,
 * now and then misaligned). The oracle gets a copy of the arena with the
 * same layout and alignment, so it sees the same overlaps; on success the
 * two arenas must then be equal byte for byte (a write outside an output
 * shows up there), on failure the library's must be untouched. One call
 * in 32 allows buffers of up to 8 MiB instead of 256 KiB (longer rows,
 * more than one gather chunk, larger capacities).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "casegen.h"
#include "elements.h"
#include "fuzz_check.h"
#include "fuzz_context.h"
#include "fuzz_extent.h"
#include "fuzz_guard.h"
#include "fuzz_input.h"
#include "fuzz_random.h"
#include "moescatter.h"
#include "oracle.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

enum { MAX_BUFFERS = 16 };

/* Buffers in arena mode: where each one lies in the arena. */
enum { MAX_PLACED = 2 * MAX_BUFFERS };

/* The buffers of one call: inputs (exact, plain) and outputs (guarded). */
typedef struct call_buffers {
    void *inputs[MAX_BUFFERS];
    int n_inputs;
    fz_buf outputs[MAX_BUFFERS];
    const char *names[MAX_BUFFERS];
    void *expected[MAX_BUFFERS]; /* the oracle's copy of each output     */
    int n_outputs;
    int skip;        /* a valid size too large to run fast               */
    int overflowed;  /* a claimed size that does not fit int64           */
    uint64_t seed;
    int64_t max_bytes; /* a larger buffer skips the call                 */
    /* Arena mode: each buffer's own allocation and its place. */
    int arena;
    fz_input *in;
    const void *staged[MAX_PLACED];
    size_t staged_len[MAX_PLACED], placed[MAX_PLACED], arena_end;
    int n_staged;
    fz_buf lib_arena;    /* the library's buffers, between guards        */
    uint8_t *oracle_arena; /* the oracle's copy, same layout            */
} call_buffers;

/* Thread counts by slot: one, a few, more than the cores, and one far
 * past what any machine runs (the library caps it). */
static const int thread_counts[] = {1, 2, 3, 4, 7, 100000};

/* The contexts that live for the whole run, one per thread count. */
static moes_context *cpu_context(int slot)
{
    static moes_context *contexts[6];
    if (!contexts[slot])
        contexts[slot] = fz_cpu_context(thread_counts[slot]);
    return contexts[slot];
}

/* Sizes an argument; returns the byte count to allocate, or marks the
 * call skipped or bound to fail. */
static size_t claim(call_buffers *cb, int64_t rows, int64_t stride,
                    int64_t row_len, int64_t elem)
{
    size_t bytes;
    switch (fz_extent_max(rows, stride, row_len, elem, cb->max_bytes,
                          &bytes)) {
    case FZ_EXTENT_TOO_BIG:
        cb->skip = 1;
        return 0;
    case FZ_EXTENT_OVERFLOW:
        cb->overflowed = 1;
        return 0;
    default:
        return bytes;
    }
}

/* A buffer left NULL still has a claimed size, which the library checks
 * too: one beyond int64 makes the call bound to fail. */
static void claim_absent(call_buffers *cb, int64_t rows, int64_t stride,
                         int64_t row_len, int64_t elem)
{
    size_t bytes;
    if (fz_extent(rows, stride, row_len, elem, &bytes) == FZ_EXTENT_OVERFLOW)
        cb->overflowed = 1;
}

/* Arena mode: where a buffer of len bytes goes. Mostly after the others
 * (8-byte aligned, with a gap of 0, 8, 16 or 24 bytes); one time in
 * five inside an earlier buffer (or just past its end), 8-byte aligned
 * unless the input asks for an odd offset. */
static void place(call_buffers *cb, const void *p, size_t len)
{
    uint8_t b;
    size_t off;
    if (!cb->arena || cb->n_staged >= MAX_PLACED)
        return;
    b = fz_u8(cb->in);
    if (cb->n_staged > 0 && b >= 204) {
        int i = b % cb->n_staged;
        off = cb->placed[i] + fz_u8(cb->in) % (cb->staged_len[i] + 1);
        if ((b & 15) != 15)
            off &= ~(size_t)7;
    } else {
        off = ((cb->arena_end + 7) & ~(size_t)7) + (size_t)(b % 4) * 8;
    }
    cb->staged[cb->n_staged] = p;
    cb->staged_len[cb->n_staged] = len;
    cb->placed[cb->n_staged] = off;
    cb->n_staged++;
    if (off + len > cb->arena_end)
        cb->arena_end = off + len;
}

/* An input of len bytes; its contents come from fill (or noise). */
static void *add_input(call_buffers *cb, size_t len, const void *fill)
{
    void *p;
    if (cb->skip)
        return NULL;
    p = fz_input_copy(fill, len);
    if (!p)
        fz_fail("out of memory");
    if (!fill)
        fz_fill_bytes(p, len, &cb->seed);
    cb->inputs[cb->n_inputs++] = p;
    place(cb, p, len);
    return p;
}

/* An output of len bytes, canary-filled (or holding init). */
static void *add_output(call_buffers *cb, const char *name, size_t len,
                        const void *init)
{
    fz_buf *b;
    if (cb->skip)
        return NULL;
    b = &cb->outputs[cb->n_outputs];
    if (!fz_buf_alloc(b, len))
        fz_fail("out of memory");
    if (init)
        fz_buf_set(b, init);
    cb->names[cb->n_outputs] = name;
    cb->expected[cb->n_outputs] = fz_input_copy(b->initial, len);
    cb->n_outputs++;
    place(cb, b->data, len);
    return b->data;
}

/* Arena mode: both arenas, each buffer's contents copied to its place
 * (in the order they were added: a later buffer placed over an earlier
 * one wins, as it would in the caller's memory). */
static void build_arenas(call_buffers *cb)
{
    size_t len = cb->arena_end;
    uint8_t *data = malloc(len ? len : 1);
    if (!data || !fz_buf_alloc(&cb->lib_arena, len))
        fz_fail("out of memory");
    memcpy(data, cb->lib_arena.data, len);
    for (int i = 0; i < cb->n_staged; i++)
        if (cb->staged_len[i])
            memcpy(data + cb->placed[i], cb->staged[i], cb->staged_len[i]);
    fz_buf_set(&cb->lib_arena, data);
    cb->oracle_arena = data;
}

/* The arena address of a buffer, in the arena at base (NULL stays NULL;
 * a pointer the fuzzer did not place stays as it is). */
static void *in_arena(const call_buffers *cb, const void *p, uint8_t *base)
{
    if (!p)
        return NULL;
    for (int i = 0; i < cb->n_staged; i++)
        if (cb->staged[i] == p)
            return base + cb->placed[i];
    return (void *)p;
}

static void routing_in_arena(const call_buffers *cb, moes_routing *r,
                             uint8_t *base)
{
    r->ids = in_arena(cb, r->ids, base);
    r->expert_map = in_arena(cb, r->expert_map, base);
}

static void scatter_in_arena(const call_buffers *cb, moes_scatter_args *a,
                             uint8_t *base)
{
    a->x = in_arena(cb, a->x, base);
    a->x_scales = in_arena(cb, a->x_scales, base);
    a->out = in_arena(cb, a->out, base);
    a->out_scales = in_arena(cb, a->out_scales, base);
    a->out_index = in_arena(cb, a->out_index, base);
    a->counts = in_arena(cb, a->counts, base);
    a->expert_start = in_arena(cb, a->expert_start, base);
    a->expert_end = in_arena(cb, a->expert_end, base);
    a->m_indices = in_arena(cb, a->m_indices, base);
    a->masked_m = in_arena(cb, a->masked_m, base);
    a->n_dropped = in_arena(cb, a->n_dropped, base);
    a->row_source = in_arena(cb, a->row_source, base);
}

static void gather_in_arena(const call_buffers *cb, moes_gather_args *a,
                            uint8_t *base)
{
    a->y = in_arena(cb, a->y, base);
    a->out_index = in_arena(cb, a->out_index, base);
    a->weights = in_arena(cb, a->weights, base);
    a->out = in_arena(cb, a->out, base);
}

/* The oracle's copy of the output whose data is p (NULL stays NULL). */
static void *expected_of(call_buffers *cb, const void *p)
{
    if (!p)
        return NULL;
    for (int i = 0; i < cb->n_outputs; i++)
        if (cb->outputs[i].data == p)
            return cb->expected[i];
    fz_fail("internal: unknown output");
}

static void free_buffers(call_buffers *cb)
{
    if (cb->oracle_arena) {
        fz_buf_free(&cb->lib_arena);
        free(cb->oracle_arena);
    }
    for (int i = 0; i < cb->n_inputs; i++)
        free(cb->inputs[i]);
    for (int i = 0; i < cb->n_outputs; i++) {
        fz_buf_free(&cb->outputs[i]);
        free(cb->expected[i]);
    }
}

static int is_data_error(int st)
{
    return st == MOES_ERR_INVALID_ID || st == MOES_ERR_INVALID_MAP ||
           st == MOES_ERR_INVALID_OUT_INDEX || st == MOES_ERR_CAPACITY ||
           st == MOES_ERR_INVALID_SCALE;
}

/* The verdict on one call in arena mode: the library's arena against the
 * oracle's. */
static void judge_arena(call_buffers *cb, const char *op, moes_context *ctx,
                        int got, int want)
{
    const fz_buf *a = &cb->lib_arena;
    if (!fz_buf_guards_ok(a))
        fz_fail("%s wrote outside the arena (status %d)", op, got);
    if (cb->overflowed) {
        if (got == MOES_OK)
            fz_fail("%s accepted a buffer whose size overflows int64", op);
        want = got;
    }
    if (got != want)
        fz_fail("%s returned %d (%s: %s), the oracle %d (%s: %s), buffers "
                "in one arena", op, got, moes_strerror(got),
                moes_last_error(ctx), want, moes_strerror(want),
                moes_oracle_last_error());
    if (got != MOES_OK) {
        const char *msg = moes_last_error(ctx);
        if (!msg || !*msg)
            fz_fail("%s returned %d with no message", op, got);
        if (!fz_buf_untouched(a))
            fz_fail("%s returned %d (%s) but changed arena byte %lld", op,
                    got, msg, (long long)fz_buf_diff(a, a->initial));
        if (is_data_error(got) && !cb->overflowed &&
            strcmp(msg, moes_oracle_last_error()) != 0)
            fz_fail("%s: message \"%s\", the oracle's \"%s\"", op, msg,
                    moes_oracle_last_error());
        return;
    }
    {
        int64_t at = fz_buf_diff(a, cb->oracle_arena);
        if (at >= 0)
            fz_fail("%s: arena byte %lld is 0x%02x, the oracle's 0x%02x",
                    op, (long long)at, a->data[at], cb->oracle_arena[at]);
    }
}

/* The verdict on one call, given the library's and the oracle's status. */
static void judge(call_buffers *cb, const char *op, moes_context *ctx,
                  int got, int want)
{
    for (int i = 0; i < cb->n_outputs; i++)
        if (!fz_buf_guards_ok(&cb->outputs[i]))
            fz_fail("%s wrote outside %s (status %d)", op, cb->names[i], got);
    if (cb->overflowed) {
        /* A claimed size beyond int64: the call must fail. The oracle is
         * not asked (its buffers would be as fictitious as the size). */
        if (got == MOES_OK)
            fz_fail("%s accepted a buffer whose size overflows int64", op);
        want = got;
    }
    if (got != want)
        fz_fail("%s returned %d (%s: %s), the oracle %d (%s: %s)", op, got,
                moes_strerror(got), moes_last_error(ctx), want,
                moes_strerror(want), moes_oracle_last_error());
    if (got != MOES_OK) {
        const char *msg = moes_last_error(ctx);
        if (!msg || !*msg)
            fz_fail("%s returned %d with no message", op, got);
        for (int i = 0; i < cb->n_outputs; i++)
            if (!fz_buf_untouched(&cb->outputs[i]))
                fz_fail("%s returned %d (%s) but changed %s at byte %lld",
                        op, got, msg, cb->names[i],
                        (long long)fz_buf_diff(&cb->outputs[i],
                                               cb->outputs[i].initial));
        if (is_data_error(got) && !cb->overflowed &&
            strcmp(msg, moes_oracle_last_error()) != 0)
            fz_fail("%s: message \"%s\", the oracle's \"%s\"", op, msg,
                    moes_oracle_last_error());
        return;
    }
    for (int i = 0; i < cb->n_outputs; i++) {
        int64_t at = fz_buf_diff(&cb->outputs[i], cb->expected[i]);
        if (at >= 0)
            fz_fail("%s: %s differs from the oracle at byte %lld (0x%02x, "
                    "oracle 0x%02x)", op, cb->names[i], (long long)at,
                    cb->outputs[i].data[at],
                    ((const uint8_t *)cb->expected[i])[at]);
    }
}

/* ------------------------------------------------------------------ */
/* Decoding                                                           */
/* ------------------------------------------------------------------ */

static size_t decode_struct_size(fz_input *in, size_t right)
{
    uint8_t b = fz_u8(in);
    if (b < 248)
        return right;
    return b == 248 ? 0
           : b == 249 ? right - 8
           : b == 250 ? right + 8
           : right - 1;
}

/* An index dtype: int32 or int64 mostly, sometimes anything. */
static int decode_index_dtype(fz_input *in)
{
    static const int wild[] = {0, MOES_DTYPE_FP32, MOES_DTYPE_BF16, 8, -1};
    uint8_t b = fz_u8(in);
    if (b < 240)
        return b & 1 ? MOES_DTYPE_INT64 : MOES_DTYPE_INT32;
    return wild[b % 5];
}

/* A float dtype from `first` to MOES_DTYPE_FP32, sometimes anything. */
static int decode_float_dtype(fz_input *in, int first)
{
    static const int wild[] = {0, MOES_DTYPE_INT32, MOES_DTYPE_INT64, 8, -1,
                               MOES_DTYPE_FP8_E4M3};
    uint8_t b = fz_u8(in);
    if (b < 240)
        return first + b % (MOES_DTYPE_FP32 - first + 1);
    return wild[b % 6];
}

/* a + b and a * b, clamped to int64 (sizes here may be wild). */
static int64_t sat(__int128 v)
{
    return v > INT64_MAX ? INT64_MAX : v < INT64_MIN ? INT64_MIN : (int64_t)v;
}

/* A row stride: 0 (dense), the row plus a little, or anything. */
static int64_t decode_stride(fz_input *in, int64_t row)
{
    uint8_t b = fz_u8(in);
    if (b < 128)
        return 0;
    if (b < 232)
        return sat((__int128)row + b % 4);
    if (b < 240)
        return sat((__int128)row - 1 - b % 2);
    return fz_wild(in);
}

/* Counts of experts stay small when valid (the workspace grows with E). */
static int64_t decode_experts(fz_input *in, int64_t hi)
{
    static const int64_t wild[] = {0, -1, INT64_MIN, 4096};
    uint8_t b = fz_u8(in);
    if (b < 240)
        return 1 + b % hi;
    return wild[b % 4];
}

/* Which required pointers are left NULL: none, mostly. */
static uint8_t decode_nulls(fz_input *in)
{
    return fz_u8(in) >= 224 ? fz_u8(in) : 0;
}

/* An id or map entry in [-1, limit) mostly, sometimes just outside, or
 * anything. */
FZ_NO_COVERAGE static int64_t decode_entry(fz_input *in, int64_t limit)
{
    uint8_t b = fz_u8(in);
    if (limit < 1 || limit > 64)
        limit = 64;
    if (b < 224)
        return (int64_t)(b % (limit + 1)) - 1;
    if (b < 236)
        return limit + b % 3;
    if (b < 248)
        return -2 - b % 3;
    return fz_wild(in);
}

/* ids [N][stride] with values everywhere, padding included (a library
 * that read past K would then see garbage). */
FZ_NO_COVERAGE static void *decode_ids(fz_input *in, call_buffers *cb,
                                       moes_routing *r, int64_t id_limit)
{
    size_t elem = moes_case_dtype_bytes(r->ids_dtype), bytes, n;
    void *ids;
    if (elem != 4 && elem != 8)
        elem = 4;
    bytes = claim(cb, r->n_tokens,
                  r->ids_stride == 0 ? r->top_k : r->ids_stride,
                  r->top_k, (int64_t)elem);
    ids = add_input(cb, bytes, NULL);
    if (!ids)
        return NULL;
    n = bytes / elem;
    for (size_t i = 0; i < n; i++)
        store_index(ids, elem, (int64_t)i, decode_entry(in, id_limit));
    return ids;
}

/* n map entries in [-1, n_experts) mostly. */
FZ_NO_COVERAGE static void decode_map(fz_input *in, int32_t *map, int64_t n,
                                      int64_t n_experts)
{
    for (int64_t i = 0; i < n; i++)
        map[i] = (int32_t)decode_entry(in, n_experts);
}

/* The routing part of count and scatter. */
static void decode_routing(fz_input *in, call_buffers *cb, moes_routing *r,
                           int *routing_null)
{
    uint8_t shape = fz_u8(in);
    moes_routing_init(r);
    r->struct_size = decode_struct_size(in, sizeof *r);
    r->n_tokens = fz_size(in, 0, 12);
    r->top_k = fz_size(in, 1, 5);
    r->n_experts = decode_experts(in, 9);
    r->ids_dtype = decode_index_dtype(in);
    r->ids_stride = decode_stride(in, r->top_k);
    *routing_null = shape == 255;
    /* shape: bit 0 a map, bits 3-4 that map dropped (E_global kept) or,
     * without a map, E_global given; bits 5-6 ids NULL. */
    if (shape & 1) {
        /* With a map: E_global of its own, entries in [-1, E). */
        int64_t g = decode_experts(in, 12);
        size_t bytes = claim(cb, 1, g, g, 4);
        int32_t *map = add_input(cb, bytes, NULL);
        r->n_experts_global = g;
        r->expert_map = map;
        if (map)
            decode_map(in, map, (int64_t)(bytes / 4), r->n_experts);
        if ((shape & 0x18) == 0x18 && !cb->skip)
            r->expert_map = NULL; /* E_global without its map */
    } else {
        r->n_experts_global = (shape & 0x18) == 0x18 ? fz_size(in, 0, 10) : 0;
    }
    if ((shape & 0x60) != 0x60 || r->n_tokens == 0)
        r->ids = decode_ids(in, cb, r,
                            r->expert_map || r->n_experts_global > 0
                                ? r->n_experts_global
                                : r->n_experts);
    else
        claim_absent(cb, r->n_tokens, r->ids_stride, r->top_k, 8);
}

/* Counts per local expert of the valid (t, k), for choosing capacities
 * near the edge. Returns the rows the contiguous layout needs and the
 * largest count. */
FZ_NO_COVERAGE static void rows_needed(const moes_routing *r,
                                       int64_t alignment, int64_t *rows,
                                       int64_t *largest)
{
    int64_t counts[64] = {0};
    size_t elem = moes_case_dtype_bytes(r->ids_dtype);
    int64_t stride = r->ids_stride ? r->ids_stride : r->top_k;
    if (!r->ids || r->n_experts < 1 || r->n_experts > 64 || r->n_tokens > 64 ||
        r->top_k > 64 || stride < r->top_k || (elem != 4 && elem != 8))
        return;
    for (int64_t t = 0; t < r->n_tokens; t++)
        for (int64_t k = 0; k < r->top_k; k++) {
            int64_t id, e;
            if (elem == 4) {
                int32_t v;
                memcpy(&v, (const char *)r->ids + 4 * (t * stride + k), 4);
                id = v;
            } else {
                memcpy(&id, (const char *)r->ids + 8 * (t * stride + k), 8);
            }
            if (id < 0 || id >= (r->expert_map ? r->n_experts_global
                                                : r->n_experts))
                continue;
            e = r->expert_map ? r->expert_map[id] : id;
            if (e >= 0 && e < r->n_experts)
                counts[e]++;
        }
    for (int64_t e = 0; e < r->n_experts; e++) {
        if (alignment >= 1 && alignment <= 1024)
            *rows += (counts[e] + alignment - 1) / alignment * alignment;
        if (counts[e] > *largest)
            *largest = counts[e];
    }
}

/* ------------------------------------------------------------------ */
/* The three operations                                               */
/* ------------------------------------------------------------------ */

/* Steps past which the oracle is not run on an input: its placement
 * walks the N*K choices once per expert, its distinct rows walk each
 * token's K choices up to K times. */
#define ORACLE_WORK_MAX ((int64_t)1 << 26)

/* The oracle's rows of moes_distinct_experts: K walks over each token's
 * K choices. */
static int oracle_distinct_too_slow(const moes_routing *r)
{
    int64_t choices, steps;
    if (r->n_tokens <= 0 || r->top_k <= 0)
        return 0;
    return __builtin_mul_overflow(r->n_tokens, r->top_k, &choices) ||
           __builtin_mul_overflow(choices, r->top_k, &steps) ||
           steps > ORACLE_WORK_MAX;
}

static int oracle_too_slow(const moes_routing *r)
{
    int64_t choices, steps;
    if (r->n_experts <= 0 || r->n_tokens <= 0 || r->top_k <= 0)
        return 0;
    return __builtin_mul_overflow(r->n_tokens, r->top_k, &choices) ||
           __builtin_mul_overflow(choices, r->n_experts, &steps) ||
           steps > ORACLE_WORK_MAX;
}

/* moes_count and moes_distinct_experts: a routing and one index output,
 * [1][E] for the counts, [N][stride] for the distinct experts. */
typedef struct routing_call {
    const char *name, *output;
    int distinct;
    int (*lib)(moes_context *, const moes_routing *, void *, int, int64_t);
    int (*oracle)(const moes_routing *, void *, int, int64_t);
} routing_call;

/* The counts are one row: no stride. */
static int count_lib(moes_context *ctx, const moes_routing *r, void *out,
                     int dtype, int64_t stride)
{
    (void)stride;
    return moes_count(ctx, r, out, dtype);
}

static int count_oracle(const moes_routing *r, void *out, int dtype,
                        int64_t stride)
{
    (void)stride;
    return moes_oracle_count(r, out, dtype);
}

static const routing_call count_call = {"moes_count", "counts", 0,
                                        count_lib, count_oracle};
static const routing_call distinct_call = {
    "moes_distinct_experts", "out", 1, moes_distinct_experts,
    moes_oracle_distinct_experts};

static void fuzz_routing_call(fz_input *in, call_buffers *cb,
                              moes_context *ctx, const routing_call *call)
{
    moes_routing r;
    int routing_null, dtype, got, want;
    int64_t stride;
    void *out = NULL;
    uint8_t present;

    decode_routing(in, cb, &r, &routing_null);
    dtype = decode_index_dtype(in);
    stride = call->distinct ? decode_stride(in, r.top_k) : 0;
    present = fz_u8(in);
    if (present < 240) {
        size_t elem = moes_case_dtype_bytes(dtype);
        const int64_t rows = call->distinct ? r.n_tokens : 1;
        const int64_t cols = call->distinct ? r.top_k : r.n_experts;
        out = add_output(cb, call->output,
                         claim(cb, rows, call->distinct ? stride : cols,
                               cols, elem ? (int64_t)elem : 8),
                         NULL);
    }
    if (cb->skip)
        return;
    if (call->distinct && oracle_distinct_too_slow(&r)) {
        call->lib(ctx, routing_null ? NULL : &r, out, dtype, stride);
        return;
    }
    if (cb->arena) {
        moes_routing ro = r;
        build_arenas(cb);
        routing_in_arena(cb, &r, cb->lib_arena.data);
        routing_in_arena(cb, &ro, cb->oracle_arena);
        got = call->lib(ctx, routing_null ? NULL : &r,
                        in_arena(cb, out, cb->lib_arena.data), dtype,
                        stride);
        want = cb->overflowed
                   ? MOES_OK
                   : call->oracle(routing_null ? NULL : &ro,
                                  in_arena(cb, out, cb->oracle_arena), dtype,
                                  stride);
        judge_arena(cb, call->name, ctx, got, want);
        return;
    }
    got = call->lib(ctx, routing_null ? NULL : &r, out, dtype, stride);
    want = cb->overflowed ? MOES_OK
                          : call->oracle(routing_null ? NULL : &r,
                                         expected_of(cb, out), dtype, stride);
    judge(cb, call->name, ctx, got, want);
}

static void fuzz_scatter(fz_input *in, call_buffers *cb, moes_context *ctx)
{
    moes_routing r;
    moes_scatter_args a, e;
    int routing_null, args_null, got, want, overflowed;
    int64_t out_rows = 0, n_scales = 0, cols = 0, rs, cs, needed, largest;
    size_t x_elem, ie;
    uint8_t b, present, nulls, rows_byte;

    decode_routing(in, cb, &r, &routing_null);
    moes_scatter_args_init(&a);
    a.struct_size = decode_struct_size(in, sizeof a);
    b = fz_u8(in);
    args_null = b == 255;
    a.layout = b < 240 ? 1 + b % 3 : (b & 1 ? 0 : 4);
    b = fz_u8(in);
    a.flags = b < 240 ? (unsigned)(b & 7) : 8u << (b % 28);
    b = fz_u8(in);
    a.alignment = b < 240 ? (b % 16 == 15 ? 128 : 1 + b % 8) : fz_wild(in);
    needed = largest = 0;
    if (!cb->skip && !cb->overflowed)
        rows_needed(&r, a.alignment, &needed, &largest);
    b = fz_u8(in);
    if (a.layout == MOES_LAYOUT_MASKED)
        needed = largest;
    switch (b % 8) {
    case 0: case 1: case 2: case 3: a.capacity = needed + (b >> 3) % 3; break;
    case 4: a.capacity = needed > 0 ? needed - 1 : 0; break;
    case 5:
        a.capacity = cb->max_bytes > FZ_MAX_BUFFER_BYTES
                         ? fz_range(in, 0, 60000)
                         : fz_range(in, 0, 40);
        break;
    case 6:
        if (moes_scatter_capacity(NULL, a.layout, r.n_tokens, r.top_k,
                                  r.n_experts, a.alignment,
                                  &a.capacity) != MOES_OK)
            a.capacity = needed;
        break;
    default: a.capacity = fz_wild(in); break;
    }
    a.x_dtype = decode_float_dtype(in, MOES_DTYPE_FP8_E4M3);
    b = fz_u8(in);
    a.hidden = b >= 240 ? fz_wild(in)
               : cb->max_bytes > FZ_MAX_BUFFER_BYTES ? 1 + (b * 41) % 6000
                                                     : 1 + b % 24;
    a.x_stride = decode_stride(in, a.hidden);
    a.out_stride = decode_stride(in, a.hidden);
    a.index_dtype = decode_index_dtype(in);
    a.out_index_stride = decode_stride(in, r.top_k);
    /* present: bit 0 scales (in and out); without them, bit 1 an
     * out_scales_format anyway and bit 2 an out_scales buffer too; bits
     * 3-7 counts, expert_start, expert_end, m_indices, masked_m (or
     * n_dropped when masked) where the layout leaves them optional.
     * nulls: bits 0-5 leave x, out, out_index, expert_end (grouped),
     * m_indices (contiguous), masked_m (masked) NULL; bit 6 passes
     * masked_m / n_dropped to a layout that is not masked; bit 7 leaves
     * out_scales NULL. */
    present = fz_u8(in);
    nulls = decode_nulls(in);
    /* rows: bit 0 a row_source output; bits 1-2 its pad (-1, N*K, a
     * value of the index type, anything); bit 3 index-only (no x, out
     * or scales) when bit 0 of present leaves the scales out. */
    rows_byte = fz_u8(in);
    x_elem = moes_case_dtype_bytes(a.x_dtype);
    ie = moes_case_dtype_bytes(a.index_dtype);
    if (!x_elem)
        x_elem = 1;
    if (!ie)
        ie = 8;
    if (a.layout == MOES_LAYOUT_MASKED) {
        __int128 rows = (__int128)(r.n_experts > 0 ? r.n_experts : 0) *
                        (a.capacity > 0 ? a.capacity : 0);
        if (rows > INT64_MAX)
            cb->overflowed = 1;
        else
            out_rows = (int64_t)rows;
    } else {
        out_rows = a.capacity;
    }

    if (present & 1) {
        /* Scales in and out. */
        b = fz_u8(in);
        a.scale_block = b < 240 ? 1 + b % 9 : fz_wild(in);
        if (a.hidden >= 1 && a.scale_block >= 1)
            n_scales = (a.hidden - 1) / a.scale_block + 1;
        a.x_scales_stride = decode_stride(in, n_scales);
        b = fz_u8(in);
        a.out_scales_format = b < 240 ? 1 + b % 2 : (b & 1 ? 0 : 3);
        cols = a.out_scales_format == MOES_SCALES_UE8M0
                   ? n_scales / 4 + (n_scales % 4 != 0)
                   : n_scales;
        b = fz_u8(in);
        switch (b % 6) {
        case 0: rs = 0; cs = 0; break;
        case 1:
            cs = 1 + b / 6 % 2;
            rs = sat((__int128)cols * cs + b / 12 % 3);
            break;
        case 2: rs = 1; cs = sat((__int128)out_rows + b / 6 % 3); break;
        case 3: rs = fz_range(in, 0, 12); cs = fz_range(in, 0, 12); break;
        case 4: rs = fz_wild(in); cs = fz_range(in, 0, 3); break;
        default: rs = fz_range(in, 0, 12); cs = fz_wild(in); break;
        }
        a.out_scales_row_stride = rs;
        a.out_scales_col_stride = cs;
        a.x_scales = add_input(cb,
                               claim(cb, r.n_tokens, a.x_scales_stride,
                                     n_scales, 4),
                               NULL);
        /* UE8M0 packs powers of two only: mostly give it those (noise
         * would almost always be refused), now and then with one bad
         * scale among them; one time in eight the noise stays. */
        if (a.x_scales && a.out_scales_format == MOES_SCALES_UE8M0 &&
            (cb->seed >> 8) % 8 != 0) {
            size_t n =
                claim(cb, r.n_tokens, a.x_scales_stride, n_scales, 4) / 4;
            uint32_t *xs = (uint32_t *)(void *)a.x_scales;
            for (size_t i = 0; i < n; i++) {
                uint64_t v = fz_next(&cb->seed);
                uint32_t e = v % 16 == 0 ? 1 + (uint32_t)(v >> 8) % 254
                                         : 100 + (uint32_t)(v >> 8) % 56;
                xs[i] = e << 23;
            }
            if (n > 0 && (cb->seed >> 11) % 8 == 0) {
                static const uint32_t bad[] = {0x3FC00000u, 0xBF800000u, 0,
                                               0x80000000u, 0x00400000u,
                                               0x7F800000u, 0x7FC00001u};
                uint64_t v = fz_next(&cb->seed);
                xs[v % n] = bad[(v >> 32) % 7];
            }
        }
        {
            /* ((rows - 1) * rs + (cols - 1) * cs + 1) floats, with the
             * library's defaults for zero strides. */
            size_t bytes = 0;
            if (cs == 0)
                cs = 1;
            if (rs == 0)
                rs = sat((__int128)cols * cs);
            if (rs < 0 || cs < 0) {
                /* The library must reject it: nothing to size. */
            } else if (out_rows > 0 && cols > 0) {
                __int128 n = (__int128)(out_rows - 1) * rs +
                             (__int128)(cols - 1) * cs + 1;
                if (n > INT64_MAX / 4)
                    cb->overflowed = 1;
                else if (n * 4 > cb->max_bytes)
                    cb->skip |= !(nulls & 0x80);
                else
                    bytes = (size_t)n * 4;
            }
            if (!(nulls & 0x80))
                a.out_scales = add_output(cb, "out_scales", bytes, NULL);
        }
    } else if (present & 2) {
        /* Scales out without scales in, or a format without scales. */
        a.out_scales_format = MOES_SCALES_FP32;
        if (present & 4)
            a.out_scales = add_output(cb, "out_scales", 16, NULL);
    }
    /* Whether a row claim overflowed, before x's and out's: an absent x
     * or out overflows only where the library sizes it (below). */
    overflowed = cb->overflowed;
    if ((rows_byte & 8) && !(present & 1)) {
        /* Index-only: nothing of the rows is given. */
        a.out_scales = NULL;
    } else if (!(nulls & 1) || r.n_tokens == 0) {
        a.x = add_input(cb, claim(cb, r.n_tokens, a.x_stride, a.hidden,
                                  (int64_t)x_elem),
                        NULL);
    } else {
        claim_absent(cb, r.n_tokens, a.x_stride, a.hidden, 8);
    }
    if ((rows_byte & 8) && !(present & 1))
        ;
    else if (!(nulls & 2))
        a.out = add_output(cb, "out",
                           claim(cb, out_rows, a.out_stride, a.hidden,
                                 (int64_t)x_elem),
                           NULL);
    else
        claim_absent(cb, out_rows, a.out_stride, a.hidden, 8);
    /* x, x_scales, out and out_scales all NULL, by whichever branch above,
     * is an index-only scatter, whose row sizes the library ignores: the
     * claims of x and out then make nothing overflow. */
    if (!a.x && !a.x_scales && !a.out && !a.out_scales)
        cb->overflowed = overflowed;
    if (!(nulls & 4))
        a.out_index = add_output(cb, "out_index",
                                 claim(cb, r.n_tokens, a.out_index_stride,
                                       r.top_k, (int64_t)ie),
                                 NULL);
    else
        claim_absent(cb, r.n_tokens, a.out_index_stride, r.top_k, 8);
    {
        size_t per_expert = claim(cb, 1, r.n_experts, r.n_experts,
                                  (int64_t)ie);
        int contiguous = a.layout == MOES_LAYOUT_CONTIGUOUS;
        int grouped = a.layout == MOES_LAYOUT_GROUPED;
        int masked = a.layout == MOES_LAYOUT_MASKED;
        if (present & 8)
            a.counts = add_output(cb, "counts", per_expert, NULL);
        if (present & 16)
            a.expert_start = add_output(cb, "expert_start", per_expert, NULL);
        if ((grouped && !(nulls & 8)) || (!grouped && (present & 32)))
            a.expert_end = add_output(cb, "expert_end", per_expert, NULL);
        if ((contiguous && !(nulls & 16)) || (!contiguous && (present & 64)))
            a.m_indices = add_output(cb, "m_indices",
                                     claim(cb, 1, out_rows, out_rows,
                                           (int64_t)ie),
                                     NULL);
        if ((masked && !(nulls & 32)) || (!masked && (present & 128) &&
                                          (nulls & 64)))
            a.masked_m = add_output(cb, "masked_m", per_expert, NULL);
        if ((masked && (present & 128)) || (!masked && (present & 32) &&
                                            (nulls & 64)))
            a.n_dropped = add_output(cb, "n_dropped", 8, NULL);
        if (rows_byte & 1)
            a.row_source = add_output(cb, "row_source",
                                      claim(cb, 1, out_rows, out_rows,
                                            (int64_t)ie),
                                      NULL);
        switch ((rows_byte >> 1) & 3) {
        case 0: a.row_source_pad = -1; break;
        case 1: a.row_source_pad = sat((__int128)r.n_tokens * r.top_k); break;
        case 2: a.row_source_pad = (int32_t)fz_u64(in); break;
        default: a.row_source_pad = fz_wild(in); break;
        }
    }
    if (cb->skip)
        return;
    /* The oracle places each expert's rows with a walk over every choice
     * (as simple as it can be): past ORACLE_WORK_MAX steps one input
     * would take seconds of it. The library still runs on such an input
     * (under the sanitizers); only the comparison is left out. */
    if (oracle_too_slow(&r)) {
        moes_scatter(ctx, routing_null ? NULL : &r, args_null ? NULL : &a);
        return;
    }
    /* The data: rows and scales were filled with noise as allocated. */
    if (cb->arena) {
        moes_routing ro = r;
        moes_scatter_args ao = a;
        build_arenas(cb);
        routing_in_arena(cb, &r, cb->lib_arena.data);
        scatter_in_arena(cb, &a, cb->lib_arena.data);
        routing_in_arena(cb, &ro, cb->oracle_arena);
        scatter_in_arena(cb, &ao, cb->oracle_arena);
        got = moes_scatter(ctx, routing_null ? NULL : &r,
                           args_null ? NULL : &a);
        want = cb->overflowed
                   ? MOES_OK
                   : moes_oracle_scatter(routing_null ? NULL : &ro,
                                         args_null ? NULL : &ao);
        judge_arena(cb, "moes_scatter", ctx, got, want);
        return;
    }
    got = moes_scatter(ctx, routing_null ? NULL : &r, args_null ? NULL : &a);
    e = a;
    e.out = expected_of(cb, a.out);
    e.out_scales = expected_of(cb, a.out_scales);
    e.out_index = expected_of(cb, a.out_index);
    e.counts = expected_of(cb, a.counts);
    e.expert_start = expected_of(cb, a.expert_start);
    e.expert_end = expected_of(cb, a.expert_end);
    e.m_indices = expected_of(cb, a.m_indices);
    e.masked_m = expected_of(cb, a.masked_m);
    e.n_dropped = expected_of(cb, a.n_dropped);
    e.row_source = expected_of(cb, a.row_source);
    want = cb->overflowed ? MOES_OK
                          : moes_oracle_scatter(routing_null ? NULL : &r,
                                                args_null ? NULL : &e);
    judge(cb, "moes_scatter", ctx, got, want);
}

static void fuzz_gather(fz_input *in, call_buffers *cb, moes_context *ctx)
{
    moes_gather_args a, e;
    int args_null, got, want;
    size_t y_elem, out_elem, ie, bytes;
    uint8_t b, nulls;
    void *out_init = NULL;

    moes_gather_args_init(&a);
    a.struct_size = decode_struct_size(in, sizeof a);
    b = fz_u8(in);
    args_null = b == 255;
    a.flags = b < 240 ? (unsigned)(b & 1) : 2u << (b % 30);
    a.n_tokens = fz_size(in, 0, 12);
    a.top_k = fz_size(in, 1, 5);
    b = fz_u8(in);
    a.hidden = b < 224 ? 1 + b % 40
               : b >= 240 ? fz_wild(in)
               : cb->max_bytes > FZ_MAX_BUFFER_BYTES ? fz_range(in, 4000, 9000)
                                                     : fz_range(in, 500, 1100);
    a.y_dtype = decode_float_dtype(in, MOES_DTYPE_BF16);
    a.out_dtype = decode_float_dtype(in, MOES_DTYPE_BF16);
    a.y_rows = fz_size(in, 0, 16);
    a.y_stride = decode_stride(in, a.hidden);
    a.index_dtype = decode_index_dtype(in);
    a.out_index_stride = decode_stride(in, a.top_k);
    a.weights_stride = decode_stride(in, a.top_k);
    a.out_stride = decode_stride(in, a.hidden);
    nulls = decode_nulls(in);
    if (fz_u8(in) & 1)
        nulls |= 4; /* weights given */
    else
        nulls &= (uint8_t)~4;
    y_elem = moes_case_dtype_bytes(a.y_dtype);
    out_elem = moes_case_dtype_bytes(a.out_dtype);
    ie = moes_case_dtype_bytes(a.index_dtype);
    if (!y_elem)
        y_elem = 4;
    if (!out_elem)
        out_elem = 4;
    if (ie != 4 && ie != 8)
        ie = 8;

    if (!(nulls & 1) || a.y_rows == 0) {
        bytes = claim(cb, a.y_rows, a.y_stride, a.hidden, (int64_t)y_elem);
        a.y = add_input(cb, bytes, NULL);
        if (a.y)
            fz_fill_elems((void *)a.y, y_elem, bytes / y_elem, &cb->seed);
    } else {
        claim_absent(cb, a.y_rows, a.y_stride, a.hidden, 8);
    }
    if (!(nulls & 2) || a.n_tokens == 0) {
        void *idx;
        bytes = claim(cb, a.n_tokens, a.out_index_stride, a.top_k,
                      (int64_t)ie);
        idx = add_input(cb, bytes, NULL);
        if (idx)
            for (size_t i = 0; i < bytes / ie; i++)
                store_index(idx, ie, (int64_t)i, decode_entry(in, a.y_rows));
        a.out_index = idx;
    } else {
        claim_absent(cb, a.n_tokens, a.out_index_stride, a.top_k, 8);
    }
    if (nulls & 4) {
        bytes = claim(cb, a.n_tokens, a.weights_stride, a.top_k, 4);
        a.weights = add_input(cb, bytes, NULL);
        if (a.weights)
            fz_fill_elems((void *)a.weights, 4, bytes / 4, &cb->seed);
    }
    /* Without weights their stride is not looked at (nor claimed). */
    if (!(nulls & 8) || a.n_tokens == 0) {
        bytes = claim(cb, a.n_tokens, a.out_stride, a.hidden,
                      (int64_t)out_elem);
        if (a.flags & MOES_GATHER_ACCUMULATE && !cb->skip) {
            out_init = malloc(bytes ? bytes : 1);
            if (!out_init)
                fz_fail("out of memory");
            fz_fill_elems(out_init, out_elem, bytes / out_elem, &cb->seed);
        }
        a.out = add_output(cb, "out", bytes, out_init);
        free(out_init);
    } else {
        claim_absent(cb, a.n_tokens, a.out_stride, a.hidden, 8);
    }
    if (cb->skip)
        return;
    if (cb->arena) {
        moes_gather_args ao = a;
        build_arenas(cb);
        gather_in_arena(cb, &a, cb->lib_arena.data);
        gather_in_arena(cb, &ao, cb->oracle_arena);
        got = moes_gather(ctx, args_null ? NULL : &a);
        want = cb->overflowed ? MOES_OK
                              : moes_oracle_gather(args_null ? NULL : &ao);
        judge_arena(cb, "moes_gather", ctx, got, want);
        return;
    }
    got = moes_gather(ctx, args_null ? NULL : &a);
    e = a;
    e.out = expected_of(cb, a.out);
    want = cb->overflowed ? MOES_OK
                          : moes_oracle_gather(args_null ? NULL : &e);
    judge(cb, "moes_gather", ctx, got, want);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fz_input in = {data, size};
    call_buffers cb;
    uint8_t op = fz_u8(&in);
    /* More than one thread one time in sixteen (2, 3, 4 or 7, and, one
     * time in 256, 100000, which the library caps): a parallel region
     * with sleeping threads costs as much as the rest of the call.
     * fuzz_diff covers the thread counts thoroughly. */
    const int slot = op == 0xFF ? 5 : op >= 0xF0 ? 1 + op % 4 : 0;
    moes_context *ctx, *fresh = NULL;

    memset(&cb, 0, sizeof cb);
    cb.seed = fz_u64(&in);
    /* One call in sixteen on a context of its own, made for it: what a
     * first call meets (no workspace yet, nothing cached) that the
     * long-lived contexts have forgotten. */
    if ((cb.seed >> 56 & 15) == 15)
        ctx = fresh = fz_cpu_context(thread_counts[slot]);
    else
        ctx = cpu_context(slot);
    cb.in = &in;
    cb.arena = (op / 3) % 4 == 1;
    cb.max_bytes = (cb.seed & 31) == 31 ? (int64_t)8 << 20
                                        : FZ_MAX_BUFFER_BYTES;
    switch (op % 3) {
    case 0:
        /* op / 3 % 4 chose the arena; op / 12 splits the routing calls. */
        fuzz_routing_call(&in, &cb, ctx,
                          op / 12 % 2 ? &distinct_call : &count_call);
        break;
    case 1: fuzz_scatter(&in, &cb, ctx); break;
    default: fuzz_gather(&in, &cb, ctx); break;
    }
    free_buffers(&cb);
    moes_context_destroy(fresh);
    return 0;
}
