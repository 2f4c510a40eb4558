/* SPDX-License-Identifier: MIT */
/*
 * distinct_row.h - the row that moes_distinct_experts writes for one
 * token, built the same way by the CPU backend and by the CUDA kernel
 * (this header is compiled by the C compiler and by nvcc alike).
 *
 * The row starts out holding each choice's local expert (or -1) in k
 * order. A heapsort puts it in ascending order in place (no memory beyond
 * the row, whatever K is, and K log K steps), then one pass keeps the
 * first of each run of equal experts and fills the rest with -1. Only
 * values the call itself wrote are read back, and never as an address.
 */
#ifndef MOES_DISTINCT_ROW_H
#define MOES_DISTINCT_ROW_H

#include <stdint.h>

#include "numerics.h"

MOES_HD int64_t moes_row_get(const void *row, int64_t elem, int64_t i)
{
    return elem == 4 ? (int64_t)((const int32_t *)row)[i]
                     : ((const int64_t *)row)[i];
}

MOES_HD void moes_row_put(void *row, int64_t elem, int64_t i, int64_t v)
{
    if (elem == 4)
        ((int32_t *)row)[i] = (int32_t)v;
    else
        ((int64_t *)row)[i] = v;
}

/* Moves row[root] down the max-heap row[0 .. end). */
MOES_HD void moes_row_sift(void *row, int64_t elem, int64_t root, int64_t end)
{
    const int64_t v = moes_row_get(row, elem, root);
    for (;;) {
        int64_t child = 2 * root + 1;
        if (child >= end)
            break;
        if (child + 1 < end &&
            moes_row_get(row, elem, child) <
                moes_row_get(row, elem, child + 1))
            child++;
        const int64_t c = moes_row_get(row, elem, child);
        if (v >= c)
            break;
        moes_row_put(row, elem, root, c);
        root = child;
    }
    moes_row_put(row, elem, root, v);
}

/* row[0 .. k): local experts or -1 in; the distinct experts ascending,
 * then -1, out. */
MOES_HD void moes_distinct_row(void *row, int64_t elem, int64_t k)
{
    for (int64_t i = k / 2; i-- > 0;)
        moes_row_sift(row, elem, i, k);
    for (int64_t end = k - 1; end > 0; end--) {
        const int64_t top = moes_row_get(row, elem, 0);
        moes_row_put(row, elem, 0, moes_row_get(row, elem, end));
        moes_row_put(row, elem, end, top);
        moes_row_sift(row, elem, 0, end);
    }
    /* Ascending now, the -1 first. Writing position n never passes the
     * position i being read (n <= i). */
    int64_t n = 0;
    for (int64_t i = 0; i < k; i++) {
        const int64_t v = moes_row_get(row, elem, i);
        if (v >= 0 && (n == 0 || v != moes_row_get(row, elem, n - 1)))
            moes_row_put(row, elem, n++, v);
    }
    for (int64_t i = n; i < k; i++)
        moes_row_put(row, elem, i, -1);
}

#endif /* MOES_DISTINCT_ROW_H */
