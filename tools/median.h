/* SPDX-License-Identifier: MIT */
/*
 * median.h - the median of the tools' timings.
 */
#ifndef MOES_TOOL_MEDIAN_H
#define MOES_TOOL_MEDIAN_H

#include <stdint.h>
#include <stdlib.h>

static inline int tool_compare_double(const void *a, const void *b)
{
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Sorts v[0..n) in place (n >= 1), so that v[0] and v[n - 1] are then
 * the least and the greatest, and returns the median (the mean of the
 * two middle values when n is even). */
static inline double tool_median(double *v, int64_t n)
{
    qsort(v, (size_t)n, sizeof *v, tool_compare_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

#endif /* MOES_TOOL_MEDIAN_H */
