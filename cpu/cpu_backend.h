/* SPDX-License-Identifier: MIT */
/*
 * cpu_backend.h - what the CPU backend's files share: its state, the
 * workspace, and the operations behind its table.
 */
#ifndef MOES_CPU_BACKEND_H
#define MOES_CPU_BACKEND_H

#include <time.h>

#include "cpu_route.h"
#include "internal.h"

typedef struct cpu_state {
    int64_t *workspace;
    int64_t workspace_len; /* in int64 elements */
    int workspace_from_caller; /* moes_set_workspace's: never freed here */
    struct timespec timestamps[MOES_TIMESTAMP_SLOTS];
} cpu_state;

/* Sets up route for plan: picks the parts and carves part_counts, counts
 * and (when extra_arrays > 1) further [E] arrays out of the workspace,
 * growing it unless a reservation forbids. *extra receives the first
 * array after counts (or NULL). */
int cpu_route_prepare(moes_context *ctx, const moes_route_plan *plan,
                      cpu_route *route, int extra_arrays, int64_t **extra);

int cpu_scatter(moes_context *ctx, const moes_scatter_plan *plan,
                moes_data_error *err);
int cpu_gather(moes_context *ctx, const moes_gather_plan *plan,
               moes_data_error *err);

#endif /* MOES_CPU_BACKEND_H */
