/* SPDX-License-Identifier: MIT */
/*
 * data_error.h - how a backend reports a data error (a bad id, map entry,
 * out_index entry, or a capacity too small) to lib/, which turns it into
 * the status and the message. Plain C, also compiled by nvcc: the CUDA
 * kernels fill the same record in device memory.
 *
 * When several elements are wrong, the one reported is fixed: map errors
 * before id errors before capacity errors before scale errors, and among
 * errors of one kind the smallest flat index (t * K + k for ids and
 * out_index, t * S + s for scales, S = ceil(H / B)). So both backends name
 * the same element.
 *
 * A scale error (MOES_ERR_INVALID_SCALE, UE8M0 output only): index is
 * t * S + s, row_len is S, value is the fp32 bit pattern of
 * x_scales[t][s] (as an unsigned 32-bit number), limit is 0. Every scale
 * of every token (t < N, s < S) is checked, whether the token is placed
 * or not, and only when map, ids and capacity are fine.
 */
#ifndef MOES_DATA_ERROR_H
#define MOES_DATA_ERROR_H

#include <stdint.h>

typedef struct moes_data_error {
    int32_t status;   /* a moes_status; MOES_OK when nothing is wrong      */
    int32_t reserved;
    int64_t index;    /* flat index of the element (t * K + k, or map i)   */
    int64_t value;    /* its value; for MOES_ERR_CAPACITY the rows needed
                         (INT64_MAX when their count overflows); for a
                         scale its fp32 bits                              */
    int64_t row_len;  /* K for ids and out_index, S for scales (to print
                         [t][k]), else 0                                  */
    int64_t limit;    /* the bound broken: E_global, E, M, or the capacity */
} moes_data_error;

/* The rule every id, map entry and out_index entry is checked against,
 * on both backends: -1 (nothing) or one of the bound's things, E_global
 * experts for an id, E local experts for a map entry, M rows of y for an
 * out_index entry. A macro, so that host code and kernels share it. */
#define MOES_INDEX_OK(v, bound) ((v) >= -1 && (v) < (bound))

/* The order in which errors of different kinds win (lower wins). */
#define MOES_DATA_ERROR_RANK_MAP 0
#define MOES_DATA_ERROR_RANK_ID 1
#define MOES_DATA_ERROR_RANK_CAPACITY 2
#define MOES_DATA_ERROR_RANK_SCALE 3

#endif /* MOES_DATA_ERROR_H */
