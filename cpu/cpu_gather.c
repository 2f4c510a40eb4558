/* SPDX-License-Identifier: MIT */
/*
 * cpu_gather.c - the gather on the CPU: check out_index, then for each
 * token sum its rows in k order, a chunk of the hidden dimension at a time
 * so the accumulator stays in L1.
 */
#include <string.h>

#include "cpu_backend.h"
#include "cpu_copy.h"
#include "cpu_fp.h"
#include "cpu_omp.h"
#include "numerics.h"

/* 2048 fp32 accumulators (8 KiB) stay in L1 and give each row of y a
 * long enough sequential run for the hardware prefetcher (which the sums
 * help along: PREFETCH_AHEAD). Beside them, the chunk's output is staged
 * in its dtype (up to 8 KiB more) and then streamed out (gather_chunk).
 * Both live in the context's workspace, one pair per thread, not on the
 * caller's stack: callers on small stacks (fibers, small pthreads) must
 * keep working. */
enum { CHUNK = 2048 };

/* The floats of one thread's accumulators and staged output. */
static int64_t thread_floats(int64_t chunk)
{
    return 2 * chunk;
}

int64_t cpu_gather_workspace_bytes(int threads, int64_t n_tokens,
                                   int64_t hidden)
{
    int64_t team = threads < n_tokens ? threads : n_tokens;
    int64_t chunk = hidden < CHUNK ? hidden : CHUNK;
    if (team < 1)
        team = 1;
    if (chunk < 1)
        chunk = 1;
    /* <= threads * 16 KiB */
    return team * thread_floats(chunk) * (int64_t)sizeof(float);
}

/* Built for AVX-512 (x86-64-v4) and AVX2 as well as the baseline where
 * the compiler can, and picked at load time: the gather is vectorized
 * arithmetic on rows that stream from memory, and wider vectors keep up
 * with the memory (AVX-512 over AVX2: 4-5% on a 2-core AMD EPYC, five
 * alternating rounds, bench/NOTES.md). Results are the same bits either
 * way (no FMA: contraction is off). */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && \
    !defined(__SANITIZE_ADDRESS__)
#define MOES_VECTOR_CLONES                                                  \
    __attribute__((target_clones("arch=x86-64-v4", "avx2", "default")))
#else
#define MOES_VECTOR_CLONES
#endif

/* The flat index t*K+k of token t's first out_index entry outside
 * [-1, M), or bad when that is smaller or there is none. */
static int64_t first_bad_entry(const moes_gather_plan *plan, int64_t t,
                               int64_t bad)
{
    const moes_gather_args *a = &plan->a;
    for (int64_t k = 0; k < a->top_k; k++) {
        int64_t v = moes_index_load(a->out_index, plan->index_elem,
                                    t * a->out_index_stride + k);
        if (!MOES_INDEX_OK(v, a->y_rows))
            return t * a->top_k + k < bad ? t * a->top_k + k : bad;
    }
    return bad;
}

/* Smallest flat index t*K+k of an out_index entry outside [-1, M), or -1. */
static int64_t find_bad_index(const moes_gather_plan *plan, int threads,
                              int64_t grain)
{
    const moes_gather_args *a = &plan->a;
    int64_t bad = INT64_MAX;
    CPU_FOR_TEAM(cpu_team(threads, grain, cpu_work(a->n_tokens, a->top_k)),
                 schedule(static) reduction(min:bad), t, a->n_tokens,
                 bad = first_bad_entry(plan, t, bad));
    return bad == INT64_MAX ? -1 : bad;
}

/* Widens n elements of a bf16, fp16 or fp32 row to fp32. */
MOES_VECTOR_CLONES
static void load_row(float *dst, const void *src, int dtype, int64_t n)
{
    if (dtype == MOES_DTYPE_FP32) {
        memcpy(dst, src, (size_t)n * sizeof *dst);
    } else if (dtype == MOES_DTYPE_BF16) {
        const uint16_t *s = src;
        for (int64_t i = 0; i < n; i++)
            dst[i] = moes_bf16_to_f32(s[i]);
    } else {
        const uint16_t *s = src;
        for (int64_t i = 0; i < n; i++)
            dst[i] = moes_f16_to_f32(s[i]);
    }
}

/* Narrows n fp32 values to the output dtype; returns whether any was a
 * NaN. fp32 values are stored with their NaNs made canonical, as the
 * narrowing conversions do: an accumulated value with no valid k would
 * otherwise carry a signalling NaN or a payload through unchanged. With
 * plain (a first store that the caller repeats when there was a NaN)
 * bf16 and fp32 skip the NaN cases, which cost as much as the rest of
 * the conversion. */
MOES_VECTOR_CLONES
static int store_row(void *dst, const float *src, int dtype, int64_t n,
                     int plain)
{
    uint32_t any = 0;
    if (dtype == MOES_DTYPE_FP32) {
        float *d = dst;
        if (plain)
            for (int64_t i = 0; i < n; i++) {
                any |= (uint32_t)moes_f32_bits_are_nan(
                    moes_f32_to_bits(src[i]));
                d[i] = src[i];
            }
        else
            for (int64_t i = 0; i < n; i++) {
                any |= (uint32_t)moes_f32_bits_are_nan(
                    moes_f32_to_bits(src[i]));
                d[i] = moes_f32_canonical(src[i]);
            }
    } else if (dtype == MOES_DTYPE_BF16) {
        uint16_t *d = dst;
        if (plain)
            for (int64_t i = 0; i < n; i++) {
                const uint32_t u = moes_f32_to_bits(src[i]);
                any |= (uint32_t)moes_f32_bits_are_nan(u);
                d[i] = moes_f32_bits_to_bf16_rne(u);
            }
        else
            for (int64_t i = 0; i < n; i++) {
                any |= (uint32_t)moes_f32_bits_are_nan(
                    moes_f32_to_bits(src[i]));
                d[i] = moes_f32_to_bf16(src[i]);
            }
    } else {
        uint16_t *d = dst;
        for (int64_t i = 0; i < n; i++) {
            any |= (uint32_t)moes_f32_bits_are_nan(moes_f32_to_bits(src[i]));
            d[i] = moes_f32_to_f16(src[i]);
        }
    }
    return any != 0;
}

/* The widened y[i] of a row of any dtype. */
static inline float widen(const void *y, int dtype, int64_t i)
{
    if (dtype == MOES_DTYPE_BF16)
        return moes_bf16_to_f32(((const uint16_t *)y)[i]);
    if (dtype == MOES_DTYPE_FP16)
        return moes_f16_to_f32(((const uint16_t *)y)[i]);
    return ((const float *)y)[i];
}

/* Rows summed in one pass over the accumulators: each pass reads and
 * writes acc once, whatever the number of rows it adds. */
enum { ROWS_PER_PASS = 8 };

/* Each row a pass reads is also asked for this many bytes ahead, a line at
 * a time: eight rows from different places stream at once, and the
 * hardware prefetcher alone kept too few of their lines on the way.
 * 1 KiB ahead took the gather of 256 and 1,024 tokens (DeepSeek-V3, bf16)
 * 6-10% faster on a 2-core AMD EPYC, 512 bytes and 2 KiB nothing that
 * could be measured, nor had the next token's rows asked for 2-8 KiB
 * ahead (bench/NOTES.md). A hint only: an address past the end of y is
 * never loaded, and it is formed as an integer. */
enum { PREFETCH_AHEAD = 1024 };

static inline void prefetch_ahead(const void *p)
{
    __builtin_prefetch((const void *)((uintptr_t)p + PREFETCH_AHEAD), 0, 3);
}

/* acc[i] = (((acc[i] + w[0] y[0][i]) + w[1] y[1][i]) + ...) over G rows
 * of one dtype, in order, each product and sum rounded on its own
 * (moes_gather_sum): the vectorized loop of the common case, a 64-byte
 * line of each row at a time, with the line PREFETCH_AHEAD bytes on asked
 * for. With from_zero the sums start from 0 instead of acc (the first
 * pass of a gather that does not accumulate), so that acc is neither
 * cleared nor read; two loops, so that each vectorizes without a select. */
#define MOES_SUM_LOOP(G, WIDEN, START)                                      \
    for (int64_t i0 = 0; i0 < n; i0 += line) {                              \
        const int64_t i1 = n - i0 < line ? n : i0 + line;                   \
        _Pragma("GCC unroll 8")                                             \
        for (int g = 0; g < (G); g++)                                       \
            prefetch_ahead(r[g] + i0);                                      \
        for (int64_t i = i0; i < i1; i++) {                                 \
            float s = (START);                                              \
            _Pragma("GCC unroll 8")                                         \
            for (int g = 0; g < (G); g++)                                   \
                s = moes_gather_sum(s, wg[g], WIDEN(r[g][i]));              \
            acc[i] = s;                                                     \
        }                                                                   \
    }
#define MOES_SUM_ROWS(NAME, G, T, WIDEN)                                    \
    MOES_VECTOR_CLONES                                                      \
    static void NAME(float *restrict acc, const void *const *y,            \
                     const float *w, int64_t n, int from_zero)              \
    {                                                                       \
        const T *r[G];                                                      \
        float wg[G];                                                        \
        const int64_t line = 64 / (int64_t)sizeof(T);                       \
        _Pragma("GCC unroll 8")                                             \
        for (int g = 0; g < (G); g++) {                                     \
            r[g] = y[g];                                                    \
            wg[g] = w[g];                                                   \
        }                                                                   \
        if (from_zero)                                                      \
            MOES_SUM_LOOP(G, WIDEN, 0.0f)                                   \
        else                                                                \
            MOES_SUM_LOOP(G, WIDEN, acc[i])                                 \
    }

#define MOES_AS_F32(v) (v)
#define MOES_SUM_ROWS_ALL(G)                                                \
    MOES_SUM_ROWS(sum_bf16_##G, G, uint16_t, moes_bf16_to_f32)              \
    MOES_SUM_ROWS(sum_f16_##G, G, uint16_t, moes_f16_to_f32)                \
    MOES_SUM_ROWS(sum_f32_##G, G, float, MOES_AS_F32)
MOES_SUM_ROWS_ALL(1)
MOES_SUM_ROWS_ALL(2)
MOES_SUM_ROWS_ALL(4)
MOES_SUM_ROWS_ALL(8)

typedef void (*sum_rows_fn)(float *restrict, const void *const *,
                            const float *, int64_t, int);

/* The pass for G rows (1, 2, 4 or 8) of dtype. */
static sum_rows_fn sum_rows_for(int dtype, int g)
{
    static const sum_rows_fn bf16[] = {sum_bf16_1, sum_bf16_2, sum_bf16_4,
                                       sum_bf16_8};
    static const sum_rows_fn f16[] = {sum_f16_1, sum_f16_2, sum_f16_4,
                                      sum_f16_8};
    static const sum_rows_fn f32[] = {sum_f32_1, sum_f32_2, sum_f32_4,
                                      sum_f32_8};
    const int at = g >= 8 ? 3 : g >= 4 ? 2 : g >= 2 ? 1 : 0;
    return dtype == MOES_DTYPE_BF16 ? bf16[at]
           : dtype == MOES_DTYPE_FP16 ? f16[at] : f32[at];
}

/* Whether any of n sums is a NaN. */
MOES_VECTOR_CLONES
static int any_nan(const float *acc, int64_t n)
{
    uint32_t any = 0;
    for (int64_t i = 0; i < n; i++)
        any |= (uint32_t)moes_f32_bits_are_nan(moes_f32_to_bits(acc[i]));
    return any != 0;
}

/* The first k >= from of token t whose out_index entry names a row of y
 * (its row in *row), or top_k when none is left. The entries were checked
 * by another pass; one outside [0, y_rows) now (the caller changed it
 * during the call) is skipped, never used as an index. */
static int64_t next_placed_k(const moes_gather_plan *plan, int64_t t,
                             int64_t from, int64_t *row)
{
    const moes_gather_args *a = &plan->a;
    for (int64_t k = from; k < a->top_k; k++) {
        *row = moes_index_load(a->out_index, plan->index_elem,
                               t * a->out_index_stride + k);
        if (*row >= 0 && *row < a->y_rows)
            return k;
    }
    return a->top_k;
}

/* Element h0 of row `row` of y. */
static const char *y_at(const moes_gather_plan *plan, int64_t row,
                        int64_t h0)
{
    return (const char *)plan->a.y +
           (row * plan->a.y_stride + h0) * (int64_t)plan->y_elem;
}

/* acc = the token's old output (accumulate) or 0, over one chunk. */
static void start_sums(const moes_gather_plan *plan, const char *out_chunk,
                       float *acc, int64_t n)
{
    if (plan->a.flags & MOES_GATHER_ACCUMULATE)
        load_row(acc, out_chunk, plan->a.out_dtype, n);
    else
        memset(acc, 0, (size_t)n * sizeof *acc);
}

/* One chunk of token t's plain rounded sums, up to ROWS_PER_PASS rows a
 * pass in k order. Without accumulate the first pass starts from 0 (a
 * token with no placed row: acc is cleared). */
static void sum_chunk(const moes_gather_plan *plan, int64_t t, int64_t h0,
                      int64_t n, const char *out_chunk, float *acc)
{
    const moes_gather_args *a = &plan->a;
    const void *y[ROWS_PER_PASS];
    float w[ROWS_PER_PASS];
    int64_t row;
    int g = 0;
    int from_zero = !(a->flags & MOES_GATHER_ACCUMULATE);

    if (!from_zero)
        start_sums(plan, out_chunk, acc, n);
    for (int64_t k = next_placed_k(plan, t, 0, &row); k < a->top_k;
         k = next_placed_k(plan, t, k + 1, &row)) {
        y[g] = y_at(plan, row, h0);
        w[g] = a->weights ? a->weights[t * a->weights_stride + k] : 1.0f;
        if (++g == ROWS_PER_PASS) {
            sum_rows_for(a->y_dtype, g)(acc, y, w, n, from_zero);
            from_zero = 0;
            g = 0;
        }
    }
    /* The rest in passes of 4, 2 and 1 rows, in order. */
    for (int done = 0, pass = 4; done < g; pass /= 2) {
        if (g - done >= pass) {
            sum_rows_for(a->y_dtype, pass)(acc, y + done, w + done, n,
                                           from_zero);
            from_zero = 0;
            done += pass;
        }
    }
    if (from_zero)
        start_sums(plan, out_chunk, acc, n);
}

/* The same chunk again, row by row with the step's NaN sign rule. */
static void step_chunk(const moes_gather_plan *plan, int64_t t, int64_t h0,
                       int64_t n, const char *out_chunk, float *acc)
{
    const moes_gather_args *a = &plan->a;
    int64_t row;
    start_sums(plan, out_chunk, acc, n);
    for (int64_t k = next_placed_k(plan, t, 0, &row); k < a->top_k;
         k = next_placed_k(plan, t, k + 1, &row)) {
        const char *yr = y_at(plan, row, h0);
        const float wk = a->weights ? a->weights[t * a->weights_stride + k]
                                    : 1.0f;
        for (int64_t i = 0; i < n; i++)
            acc[i] = moes_gather_step(acc[i], wk, widen(yr, a->y_dtype, i));
    }
}

/* One chunk of token t's output. A NaN stays a NaN through every later
 * step, so when no final sum is a NaN no step made or met one, and the
 * plain sums are the bits of moes_gather_step; a chunk with a NaN (nearly
 * never) is summed again with the step's NaN sign rule. Without
 * accumulate the NaN test rides on the store, and such a chunk is stored
 * twice; with it the old output is the sums' start, so the test comes
 * first.
 *
 * A chunk of CPU_STREAM_MIN_BYTES or more is stored into stage and then
 * streamed to out (cpu_copy_row): the output is written and not read by
 * the call, and plain stores would first read each of its lines from
 * memory. One stream a chunk, also when it was stored twice. */
static void gather_chunk(const moes_gather_plan *plan, int64_t t, int64_t h0,
                         int64_t n, float *acc, void *stage)
{
    const moes_gather_args *a = &plan->a;
    const size_t bytes = (size_t)n * plan->out_elem;
    char *out_chunk = (char *)a->out +
                      (t * a->out_stride + h0) * (int64_t)plan->out_elem;
    void *dst = bytes >= CPU_STREAM_MIN_BYTES ? stage : out_chunk;
    sum_chunk(plan, t, h0, n, out_chunk, acc);
    if (a->flags & MOES_GATHER_ACCUMULATE) {
        /* No NaN in acc: the plain store is the canonical one. */
        const int nan = any_nan(acc, n);
        if (nan)
            step_chunk(plan, t, h0, n, out_chunk, acc);
        store_row(dst, acc, a->out_dtype, n, !nan);
    } else if (store_row(dst, acc, a->out_dtype, n, 1)) {
        step_chunk(plan, t, h0, n, out_chunk, acc);
        store_row(dst, acc, a->out_dtype, n, 0);
    }
    if (dst == stage)
        cpu_copy_row(out_chunk, stage, bytes);
}

/* Asks for the first PREFETCH_AHEAD bytes of each of token t's rows,
 * which the sums' own prefetch (always that far ahead of them) never asks
 * for: issued before the token before it sums its last chunk. Gathers of
 * 16 and 64 tokens 5-8% faster, 256 and 1,024 the same (bench/NOTES.md). */
static void prefetch_row_heads(const moes_gather_plan *plan, int64_t t)
{
    const moes_gather_args *a = &plan->a;
    const int64_t row_bytes = a->hidden * plan->y_elem;
    const int64_t head = row_bytes < PREFETCH_AHEAD ? row_bytes
                                                    : PREFETCH_AHEAD;
    int64_t row;
    for (int64_t k = next_placed_k(plan, t, 0, &row); k < a->top_k;
         k = next_placed_k(plan, t, k + 1, &row)) {
        const char *y = y_at(plan, row, 0);
        for (int64_t b = 0; b < head; b += 64)
            __builtin_prefetch(y + b, 0, 3);
    }
}

/* Tokens [first, end) with the thread's buffers (thread_floats(chunk)
 * floats: the accumulators, then the staged output), subnormals kept
 * whatever the caller's mode. */
static void gather_tokens(const moes_gather_plan *plan, int64_t first,
                          int64_t end, float *buffers, int64_t chunk)
{
    const int64_t hidden = plan->a.hidden;
    const cpu_fp_mode caller_mode = cpu_fp_keep_subnormals();
    for (int64_t t = first; t < end; t++)
        for (int64_t h0 = 0; h0 < hidden; h0 += chunk) {
            if (h0 + chunk >= hidden && t + 1 < end)
                prefetch_row_heads(plan, t + 1);
            gather_chunk(plan, t, h0,
                         hidden - h0 < chunk ? hidden - h0 : chunk, buffers,
                         buffers + chunk);
        }
    cpu_copy_fence();
    cpu_fp_restore(caller_mode);
}

int cpu_gather(moes_context *ctx, const moes_gather_plan *plan,
               moes_data_error *err)
{
    const moes_gather_args *a = &plan->a;
    const int threads = cpu_threads(ctx);
    const int64_t grain = cpu_grain(ctx);
    int64_t bad = find_bad_index(plan, threads, grain);
    /* A token's work: its rows read, 16 bytes a unit. A thread takes
     * whole tokens, so never more threads than tokens (the workspace
     * holds buffers for each of those only). */
    const int64_t token_work =
        cpu_work(cpu_work(a->top_k, plan->y_elem), a->hidden) / 16;
    int64_t team = cpu_team(threads, grain, cpu_work(a->n_tokens, token_work));
    if (team > a->n_tokens)
        team = a->n_tokens;
    int64_t chunk = a->hidden < CHUNK ? a->hidden : CHUNK;
    float *buffers;
    void *w;
    if (bad >= 0) {
        err->status = MOES_ERR_INVALID_OUT_INDEX;
        err->index = bad;
        err->value = moes_index_load(a->out_index, plan->index_elem,
                                     bad / a->top_k * a->out_index_stride +
                                         bad % a->top_k);
        err->row_len = a->top_k;
        err->limit = a->y_rows;
        return err->status;
    }
    if (a->n_tokens == 0)
        return MOES_OK;
    MOES_TRY(cpu_workspace(ctx, cpu_gather_workspace_bytes(threads,
                                                           a->n_tokens,
                                                           a->hidden),
                           &w));
    buffers = w;
    /* A part of the tokens a thread, each with its own buffers. */
    CPU_FOR_TEAM((int)team, schedule(static, 1), p, team,
                 gather_tokens(plan, cpu_part_begin(a->n_tokens, team, p),
                               cpu_part_begin(a->n_tokens, team, p + 1),
                               buffers + p * thread_floats(chunk), chunk));
    return MOES_OK;
}
