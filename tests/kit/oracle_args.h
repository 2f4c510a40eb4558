/* SPDX-License-Identifier: MIT */
/*
 * oracle_args.h - the oracle's argument checks: the library's rules,
 * applied in the library's order, so that a call the library rejects is
 * rejected here with the same status.
 */
#ifndef MOES_ORACLE_ARGS_H
#define MOES_ORACLE_ARGS_H

#include <stddef.h>
#include <stdint.h>

#include "moescatter.h"

/* A routing after the checks: strides and E_global resolved. */
typedef struct oracle_routing {
    moes_routing r;
    size_t ids_elem;
    int64_t choices; /* N * K */
} oracle_routing;

typedef struct oracle_scatter {
    oracle_routing route;
    moes_scatter_args a;  /* every stride resolved                      */
    size_t x_elem;
    size_t index_elem;
    int64_t out_rows;     /* capacity, or E * capacity when masked      */
    int64_t n_scales;     /* S, or 0 without scales                     */
    int64_t n_scale_cols; /* S (fp32) or ceil(S / 4) (UE8M0)            */
    int index_only;       /* x, x_scales, out, out_scales all NULL      */
} oracle_scatter;

typedef struct oracle_gather {
    moes_gather_args a;   /* every stride resolved                      */
    size_t y_elem, out_elem, index_elem;
} oracle_gather;

/* Each returns MOES_OK or the status, with the message set through
 * oracle_fail(). */
int oracle_check_routing(const moes_routing *routing, oracle_routing *out);
int oracle_check_count(const moes_routing *routing, const void *counts,
                       int counts_dtype, oracle_routing *out,
                       size_t *counts_elem);
/* *out_stride comes back resolved (0 means K). */
int oracle_check_distinct(const moes_routing *routing, const void *out,
                          int out_dtype, int64_t *out_stride,
                          oracle_routing *or_, size_t *out_elem);
int oracle_check_scatter(const moes_routing *routing,
                         const moes_scatter_args *args, oracle_scatter *out);
int oracle_check_gather(const moes_gather_args *args, oracle_gather *out);

/* Records the message of a failed call and returns status. */
#if defined(__GNUC__)
__attribute__((format(printf, 2, 3)))
#endif
int oracle_fail(int status, const char *fmt, ...);

#endif /* MOES_ORACLE_ARGS_H */
