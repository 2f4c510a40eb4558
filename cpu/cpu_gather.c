/* SPDX-License-Identifier: MIT */
/*
 * cpu_gather.c - the gather on the CPU: check out_index, then for each
 * token sum its rows in k order, a chunk of the hidden dimension at a time
 * so the accumulator stays in L1.
 */
#include <string.h>

#include "cpu_backend.h"
#include "cpu_omp.h"
#include "numerics.h"

/* Two buffers of 2048 fp32 accumulators (16 KiB together) stay in L1 and
 * give each row of y a long enough sequential run for the hardware
 * prefetcher: each step reads one and writes the other (see
 * accumulate_block). They live in the context's workspace, one pair per
 * thread, not on the caller's stack: callers on small stacks (fibers,
 * small pthreads) must keep working. */
enum { CHUNK = 2048 };

int64_t cpu_gather_workspace_bytes(int threads, int64_t n_tokens,
                                   int64_t hidden)
{
    int64_t team = threads < n_tokens ? threads : n_tokens;
    int64_t chunk = hidden < CHUNK ? hidden : CHUNK;
    if (team < 1)
        team = 1;
    if (chunk < 1)
        chunk = 1;
    return team * 2 * chunk * (int64_t)sizeof(float); /* <= threads * 16 KiB */
}

/* Built for AVX2 as well as the baseline where the compiler can, and
 * picked at load time: the gather is vectorized arithmetic on rows that
 * stream from memory, and wider vectors keep up with the memory. Results
 * are the same bits either way (no FMA: contraction is off). */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && \
    !defined(__SANITIZE_ADDRESS__)
#define MOES_VECTOR_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define MOES_VECTOR_CLONES
#endif

/* Smallest flat index t*K+k of an out_index entry outside [-1, M), or -1. */
static int64_t find_bad_index(const moes_gather_plan *plan, int threads)
{
    const moes_gather_args *a = &plan->a;
    int64_t bad = INT64_MAX;
    MOES_OMP(parallel for num_threads(threads) schedule(static) reduction(min:bad))
    for (int64_t t = 0; t < a->n_tokens; t++) {
        for (int64_t k = 0; k < a->top_k; k++) {
            int64_t v = moes_index_load(a->out_index, plan->index_elem,
                                        t * a->out_index_stride + k);
            if ((v < -1 || v >= a->y_rows) && t * a->top_k + k < bad) {
                bad = t * a->top_k + k;
                break;
            }
        }
    }
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

/* Narrows n fp32 values to the output dtype. fp32 values are stored
 * with their NaNs made canonical, as the narrowing conversions do: an
 * accumulated value with no valid k would otherwise carry a signalling
 * NaN or a payload through unchanged. */
MOES_VECTOR_CLONES
static void store_row(void *dst, const float *src, int dtype, int64_t n)
{
    if (dtype == MOES_DTYPE_FP32) {
        float *d = dst;
        for (int64_t i = 0; i < n; i++)
            d[i] = moes_f32_canonical(src[i]);
    } else if (dtype == MOES_DTYPE_BF16) {
        uint16_t *d = dst;
        for (int64_t i = 0; i < n; i++)
            d[i] = moes_f32_to_bf16(src[i]);
    } else {
        uint16_t *d = dst;
        for (int64_t i = 0; i < n; i++)
            d[i] = moes_f32_to_f16(src[i]);
    }
}

/* Software prefetch, where the compiler has it: each row of y is read in
 * runs of one chunk, and K runs from scattered rows are more streams than
 * the hardware prefetcher follows at full speed from one core. */
#if defined(__GNUC__)
#define MOES_PREFETCH(p) __builtin_prefetch((p), 0, 0)
#else
#define MOES_PREFETCH(p) ((void)(p))
#endif

/* Bytes prefetched ahead of the element being read, and the block read
 * between two prefetch rounds: one 64-byte line per 64 bytes read. */
enum { PREFETCH_AHEAD = 2048, PREFETCH_BLOCK = 512 };

static void prefetch_bytes(const char *p, int64_t bytes)
{
    for (int64_t b = 0; b < bytes; b += 64)
        MOES_PREFETCH(p + b);
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

/* next[i] = step(acc[i], w, y[i]) over one block, the widening of y
 * folded into the same vectorized pass. A sum that is not a NaN had no NaN
 * operand (a NaN goes through both operations), so it is the step's
 * answer; the pass writes the plain sums (moes_gather_sum) and notes
 * whether any is a NaN, and only a block with one (nearly never) is done
 * again with the NaN sign rule of moes_gather_step, from acc, which the
 * pass left as it was. Same bits either way. */
MOES_VECTOR_CLONES
static void accumulate_block(float *restrict next, const float *restrict acc,
                             const void *restrict y, int dtype, float w,
                             int64_t n)
{
    uint32_t any = 0;
    if (dtype == MOES_DTYPE_BF16) {
        const uint16_t *src = y;
        for (int64_t i = 0; i < n; i++) {
            float r = moes_gather_sum(acc[i], w, moes_bf16_to_f32(src[i]));
            any |= (uint32_t)moes_f32_bits_are_nan(moes_f32_to_bits(r));
            next[i] = r;
        }
    } else if (dtype == MOES_DTYPE_FP16) {
        const uint16_t *src = y;
        for (int64_t i = 0; i < n; i++) {
            float r = moes_gather_sum(acc[i], w, moes_f16_to_f32(src[i]));
            any |= (uint32_t)moes_f32_bits_are_nan(moes_f32_to_bits(r));
            next[i] = r;
        }
    } else {
        const float *src = y;
        for (int64_t i = 0; i < n; i++) {
            float r = moes_gather_sum(acc[i], w, src[i]);
            any |= (uint32_t)moes_f32_bits_are_nan(moes_f32_to_bits(r));
            next[i] = r;
        }
    }
    if (any)
        for (int64_t i = 0; i < n; i++)
            next[i] = moes_gather_step(acc[i], w, widen(y, dtype, i));
}

/* One chunk of a row in blocks, each block prefetching the bytes
 * PREFETCH_AHEAD further on, never past the chunk (the caller prefetched
 * the first lines while it read the previous row). */
static void accumulate_row(float *restrict next, const float *restrict acc,
                           const void *restrict y, int dtype, int elem,
                           float w, int64_t n)
{
    const char *row = y;
    const int64_t bytes = n * elem;
    const int64_t block = PREFETCH_BLOCK / elem;
    for (int64_t i = 0; i < n; i += block) {
        int64_t ahead = i * elem + PREFETCH_AHEAD;
        if (ahead < bytes)
            prefetch_bytes(row + ahead, bytes - ahead < PREFETCH_BLOCK
                                            ? bytes - ahead
                                            : PREFETCH_BLOCK);
        accumulate_block(next + i, acc + i, row + i * elem, dtype, w,
                         n - i < block ? n - i : block);
    }
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

static void gather_token(const moes_gather_plan *plan, int64_t t,
                         float *acc, float *acc_next, int64_t chunk)
{
    const moes_gather_args *a = &plan->a;
    const int accumulate = (a->flags & MOES_GATHER_ACCUMULATE) != 0;
    const int64_t y_elem = plan->y_elem;
    char *out_row = (char *)a->out + t * a->out_stride * (int64_t)plan->out_elem;

    for (int64_t h0 = 0; h0 < a->hidden; h0 += chunk) {
        int64_t n = a->hidden - h0 < chunk ? a->hidden - h0 : chunk;
        int64_t row, next_row = -1;
        if (accumulate)
            load_row(acc, out_row + h0 * (int64_t)plan->out_elem, a->out_dtype,
                     n);
        else
            memset(acc, 0, (size_t)n * sizeof *acc);
        /* Rows in k order; while one is summed, the start of the next
         * one's chunk is prefetched. */
        for (int64_t k = next_placed_k(plan, t, 0, &row), next; k < a->top_k;
             k = next, row = next_row) {
            float w = a->weights ? a->weights[t * a->weights_stride + k] : 1.0f;
            next = next_placed_k(plan, t, k + 1, &next_row);
            if (next < a->top_k)
                prefetch_bytes((const char *)a->y +
                                   (next_row * a->y_stride + h0) * y_elem,
                               n * y_elem < PREFETCH_AHEAD ? n * y_elem
                                                           : PREFETCH_AHEAD);
            accumulate_row(acc_next, acc,
                           (const char *)a->y + (row * a->y_stride + h0) * y_elem,
                           a->y_dtype, plan->y_elem, w, n);
            /* The sums are in acc_next now: the buffers trade places. */
            float *sums = acc_next;
            acc_next = acc;
            acc = sums;
        }
        store_row(out_row + h0 * (int64_t)plan->out_elem, acc, a->out_dtype,
                  n);
    }
}

int cpu_gather(moes_context *ctx, const moes_gather_plan *plan,
               moes_data_error *err)
{
    const moes_gather_args *a = &plan->a;
    const int threads = cpu_threads(ctx);
    int64_t bad = find_bad_index(plan, threads);
    int64_t team = threads < a->n_tokens ? threads : a->n_tokens;
    int64_t chunk = a->hidden < CHUNK ? a->hidden : CHUNK;
    float *accumulators;
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
    accumulators = w;
    MOES_OMP(parallel num_threads((int)team))
    {
        float *acc = accumulators + (int64_t)cpu_thread_num() * 2 * chunk;
        MOES_OMP(for schedule(static))
        for (int64_t t = 0; t < a->n_tokens; t++)
            gather_token(plan, t, acc, acc + chunk, chunk);
    }
    return MOES_OK;
}
