/* SPDX-License-Identifier: MIT */
/*
 * gather.cu - check out_index, then sum each token's K rows in k order:
 * acc = fp32(acc + fp32(w * y)) through moes_gather_step (numerics.h), the
 * same function the CPU uses, so the bits match.
 *
 * The work is cut into (token, column group) items, one per thread, so
 * that even a few tokens spread over the whole GPU. Where the rows allow
 * it a group is 8 elements read with 16-byte loads; the loads of up to
 * GATHER_K_BATCH rows are all issued before the first is used, so that
 * each thread keeps that many independent loads in flight. Else a group
 * is one element.
 *
 * Small calls check out_index inside the gather kernel itself (every
 * block reads the whole of it, which is cheaper than two more launches),
 * and a block stores only once it knows that every entry is valid. Large
 * calls check it in a grid of its own first (moes_check_out_index and
 * moes_finish_validation).
 */
#include "kernel_common.cuh"

extern "C" __global__ void moes_check_out_index(const gpu_gather_args a)
{
    const int64_t n = a.n_tokens * a.top_k;
    moes_dev_enter();
    if (moes_dev_failed(a.state))
        return;
    for (int64_t c = moes_dev_thread(); c < n; c += moes_dev_threads()) {
        const int64_t t = c / a.top_k, k = c - t * a.top_k;
        const int64_t v = moes_dev_index_load(a.out_index, a.index_elem,
                                              t * a.out_index_stride + k);
        if (v < -1 || v >= a.y_rows)
            moes_dev_report(a.state, MOES_DATA_ERROR_RANK_ID, c);
    }
}

enum { GATHER_K_BATCH = 8, GATHER_VEC = 8, GATHER_THREADS = 256,
       GATHER_BLOCKS_PER_SM = 3 };

/* Elements of y and out as fp32, GATHER_VEC (or 1) at a time. The vector
 * forms need 16-byte aligned addresses (checked by the host). */
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
    static __device__ __forceinline__ void store_vec(void *p, const float *f)
    {
        ((uint4 *)p)[0] = make_uint4(__float_as_uint(f[0]),
                                     __float_as_uint(f[1]),
                                     __float_as_uint(f[2]),
                                     __float_as_uint(f[3]));
        ((uint4 *)p)[1] = make_uint4(__float_as_uint(f[4]),
                                     __float_as_uint(f[5]),
                                     __float_as_uint(f[6]),
                                     __float_as_uint(f[7]));
    }
    static __device__ __forceinline__ float load_one(const void *p)
    {
        return *(const float *)p;
    }
    static __device__ __forceinline__ void store_one(void *p, float f)
    {
        *(float *)p = f;
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

/* The smallest flat index of a bad out_index entry, over the whole call,
 * or INT64_MAX: every thread of the block looks at a slice. */
__device__ __forceinline__ int64_t first_bad_slice(const gpu_gather_args &a)
{
    const int64_t n = a.n_tokens * a.top_k;
    int64_t first = INT64_MAX;
    for (int64_t c = threadIdx.x; c < n; c += blockDim.x) {
        const int64_t t = c / a.top_k, k = c - t * a.top_k;
        const int64_t v = moes_dev_index_load(a.out_index, a.index_elem,
                                              t * a.out_index_stride + k);
        if ((v < -1 || v >= a.y_rows) && c < first)
            first = c;
    }
    return first;
}

/* A bad entry was seen by this block: the smallest one becomes the record
 * (block 0 alone writes it; every block found the same one), and nothing
 * is stored. */
__device__ void record_first_bad(const gpu_gather_args &a, int64_t mine)
{
    __shared__ long long warp_min[GATHER_THREADS / MOES_WARP];
    long long m = mine;
    for (int off = MOES_WARP / 2; off > 0; off /= 2) {
        const long long o = __shfl_down_sync(0xFFFFFFFFu, m, off);
        m = o < m ? o : m;
    }
    if (threadIdx.x % MOES_WARP == 0)
        warp_min[threadIdx.x / MOES_WARP] = m;
    __syncthreads();
    if (threadIdx.x == 0 && blockIdx.x == 0) {
        long long first = warp_min[0];
        for (unsigned w = 1; w < blockDim.x / MOES_WARP; w++)
            first = warp_min[w] < first ? warp_min[w] : first;
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
        /* The key is unused by this path: it stays "none" and becomes the
         * given one for the record. */
        a.state->key = GPU_ERROR_KEY(MOES_DATA_ERROR_RANK_ID, first);
        moes_stage_finish_validation(f);
    }
}

/* The loads of k0 .. k0+KB-1 first, then their sum in order.
 * A row outside [0, y_rows) is not read (only a call that stores nothing
 * can hold one). */
template <int YD, bool VEC, int KB>
__device__ __forceinline__ void gather_batch(const gpu_gather_args &a,
                                             int64_t t, int64_t col,
                                             int64_t k0, float *acc)
{
    typedef elem_io<YD> io;
    typename io::vec v[KB];
    float one[KB];
    float w[KB];
    bool use[KB];
    const int64_t ysz = YD == MOES_DTYPE_FP32 ? 4 : 2;
#pragma unroll
    for (int j = 0; j < KB; j++) {
        const int64_t k = k0 + j;
        int64_t row = -1;
        w[j] = 1.0f;
        if (k < a.top_k) {
            row = moes_dev_index_load(a.out_index, a.index_elem,
                                      t * a.out_index_stride + k);
            if (a.weights)
                w[j] = a.weights[t * a.weights_stride + k];
        }
        use[j] = row >= 0 && row < a.y_rows;
        const unsigned char *p = (const unsigned char *)a.y +
                                 (row * a.y_stride + col) * ysz;
        if (VEC) {
            if (use[j])
                v[j] = io::load_vec(p);
        } else {
            one[j] = use[j] ? io::load_one(p) : 0.0f;
        }
    }
#pragma unroll
    for (int j = 0; j < KB; j++) {
        if (!use[j])
            continue;
        if (VEC) {
#pragma unroll
            for (int i = 0; i < GATHER_VEC; i++)
                acc[i] = moes_gather_step(acc[i], w[j], io::get(v[j], i));
        } else {
            acc[0] = moes_gather_step(acc[0], w[j], one[j]);
        }
    }
}

/* Every block walks the items in block-sized steps together, so that the
 * barrier of the checking path is reached by all its threads. */
template <int YD, int OD, bool VEC>
__device__ void gather_items(const gpu_gather_args &a, bool check_here)
{
    typedef elem_io<OD> oio;
    const int64_t per_item = VEC ? GATHER_VEC : 1;
    const int64_t groups = a.hidden / per_item;
    const int64_t items = a.n_tokens * groups;
    const int64_t osz = OD == MOES_DTYPE_FP32 ? 4 : 2;
    const bool accumulate = (a.flags & MOES_GATHER_ACCUMULATE) != 0;
    bool checked = !check_here;
    /* fp32 rows take twice the registers: half as many at a time. */
    constexpr int batch = VEC && YD == MOES_DTYPE_FP32 ? GATHER_K_BATCH / 2
                                                   : GATHER_K_BATCH;
    for (int64_t base = (int64_t)blockIdx.x * blockDim.x; base < items;
         base += (int64_t)gridDim.x * blockDim.x) {
        const int64_t item = base + threadIdx.x;
        const bool live = item < items;
        const int64_t t = live ? item / groups : 0;
        const int64_t col = (item - t * groups) * per_item;
        unsigned char *o = (unsigned char *)a.out +
                           (t * a.out_stride + col) * osz;
        float acc[GATHER_VEC];
        int64_t bad = INT64_MAX;
        if (!checked)
            bad = first_bad_slice(a);
#pragma unroll
        for (int i = 0; i < GATHER_VEC; i++)
            acc[i] = 0.0f;
        if (live && accumulate) {
            if (VEC) {
                const typename oio::vec old = oio::load_vec(o);
#pragma unroll
                for (int i = 0; i < GATHER_VEC; i++)
                    acc[i] = oio::get(old, i);
            } else {
                acc[0] = oio::load_one(o);
            }
        }
        if (live)
            for (int64_t k0 = 0; k0 < a.top_k; k0 += batch)
                gather_batch<YD, VEC, batch>(a, t, col, k0, acc);
        if (!checked) {
            /* Stores wait until the whole of out_index is known good. */
            if (__syncthreads_or(bad != INT64_MAX)) {
                record_first_bad(a, bad);
                return;
            }
            checked = true;
        }
        if (!live)
            continue;
        if (VEC)
            oio::store_vec(o, acc);
        else
            oio::store_one(o, acc[0]);
    }
}

template <int YD, int OD>
__device__ __forceinline__ void gather_path(const gpu_gather_args &a,
                                            bool check_here)
{
    if (a.vector)
        gather_items<YD, OD, true>(a, check_here);
    else
        gather_items<YD, OD, false>(a, check_here);
}

template <int YD>
__device__ __forceinline__ void gather_out(const gpu_gather_args &a,
                                           bool check_here)
{
    switch (a.out_dtype) {
    case MOES_DTYPE_FP32: gather_path<YD, MOES_DTYPE_FP32>(a, check_here); break;
    case MOES_DTYPE_BF16: gather_path<YD, MOES_DTYPE_BF16>(a, check_here); break;
    default: gather_path<YD, MOES_DTYPE_FP16>(a, check_here); break;
    }
}

/* a.check_here: out_index has not been checked by an earlier kernel. */
extern "C" __global__ void __launch_bounds__(GATHER_THREADS, GATHER_BLOCKS_PER_SM)
moes_gather_rows(const gpu_gather_args a)
{
    const bool check_here = a.check_here != 0;
    moes_dev_enter();
    if (moes_dev_failed(a.state))
        return;
    switch (a.y_dtype) {
    case MOES_DTYPE_FP32: gather_out<MOES_DTYPE_FP32>(a, check_here); break;
    case MOES_DTYPE_BF16: gather_out<MOES_DTYPE_BF16>(a, check_here); break;
    default: gather_out<MOES_DTYPE_FP16>(a, check_here); break;
    }
}
