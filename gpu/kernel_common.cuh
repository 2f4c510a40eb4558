/* SPDX-License-Identifier: MIT */
/*
 * kernel_common.cuh - what every kernel file shares: index loads and
 * stores of either width, the error record checks, grid-stride helpers.
 */
#ifndef MOES_KERNEL_COMMON_CUH
#define MOES_KERNEL_COMMON_CUH

#include <stdint.h>

#include "gpu_kernel_args.h"
#include "moescatter.h"
#include "numerics.h"

#define MOES_WARP 32

__device__ __forceinline__ int64_t moes_dev_index_load(const void *base,
                                                       int64_t elem,
                                                       int64_t i)
{
    return elem == 4 ? (int64_t)((const int32_t *)base)[i]
                     : ((const int64_t *)base)[i];
}

__device__ __forceinline__ void moes_dev_index_store(void *base, int64_t elem,
                                                     int64_t i, int64_t v)
{
    if (elem == 4)
        ((int32_t *)base)[i] = (int32_t)v;
    else
        ((int64_t *)base)[i] = v;
}

/* Asks the L2 for `bytes` (a multiple of 16) at p (16-byte aligned), and
 * goes on at once: a hint, with no fault for any address. sm_90 and
 * later; elsewhere nothing. */
__device__ __forceinline__ void moes_dev_prefetch_l2(const void *p,
                                                     uint32_t bytes)
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;" ::"l"(p),
                 "r"(bytes)
                 : "memory");
#else
    (void)p;
    (void)bytes;
#endif
}

/* Programmatic dependent launch (sm_90 and later). Every kernel of a call
 * after the first, and the first kernel of some calls (gpu_launch_next's
 * callers in gpu_ops.c), is launched so that it may start while the
 * kernel before it on the stream still runs, ours or the caller's: it
 * must call moes_dev_wait_prior() before it reads anything an earlier
 * kernel writes or writes anything at all, which waits for the earlier
 * kernel to finish and its writes to be visible. Every thread calls it
 * before it exits, also one with nothing to do, so that no grid ends
 * before the one it follows: a kernel started early after it waits for
 * it alone. moes_dev_release_next() lets the next kernel start early. On
 * older GPUs, and in a kernel launched the ordinary way, both do
 * nothing. */
__device__ __forceinline__ void moes_dev_wait_prior(void)
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

__device__ __forceinline__ void moes_dev_release_next(void)
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

/* Both, for a kernel with nothing to do before the wait. */
__device__ __forceinline__ void moes_dev_enter(void)
{
    moes_dev_wait_prior();
    moes_dev_release_next();
}

/* True when an earlier call, or this one's validation, found a data error:
 * then the kernel must write nothing. The record is written by a previous
 * kernel on the same stream, so a plain (volatile) load sees it. */
__device__ __forceinline__ bool moes_dev_failed(const gpu_device_state *s)
{
    return *(volatile const int32_t *)&s->record.status != MOES_OK;
}

/* moes_dev_failed as one answer for the whole block: thread 0 looks at
 * the record (moes_thread0_look) and a barrier gives every thread its
 * answer. For a kernel whose own blocks write the record and whose
 * blocks need not all start at once (more blocks than fit, or
 * multiprocessors still busy with other work): a block starting while
 * block 0 writes the record could have some threads see it and leave,
 * taking their share of the block's own check with them, while the rest
 * route with entries those threads never wrote. A kernel with a barrier
 * of its own ahead takes the look early, so that its load goes out with
 * the inputs' and is agreed at that barrier (__syncthreads_or of the
 * look): the one-launch scatter and gather_check_verdict do. */
__device__ __forceinline__ bool moes_thread0_look(const gpu_device_state *s)
{
    return threadIdx.x == 0 && moes_dev_failed(s);
}

/* The look and its barrier in one: every thread of the block calls it. */
__device__ __forceinline__ bool moes_block_failed(const gpu_device_state *s)
{
    return __syncthreads_or(moes_thread0_look(s));
}

__device__ __forceinline__ void moes_dev_report(gpu_device_state *s,
                                                int rank, int64_t index)
{
    atomicMin(&s->key, GPU_ERROR_KEY(rank, index));
}

/* The smallest error key among the UE8M0 scales first, first + step,
 * ... below end (scale i is t * S + s: token t's scale s), or key when
 * none is bad: every scale must be a power of two that UE8M0 holds
 * (numerics.h). The indices ascend, so the first bad one is the
 * smallest; B loads go out together. I is the index type: 32 bits where
 * the caller has bounded the count. */
template <typename I, int B>
__device__ __forceinline__ unsigned long long moes_dev_check_scales(
    const gpu_scatter_args &a, I first, I end, I step, unsigned long long key)
{
    const I per_token = (I)a.n_scales;
    for (I i0 = first; i0 < end; i0 += B * step) {
        uint32_t bits[B];
#pragma unroll
        for (int b = 0; b < B; b++) {
            const I i = i0 + b * step;
            bits[b] = 0x3F800000u; /* 1.0 past the end: a good scale */
            if (i < end) {
                const I t = i / per_token, s = i - t * per_token;
                bits[b] = moes_f32_to_bits(
                    a.x_scales[(int64_t)t * a.x_scales_stride + s]);
            }
        }
#pragma unroll
        for (int b = 0; b < B; b++)
            if (!moes_ue8m0_scale_ok(bits[b])) {
                const unsigned long long bad =
                    GPU_ERROR_KEY(MOES_DATA_ERROR_RANK_SCALE, i0 + b * step);
                return bad < key ? bad : key;
            }
    }
    return key;
}

/* Global thread index and stride of a 1-D grid, in 64 bits. */
__device__ __forceinline__ int64_t moes_dev_thread(void)
{
    return (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
}

__device__ __forceinline__ int64_t moes_dev_threads(void)
{
    return (int64_t)gridDim.x * blockDim.x;
}

/* A warp's walk over the (token, chunk) items of a grid-stride loop:
 * item i is token i / chunks, chunk i % chunks, and each step moves on by
 * the grid's warps. The host splits that stride once into whole tokens
 * and the chunks left over (fewer than chunks; gpu_ops.c, walk_stride), so
 * a step is two adds and a compare, with the stride read from the
 * kernel's arguments rather than held in registers; only the warp's first
 * item pays a division. A 64-bit division an item (two, with the next
 * item's token) had put some twenty dependent instructions in front of
 * every item's loads. T is int64_t for the row copies' items
 * (place_copy.cu), uint32_t for a block's walk over a short list
 * (scatter_small.cu). On an H100 the EP8 prefill scatter went from 165.2
 * to 164.2 us; the gather walked the same way was slower (344.5 -> 348.2
 * us there, bench/NOTES.md v35) and keeps its division. */
template <typename T> struct moes_walk {
    T t, c; /* the item: token t, chunk c */
};
typedef moes_walk<int64_t> moes_item_walk;

template <typename T>
__device__ __forceinline__ moes_walk<T> moes_walk_start(T item, T chunks)
{
    moes_walk<T> w;
    w.t = item / chunks;
    w.c = item - w.t * chunks;
    return w;
}

/* The token of the walk's next item. */
template <typename T>
__device__ __forceinline__ T moes_walk_next_token(const moes_walk<T> &w,
                                                  T step_t, T step_c, T chunks)
{
    return w.t + step_t + (w.c + step_c >= chunks ? 1 : 0);
}

template <typename T>
__device__ __forceinline__ void moes_walk_step(moes_walk<T> &w, T step_t,
                                               T step_c, T chunks)
{
    w.t += step_t;
    w.c += step_c;
    if (w.c >= chunks) {
        w.c -= chunks;
        w.t++;
    }
}

/* Saturating sum of two non-negative values (CPU: place_experts). */
__device__ __forceinline__ int64_t moes_dev_add_sat(int64_t a, int64_t b)
{
    return a > INT64_MAX - b ? INT64_MAX : a + b;
}

/* Inclusive sum of v over the calling warp's lanes up to `lane` (every
 * lane calls it): 32 bits where the host bounds the sums (block counts),
 * 64 bits for the grid's rows, saturating at INT64_MAX when SAT. */
template <bool SAT = false, typename V>
__device__ __forceinline__ V moes_warp_inclusive_sum(V v, unsigned lane)
{
#pragma unroll
    for (int off = 1; off < MOES_WARP; off *= 2) {
        const V y = __shfl_up_sync(0xFFFFFFFFu, v, off);
        if (lane >= (unsigned)off) {
            if constexpr (SAT)
                v = moes_dev_add_sat(v, y);
            else
                v += y;
        }
    }
    return v;
}

/* roundup(v, a) saturating at INT64_MAX (CPU: round_up_sat). Values that
 * fit 32 bits (all of them in practice) take the 32-bit division, a third
 * of the instructions of the 64-bit one. */
__device__ __forceinline__ int64_t moes_dev_round_up_sat(int64_t v, int64_t a)
{
    if (v > INT64_MAX - (a - 1))
        return INT64_MAX;
    if (((uint64_t)v | (uint64_t)a) <= 0x7FFFFFFFull)
        return (int64_t)(((uint32_t)v + (uint32_t)a - 1u) / (uint32_t)a *
                         (uint32_t)a);
    return (v + a - 1) / a * a;
}

/* Expert e's rows: its first, how many hold tokens, and its whole block
 * (the aligned block, or the C rows of the masked layout). In the
 * contiguous and grouped layouts the block is where the next expert
 * starts (or the rows needed, for the last one): the expert scan rounded
 * each count up once, and nothing here divides again. */
struct moes_expert_rows {
    int64_t first, real, block;
};

__device__ __forceinline__ moes_expert_rows moes_dev_expert_rows(
    const gpu_scatter_args &a, int64_t e, int64_t rows_needed)
{
    moes_expert_rows x;
    const int64_t count = a.counts[e];
    if (a.layout == MOES_LAYOUT_MASKED) {
        x.first = e * a.capacity;
        x.real = count < a.capacity ? count : a.capacity;
        x.block = a.capacity;
    } else {
        x.first = a.start[e];
        x.real = count;
        x.block = (e + 1 < a.n_experts ? a.start[e + 1] : rows_needed) -
                  x.first;
    }
    return x;
}

/* The local expert of global expert id, or -1 (id -1, mapped to -1, or
 * invalid: invalid ones are reported by the counting kernel). */
__device__ __forceinline__ int64_t
moes_dev_expert_of(const gpu_scatter_args &a, int64_t id)
{
    if (id < 0 || id >= a.n_global)
        return -1;
    int64_t e = a.map ? (int64_t)a.map[id] : id;
    return (e >= 0 && e < a.n_experts) ? e : -1;
}

/* The local expert of choice (t, k), and its id in *id_out. */
__device__ __forceinline__ int64_t moes_dev_local_expert_at(
    const gpu_scatter_args &a, int64_t t, int64_t k, int64_t *id_out)
{
    int64_t id = moes_dev_index_load(a.ids, a.ids_elem, t * a.ids_stride + k);
    *id_out = id;
    return moes_dev_expert_of(a, id);
}

/* Where element c = t * row_len + k of rows `stride` elements apart
 * lies: c itself for dense rows, else through a division, in 32 bits
 * where c fits (a 64-bit division is a long run of instructions, and the
 * self-checks take eight of them a thread). */
__device__ __forceinline__ int64_t moes_dev_row_element(int64_t c,
                                                        int64_t row_len,
                                                        int64_t stride)
{
    if (stride == row_len)
        return c;
    if ((uint64_t)c <= UINT32_MAX && (uint64_t)row_len <= UINT32_MAX) {
        const uint32_t n = (uint32_t)row_len, t = (uint32_t)c / n;
        return (int64_t)t * stride + (int64_t)((uint32_t)c - t * n);
    }
    const int64_t t = c / row_len;
    return t * stride + (c - t * row_len);
}

/* The id of choice c = t*K + k. */
__device__ __forceinline__ int64_t
moes_dev_choice_id(const gpu_scatter_args &a, int64_t c)
{
    return moes_dev_index_load(a.ids, a.ids_elem,
                               moes_dev_row_element(c, a.top_k, a.ids_stride));
}

/* The same for choice c = t*K + k. */
__device__ __forceinline__ int64_t moes_dev_local_expert(
    const gpu_scatter_args &a, int64_t c, int64_t *id_out)
{
    const int64_t id = moes_dev_choice_id(a, c);
    *id_out = id;
    return moes_dev_expert_of(a, id);
}

/* The sort that places many experts (sort_route.cu): the digit of a key
 * in pass `pass`, and the count that the element at position `pos` of
 * that pass adds to (its tile's row of the pass's table). The routing's
 * count adds the first pass's, each pass the next one's. */
__device__ __forceinline__ int moes_dev_sort_digit(int64_t pass, int32_t key)
{
    return (int)((uint32_t)key >> (pass * GPU_SORT_DIGIT_BITS)) &
           ((1 << GPU_SORT_DIGIT_BITS) - 1);
}

__device__ __forceinline__ int32_t *moes_dev_sort_count(
    const gpu_scatter_args &a, int64_t pass, uint32_t pos, int32_t key)
{
    return a.sort_hist +
           (pass * a.sort_blocks + pos / (uint32_t)a.sort_tile) *
               (1 << GPU_SORT_DIGIT_BITS) +
           moes_dev_sort_digit(pass, key);
}

/* Word col of a token's output scale row, src its x_scales row: an fp32
 * scale as it is, or four UE8M0 exponents packed (numerics.h); in format
 * F, or (moes_dev_scale_word) in the call's. */
template <int F>
__device__ __forceinline__ uint32_t moes_dev_scale_word_as(
    const gpu_scatter_args &a, const float *src, int64_t col)
{
    static_assert(F == MOES_SCALES_FP32 || F == MOES_SCALES_UE8M0,
                  "a scale format with words");
    return F == MOES_SCALES_FP32 ? moes_f32_to_bits(src[col])
                                 : moes_ue8m0_word(src, a.n_scales, col);
}

__device__ __forceinline__ uint32_t moes_dev_scale_word(
    const gpu_scatter_args &a, const float *src, int64_t col)
{
    return a.out_scales_format == MOES_SCALES_FP32
               ? moes_dev_scale_word_as<MOES_SCALES_FP32>(a, src, col)
               : moes_dev_scale_word_as<MOES_SCALES_UE8M0>(a, src, col);
}

/* The scale word of output row `row`, column `col` of out_scales (row-
 * or MN-major: the strides say which). */
__device__ __forceinline__ uint32_t *moes_dev_out_scale(
    const gpu_scatter_args &a, int64_t row, int64_t col)
{
    return (uint32_t *)a.out_scales + row * a.out_scales_row_stride +
           col * a.out_scales_col_stride;
}

/* Stores word to scale (row, col) of out_scales, asking the L2 to keep
 * its line over others (sm_80 and later). A row's words share their
 * lines with the rows beside it (UE8M0: 56 bytes a row of DeepSeek-V3;
 * in the MN-major layout every word), which other warps store at other
 * times, while the rows' stores stream through the L2; a line that
 * leaves it before all its words are in is written to memory more than
 * once. The GEMM after the scatter reads the scales next, so keeping
 * them costs it nothing. On an H200, DeepSeek-V3 4096 tokens: 89.3 ->
 * 81.2 us with UE8M0 scales, 82.5 -> 80.8 with fp32 ones (7.4 MB fewer
 * written to memory); EP8 prefill 128.4 -> 126.0 (bench/NOTES.md, v26). */
__device__ __forceinline__ void moes_dev_store_scale(const gpu_scatter_args &a,
                                                     int64_t row, int64_t col,
                                                     uint32_t word)
{
    uint32_t *p = moes_dev_out_scale(a, row, col);
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    uint64_t keep;
    asm("createpolicy.fractional.L2::evict_last.b64 %0, 1.0;" : "=l"(keep));
    asm volatile("st.global.L2::cache_hint.b32 [%0], %1, %2;"
                 :
                 : "l"(p), "r"(word), "l"(keep)
                 : "memory");
#else
    *p = word;
#endif
}

/* Choice c = (t, k)'s out_index entry, and the row_source entry of its
 * row. */
__device__ __forceinline__ void moes_dev_place_choice_at(
    const gpu_scatter_args &a, int64_t t, int64_t k, int64_t c, int64_t row)
{
    moes_dev_index_store(a.out_index, a.index_elem, t * a.out_index_stride + k,
                         row);
    if (row >= 0 && a.row_source)
        moes_dev_index_store(a.row_source, a.index_elem, row, c);
}

/* The same for choice c = t*K + k. */
__device__ __forceinline__ void moes_dev_place_choice(
    const gpu_scatter_args &a, int64_t c, int64_t row)
{
    const int64_t t = c / a.top_k;
    moes_dev_place_choice_at(a, t, c - t * a.top_k, c, row);
}

/* Lane l of the calling warp loads entry k0 + l of a token's index row
 * (index[at + k], for k0 + l < k1: at most 32 entries) and, when weights
 * is not NULL, its weight (else 1.0). The loads are only issued here:
 * a warp fetches its next item's entries before it works on the current
 * one, so that their latency hides behind that work. */
struct moes_row_fetch {
    int64_t row;
    float weight;
};

__device__ __forceinline__ moes_row_fetch moes_dev_fetch_rows(
    const void *index, int64_t elem, int64_t at, int64_t k0, int64_t k1,
    const float *weights, int64_t w_at)
{
    const int64_t k = k0 + (int64_t)(threadIdx.x % MOES_WARP);
    moes_row_fetch f;
    f.row = -1;
    f.weight = 1.0f;
    if (k < k1) {
        f.row = moes_dev_index_load(index, elem, at + k);
        if (weights)
            f.weight = weights[w_at + k];
    }
    return f;
}

/* The warp's ballot of the fetched entries that are valid rows,
 * 0 <= entry < bound: walking its set bits from the lowest
 * (moes_dev_next_row) visits them in k order. Every lane must call it. */
__device__ __forceinline__ unsigned
moes_dev_valid_rows(const moes_row_fetch &f, int64_t bound)
{
    return __ballot_sync(0xFFFFFFFFu, f.row >= 0 && f.row < bound);
}

/* The lowest valid entry left in *valid, broadcast to the whole warp, and
 * its bit cleared. */
__device__ __forceinline__ int64_t moes_dev_next_row(unsigned *valid,
                                                     const moes_row_fetch &f,
                                                     float *w)
{
    const int src = __ffs(*valid) - 1;
    *valid &= *valid - 1;
    *w = __shfl_sync(0xFFFFFFFFu, f.weight, src);
    return __shfl_sync(0xFFFFFFFFu, (long long)f.row, src);
}

/* True, in every thread of the block, for the last block of the grid to
 * get here; then every other block's writes before this point (reports,
 * counts) are visible to it. Every thread of every block must call it,
 * once per launch. */
__device__ __forceinline__ bool moes_dev_last_block(gpu_device_state *s)
{
    __shared__ bool last;
    __syncthreads();
    if (threadIdx.x == 0) {
        /* Our writes are visible before our arrival is counted. */
        __threadfence();
        last = atomicAdd(&s->blocks_done, 1u) == gridDim.x - 1;
    }
    __syncthreads();
    if (last)
        __threadfence();
    return last;
}

/* The self-checks of small calls (distinct_experts.cu, gather.cu): every
 * block reads all of a call's indices (a few KiB, from L2 after the
 * first block) and reaches the verdict without waiting for another block
 * or a kernel of its own. A thread takes every blockDim.x-th index,
 * GPU_SELF_CHECK_LOADS loads in flight at once: a batch, loaded
 * (moes_check_batch_load) and then tested (moes_check_batch_test), so
 * that a caller may have other loads in flight between the two. */
struct moes_check_batch {
    int64_t v[GPU_SELF_CHECK_LOADS];
};

/* load(i) for the thread's indices from first on, below n (-1 past it). */
template <typename Load>
__device__ __forceinline__ void moes_check_batch_load(moes_check_batch &c,
                                                      int64_t first, int64_t n,
                                                      Load load)
{
#pragma unroll
    for (int b = 0; b < GPU_SELF_CHECK_LOADS; b++) {
        const int64_t i = first + b * (int64_t)blockDim.x;
        c.v[b] = i < n ? load(i) : -1;
    }
}

/* Whether any value of the batch loaded from `first` lies outside
 * [-1, bound); block 0 reports each bad one under `rank`, so that the
 * smallest becomes the record. */
__device__ __forceinline__ bool
moes_check_batch_test(gpu_device_state *s, const moes_check_batch &c,
                      int64_t first, int64_t bound, int rank)
{
    bool bad = false;
#pragma unroll
    for (int b = 0; b < GPU_SELF_CHECK_LOADS; b++)
        if (!MOES_INDEX_OK(c.v[b], bound)) {
            bad = true;
            if (blockIdx.x == 0)
                moes_dev_report(s, rank, first + b * (int64_t)blockDim.x);
        }
    return bad;
}

/* Whether any of load(0 .. n-1) lies outside [-1, bound), batch by batch. */
template <typename Load>
__device__ __forceinline__ bool moes_block_check_range(gpu_device_state *s,
                                                       int64_t n,
                                                       int64_t bound, int rank,
                                                       Load load)
{
    bool bad = false;
    const int64_t step = blockDim.x;
    for (int64_t i0 = threadIdx.x; i0 < n; i0 += GPU_SELF_CHECK_LOADS * step) {
        moes_check_batch c;
        moes_check_batch_load(c, i0, n, load);
        if (moes_check_batch_test(s, c, i0, bound, rank))
            bad = true;
    }
    return bad;
}

/* Run by one thread of the last block: the key of the validation becomes
 * the record, and the block counter is ready for the next launch. */
__device__ void moes_stage_finish_validation(const gpu_finish_args &a);

/* Stages that kernels of other files run on a part of their grid
 * (thread and threads count that part's threads). pad_labels.cu: */
__device__ void moes_stage_label_blocks(const gpu_scatter_args &a,
                                        int64_t thread, int64_t threads);
__device__ void moes_stage_expert_outputs(const gpu_scatter_args &a,
                                          int64_t thread, int64_t threads);

/* The verdict of a block's self-check from each thread's `bad`: true in
 * every thread when any thread's is; then block 0's thread 0 turns what
 * block 0 reported into the record (finish() gives its arguments), as
 * the last block of a check kernel does. Every thread of the block calls
 * it once. */
template <typename Finish>
__device__ __forceinline__ bool moes_block_verdict(bool bad, Finish finish)
{
    if (!__syncthreads_or(bad))
        return false;
    if (blockIdx.x == 0 && threadIdx.x == 0)
        moes_stage_finish_validation(finish());
    return true;
}

__device__ __forceinline__ void moes_dev_close_validation(
    gpu_device_state *s, const gpu_finish_args &f)
{
    moes_stage_finish_validation(f);
    s->blocks_done = 0;
}

#endif /* MOES_KERNEL_COMMON_CUH */
