/* SPDX-License-Identifier: MIT */
/*
 * gather.cu - check out_index, then sum each token's K rows in k order:
 * acc = fp32(acc + fp32(w * y)) through moes_gather_step (numerics.h), the
 * same function the CPU uses, so the bits match.
 *
 * Two launches, or one for a call with few entries. moes_check_out_index
 * reads every entry once and its last block turns the first bad one into
 * the error record. The gather kernel of the call's dtypes
 * (moes_gather_Y_to_OUT, or moes_gather_small_Y_to_OUT for a call with
 * fewer items than warps that fit) is launched so that it may start while
 * the check still runs: it reads out_index, the weights and y (inputs of
 * the call, which nothing in the call writes) and sums, and only then
 * waits for the check to finish and stores nothing when it found an
 * error. A call with at most GPU_GATHER_SELF_CHECK_ENTRIES entries, not
 * captured into a graph, has no check kernel: each block of
 * moes_gather_checked_Y_to_OUT (the small shape) checks them all
 * (gather_check_verdict). An entry is only ever used to address y after a
 * bounds test of its own, so a bad one is never read through.
 *
 * One warp per (token, chunk of the row) item: lane k loads the token's
 * out_index[t][k] and weight, the valid ones are walked in k order from
 * the warp's ballot, and each lane loads GPU_GATHER_PER_THREAD (small
 * calls: GPU_GATHER_SMALL_PER_THREAD) vectors of every valid row, 16 bytes
 * each where the alignment allows. The grid holds no more blocks than fit
 * at once; each warp walks its items. Rows with
 * out_index -1 cost nothing, so a warp keeps as many loads in flight for
 * an expert-parallel rank (one valid k in eight) as for a dense token;
 * no barrier and no shared memory.
 *
 * The rows are summed with the plain rounded operations, and the NaN
 * sign rule is applied only to an item whose sums came out NaN
 * (gather_items says why that gives the same bits): the rule's compare
 * and branch, taken per element and row, had cost as much as the sum.
 */
#include "kernel_common.cuh"

/* The record of a bad out_index entry: its value and y_rows. */
__device__ __forceinline__ gpu_finish_args
gather_finish_args(const gpu_gather_args &a)
{
    gpu_finish_args f;
    f.state = a.state;
    f.op = GPU_OP_GATHER;
    f.ids = a.out_index;
    f.ids_stride = a.out_index_stride;
    f.ids_elem = a.index_elem;
    f.row_len = a.top_k;
    f.map = NULL;
    f.n_global = 0;
    f.n_experts = 0;
    f.y_rows = a.y_rows;
    f.capacity = 0;
    f.x_scales = NULL;
    f.x_scales_stride = 0;
    f.n_scales = 0;
    return f;
}

/* out_index entry c = (t, k). */
__device__ __forceinline__ int64_t gather_entry(const gpu_gather_args &a,
                                                int64_t c)
{
    return moes_dev_index_load(
        a.out_index, a.index_elem,
        moes_dev_row_element(c, a.top_k, a.out_index_stride));
}

extern "C" __global__ void __launch_bounds__(GPU_CHECK_THREADS)
moes_check_out_index(const gpu_gather_args a)
{
    const int64_t n = a.n_tokens * a.top_k;
    moes_dev_enter();
    for (int64_t c = moes_dev_thread(); c < n; c += moes_dev_threads())
        if (!MOES_INDEX_OK(gather_entry(a, c), a.y_rows))
            moes_dev_report(a.state, MOES_DATA_ERROR_RANK_ID, c);
    if (moes_dev_last_block(a.state) && threadIdx.x == 0)
        moes_dev_close_validation(a.state, gather_finish_args(a));
}

/* The check of a call with few entries (the checked kernels: one batch a
 * thread, GPU_GATHER_SELF_CHECK_ENTRIES in all), in every block of the
 * gather instead of a kernel ahead of it: each block reads every entry
 * (from L2 after the first block), so all reach the same verdict with no
 * grid-wide wait, and block 0 writes the record. The entries are loaded
 * first, the warp's first item summed while they arrive, and the verdict
 * taken before its first store (gather_items). */
__device__ __forceinline__ void gather_check_load(const gpu_gather_args &a,
                                                  moes_check_batch &c)
{
    moes_check_batch_load(c, threadIdx.x, a.n_tokens * a.top_k,
                          [&](int64_t i) { return gather_entry(a, i); });
}

/* True when the block must store nothing: a bad entry, or the error of
 * an earlier call. Every thread of the block calls it once. */
__device__ __forceinline__ bool gather_check_verdict(const gpu_gather_args &a,
                                                     const moes_check_batch &c)
{
    const bool bad =
        moes_check_batch_test(a.state, c, threadIdx.x, a.y_rows,
                              MOES_DATA_ERROR_RANK_ID);
    /* One thread's look at the record: the verdict must be the block's. */
    const bool earlier = moes_thread0_look(a.state);
    return moes_block_verdict(bad || earlier,
                              [&] { return gather_finish_args(a); });
}

/* Elements of y and out as fp32, GPU_GATHER_VEC (or 1) at a time. The
 * vector forms need 16-byte aligned addresses (checked by the host). */
template <int D> struct elem_io;

template <> struct elem_io<MOES_DTYPE_FP32> {
    typedef struct { uint4 lo, hi; } vec;
    static __device__ __forceinline__ vec load_vec(const void *p)
    {
        vec v;
        v.lo = ((const uint4 *)p)[0];
        v.hi = ((const uint4 *)p)[1];
        return v;
    }
    static __device__ __forceinline__ float get(const vec &v, int i)
    {
        const uint4 &q = i < 4 ? v.lo : v.hi;
        const int j = i & 3;
        return __uint_as_float(j == 0 ? q.x : j == 1 ? q.y : j == 2 ? q.z
                                                                    : q.w);
    }
    /* Every NaN written is canonical (numerics.h), as the narrowing
     * conversions make bf16 and fp16 ones. */
    static __device__ __forceinline__ uint32_t out(float f)
    {
        return moes_f32_to_bits(moes_f32_canonical(f));
    }
    static __device__ __forceinline__ void store_vec(void *p, const float *f)
    {
        ((uint4 *)p)[0] = make_uint4(out(f[0]), out(f[1]), out(f[2]),
                                     out(f[3]));
        ((uint4 *)p)[1] = make_uint4(out(f[4]), out(f[5]), out(f[6]),
                                     out(f[7]));
    }
    /* Values known not to be NaNs: stored as they are. */
    static __device__ __forceinline__ void store_vec_no_nan(void *p,
                                                           const float *f)
    {
        ((uint4 *)p)[0] =
            make_uint4(moes_f32_to_bits(f[0]), moes_f32_to_bits(f[1]),
                       moes_f32_to_bits(f[2]), moes_f32_to_bits(f[3]));
        ((uint4 *)p)[1] =
            make_uint4(moes_f32_to_bits(f[4]), moes_f32_to_bits(f[5]),
                       moes_f32_to_bits(f[6]), moes_f32_to_bits(f[7]));
    }
    static __device__ __forceinline__ float load_one(const void *p)
    {
        return *(const float *)p;
    }
    static __device__ __forceinline__ void store_one(void *p, float f)
    {
        *(uint32_t *)p = out(f);
    }
};

/* bf16 and fp16: 8 halves in one uint4. */
template <int D> struct half_io {
    typedef uint4 vec;
    static __device__ __forceinline__ float widen(uint32_t h)
    {
        return D == MOES_DTYPE_BF16 ? moes_bf16_to_f32((uint16_t)h)
                                    : moes_f16_to_f32((uint16_t)h);
    }
    static __device__ __forceinline__ uint32_t narrow(float f)
    {
        return D == MOES_DTYPE_BF16 ? moes_f32_to_bf16(f) : moes_f32_to_f16(f);
    }
    static __device__ __forceinline__ vec load_vec(const void *p)
    {
        return *(const uint4 *)p;
    }
    static __device__ __forceinline__ float get(const vec &v, int i)
    {
        const int j = i >> 1;
        const uint32_t w = j == 0 ? v.x : j == 1 ? v.y : j == 2 ? v.z : v.w;
        return widen(i & 1 ? w >> 16 : w & 0xFFFFu);
    }
    static __device__ __forceinline__ void store_vec(void *p, const float *f)
    {
        uint32_t w[4];
#pragma unroll
        for (int j = 0; j < 4; j++)
            w[j] = narrow(f[2 * j]) | (narrow(f[2 * j + 1]) << 16);
        *(uint4 *)p = make_uint4(w[0], w[1], w[2], w[3]);
    }
    /* Values known not to be NaNs. bf16: the hardware's conversion of a
     * pair, which rounds to nearest even, overflows to infinity and keeps
     * subnormals as moes_f32_to_bf16 does for every value but a NaN (whose
     * bits it would not make canonical); one instruction for two values
     * instead of the NaN test and the rounding of each. fp16: the
     * library's conversion. */
    static __device__ __forceinline__ void store_vec_no_nan(void *p,
                                                           const float *f)
    {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800 /* cvt to bf16x2 */
        if constexpr (D == MOES_DTYPE_BF16) {
            uint32_t w[4];
#pragma unroll
            for (int j = 0; j < 4; j++)
                asm("cvt.rn.bf16x2.f32 %0, %1, %2;"
                    : "=r"(w[j])
                    : "f"(f[2 * j + 1]), "f"(f[2 * j]));
            *(uint4 *)p = make_uint4(w[0], w[1], w[2], w[3]);
            return;
        }
#endif
        store_vec(p, f);
    }
    static __device__ __forceinline__ float load_one(const void *p)
    {
        return widen(*(const uint16_t *)p);
    }
    static __device__ __forceinline__ void store_one(void *p, float f)
    {
        *(uint16_t *)p = (uint16_t)narrow(f);
    }
};

template <> struct elem_io<MOES_DTYPE_BF16> : half_io<MOES_DTYPE_BF16> {};
template <> struct elem_io<MOES_DTYPE_FP16> : half_io<MOES_DTYPE_FP16> {};

/* The first 32 out_index entries and weights of token t. */
__device__ __forceinline__ moes_row_fetch fetch_first(const gpu_gather_args &a,
                                                      int64_t t)
{
    return moes_dev_fetch_rows(a.out_index, a.index_elem,
                               t * a.out_index_stride, 0, a.top_k, a.weights,
                               t * a.weights_stride);
}

/* The shape of a warp's item: P vectors of V elements per lane (a chunk
 * of 32 * P vectors), and up to GB valid rows whose loads are in flight
 * together (halved for fp32 rows, whose vectors take twice the
 * registers). */
template <int YD, bool VEC, int GB0> struct item_shape {
    enum { V = VEC ? GPU_GATHER_VEC : 1,
           GB = YD == MOES_DTYPE_FP32 && GB0 > 1 ? GB0 / 2 : GB0 };
};

/* Where a warp's item lies: token t, and the lane's first vector (or
 * element) g0 of the item's chunk of the row. Found once an item, for
 * its sums and its stores. */
struct item_place {
    int64_t t, g0;
};

template <int P>
__device__ __forceinline__ item_place place_of(const gpu_gather_args &a,
                                               int64_t item)
{
    item_place at;
    at.t = item / a.chunks;
    at.g0 = (item - at.t * a.chunks) * (MOES_WARP * P) +
            threadIdx.x % MOES_WARP;
    return at;
}

/* acc = the lane's part of out (accumulate) or 0. */
template <int OD, bool VEC, int P, int V>
__device__ __forceinline__ void start_sums(const gpu_gather_args &a,
                                           const unsigned char *o, int64_t g0,
                                           int64_t groups, float (&acc)[P][V])
{
    typedef elem_io<OD> oio;
    const int64_t osz = OD == MOES_DTYPE_FP32 ? 4 : 2;
#pragma unroll
    for (int j = 0; j < P; j++) {
        const int64_t g = g0 + j * MOES_WARP;
#pragma unroll
        for (int i = 0; i < V; i++)
            acc[j][i] = 0.0f;
        if ((a.flags & MOES_GATHER_ACCUMULATE) && g < groups) {
            if (VEC) {
                const typename oio::vec old = oio::load_vec(o + g * V * osz);
#pragma unroll
                for (int i = 0; i < V; i++)
                    acc[j][i] = oio::get(old, i);
            } else {
                acc[j][0] = oio::load_one(o + g * osz);
            }
        }
    }
}

/* Adds token t's valid rows to acc in k order. EXACT: each step through
 * moes_gather_step, the NaN sign rule included; else the plain rounded
 * sum (moes_gather_sum), which equals it wherever it is not a NaN. */
template <int YD, bool VEC, int P, int GB0, bool EXACT>
__device__ __forceinline__ void add_rows(
    const gpu_gather_args &a, int64_t t, int64_t g0, int64_t groups,
    const moes_row_fetch &first,
    float (&acc)[P][item_shape<YD, VEC, GB0>::V])
{
    typedef elem_io<YD> yio;
    enum { V = item_shape<YD, VEC, GB0>::V,
           GB = item_shape<YD, VEC, GB0>::GB };
    const int64_t ysz = YD == MOES_DTYPE_FP32 ? 4 : 2;
    for (int64_t k0 = 0; k0 < a.top_k; k0 += MOES_WARP) {
        const moes_row_fetch f =
            k0 == 0 ? first
                    : moes_dev_fetch_rows(a.out_index, a.index_elem,
                                          t * a.out_index_stride, k0, a.top_k,
                                          a.weights, t * a.weights_stride);
        unsigned valid = moes_dev_valid_rows(f, a.y_rows);
        /* Up to GB valid rows at a time: all their loads are issued
         * before the first is summed, in k order. */
        while (valid) {
            float w[GB];
            typename yio::vec v[GB][P];
            float one[GB][P];
            int nb = 0;
#pragma unroll
            for (int b = 0; b < GB; b++) {
                if (!valid)
                    break;
                const int64_t row = moes_dev_next_row(&valid, f, &w[b]);
                const unsigned char *y =
                    (const unsigned char *)a.y + row * a.y_stride * ysz;
#pragma unroll
                for (int j = 0; j < P; j++) {
                    const int64_t g = g0 + j * MOES_WARP;
                    if (g < groups) {
                        if (VEC)
                            v[b][j] = yio::load_vec(y + g * V * ysz);
                        else
                            one[b][j] = yio::load_one(y + g * ysz);
                    }
                }
                nb++;
            }
#pragma unroll
            for (int b = 0; b < GB; b++) {
                if (b >= nb)
                    break;
#pragma unroll
                for (int j = 0; j < P; j++) {
                    if (g0 + j * MOES_WARP >= groups)
                        continue;
#pragma unroll
                    for (int i = 0; i < V; i++) {
                        const float yv =
                            VEC ? yio::get(v[b][j], i) : one[b][j];
                        acc[j][i] =
                            EXACT ? moes_gather_step(acc[j][i], w[b], yv)
                                  : moes_gather_sum(acc[j][i], w[b], yv);
                    }
                }
            }
        }
    }
}

/* The sums of the item at `at` into acc: out's part when accumulating,
 * plus the token's rows (first: its first out_index entries and
 * weights). Returns whether they went through the NaN sign rule.
 *
 * The rows are summed with the plain rounded operations first. A NaN
 * stays a NaN through every later step, so a lane whose sums all came out
 * as numbers had no NaN at any step, and the plain sums are then the
 * bits moes_gather_step gives. Only an item with a NaN somewhere (rare:
 * a NaN or an infinity in the data) is summed again from the start with
 * the sign rule; its rows and out are inputs nothing here has written
 * yet. This keeps the rule's compare and branch out of the loop over
 * rows, where they cost as much as the sum itself. */
template <int YD, int OD, bool VEC, int P, int GB0>
__device__ __forceinline__ bool
sum_item(const gpu_gather_args &a, item_place at,
         const moes_row_fetch &first,
         float (&acc)[P][item_shape<YD, VEC, GB0>::V])
{
    enum { V = item_shape<YD, VEC, GB0>::V };
    const int64_t osz = OD == MOES_DTYPE_FP32 ? 4 : 2;
    const int64_t groups = a.hidden / V;
    const int64_t t = at.t, g0 = at.g0;
    const unsigned char *o =
        (const unsigned char *)a.out + t * a.out_stride * osz;
    start_sums<OD, VEC, P, V>(a, o, g0, groups, acc);
    add_rows<YD, VEC, P, GB0, false>(a, t, g0, groups, first, acc);
    /* A NaN among the sums makes their sum a NaN (so do two opposite
     * infinities, or sums that overflow to them: then the exact pass
     * below runs for nothing, and gives the same bits). One add a value
     * instead of a compare and an or. */
    bool nan = false;
#pragma unroll
    for (int j = 0; j < P; j++) {
        float probe = 0.0f;
#pragma unroll
        for (int i = 0; i < V; i++)
            probe += acc[j][i];
        nan |= probe != probe;
    }
    const bool exact = __any_sync(0xFFFFFFFFu, nan);
    if (exact) {
        /* Fetched again rather than kept: fewer registers live across
         * the common path. */
        start_sums<OD, VEC, P, V>(a, o, g0, groups, acc);
        add_rows<YD, VEC, P, 1, true>(a, t, g0, groups, fetch_first(a, t),
                                      acc);
    }
    return exact;
}

/* The sums of the item at `at` to out. */
template <int OD, bool VEC, int P, int V>
__device__ __forceinline__ void store_item(const gpu_gather_args &a,
                                           item_place at,
                                           const float (&acc)[P][V],
                                           bool exact)
{
    typedef elem_io<OD> oio;
    const int64_t osz = OD == MOES_DTYPE_FP32 ? 4 : 2;
    const int64_t groups = a.hidden / V;
    unsigned char *o = (unsigned char *)a.out + at.t * a.out_stride * osz;
#pragma unroll
    for (int j = 0; j < P; j++) {
        const int64_t g = at.g0 + j * MOES_WARP;
        if (g >= groups)
            continue;
        if (VEC && !exact)
            oio::store_vec_no_nan(o + g * V * osz, acc[j]);
        else if (VEC)
            oio::store_vec(o + g * V * osz, acc[j]);
        else
            oio::store_one(o + g * osz, acc[j][0]);
    }
}

/* One (token, chunk) item per warp at a time, the next item's out_index
 * entries and weights loaded while the warp sums the one before. VEC: a
 * lane's vectors are GPU_GATHER_VEC elements; else single elements.
 * SELF_CHECK: the block checks out_index itself (gather_check_verdict),
 * with the warp's first item summed while the entries arrive; else the
 * first store waits for moes_check_out_index. */
template <int YD, int OD, bool VEC, int P, int GB0, bool SELF_CHECK>
__device__ void gather_items(const gpu_gather_args &a)
{
    enum { V = item_shape<YD, VEC, GB0>::V };
    const int64_t items = a.n_tokens * a.chunks;
    const int64_t stride = moes_dev_threads() / MOES_WARP;
    int64_t item = moes_dev_thread() / MOES_WARP;
    bool checked = false;
    moes_row_fetch next;
    if (item < items)
        next = fetch_first(a, item / a.chunks);
    if (SELF_CHECK) {
        moes_check_batch check;
        gather_check_load(a, check);
        float acc[P][V];
        bool exact = false;
        const bool mine = item < items;
        const item_place at = place_of<P>(a, item);
        if (mine) {
            const moes_row_fetch first = next;
            if (item + stride < items)
                next = fetch_first(a, (item + stride) / a.chunks);
            exact = sum_item<YD, OD, VEC, P, GB0>(a, at, first, acc);
        }
        if (gather_check_verdict(a, check) || !mine)
            return;
        store_item<OD, VEC, P, V>(a, at, acc, exact);
        item += stride;
        checked = true;
    }
    for (; item < items; item += stride) {
        const moes_row_fetch first = next;
        if (item + stride < items)
            next = fetch_first(a, (item + stride) / a.chunks);
        float acc[P][V];
        const item_place at = place_of<P>(a, item);
        const bool exact = sum_item<YD, OD, VEC, P, GB0>(a, at, first, acc);
        /* The check of out_index has finished, and its verdict is the same
         * for every thread. */
        if (!checked) {
            moes_dev_wait_prior();
            if (moes_dev_failed(a.state))
                return;
            checked = true;
        }
        store_item<OD, VEC, P, V>(a, at, acc, exact);
    }
}

/* The vector path with GB rows in flight; the element-wise path
 * (unaligned rows, rare) one row at a time, so that its registers stay
 * below the vector path's. SELF_CHECK: the checked kernels, of the small
 * shape, vector rows or not; the usual kernels have no registers to
 * spare for the check (ptxas spilled with it), and the small ones, with
 * it compiled in though not taken, had 16 more. */
template <int YD, int OD, int P, int GB, bool SELF_CHECK>
__device__ __forceinline__ void gather_kernel(const gpu_gather_args &a)
{
    if (SELF_CHECK) {
        /* No check kernel has waited for the kernels ahead of the call:
         * wait before the first load (gather_check_verdict looks at the
         * record of earlier calls). */
        moes_dev_enter();
        if (a.vector)
            gather_items<YD, OD, true, P, GB, true>(a);
        else
            gather_items<YD, OD, false, P, 1, true>(a);
        return;
    }
    moes_dev_release_next();
    /* An error of an earlier call: this one writes nothing either. */
    if (!moes_dev_failed(a.state)) {
        if (a.vector)
            gather_items<YD, OD, true, P, GB, false>(a);
        else if (P == GPU_GATHER_PER_THREAD)
            gather_items<YD, OD, false, P, 1, false>(a);
    }
    /* Every thread waits for the check before it exits, also one with no
     * item: the grid then ends after the check, whatever kernel is
     * launched after it. */
    moes_dev_wait_prior();
}

/* Launched after moes_check_out_index, allowed to start before it ends
 * (the checked kernels: alone). One kernel per dtype pair, each held to
 * the registers that let GPU_GATHER_MIN_BLOCKS blocks share a
 * multiprocessor: a kernel that switched on the output dtype would take
 * the registers of its largest path everywhere, and spill. */
#define MOES_GATHER_KERNEL(name, YD, OD, P, GB, SELF_CHECK)                   \
    extern "C" __global__ void                                                \
    __launch_bounds__(GPU_ROW_THREADS, GPU_GATHER_MIN_BLOCKS)                 \
    name(const gpu_gather_args a)                                             \
    {                                                                         \
        gather_kernel<YD, OD, P, GB, SELF_CHECK>(a);                          \
    }
/* Each pair three times: the usual shape, the small calls', and the
 * small calls' that check out_index themselves (gpu_ops.c). */
#define MOES_GATHER_KERNELS(y, out, YD, OD)                                   \
    MOES_GATHER_KERNEL(moes_gather_##y##_to_##out, YD, OD,                    \
                       GPU_GATHER_PER_THREAD, GPU_GATHER_ROW_BATCH, false)    \
    MOES_GATHER_KERNEL(moes_gather_small_##y##_to_##out, YD, OD,              \
                       GPU_GATHER_SMALL_PER_THREAD,                           \
                       GPU_GATHER_SMALL_ROW_BATCH, false)                     \
    MOES_GATHER_KERNEL(moes_gather_checked_##y##_to_##out, YD, OD,            \
                       GPU_GATHER_SMALL_PER_THREAD,                           \
                       GPU_GATHER_SMALL_ROW_BATCH, true)

MOES_GATHER_KERNELS(fp32, fp32, MOES_DTYPE_FP32, MOES_DTYPE_FP32)
MOES_GATHER_KERNELS(fp32, bf16, MOES_DTYPE_FP32, MOES_DTYPE_BF16)
MOES_GATHER_KERNELS(fp32, fp16, MOES_DTYPE_FP32, MOES_DTYPE_FP16)
MOES_GATHER_KERNELS(bf16, fp32, MOES_DTYPE_BF16, MOES_DTYPE_FP32)
MOES_GATHER_KERNELS(bf16, bf16, MOES_DTYPE_BF16, MOES_DTYPE_BF16)
MOES_GATHER_KERNELS(bf16, fp16, MOES_DTYPE_BF16, MOES_DTYPE_FP16)
MOES_GATHER_KERNELS(fp16, fp32, MOES_DTYPE_FP16, MOES_DTYPE_FP32)
MOES_GATHER_KERNELS(fp16, bf16, MOES_DTYPE_FP16, MOES_DTYPE_BF16)
MOES_GATHER_KERNELS(fp16, fp16, MOES_DTYPE_FP16, MOES_DTYPE_FP16)
#undef MOES_GATHER_KERNELS
#undef MOES_GATHER_KERNEL
