/* SPDX-License-Identifier: MIT */
/*
 * fuzz_extent.h - the bytes a [rows][stride] argument claims: from the
 * first element to the last one a correct call can touch, i.e.
 * ((rows - 1) * stride + row_len) * elem, nothing more. Buffers are sized
 * exactly so, so that one element too far is out of bounds.
 */
#ifndef FUZZ_EXTENT_H
#define FUZZ_EXTENT_H

#include <stddef.h>
#include <stdint.h>

/* Buffers above this are not allocated: the call is skipped (its sizes are
 * valid but too large to be fast), or, when the claimed size does not even
 * fit int64, a buffer of no bytes is passed and the call must fail. */
#define FZ_MAX_BUFFER_BYTES ((int64_t)1 << 18)

enum { FZ_EXTENT_OK = 0, FZ_EXTENT_TOO_BIG = 1, FZ_EXTENT_OVERFLOW = 2 };

/* A stride of 0 means dense; a stride smaller than the row (which the
 * library must reject) is sized as dense. Above max bytes: too big. */
static inline int fz_extent_max(int64_t rows, int64_t stride,
                                int64_t row_len, int64_t elem,
                                int64_t max, size_t *bytes)
{
    __int128 n;
    *bytes = 0;
    if (rows <= 0 || row_len <= 0 || elem <= 0)
        return FZ_EXTENT_OK;
    if (stride < row_len)
        stride = row_len;
    n = (__int128)(rows - 1) * stride + row_len; /* < 2^127 */
    if (n > INT64_MAX || n * elem > INT64_MAX)
        return FZ_EXTENT_OVERFLOW;
    n *= elem;
    if (n > max)
        return FZ_EXTENT_TOO_BIG;
    *bytes = (size_t)n;
    return FZ_EXTENT_OK;
}

static inline int fz_extent(int64_t rows, int64_t stride, int64_t row_len,
                            int64_t elem, size_t *bytes)
{
    return fz_extent_max(rows, stride, row_len, elem, FZ_MAX_BUFFER_BYTES,
                         bytes);
}

#endif /* FUZZ_EXTENT_H */
