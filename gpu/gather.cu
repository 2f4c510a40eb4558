/*
 * gather.cu - check out_index, then sum each token's K rows in k order:
 * acc = fp32(acc + fp32(w * y)) through moes_gather_step (numerics.h), the
 * same function the CPU uses, so the bits match.
 */
#include "kernel_common.cuh"

extern "C" __global__ void moes_check_out_index(const gpu_gather_args a)
{
    const int64_t n = a.n_tokens * a.top_k;
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

__device__ __forceinline__ float load_elem(const void *base, int64_t dtype,
                                           int64_t i)
{
    if (dtype == MOES_DTYPE_FP32)
        return ((const float *)base)[i];
    if (dtype == MOES_DTYPE_BF16)
        return moes_bf16_to_f32(((const uint16_t *)base)[i]);
    return moes_f16_to_f32(((const uint16_t *)base)[i]);
}

__device__ __forceinline__ void store_elem(void *base, int64_t dtype,
                                           int64_t i, float v)
{
    if (dtype == MOES_DTYPE_FP32)
        ((float *)base)[i] = v;
    else if (dtype == MOES_DTYPE_BF16)
        ((uint16_t *)base)[i] = moes_f32_to_bf16(v);
    else
        ((uint16_t *)base)[i] = moes_f32_to_f16(v);
}

enum { GATHER_ROWS_CACHED = 32 };

extern "C" __global__ void moes_gather_rows(const gpu_gather_args a)
{
    __shared__ int64_t rows[GATHER_ROWS_CACHED];
    __shared__ float weights[GATHER_ROWS_CACHED];
    const bool accumulate = (a.flags & MOES_GATHER_ACCUMULATE) != 0;
    if (moes_dev_failed(a.state))
        return;
    for (int64_t t = blockIdx.x; t < a.n_tokens; t += gridDim.x) {
        __syncthreads(); /* the last token's rows are no longer read */
        for (int64_t k = threadIdx.x; k < a.top_k && k < GATHER_ROWS_CACHED;
             k += blockDim.x) {
            rows[k] = moes_dev_index_load(a.out_index, a.index_elem,
                                          t * a.out_index_stride + k);
            weights[k] = a.weights ? a.weights[t * a.weights_stride + k] : 1.0f;
        }
        __syncthreads();
        for (int64_t h = threadIdx.x; h < a.hidden; h += blockDim.x) {
            const int64_t o = t * a.out_stride + h;
            float acc = accumulate ? load_elem(a.out, a.out_dtype, o) : 0.0f;
            for (int64_t k = 0; k < a.top_k; k++) {
                int64_t row;
                float w;
                if (k < GATHER_ROWS_CACHED) {
                    row = rows[k];
                    w = weights[k];
                } else {
                    row = moes_dev_index_load(a.out_index, a.index_elem,
                                              t * a.out_index_stride + k);
                    w = a.weights ? a.weights[t * a.weights_stride + k] : 1.0f;
                }
                if (row < 0)
                    continue;
                acc = moes_gather_step(acc, w,
                                       load_elem(a.y, a.y_dtype,
                                                 row * a.y_stride + h));
            }
            store_elem(a.out, a.out_dtype, o, acc);
        }
    }
}
