/* SPDX-License-Identifier: MIT */
/*
 * error_record.cu - the end of every validation: the smallest error key of
 * the call becomes the sticky record, its value read from the inputs while
 * they are still alive, exactly as the CPU backend reports it.
 */
#include "kernel_common.cuh"

/* Run by one thread. */
__device__ void moes_stage_finish_validation(const gpu_finish_args &a)
{
    gpu_device_state *s = a.state;
    const unsigned long long key = s->key;
    if (key != GPU_ERROR_KEY_NONE && s->record.status == MOES_OK) {
        const int rank = (int)(key >> 56);
        const int64_t index = (int64_t)(key & ((1ull << 56) - 1));
        moes_data_error r;
        r.reserved = 0;
        r.index = index;
        r.row_len = 0;
        if (a.op == GPU_OP_GATHER || rank == MOES_DATA_ERROR_RANK_ID) {
            const int64_t t = index / a.row_len, k = index - t * a.row_len;
            r.value = moes_dev_index_load(a.ids, a.ids_elem,
                                          t * a.ids_stride + k);
            r.row_len = a.row_len;
            if (a.op == GPU_OP_GATHER) {
                r.status = MOES_ERR_INVALID_OUT_INDEX;
                r.limit = a.y_rows;
            } else {
                r.status = MOES_ERR_INVALID_ID;
                r.limit = a.n_global;
            }
        } else if (rank == MOES_DATA_ERROR_RANK_SCALE) {
            const int64_t t = index / a.n_scales, j = index - t * a.n_scales;
            r.status = MOES_ERR_INVALID_SCALE;
            r.value = (int64_t)moes_f32_to_bits(
                a.x_scales[t * a.x_scales_stride + j]);
            r.row_len = a.n_scales;
            r.limit = 0;
        } else if (rank == MOES_DATA_ERROR_RANK_MAP) {
            r.status = MOES_ERR_INVALID_MAP;
            r.value = a.map[index];
            r.limit = a.n_experts;
        } else {
            r.status = MOES_ERR_CAPACITY;
            r.index = 0;
            r.value = s->rows_needed;
            r.limit = a.capacity;
        }
        s->record = r;
    }
    s->key = GPU_ERROR_KEY_NONE;
}
