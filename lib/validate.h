/* SPDX-License-Identifier: MIT */
/*
 * validate.h - argument validation, once, for every backend.
 *
 * Each function checks the caller's arguments (everything that can be
 * checked without reading the data behind the pointers) and fills a plan
 * for the backend. On failure it returns the status with the message set
 * on ctx, and the plan is not to be used.
 */
#ifndef MOES_VALIDATE_H
#define MOES_VALIDATE_H

#include "internal.h"

int moes_validate_routing(moes_context *ctx, const moes_routing *routing,
                          moes_route_plan *plan);
int moes_validate_count(moes_context *ctx, const moes_routing *routing,
                        void *counts, int counts_dtype,
                        moes_count_plan *plan);
int moes_validate_distinct(moes_context *ctx, const moes_routing *routing,
                           void *out, int out_dtype, int64_t out_stride,
                           moes_distinct_plan *plan);
int moes_validate_scatter(moes_context *ctx, const moes_routing *routing,
                          const moes_scatter_args *args,
                          moes_scatter_plan *plan);
int moes_validate_gather(moes_context *ctx, const moes_gather_args *args,
                         moes_gather_plan *plan);

#endif /* MOES_VALIDATE_H */
