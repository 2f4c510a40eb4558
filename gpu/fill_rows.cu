/* SPDX-License-Identifier: MIT */
/*
 * fill_rows.cu - moes_fill_rows: the caller's pattern at the start of
 * every row of a strided array, from the kernel's parameter.
 */
#include "kernel_common.cuh"

/* Each thread sets units (words or bytes) of the flattened rows x units
 * grid; the pattern is read from shared memory, where each block puts it
 * once, so that the lanes' different units do not serialize on the
 * parameter bank. It does not look at the error record: like moes_fill's
 * memset, it writes whatever earlier calls found. */
extern "C" __global__ void __launch_bounds__(GPU_FILL_ROWS_THREADS)
moes_fill_pattern_rows(const __grid_constant__ gpu_fill_rows_args a)
{
    __shared__ uint32_t pattern[GPU_FILL_ROWS_MAX_PATTERN / 4];
    const int64_t words = a.word ? a.units : (a.units + 3) / 4;
    for (int64_t i = threadIdx.x; i < words; i += blockDim.x)
        pattern[i] = a.pattern[i];
    __syncthreads();
    moes_dev_enter();
    const int64_t total = a.rows * a.units;
    for (int64_t i = moes_dev_thread(); i < total; i += moes_dev_threads()) {
        const int64_t r = i / a.units, u = i - r * a.units;
        char *row = a.dst + r * a.row_stride;
        if (a.word)
            ((uint32_t *)row)[u] = pattern[u];
        else
            row[u] = (char)((const unsigned char *)pattern)[u];
    }
}
