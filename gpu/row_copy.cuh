/* SPDX-License-Identifier: MIT */
/*
 * row_copy.cuh - a warp's chunk of a token's row: loaded once, stored to
 * each of the token's rows, with the token's scale words in the output's
 * format from the warp of its first chunk. The copy kernels
 * (place_copy.cu) read the chunk from x; the cooperative scatter
 * (scatter_grid.cu) from a row it staged in shared memory, or from x.
 * The staging itself (moes_stage_rows: the copy engine loads the rows
 * into shared memory, holding no register) serves the cooperative scatter
 * and the one-launch scatter (scatter_small.cu).
 */
#ifndef MOES_ROW_COPY_CUH
#define MOES_ROW_COPY_CUH

#include "kernel_common.cuh"

/* Token t's row in x, as vectors of V. */
template <typename V>
__device__ __forceinline__ const V *moes_x_row(const gpu_scatter_args &a,
                                               int64_t t)
{
    return (const V *)(a.x + t * a.x_stride_bytes);
}

/* The first `staged` rows of the block's tokens, from t0 on (with
 * `list`, the rows of tokens t0 + list[0 .. staged)), into
 * `rows` (a.row_bytes a row, a multiple of 16 as x's rows and stride are:
 * the host takes this path for 16-byte copies only), by the copy engine
 * of the multiprocessor (cp.async.bulk from one thread: one instruction
 * for all the rows when they lie one after the other in x, else a row
 * an instruction), which signals `landed` as the bytes arrive. Only
 * issued here; moes_wait_staged waits. A row an instruction, the
 * issuing thread took 1-3.5 us more to get through them (DeepSeek-V3
 * 4096 on an H200, v24), which its block waited for at its next
 * __syncthreads. The same loads issued by every thread
 * (cp.async, 16 bytes an instruction, 22 a thread) took 0.3-1 us more on
 * an H200 (bench/NOTES.md, v23). Devices before sm_90 have no such
 * engine; the host stages nothing there, and this form, through
 * registers, is only there to compile. */
__device__ __forceinline__ void moes_stage_rows(const gpu_scatter_args &a,
                                                int64_t t0, int64_t staged,
                                                const uint16_t *list,
                                                uint4 *rows,
                                                unsigned long long *landed)
{
    if (staged <= 0)
        return;
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    if (threadIdx.x == 0) {
        const unsigned bar = (unsigned)__cvta_generic_to_shared(landed);
        const unsigned row_bytes = (unsigned)a.row_bytes;
        asm volatile("mbarrier.init.shared::cta.b64 [%0], 1;"
                     :
                     : "r"(bar)
                     : "memory");
        asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
        asm volatile(
            "mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;"
            :
            : "r"(bar), "r"((unsigned)staged * row_bytes)
            : "memory");
        /* Rows one after the other in x: one copy for all of them. */
        const bool together = !list && a.x_stride_bytes == a.row_bytes;
        const int64_t copies = together ? 1 : staged;
        const unsigned bytes = together ? (unsigned)staged * row_bytes
                                        : row_bytes;
        const int64_t n_vec = a.row_bytes / (int64_t)sizeof(uint4);
        for (int64_t r = 0; r < copies; r++)
            asm volatile(
                "cp.async.bulk.shared::cluster.global.mbarrier::complete_tx"
                "::bytes [%0], [%1], %2, [%3];"
                :
                : "r"((unsigned)__cvta_generic_to_shared(rows + r * n_vec)),
                  "l"(moes_x_row<uint4>(a, t0 + (list ? list[r] : r))),
                  "r"(bytes),
                  "r"(bar)
                : "memory");
    }
#else
    (void)landed;
    const int n_vec = (int)(a.row_bytes / (int64_t)sizeof(uint4));
    for (int i = threadIdx.x; i < (int)staged * n_vec; i += blockDim.x) {
        const int r = i / n_vec;
        const uint4 *row = moes_x_row<uint4>(a, t0 + (list ? list[r] : r));
        rows[i] = row[i - r * n_vec];
    }
#endif
}

/* The staged rows have landed and this thread may read them (every
 * thread of a warp calls it). */
__device__ __forceinline__ void moes_wait_staged(int64_t staged,
                                                 unsigned long long *landed)
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    if (staged > 0) {
        const unsigned bar = (unsigned)__cvta_generic_to_shared(landed);
        unsigned done = 0;
        while (!done)
            asm volatile("{\n\t.reg .pred p;\n\t"
                         "mbarrier.try_wait.parity.shared::cta.b64 p, [%1], 0;"
                         "\n\tselp.u32 %0, 1, 0, p;\n\t}"
                         : "=r"(done)
                         : "r"(bar)
                         : "memory");
    }
#else
    (void)staged;
    (void)landed;
#endif
}

/* Token t's out_index entries k0 + l, one a lane (the rows its chunks
 * go to). */
__device__ __forceinline__ moes_row_fetch token_rows(const gpu_scatter_args &a,
                                                     int64_t t, int64_t k0)
{
    return moes_dev_fetch_rows(a.out_index, a.index_elem,
                               t * a.out_index_stride, k0, a.top_k, NULL, 0);
}

/* Lane l's P vectors of the chunk that starts at vector s0 of `row`
 * (vectors s0 + j * 32), those below n_vec. */
template <typename V, int P>
__device__ __forceinline__ void load_chunk(const V *row, int64_t s0,
                                           int64_t n_vec, V (&v)[P])
{
#pragma unroll
    for (int j = 0; j < P; j++) {
        const int64_t s = s0 + j * MOES_WARP;
        if (s < n_vec)
            v[j] = row[s];
    }
}

/* The first chunk's warp carries the token's scale words: word `col`
 * in the output's format (0 for the other chunks and past the row's
 * words). */
__device__ __forceinline__ uint32_t chunk_scale_word_at(
    const gpu_scatter_args &a, int64_t t, int64_t chunk, unsigned col)
{
    if (!a.x_scales || chunk != 0 || col >= a.n_scale_cols)
        return 0;
    return moes_dev_scale_word(a, a.x_scales + t * a.x_scales_stride, col);
}

/* Lane l's word l. */
__device__ __forceinline__ uint32_t chunk_scale_word(const gpu_scatter_args &a,
                                                     int64_t t, int64_t chunk)
{
    return chunk_scale_word_at(a, t, chunk, threadIdx.x % MOES_WARP);
}

/* Lane l's words l and l + 32: with both held, a row of up to 64 words
 * (DeepSeek-V3's 56) is stored with no load between its rows. */
struct chunk_scales {
    uint32_t lo, hi;
};

__device__ __forceinline__ chunk_scales chunk_scale_words(
    const gpu_scatter_args &a, int64_t t, int64_t chunk)
{
    const unsigned lane = threadIdx.x % MOES_WARP;
    chunk_scales w;
    w.lo = chunk_scale_word_at(a, t, chunk, lane);
    w.hi = chunk_scale_word_at(a, t, chunk, lane + MOES_WARP);
    return w;
}

/* Stores the chunk (and, from the first chunk's warp, the scale words)
 * to each row of `valid`, the warp's ballot of f's rows, in k order.
 * copy_items (place_copy.cu) keeps its own form of this loop: with this
 * function in it, ptxas held moes_copy_rows_wide to 64 registers with
 * spills (72 and none without), and the EP8 prefill scatter, which still
 * takes that kernel, lost 5 us on an H200 (bench/NOTES.md, v14). */
template <typename V, int P>
__device__ __forceinline__ void store_chunk(const gpu_scatter_args &a,
                                            int64_t t, int64_t chunk,
                                            int64_t s0, int64_t n_vec,
                                            const V (&v)[P],
                                            const chunk_scales &words,
                                            unsigned valid,
                                            const moes_row_fetch &f)
{
    const unsigned lane = threadIdx.x % MOES_WARP;
    const bool scales = a.x_scales && chunk == 0;
    while (valid) {
        float w;
        const int64_t row = moes_dev_next_row(&valid, f, &w);
        V *dst = (V *)(a.out + row * a.out_stride_bytes);
#pragma unroll
        for (int j = 0; j < P; j++) {
            const int64_t s = s0 + j * MOES_WARP;
            if (s < n_vec)
                dst[s] = v[j];
        }
        if (!scales)
            continue;
        if (lane < a.n_scale_cols)
            moes_dev_store_scale(a, row, lane, words.lo);
        if (lane + MOES_WARP < a.n_scale_cols)
            moes_dev_store_scale(a, row, lane + MOES_WARP, words.hi);
        /* Rows with more scale words than two a lane: the rest. */
        const float *src = a.x_scales + t * a.x_scales_stride;
        for (int64_t j = lane + 2 * MOES_WARP; j < a.n_scale_cols;
             j += MOES_WARP)
            moes_dev_store_scale(a, row, j,
                                 moes_dev_scale_word(a, src, j));
    }
}

#endif /* MOES_ROW_COPY_CUH */
